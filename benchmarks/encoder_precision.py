"""The CPU encoder in fp32 against bf16 autocast: items/s with 1 and N processes, and how far the vectors move.

Times ``streamrec bench``'s encoder phase (:func:`streamrec.lab.bench.encoder_throughput`: one process alone,
then ``--processes`` single-threaded processes each encoding a share at once) on the synthetic catalogue's
texts, fp32 and bf16 alternated ``--rounds`` times (the order swapped every round, so a slow minute on a shared
machine does not land on one side), and reports every run and the medians. Then the per-text cosine between
bf16 and fp32 vectors on the synthetic catalogue's texts and on the MovieLens titles when ``../shared`` holds
them. Prints one JSON object::

    .venv/bin/python benchmarks/encoder_precision.py --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.encoding.encoder import TextEncoder, item_text
from streamrec.encoding.threads import limit_threads
from streamrec.io.logs import read_log
from streamrec.lab.bench import encoder_throughput, machine
from streamrec.lab.synthetic import make_shop
from streamrec.model.events import item_from_dict
from streamrec.settings import Settings

MOVIELENS = Path(__file__).resolve().parents[1].parent / "shared/datasets/movielens-100k"
PRECISIONS = ("fp32", "bf16")
CATALOGUE_ITEMS = 50_000
"""The bench's synthetic catalogue: its first texts are timed, and its first ``--cosine-texts`` compared."""


def cosines(texts: Sequence[str], settings: Settings) -> dict[str, float]:
    """Per-text cosine of bf16-autocast to fp32 vectors: min, mean and the worst text."""
    fp32 = TextEncoder.from_settings(settings.replace(encoder_precision="fp32")).encode(texts)
    bf16 = TextEncoder.from_settings(settings.replace(encoder_precision="bf16")).encode(texts)
    cos = np.sum(fp32 * bf16, axis=1)
    worst = int(np.argmin(cos))
    return {"texts": len(texts), "min": float(cos[worst]), "mean": float(cos.mean()), "worst": texts[worst]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="catalogue texts timed per run")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cosine-texts", type=int, default=2_048)
    args = parser.parse_args(argv)
    settings = Settings.from_env().replace(device="cpu")
    limit_threads(settings.encoder.torch_threads)
    shop = make_shop(CATALOGUE_ITEMS, 1, seed=settings.retrieval.seed)
    texts = [item_text(item) for item in shop.items[: max(args.texts, args.cosine_texts)]]
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            figures = encoder_throughput(
                settings.replace(encoder_precision=precision), texts[: args.texts], args.processes
            )
            runs.append(
                {
                    "round": r,
                    "precision": precision,
                    "path": figures["encoder_path"],
                    "one_process": round(figures["encoder_items_per_s_one_process"], 1),
                    "processes": round(figures["encoder_items_per_s"], 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    medians = {
        p: {
            key: statistics.median(run[key] for run in runs if run["precision"] == p)
            for key in ("one_process", "processes")
        }
        for p in PRECISIONS
    }
    out: dict[str, Any] = {
        "machine": machine(),
        "texts": args.texts,
        "processes": args.processes,
        "runs": runs,
        "median_items_per_s": medians,
        "bf16_over_fp32": {k: medians["bf16"][k] / medians["fp32"][k] for k in ("one_process", "processes")},
        "cosine_synthetic": cosines(texts[: args.cosine_texts], settings),
    }
    if MOVIELENS.exists():
        titles = [item_text(item_from_dict(r.value)) for r in read_log(MOVIELENS, "movielens") if r.topic == "items"]
        out["cosine_movielens"] = cosines(titles, settings)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
