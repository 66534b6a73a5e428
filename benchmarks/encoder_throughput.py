"""Throughput of :meth:`streamrec.encoding.encoder.TextEncoder.encode` on realistic product texts, per batch size.

Generates reproducible product texts (title, category, brand and a ~20-word description, as the encoder
worker embeds them), warms the model up, then times ``encode`` on all texts at each batch size and keeps
the best of ``--repeats`` runs. Prints one JSON object, e.g.::

    .venv/bin/python benchmarks/encoder_throughput.py --batch-sizes 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch

from streamrec.encoding.encoder import TextEncoder, item_text
from streamrec.model.events import Item
from streamrec.settings import Settings

DEFAULT_TEXTS = 512
DEFAULT_BATCH_SIZES = (32, 64, 128)
DEFAULT_REPEATS = 3
DESCRIPTION_WORDS = 20
WARMUP_TEXTS = 16
RANDOM_SEED = 7

ADJECTIVES = ["lightweight", "durable", "compact", "waterproof", "ergonomic", "premium", "classic", "wireless"]
NOUNS = ["running shoes", "backpack", "coffee grinder", "desk lamp", "headphones", "rain jacket", "water bottle"]
CATEGORIES = ["Sports > Running", "Bags", "Kitchen > Coffee", "Home > Lighting", "Electronics > Audio"]
BRANDS = ["Acme", "Northwind", "Contoso", "Globex", "Initech"]
VOCABULARY = (
    "made from recycled materials with a soft lining reinforced seams and a slim profile that fits "
    "everyday use at home in the office or outdoors easy to clean long lasting comfortable and backed "
    "by a two year warranty for peace of mind available in several colours and sizes"
)


def product_texts(n: int, seed: int = RANDOM_SEED) -> list[str]:
    """``n`` reproducible product texts of title + category + brand + ~20-word description."""
    rng = random.Random(seed)
    vocabulary = VOCABULARY.split()
    texts = []
    for i in range(n):
        title = f"{rng.choice(ADJECTIVES).capitalize()} {rng.choice(NOUNS)} {rng.randint(1, 999)}"
        words = rng.randint(DESCRIPTION_WORDS // 2, DESCRIPTION_WORDS * 3 // 2)
        description = " ".join(rng.choice(vocabulary) for _ in range(words)).capitalize() + "."
        item = Item(
            item_id=str(i),
            title=title,
            ts=0.0,
            description=description,
            category=rng.choice(CATEGORIES),
            brand=rng.choice(BRANDS),
        )
        texts.append(item_text(item))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=DEFAULT_TEXTS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = parser.parse_args()

    settings = Settings.from_env()
    encoder = TextEncoder.from_settings(settings)
    texts = product_texts(args.texts)
    encoder.encode(texts[:WARMUP_TEXTS])
    tokens = [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]]
    results = {}
    for batch_size in args.batch_sizes:
        best = min(_timed(encoder, texts, batch_size) for _ in range(args.repeats))
        results[str(batch_size)] = round(len(texts) / best, 1)
    print(
        json.dumps(
            {
                "texts_per_s": results,
                "texts": len(texts),
                "mean_tokens": round(sum(tokens) / len(tokens), 1),
                "device": str(encoder.device),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "repeats": args.repeats,
            }
        )
    )


def _timed(encoder: TextEncoder, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
