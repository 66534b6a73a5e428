"""What ``STREAMREC_REPARTITION=true`` costs: backlog drain throughput and event→list latency, off and on.

Each run starts a fresh local broker and one recommender worker process (as deployed) with re-keying off or on,
waits until its catalogue is loaded, then

* ``drain`` — publishes a synthetic backlog at once and times it from the first send until the broker holds, for
  every user, a list reflecting their last event (both modes wait for the catalogue first: with re-keying the
  forwarding would otherwise overlap the catalogue load and look free);
* ``latency`` — sends events at a steady rate for a while (``streamrec bench``'s own load generator) and
  reports event → list received, p50 / p99, and the CPU each process used.

The events are keyed by user with murmur2, so both modes compute the same recommendations: the difference is
the re-keying alone (one more produce and consume of every event, one more JSON parse). Runs alternate off/on
for ``--rounds`` rounds; prints one JSON object with every run and the medians' on/off ratios::

    nice -n 10 .venv/bin/python benchmarks/repartition_cost.py --events 30000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.encoding.encoder import fallback_embeddings
from streamrec.io.kafka import make_producer
from streamrec.io.recommendations import RecommendationWatcher
from streamrec.io.topics import apply_topics
from streamrec.lab.bench import event_messages, machine, send_all, steady_latency
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import Event, dumps
from streamrec.settings import Settings

STARTUP_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = 900.0


def last_ts(events: Sequence[Event]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in events:
        out[e.user_id] = max(out.get(e.user_id, e.ts), e.ts)
    return out


async def one_run(
    settings: Settings, workdir: Path, broker_pid: int | None, args: argparse.Namespace, repartition: bool
) -> dict[str, Any]:
    """One worker, re-keying on or off: drain a backlog, then a steady-rate latency phase."""
    now = time.time()  # as streamrec bench: the backlog's event times end now, where the latency phase's begin
    shop = make_shop(args.items, args.users, seed=settings.retrieval.seed, ts=now - args.events - 1.0)
    backlog = make_events(shop, args.events, seed=settings.retrieval.seed, start_ts=now - args.events)
    live = make_events(shop, int(args.rate * args.latency_seconds), seed=settings.retrieval.seed + 1)
    await apply_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        embeddings = [(e.item.item_id.encode(), dumps(e.to_dict())) for e in fallback_embeddings(shop.items, settings)]
        await send_all(producer, settings.kafka.topic("item-embeddings"), embeddings)
    finally:
        await producer.stop()
    name = f"worker-{'on' if repartition else 'off'}"
    worker = Service(name, ["worker", "--loglevel", "warning"], settings, workdir).start()
    watcher = RecommendationWatcher(settings.kafka)
    try:

        async def ready() -> bool:
            stats = await worker_stats(settings)
            return bool(stats and stats["catalog_ready_at"] and stats["model_ready"] and stats["assigned_partitions"])

        await wait_for_services(ready, STARTUP_TIMEOUT_S, "the worker", [worker])
        await watcher.start()
        ends = last_ts(backlog)
        t0 = time.time()
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            await send_all(producer, settings.kafka.topic("events"), event_messages(backlog))
        finally:
            await producer.stop()

        async def drained() -> bool:
            return watcher.missing(ends) == 0

        await wait_for_services(drained, DRAIN_TIMEOUT_S, f"the worker to drain {len(backlog):,} events", [worker])
        drain_s = watcher.last_record_ms / 1000.0 - t0
        figures: dict[str, Any] = {
            "repartition": repartition,
            "drain_events": len(backlog),
            "drain_s": drain_s,
            "drain_events_per_s": len(backlog) / drain_s,
        }
        figures.update(await steady_latency(settings, watcher, live, args.rate, [worker], broker_pid))
        stats = await worker_stats(settings) or {}
        figures["misrouted_events"] = stats.get("misrouted_events")
        print(json.dumps(figures), flush=True)
        return figures
    finally:
        await watcher.stop()
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=4_000)
    parser.add_argument("--events", type=int, default=30_000, help="Backlog to drain.")
    parser.add_argument("--rate", type=float, default=500.0, help="Events/s in the latency phase.")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2, help="Off/on pairs, alternating.")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-repartition-") as tmp:
        for round_ in range(args.rounds):
            for repartition in (False, True):
                workdir = Path(tmp) / f"{round_}-{repartition}"
                workdir.mkdir(parents=True)
                with LocalBroker(log_path=workdir / "broker.log") as broker:
                    settings = Settings.from_env().replace(
                        broker=broker.url,
                        app_id="repartition-cost",
                        web_port=free_port(),
                        data_dir=str(workdir / "data"),
                        repartition=repartition,
                    )
                    pid = broker.process.pid if broker.process else None
                    runs.append(asyncio.run(one_run(settings, workdir, pid, args, repartition)))

    def median(key: str, on: bool) -> float:
        return statistics.median(r[key] for r in runs if r["repartition"] == on)

    keys = ("drain_events_per_s", "latency_ms_p50", "latency_ms_p99")
    summary = {k: {"off": median(k, False), "on": median(k, True)} for k in keys}
    for v in summary.values():
        v["on_over_off"] = v["on"] / v["off"]
    print(json.dumps({"machine": machine(), "options": vars(args), "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
