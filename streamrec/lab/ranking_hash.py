"""Ranking hash: proves that a change kept streamrec's rankings identical on a real log.

Two hashes per log, printed as JSON (``python -m streamrec.lab.ranking_hash FILE FORMAT``):

* ``prequential``: every list the ``streamrec`` system of ``streamrec eval`` is asked for, one event at a time;
* ``batched``: every list :meth:`Recommender.process` publishes when the log is fed in micro-batches, as the
  worker feeds it (user, kind, items and scores rounded to 1e-6).

A hot-path change that keeps both hashes on both shared logs changed no ranking; otherwise each difference
needs explaining (``docs/development.md``, "The ranking hash: proving a change kept the rankings", with the
reference values).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from streamrec.encoding.threads import limit_threads
from streamrec.io.logs import Record, read_log
from streamrec.lab.bench import machine
from streamrec.lab.evaluation import StreamrecSystem, embed_catalog
from streamrec.model.events import ITEM_EVENT_TYPES, Event, ItemEmbedding, event_from_dict, item_from_dict
from streamrec.model.profiles import DictProfileStore
from streamrec.model.recommender import Recommender
from streamrec.settings import Settings

DEFAULT_BATCH = 256
HASH_CHARS = 16
SCORE_DECIMALS = 6


def prequential_hash(
    records: Sequence[Record], embeddings: dict[int, ItemEmbedding], settings: Settings, k: int
) -> dict[str, Any]:
    """Hash of every list the prequential harness ranks (test-then-train, one event at a time)."""
    system = StreamrecSystem(settings)
    digest = hashlib.sha256()
    hits = 0
    for i, record in enumerate(records):
        if record.topic == "items":
            system.upsert_item(embeddings[i])
            continue
        event = event_from_dict(record.value)
        if event.is_forget:
            continue
        if event.type in ITEM_EVENT_TYPES and event.item_id is not None:
            ranked = system.recommend(event.user_id, event.ts, k)
            hits += event.item_id in ranked
            digest.update(("|".join(ranked) + "\n").encode())
        system.learn(event)
    return {"prequential": digest.hexdigest()[:HASH_CHARS], "prequential_hits": hits}


def batched_hash(
    records: Sequence[Record], embeddings: dict[int, ItemEmbedding], settings: Settings, batch_size: int
) -> dict[str, Any]:
    """Hash of every list :meth:`Recommender.process` publishes for the log cut into micro-batches."""
    recommender = Recommender(settings)
    store = DictProfileStore()
    digest = hashlib.sha256()
    batch: list[Event] = []
    lists = 0

    def flush() -> None:
        nonlocal lists
        if batch:
            for rec in recommender.process(batch, store).recommendations:
                scores = [round(s, SCORE_DECIMALS) for s in rec.items.scores]
                digest.update(f"{rec.user_id}|{rec.kind}|{'|'.join(rec.items.item_ids)}|{scores}\n".encode())
                lists += 1
            batch.clear()

    for i, record in enumerate(records):
        if record.topic == "items":
            flush()
            recommender.upsert_item(embeddings[i])
            continue
        batch.append(event_from_dict(record.value))
        if len(batch) >= batch_size:
            flush()
    flush()
    return {"batched": digest.hexdigest()[:HASH_CHARS], "batched_lists": lists}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("format", choices=["taobao", "movielens", "jsonl"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="micro-batch size of the batched hash")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    limit_threads(settings.encoder.torch_threads)
    records = list(read_log(args.file, args.format, limit=args.limit))
    if not records:
        sys.exit(f"{args.file}: no usable rows")
    items = [i for i, r in enumerate(records) if r.topic == "items"]
    embedded = embed_catalog([item_from_dict(records[i].value) for i in items], settings)
    embeddings = dict(zip(items, embedded, strict=True))
    out: dict[str, Any] = {
        "file": args.file,
        "records": len(records),
        "cpu": machine()["cpu"],
    }
    t0 = time.perf_counter()
    out |= prequential_hash(records, embeddings, settings, settings.retrieval.top_k)
    out["prequential_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    out |= batched_hash(records, embeddings, settings, args.batch)
    out["batched_s"] = round(time.perf_counter() - t0, 1)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
