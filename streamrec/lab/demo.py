"""``streamrec demo``: the whole pipeline on one machine, start to clean shutdown.

Starts the local broker, creates the topics, starts the encoder, a recommender worker and the dashboard as
separate processes, publishes a catalogue and an event stream (synthetic with item text, or a real log), then
prints recommendations with their reasons, the worker's events/s and event→recommendation latency percentiles.
With ``keep_running`` everything stays up (a trickle of synthetic events keeps the dashboard moving) until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from streamrec.dashboard.server import address
from streamrec.io.kafka import make_producer
from streamrec.io.recommendations import RecommendationWatcher
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import Shop, make_events, make_shop
from streamrec.model.events import Event, dumps
from streamrec.settings import ENV_PREFIX, Settings

STARTUP_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 180.0
SHOW_USERS = 3
SHOW_ITEMS = 5
LATENCY_SHARE = 0.25
"""Share of the synthetic events sent at a steady rate to measure latency; the rest is a burst for events/s."""
DEMO_SNAPSHOT_INTERVAL_S = 2.0
"""The demo's worker publishes its ranker every 2 s (unless STREAMREC_SNAPSHOT_INTERVAL_S says otherwise), so the
dashboard's weights chart moves while someone looks."""
LIVE_CHUNK_EVENTS = 1_000
"""Events generated at a time for the keep-running trickle."""
SERVICE_CHECK_S = 1.0
INTERRUPTED = 130
"""Exit code after Ctrl-C before the demo finished (the shell's convention for SIGINT)."""


@dataclass(frozen=True)
class DemoOptions:
    dataset: Path | None = None
    fmt: str = "taobao"
    limit: int = 20_000
    users: int = 60
    items: int = 400
    events: int = 6_000
    rate: float = 300.0
    keep_running: bool = False
    live_rate: float = 20.0
    """Synthetic events/s sent while ``keep_running`` waits for Ctrl-C (0: none)."""


async def _stats_at_least(settings: Settings, key: str, n: float) -> dict[str, float] | None:
    stats = await worker_stats(settings)
    return stats if stats is not None and stats.get(key, 0) >= n else None


async def _publish(producer: Any, settings: Settings, topic: str, key: str, value: dict[str, Any]) -> Any:
    return await producer.send(settings.kafka.topic(topic), dumps(value), key=key.encode())


def dashboard_url(settings: Settings) -> str:
    return address(settings)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pipeline_settings(settings: Settings, broker: str, workdir: Path) -> Settings:
    """Settings for a pipeline on this machine: the broker, free worker and dashboard ports, a scratch data dir.

    The dashboard keeps its configured port (8050) when that is free, so its address is the documented one.
    """
    web_port = free_port()
    dashboard_port = settings.web.dashboard_port
    if not _port_is_free(settings.web.dashboard_host, dashboard_port):
        dashboard_port = free_port()
    flat: dict[str, Any] = {
        "broker": broker,
        "web_port": web_port,
        "data_dir": str(workdir / "data"),
        "dashboard_port": dashboard_port,
        "dashboard_workers": f"http://{settings.web.web_host}:{web_port}",
    }
    if ENV_PREFIX + "SNAPSHOT_INTERVAL_S" not in os.environ:
        flat["snapshot_interval_s"] = DEMO_SNAPSHOT_INTERVAL_S
    return settings.replace(**flat)


async def dashboard_up(settings: Settings, timeout: float = 2.0) -> bool:
    """Whether the dashboard answers its health check."""
    url = f"{dashboard_url(settings)}healthz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def start_pipeline(settings: Settings, workdir: Path) -> list[Service]:
    """Create the topics, start the encoder, a worker and the dashboard; return once the worker and the
    dashboard answer (every service is stopped again if one fails to start)."""
    await apply_topics(settings.kafka)
    services = [
        Service("encoder", ["encoder"], settings, workdir).start(),
        Service("worker", ["worker", "--loglevel", "warning"], settings, workdir).start(),
        Service("dashboard", ["dashboard"], settings, workdir).start(),
    ]
    try:
        await wait_for_services(lambda: worker_stats(settings), STARTUP_TIMEOUT_S, "the worker to start", services)
        await wait_for_services(lambda: dashboard_up(settings), STARTUP_TIMEOUT_S, "the dashboard", services)
    except BaseException:
        for service in services:
            service.stop()
        raise
    return services


async def _run(settings: Settings, opts: DemoOptions, workdir: Path) -> int:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM ends the demo like Ctrl-C: services and broker are stopped, none is left behind
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    services = await start_pipeline(settings, workdir)
    url = dashboard_url(settings)
    try:
        print(f"started encoder, recommender worker and dashboard (logs in {workdir})")
        print(f"dashboard: {url}")
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            watcher = RecommendationWatcher(settings.kafka, keep_latest=True)
            await watcher.start()
            shop: Shop | None = None
            try:
                if opts.dataset is None:
                    shop, titles, favourites, burst = await _synthetic(settings, opts, producer, watcher, services)
                else:
                    titles, favourites = await _dataset(settings, opts, producer, services)
                    burst = None
                await asyncio.sleep(1.0)
            finally:
                await watcher.stop()
            stats = await worker_stats(settings) or {}
            _report(watcher, stats, titles, favourites, burst)
            ok = bool(watcher.latest) and any(rec["items"] for rec in watcher.latest.values())
            if opts.keep_running:
                await _keep_running(settings, opts, producer, shop, services, url)
        finally:
            await producer.stop()
    finally:
        codes = {s.name: s.stop() for s in services}
    print(f"shut down cleanly: {codes}")
    return 0 if ok and all(c == 0 for c in codes.values()) else 1


async def _keep_running(
    settings: Settings, opts: DemoOptions, producer: Any, shop: Shop | None, services: list[Service], url: str
) -> None:
    """Keep every service up until Ctrl-C, sending a trickle of live synthetic events; fail if a service dies."""
    trickle = shop if opts.live_rate > 0 else None
    what = f", with {opts.live_rate:g} synthetic events/s" if trickle is not None else ""
    print(f"\neverything keeps running{what}; the dashboard is at {url} — Ctrl-C to stop")

    def check() -> None:
        for s in services:
            if not s.alive:
                raise RuntimeError(f"{s.name} exited:\n{s.tail()}")

    chunk = 0
    try:
        while True:
            check()
            if trickle is None:
                await asyncio.sleep(SERVICE_CHECK_S)
                continue
            chunk += 1
            checked = time.monotonic()
            for event in make_events(trickle, LIVE_CHUNK_EVENTS, seed=settings.retrieval.seed + chunk):
                await send_live(producer, settings, event)
                await asyncio.sleep(1.0 / opts.live_rate)
                if time.monotonic() - checked > SERVICE_CHECK_S:
                    check()
                    checked = time.monotonic()
    except asyncio.CancelledError:
        print("\nstopping")  # Ctrl-C (or SIGTERM) is the normal end of keep-running: stop the services and report


async def publish_catalogue(settings: Settings, producer: Any, shop: Shop, services: list[Service]) -> None:
    """Publish the shop's items and wait until the worker has indexed them all."""
    for item in shop.items:
        await _publish(producer, settings, "items", item.item_id, item.to_dict())
    await producer.flush()
    print(f"published {len(shop.items)} catalogue items; waiting until they are embedded and indexed…")
    await wait_for_services(
        lambda: _stats_at_least(settings, "items_indexed", len(shop.items)), STARTUP_TIMEOUT_S, "indexing", services
    )


async def _synthetic(
    settings: Settings, opts: DemoOptions, producer: Any, watcher: RecommendationWatcher, services: list[Service]
) -> tuple[Shop, dict[str, str], dict[str, list[str]], float]:
    """Catalogue, a steady phase (latency), then a burst; returns the shop, titles, favourites and the burst's
    events/s."""
    shop = make_shop(opts.items, opts.users, seed=settings.retrieval.seed, ts=time.time())
    await publish_catalogue(settings, producer, shop, services)
    events = make_events(shop, opts.events, seed=settings.retrieval.seed)
    n_steady = int(len(events) * LATENCY_SHARE)
    print(f"streaming {n_steady} events at {opts.rate:.0f}/s (latency), then {len(events) - n_steady} as a burst…")
    watcher.measure_latency = True
    interval = 1.0 / opts.rate
    t_next = time.perf_counter()
    for event in events[:n_steady]:
        await send_live(producer, settings, event)
        t_next += interval
        await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
    await producer.flush()
    await wait_for_services(
        lambda: _stats_at_least(settings, "events", n_steady), DRAIN_TIMEOUT_S, "latency phase", services
    )
    watcher.measure_latency = False
    t0 = time.perf_counter()
    for event in events[n_steady:]:
        await send_live(producer, settings, event)
    await producer.flush()
    await wait_for_services(
        lambda: _stats_at_least(settings, "events", len(events)), DRAIN_TIMEOUT_S, "the burst", services
    )
    burst = (len(events) - n_steady) / (time.perf_counter() - t0)
    return shop, {i.item_id: f"{i.title} [{i.category}]" for i in shop.items}, shop.favourites, burst


async def send_live(producer: Any, settings: Settings, event: Event) -> None:
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
        settings = pipeline_settings(settings, broker.url, workdir)
        print(f"local broker on {broker.url}")
        # Ctrl-C or SIGTERM before the end: the services are stopped already, the broker is stopped on the way out
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            return asyncio.run(_run(settings, opts, workdir))
    return INTERRUPTED
