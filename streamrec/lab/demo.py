"""``streamrec demo``: the whole pipeline on one machine, start to clean shutdown.

Starts the local broker, creates the topics, starts the encoder and a recommender worker as separate
processes, publishes a catalogue and an event stream (synthetic with item text, or a real log), then prints
recommendations with their reasons, the worker's events/s and event→recommendation latency percentiles.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.io.kafka import make_producer
from streamrec.io.recommendations import RecommendationWatcher
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import Event, dumps
from streamrec.settings import Settings

STARTUP_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 180.0
SHOW_USERS = 3
SHOW_ITEMS = 5
LATENCY_SHARE = 0.25
"""Share of the synthetic events sent at a steady rate to measure latency; the rest is a burst for events/s."""


@dataclass(frozen=True)
class DemoOptions:
    dataset: Path | None = None
    fmt: str = "taobao"
    limit: int = 20_000
    users: int = 60
    items: int = 400
    events: int = 6_000
    rate: float = 300.0


async def _stats_at_least(settings: Settings, key: str, n: float) -> dict[str, float] | None:
    stats = await worker_stats(settings)
    return stats if stats is not None and stats.get(key, 0) >= n else None


async def _publish(producer: Any, settings: Settings, topic: str, key: str, value: dict[str, Any]) -> Any:
    return await producer.send(settings.kafka.topic(topic), dumps(value), key=key.encode())


async def _run(settings: Settings, opts: DemoOptions, workdir: Path) -> int:
    await apply_topics(settings.kafka)
    services = [
        Service("encoder", ["encoder"], settings, workdir).start(),
        Service("worker", ["worker", "--loglevel", "warning"], settings, workdir).start(),
    ]
    try:
        print(f"started encoder and recommender worker (logs in {workdir})")
        await wait_for_services(lambda: worker_stats(settings), STARTUP_TIMEOUT_S, "the worker to start", services)
        producer = make_producer(settings.kafka)
        await producer.start()
        watcher = RecommendationWatcher(settings.kafka, keep_latest=True)
        await watcher.start()
        try:
            if opts.dataset is None:
                titles, favourites, burst = await _synthetic(settings, opts, producer, watcher, services)
            else:
                titles, favourites = await _dataset(settings, opts, producer, services)
                burst = None
            await asyncio.sleep(1.0)
        finally:
            await producer.stop()
            await watcher.stop()
        stats = await worker_stats(settings) or {}
        _report(watcher, stats, titles, favourites, burst)
        ok = bool(watcher.latest) and any(rec["items"] for rec in watcher.latest.values())
    finally:
        codes = {s.name: s.stop() for s in services}
    print(f"shut down cleanly: {codes}")
    return 0 if ok and all(c == 0 for c in codes.values()) else 1


async def _synthetic(
    settings: Settings, opts: DemoOptions, producer: Any, watcher: RecommendationWatcher, services: list[Service]
) -> tuple[dict[str, str], dict[str, list[str]], float]:
    """Catalogue, a steady phase (latency), then a burst; returns titles, favourites and the burst's events/s."""
    shop = make_shop(opts.items, opts.users, seed=settings.retrieval.seed, ts=time.time())
    for item in shop.items:
        await _publish(producer, settings, "items", item.item_id, item.to_dict())
    await producer.flush()
    print(f"published {len(shop.items)} catalogue items; waiting until they are embedded and indexed…")
    await wait_for_services(
        lambda: _stats_at_least(settings, "items_indexed", len(shop.items)), STARTUP_TIMEOUT_S, "indexing", services
    )
    events = make_events(shop, opts.events, seed=settings.retrieval.seed)
    n_steady = int(len(events) * LATENCY_SHARE)
    print(f"streaming {n_steady} events at {opts.rate:.0f}/s (latency), then {len(events) - n_steady} as a burst…")
    watcher.measure_latency = True
    interval = 1.0 / opts.rate
    t_next = time.perf_counter()
    for event in events[:n_steady]:
        await _send_live(producer, settings, event)
        t_next += interval
        await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
    await producer.flush()
    await wait_for_services(
        lambda: _stats_at_least(settings, "events", n_steady), DRAIN_TIMEOUT_S, "latency phase", services
    )
    watcher.measure_latency = False
    t0 = time.perf_counter()
    for event in events[n_steady:]:
        await _send_live(producer, settings, event)
    await producer.flush()
    await wait_for_services(
        lambda: _stats_at_least(settings, "events", len(events)), DRAIN_TIMEOUT_S, "the burst", services
    )
    burst = (len(events) - n_steady) / (time.perf_counter() - t0)
    return {i.item_id: f"{i.title} [{i.category}]" for i in shop.items}, shop.favourites, burst


async def _send_live(producer: Any, settings: Settings, event: Event) -> None:
    """Send with ts = now, so event_ts on the recommendation measures end-to-end latency."""
    value = event.to_dict()
    value["ts"] = time.time()
    await _publish(producer, settings, "events", event.user_id, value)


async def _dataset(
    settings: Settings, opts: DemoOptions, producer: Any, services: list[Service]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    from streamrec.io.logs import publish, read_log

    assert opts.dataset is not None
    records = list(read_log(opts.dataset, opts.fmt, limit=opts.limit))
    n_events = sum(1 for r in records if r.topic == "events")
    items = [r for r in records if r.topic == "items"]
    print(f"replaying {len(records)} records from {opts.dataset} ({n_events} events, {len(items)} items)…")
    t0 = time.perf_counter()
    await publish(records, settings.kafka, progress=True, total=len(records))
    await wait_for_services(
        lambda: _stats_at_least(settings, "events", n_events), DRAIN_TIMEOUT_S, "the replay", services
    )
    print(f"replayed and processed in {time.perf_counter() - t0:.1f}s")
    titles = {r.key: (r.value.get("title") or f"category {r.value.get('category')}") for r in items}
    return titles, {}


def _report(
    watcher: RecommendationWatcher,
    stats: dict[str, Any],
    titles: dict[str, str],
    favourites: dict[str, list[str]],
    burst_events_per_s: float | None,
) -> None:
    users = sorted(watcher.latest, key=lambda u: -len(watcher.latest[u]["items"]))[:SHOW_USERS]
    for user in users:
        rec = watcher.latest[user]
        fav = f" (favourite categories: {', '.join(favourites[user])})" if user in favourites else ""
        print(f"\n{rec['kind']} recommendations for {user}{fav} — model {rec['model_version']}")
        for rank, item in enumerate(rec["items"][:SHOW_ITEMS], start=1):
            title = titles.get(item["item_id"], item["item_id"])
            print(f"  {rank}. {title:<58} {item['score']:7.3f}  {'; '.join(item['reasons'])}")
    lat = np.array(watcher.latencies_ms) if watcher.latencies_ms else None
    print("\nfigures")
    print(f"  events processed           {stats.get('events', 0):,.0f}")
    print(f"  recommendations published  {stats.get('recommendations', 0):,.0f}")
    print(f"  dead letters               {stats.get('dead_letters', 0):,.0f}")
    if burst_events_per_s is not None:
        print(f"  events/s (burst, end to end) {burst_events_per_s:,.0f}")
    print(f"  events/s (worker lifetime)   {stats.get('events_per_s', 0):,.0f}")
    if lat is not None:
        print(
            f"  event→recommendation latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms"
        )
    print(
        f"  batch processing time p50 {stats.get('processing_ms_p50', 0):.1f} ms, "
        f"p99 {stats.get('processing_ms_p99', 0):.1f} ms"
    )


def run_demo(settings: Settings, opts: DemoOptions) -> int:
    """Run the demo end to end; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = settings.replace(
            broker=broker.url,
            web_port=free_port(),
            data_dir=str(workdir / "data"),
        )
        print(f"local broker on {broker.url}")
        return asyncio.run(_run(settings, opts, workdir))
