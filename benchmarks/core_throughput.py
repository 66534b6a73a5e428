"""Events/s of the recommender core (:meth:`Recommender.process`) on micro-batches, without Kafka.

The worker's agent hands each micro-batch to ``Recommender.process`` (learn, one ranker step, refresh the
touched users' top-k); this times exactly that call, so the gap between this figure and the worker's
end-to-end rate is the Faust/Kafka overhead. Item vectors are the encoder's id/category fallback vectors
(the encoder's own cost is ``encoder_throughput.py``'s business); search events are left out for the same
reason. Runs on the synthetic shop (skewed users and items) and on the Taobao sample when ``../shared`` is
present. Prints one JSON object; ``--profile`` adds the hottest functions (cProfile) on stderr::

    .venv/bin/python benchmarks/core_throughput.py --events 50000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.encoding.encoder import fallback_embeddings
from streamrec.encoding.threads import limit_threads
from streamrec.io.logs import read_log
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import ITEM_EVENT_TYPES, Event, Item, event_from_dict, item_from_dict
from streamrec.model.profiles import DictProfileStore
from streamrec.model.recommender import Recommender
from streamrec.settings import Settings

TAOBAO = Path(__file__).resolve().parents[1].parent / "shared/datasets/taobao-userbehavior-sample/UserBehavior_head.csv"
PROFILE_LINES = 25


def run(name: str, items: Sequence[Item], events: Sequence[Event], settings: Settings, profile: bool) -> dict[str, Any]:
    """Upsert the catalogue, then feed the events through ``process`` in ``batch_size`` slices."""
    rec = Recommender(settings)
    for emb in fallback_embeddings(items, settings):
        rec.upsert_item(emb)
    store = DictProfileStore()
    batches = [
        events[i : i + settings.batching.batch_size] for i in range(0, len(events), settings.batching.batch_size)
    ]
    profiler = cProfile.Profile() if profile else None
    users = recs = 0
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches:
        result = rec.process(batch, store)
        users += len({e.user_id for e in batch})
        recs += len(result.recommendations)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t0
    if profiler:
        print(f"--- {name} ---", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(PROFILE_LINES)
    return {
        "items": len(items),
        "events": len(events),
        "users": len(store),
        "batches": len(batches),
        "users_per_batch": users / max(len(batches), 1),
        "recommendations": recs,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(events) / seconds, 1),
        "recommendations_per_s": round(recs / seconds, 1),
        "ranker_steps": rec.ranker.steps,
    }


def taobao(limit: int | None) -> tuple[list[Item], list[Event]]:
    records = list(read_log(TAOBAO, "taobao", limit=limit))
    items = [item_from_dict(r.value) for r in records if r.topic == "items"]
    events = [event_from_dict(r.value) for r in records if r.topic == "events"]
    return items, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--taobao-limit", type=int, default=None, help="Rows of the Taobao sample (all by default).")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the batch_size setting.")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    if args.batch_size:
        settings = settings.replace(batch_size=args.batch_size)
    limit_threads(settings.encoder.torch_threads)
    shop = make_shop(args.items, args.users)
    events = [e for e in make_events(shop, args.events) if e.type in ITEM_EVENT_TYPES]
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
        },
        "batch_size": settings.batching.batch_size,
        "synthetic": run("synthetic", shop.items, events, settings, args.profile),
    }
    if TAOBAO.exists():
        report["taobao"] = run("taobao", *taobao(args.taobao_limit), settings, args.profile)
    else:
        report["taobao"] = f"skipped: {TAOBAO} not found"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
