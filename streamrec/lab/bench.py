"""``streamrec bench``: throughput, latency, encoder speed, item freshness and memory, in one reproducible run.

Everything runs on the local machine against the local broker with a fixed seed: a synthetic catalogue with text
and a skewed event stream (hot users and items, a long tail), plus the Taobao sample when it is present.
The recommender worker and the encoder run as separate processes, exactly as deployed; this process only
produces, watches and times. Figures go to a JSON file (and a short table on stdout).

* ``ceiling_events_per_s`` — a bare aiokafka consumer reading the same event backlog (the transport's limit);
* ``worker_events_per_s`` — the worker draining the pre-filled backlog, from its first batch until the broker
  holds the recommendation that reflects every user's last event (checked user by user);
* ``latency_ms_p50/p99`` — event published → recommendation for that user received, at a steady offered load,
  with ``latency_cpu_cores``: the CPU each process used meanwhile (worker, its core, broker, this load generator);
* ``encoder_items_per_s`` — the text encoder on catalogue texts; ``new_item_visible_ms_p99`` — an item
  upsert published → indexed by the worker (through the encoder process);
* ``withdrawn_absent_ms_p50/p99`` — a withdrawal of one of the most listed items published (through the encoder)
  → no list generated from then on holds it; ``withdrawn_refreshed_ms_p50/p99`` — the same withdrawal → a fresh
  list without it received for each user whose last list held it, with a trickle of live events meanwhile;
* ``rss_bytes_per_user`` — the worker's resident memory growth from catalogue-loaded to backlog-drained,
  per user with state; ``eval_events_per_s`` — the in-process prequential harness.

The catalogue for the throughput runs is embedded with the deterministic fallback vectors (category + id):
the worker's cost per event does not depend on where its vectors came from, and encoding 50,000 texts on
a CPU would take minutes of the run; the encoder is timed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamrec.encoding.threads import limit_threads
from streamrec.io.kafka import make_consumer, make_producer, partitions_of
from streamrec.io.recommendations import RecommendationWatcher
from streamrec.io.topics import apply_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.processes import CpuMeter, Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import make_events, make_shop
from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.settings import Settings

STARTUP_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = 900.0
SLOWEST_EVENTS_PER_S = 50.0
"""A drain slower than this is reported as a failure rather than waited for."""
SEND_CHUNK = 5_000
FETCH_MS = 100
LOAD_TICK_S = 0.01
"""The latency phase's load generator sends what is due every this long (at 500/s: 5 events per tick)."""
WARMUP_TEXTS = 64
WARMUP_ITEMS = 3
REFRESH_TIMEOUT_S = 60.0
"""How long the withdrawal phase waits for the last fresh list before it counts the rest as missing."""
TAOBAO_SAMPLE = "taobao-userbehavior-sample/UserBehavior_head.csv"


@dataclass(frozen=True)
class BenchOptions:
    items: int = 50_000
    users: int = 20_000
    events: int = 300_000
    latency_rate: float = 500.0
    latency_s: float = 20.0
    encoder_texts: int = 1_024
    encoder_processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Encoder processes timed together (one per core by default; ``streamrec encoder`` runs them as
    ``encoder_processes``)."""
    new_items: int = 100
    new_item_rate: float = 10.0
    withdrawals: int = 20
    """Most-listed items withdrawn one after another (``withdrawal_rate`` a second) to time withdrawals."""
    withdrawal_rate: float = 1.0
    withdrawal_events_per_s: float = 50.0
    """Live events sent meanwhile, so lists keep being published."""
    taobao: Path | None = None
    taobao_limit: int = 200_000
    eval_limit: int = 30_000


@dataclass
class BenchResult:
    machine: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    taobao: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.figures, "machine": self.machine, "options": self.options, "taobao": self.taobao}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import faiss
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "cuda": torch.cuda.is_available(),
        "broker": "local Tansu (memory storage) on the same machine",
    }


# --- producing and watching ---------------------------------------------------------------------------------
async def send_all(producer: Any, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> float:
    """Send keyed messages as fast as the producer takes them; returns messages/s (acknowledged)."""
    t0 = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    for key, value in messages:
        pending.append(await producer.send(topic, value, key=key))
        if len(pending) >= SEND_CHUNK:
            await asyncio.gather(*pending)
            pending.clear()
    await producer.flush()
    await asyncio.gather(*pending)
    return len(messages) / max(time.perf_counter() - t0, 1e-9)


def event_messages(events: Sequence[Event]) -> list[tuple[bytes, bytes]]:
    return [(e.user_id.encode(), dumps(e.to_dict())) for e in events]


def _embedding_messages(embeddings: Sequence[ItemEmbedding]) -> list[tuple[bytes, bytes]]:
    return [(e.item.item_id.encode(), dumps(e.to_dict())) for e in embeddings]


async def ceiling(settings: Settings, n: int) -> float:
    """A bare aiokafka consumer reading ``n`` event messages from the beginning: messages/s."""
    consumer = make_consumer(settings.kafka, fetch_max_wait_ms=FETCH_MS)
    await consumer.start()
    try:
        tps = await partitions_of(settings.kafka, consumer, settings.kafka.topic("events"))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        t0 = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=FETCH_MS, max_records=10_000)
            seen += sum(len(r) for r in batch.values())
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def _last_ts(events: Sequence[Event]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in events:
        out[e.user_id] = max(out.get(e.user_id, -np.inf), e.ts)
    return out


# --- phases -------------------------------------------------------------------------------------------------
async def drain_backlog(
    settings: Settings,
    embeddings: Sequence[ItemEmbedding],
    events: Sequence[Event],
    workdir: Path,
    name: str,
    keep_running: bool = False,
) -> tuple[dict[str, Any], Service, RecommendationWatcher]:
    """Publish a catalogue and an event backlog, measure the ceiling, then time a worker draining it."""
    await apply_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        embed_rate = await send_all(producer, settings.kafka.topic("item-embeddings"), _embedding_messages(embeddings))
        produce_rate = await send_all(producer, settings.kafka.topic("events"), event_messages(events))
    finally:
        await producer.stop()
    ceiling_rate = await ceiling(settings, len(events))
    print(f"[{name}] {len(embeddings):,} items, {len(events):,} events published; ceiling {ceiling_rate:,.0f}/s")
    worker = Service(f"worker-{name}", ["worker", "--loglevel", "warning"], settings, workdir).start()
    watcher = RecommendationWatcher(settings.kafka, keep_latest=keep_running)
    try:
        await wait_for_services(lambda: worker_stats(settings), STARTUP_TIMEOUT_S, "the worker", [worker])
        await watcher.start()
        last_ts = _last_ts(events)
        n = len(events)

        async def drained() -> dict[str, Any] | None:
            stats = await worker_stats(settings)
            if stats is None or stats["events"] + stats["duplicates_skipped"] + stats["dead_letters"] < n:
                return None
            return stats if watcher.missing(last_ts) == 0 else None

        timeout = max(DRAIN_TIMEOUT_S, n / SLOWEST_EVENTS_PER_S)
        stats = await wait_for_services(drained, timeout, f"the worker to drain {n:,} events", [worker])
    except BaseException:
        await watcher.stop()
        worker.stop()
        raise
    elapsed = watcher.last_record_ms / 1000.0 - stats["first_batch_at"]
    users = len(last_ts)
    figures = {
        "items": len(embeddings),
        "users": users,
        "events": len(events),
        "produce_events_per_s": produce_rate,
        "produce_embeddings_per_s": embed_rate,
        "ceiling_events_per_s": ceiling_rate,
        "worker_events_per_s": len(events) / max(elapsed, 1e-9),
        "worker_seconds": elapsed,
        "recommendations": stats["recommendations"],
        "batches": stats["batches"],
        "batch_ms_p50": stats["processing_ms_p50"],
        "batch_ms_p99": stats["processing_ms_p99"],
        "rss_bytes": stats["rss_bytes"],
        "rss_bytes_per_user": (stats["rss_bytes"] - stats["rss_ready_bytes"]) / max(users, 1),
        "rss_core_bytes_per_user": (stats["core_rss_bytes"] - stats["core_rss_ready_bytes"]) / max(users, 1),
        "profile_bytes_per_user": stats["profile_bytes"] / max(stats["profiles"], 1),
    }
    figures["worker_over_ceiling"] = figures["worker_events_per_s"] / max(ceiling_rate, 1e-9)
    print(f"[{name}] worker drained {len(events):,} events in {elapsed:.1f}s: {figures['worker_events_per_s']:,.0f}/s")
    if not keep_running:
        await watcher.stop()
        worker.stop()
    return figures, worker, watcher


async def steady_latency(
    settings: Settings,
    watcher: RecommendationWatcher,
    events: Sequence[Event],
    rate: float,
    services: Sequence[Service],
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """Send events at ``rate``/s stamped with the send time; latency = recommendation received − event ts.

    The load generator sends every :data:`LOAD_TICK_S` the events due by then, through a producer with the
    usual linger, as an upstream service's client would batch them: one produce request per event (linger 0)
    would cost it and the broker CPU taken from the worker (docs/performance.md). The CPU each process uses
    meanwhile is measured too: broker, load generator and worker may share the cores.
    """
    producer = make_producer(settings.kafka)
    await producer.start()
    stats = await worker_stats(settings) or {}
    worker_pid = services[0].process.pid if services and services[0].process else None
    meter = CpuMeter(
        {"worker": worker_pid, "core": stats.get("core_pid"), "broker": broker_pid, "bench": os.getpid()}
    ).start()
    watcher.latencies_ms.clear()
    watcher.measure_latency = True
    try:
        t0 = time.perf_counter()
        last: dict[str, float] = {}
        sent = 0
        while sent < len(events):
            due = min(len(events), int((time.perf_counter() - t0) * rate) + 1)
            ts = time.time()
            for e in events[sent:due]:
                value = e.to_dict() | {"ts": ts}
                await producer.send(settings.kafka.topic("events"), dumps(value), key=e.user_id.encode())
                last[e.user_id] = ts
            sent = due
            await asyncio.sleep(LOAD_TICK_S)
        await producer.flush()

        async def caught_up() -> bool:
            return watcher.missing(last) == 0

        await wait_for_services(caught_up, DRAIN_TIMEOUT_S, "the latency phase", services)
    finally:
        await producer.stop()
    watcher.measure_latency = False
    lat = np.array(watcher.latencies_ms)
    return {
        "latency_rate": rate,
        "latency_events": len(events),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "latency_cpu_cores": {name: round(cores, 3) for name, cores in meter.cores().items()},
    }


def _encode_timed(settings: Settings, texts: Sequence[str], ready: Any = None) -> tuple[float, str]:
    """Load the encoder, warm it up, wait for the others (``ready``: a barrier), then time one ``encode``."""
    from streamrec.encoding.encoder import TextEncoder

    limit_threads(settings.encoder.torch_threads)
    encoder = TextEncoder.from_settings(settings)
    encoder.encode(list(texts[:WARMUP_TEXTS]))
    if ready is not None:
        ready.wait()
    t0 = time.perf_counter()
    encoder.encode(list(texts))
    return time.perf_counter() - t0, str(encoder.device)


def _encode_shard(args: tuple[Settings, Sequence[str], Any]) -> tuple[float, str]:
    return _encode_timed(*args)


def encoder_throughput(settings: Settings, texts: Sequence[str], processes: int) -> dict[str, Any]:
    """Items/s of the text encoder on catalogue texts (after a warm-up batch): one process alone, then
    ``processes`` processes encoding a share each at once, as ``streamrec encoder`` runs them (CPU only)."""
    seconds, device = _encode_timed(settings, texts)
    out: dict[str, Any] = {
        "encoder_device": device,
        "encoder_texts": len(texts),
        "encoder_items_per_s_one_process": len(texts) / seconds,
    }
    if processes <= 1 or device.startswith("cuda"):
        return {**out, "encoder_items_per_s": len(texts) / seconds, "encoder_processes": 1}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        ready = manager.Barrier(processes)
        pool = ctx.Pool(processes)
        try:
            timed = pool.map(_encode_shard, [(settings, texts[i::processes], ready) for i in range(processes)])
        finally:
            pool.close()
            pool.join()
    slowest = max(seconds for seconds, _ in timed)
    return {**out, "encoder_items_per_s": len(texts) / slowest, "encoder_processes": processes}


async def new_items_visible(
    settings: Settings,
    items: Sequence[Item],
    rate: float,
    workdir: Path,
    services: Sequence[Service],
    then: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Publish item upserts through the encoder process at ``rate``/s; the worker reports when each is indexed.

    The first :data:`WARMUP_ITEMS` items warm the encoder up (its first batch pays for lazy initialisation)
    and are not counted. ``then`` runs afterwards, while the encoder still runs (the withdrawal phase).
    """
    encoder = Service("encoder", ["encoder"], settings, workdir).start()
    producer = make_producer(settings.kafka, linger_ms=0)
    await producer.start()

    async def encoder_ready() -> bool:
        return "encoder ready" in encoder.tail(200)

    async def indexed(n: int) -> bool:
        stats = await worker_stats(settings)
        return stats is not None and stats["items_live"] >= n

    try:
        await wait_for_services(encoder_ready, STARTUP_TIMEOUT_S, "the encoder to load its model", [*services, encoder])
        base = (await worker_stats(settings) or {}).get("items_live", 0)
        for i, item in enumerate(items):
            value = item.to_dict() | {"ts": time.time()}
            await producer.send_and_wait(settings.kafka.topic("items"), dumps(value), key=item.item_id.encode())
            if i < WARMUP_ITEMS:
                want = base + i + 1
                await wait_for_services(
                    lambda n=want: indexed(n), STARTUP_TIMEOUT_S, "a warm-up item", [*services, encoder]
                )
            else:
                await asyncio.sleep(1.0 / rate)
        await wait_for_services(
            lambda: indexed(base + len(items)), DRAIN_TIMEOUT_S, "the new items", [*services, encoder]
        )
        stats = await worker_stats(settings) or {}
        later = await then() if then is not None else {}
    finally:
        await producer.stop()
        encoder.stop()
    measured = len(items) - WARMUP_ITEMS
    lags = np.array(stats.get("item_visible_ms_recent", [])[-measured:], np.float64)
    return {
        "new_items": measured,
        "new_item_visible_ms_p50": float(np.percentile(lags, 50)),
        "new_item_visible_ms_p99": float(np.percentile(lags, 99)),
        **later,
    }


async def withdrawals_timed(
    settings: Settings,
    watcher: RecommendationWatcher,
    events: Sequence[Event],
    opts: BenchOptions,
    services: Sequence[Service],
) -> dict[str, Any]:
    """Withdraw the most-listed items one after another (through ``items`` and the encoder) under a trickle of live
    events; time when lists stop holding each one, and when each user whose last list held it gets a fresh list.

    "Absent" for an item is the later of the worker applying the withdrawal and the last list generated after the
    withdrawal that still held it; "refreshed" is per (item, user whose newest list held it when it was withdrawn):
    the first list received without the item.
    """
    counts: dict[str, int] = {}
    for rec in watcher.latest.values():
        for entry in rec["items"]:
            counts[entry["item_id"]] = counts.get(entry["item_id"], 0) + 1
    targets = sorted(counts, key=lambda i: (-counts[i], i))[: opts.withdrawals]
    withdrawn_at: dict[str, float] = {}
    holders: dict[str, set[str]] = {}
    last_held_s: dict[str, float] = {}
    refreshed_s: dict[tuple[str, str], float] = {}

    def on_list(rec: dict[str, Any], received: float) -> None:
        listed = {entry["item_id"] for entry in rec["items"]}
        for item, t0 in withdrawn_at.items():
            if rec["generated_at"] <= t0:
                continue
            if item in listed:
                last_held_s[item] = max(last_held_s.get(item, 0.0), rec["generated_at"] - t0)
            elif rec["user_id"] in holders[item] and (item, rec["user_id"]) not in refreshed_s:
                refreshed_s[(item, rec["user_id"])] = received - t0

    watcher.listener = on_list
    producer = make_producer(settings.kafka, linger_ms=0)
    await producer.start()
    sent = 0
    t_start = time.perf_counter()
    try:
        for n, item in enumerate(targets):
            holders[item] = {u for u, rec in watcher.latest.items() if item in {e["item_id"] for e in rec["items"]}}
            withdrawn_at[item] = t0 = time.time()
            value = dumps({"item_id": item, "available": False, "ts": t0})
            await producer.send_and_wait(settings.kafka.topic("items"), value, key=item.encode())
            while time.perf_counter() - t_start < (n + 1) / opts.withdrawal_rate:
                due = min(len(events), int((time.perf_counter() - t_start) * opts.withdrawal_events_per_s))
                for e in events[sent:due]:
                    value = dumps(e.to_dict() | {"ts": time.time()})
                    await producer.send(settings.kafka.topic("events"), value, key=e.user_id.encode())
                sent = max(sent, due)
                await asyncio.sleep(LOAD_TICK_S)
        wanted = sum(len(h) for h in holders.values())

        async def all_refreshed() -> bool:
            return len(refreshed_s) >= wanted

        with contextlib.suppress(TimeoutError):
            await wait_for_services(all_refreshed, REFRESH_TIMEOUT_S, "the refreshed lists", services)
    finally:
        await producer.stop()
        watcher.listener = None
    stats = await worker_stats(settings) or {}
    applied = np.array(stats.get("withdrawal_applied_ms_recent", [])[-len(targets) :], np.float64)
    absent = np.array(
        [max(a, last_held_s.get(i, 0.0) * 1000.0) for i, a in zip(targets, applied, strict=False)], np.float64
    )
    refreshed = np.array(sorted(refreshed_s.values()), np.float64) * 1000.0
    return {
        "withdrawn_items": len(targets),
        "withdrawn_holders": wanted,
        "withdrawn_absent_ms_p50": float(np.percentile(absent, 50)) if len(absent) else None,
        "withdrawn_absent_ms_p99": float(np.percentile(absent, 99)) if len(absent) else None,
        "withdrawn_refreshed_ms_p50": float(np.percentile(refreshed, 50)) if len(refreshed) else None,
        "withdrawn_refreshed_ms_p99": float(np.percentile(refreshed, 99)) if len(refreshed) else None,
        "withdrawn_refresh_missing": wanted - len(refreshed_s),
        "withdrawn_events_sent": sent,
    }


def eval_throughput(records: Sequence[Any], settings: Settings) -> dict[str, float]:
    """Events/s of the in-process prequential harness (streamrec alone, one process)."""
    from streamrec.lab.evaluation import evaluate

    report = evaluate(records, settings, ["streamrec"], progress=False)
    return {"eval_events_per_s": report.events_per_s, "eval_events": report.events}


def _taobao_records(path: Path, limit: int) -> list[Any]:
    from streamrec.io.logs import read_log

    return list(read_log(path, "taobao", limit=limit))


async def taobao_phase(settings: Settings, records: Sequence[Any], workdir: Path) -> dict[str, Any]:
    """The same drain measurement on the Taobao sample, as a second deployment (own topics and group)."""
    from streamrec.encoding.encoder import fallback_embeddings
    from streamrec.model.events import event_from_dict, item_from_dict

    settings = settings.replace(topic_prefix="taobao.", app_id="streamrec-taobao", web_port=free_port())
    items = [item_from_dict(r.value) for r in records if r.topic == "items"]
    events = [event_from_dict(r.value) for r in records if r.topic == "events"]
    figures, _, _ = await drain_backlog(settings, fallback_embeddings(items, settings), events, workdir, "taobao")
    return figures


async def _run(settings: Settings, opts: BenchOptions, workdir: Path, broker_pid: int | None = None) -> BenchResult:
    from streamrec.encoding.encoder import fallback_embeddings, item_text

    result = BenchResult(machine=machine(), options={k: str(v) for k, v in asdict(opts).items()})
    figures = result.figures
    t0 = time.perf_counter()
    now = time.time()
    shop = make_shop(opts.items, opts.users, seed=settings.retrieval.seed, ts=now - opts.events - 1.0)
    events = make_events(shop, opts.events, seed=settings.retrieval.seed, start_ts=now - opts.events)
    live = make_events(shop, int(opts.latency_rate * opts.latency_s), seed=settings.retrieval.seed + 1)
    print(
        f"synthetic shop: {len(shop.items):,} items, {len(shop.favourites):,} users, {len(events):,} events "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    texts = [item_text(i) for i in shop.items[: opts.encoder_texts]]
    figures.update(encoder_throughput(settings, texts, opts.encoder_processes))
    print(
        f"encoder: {figures['encoder_items_per_s']:,.0f} items/s on {figures['encoder_device']} with "
        f"{figures['encoder_processes']} process(es); one process alone "
        f"{figures['encoder_items_per_s_one_process']:,.0f}"
    )
    embeddings = fallback_embeddings(shop.items, settings)
    drained, worker, watcher = await drain_backlog(settings, embeddings, events, workdir, "synthetic", True)
    figures.update(drained)
    try:
        figures.update(await steady_latency(settings, watcher, live, opts.latency_rate, [worker], broker_pid))
        cpu = ", ".join(f"{name} {cores:.2f}" for name, cores in figures["latency_cpu_cores"].items())
        print(
            f"latency at {opts.latency_rate:,.0f}/s: p50 {figures['latency_ms_p50']:.1f} ms, "
            f"p99 {figures['latency_ms_p99']:.1f} ms; CPU cores used meanwhile: {cpu}"
        )
        fresh = [
            Item(f"new-{i}", item.title, 0.0, item.description, item.category, item.brand, item.price)
            for i, item in enumerate(shop.items[: opts.new_items + WARMUP_ITEMS])
        ]
        trickle = make_events(shop, int(opts.withdrawal_events_per_s * opts.withdrawals / opts.withdrawal_rate), 9)

        async def withdrawals() -> dict[str, Any]:
            return await withdrawals_timed(settings, watcher, trickle, opts, [worker])

        figures.update(await new_items_visible(settings, fresh, opts.new_item_rate, workdir, [worker], withdrawals))
        print(
            f"new item visible: p50 {figures['new_item_visible_ms_p50']:.0f} ms, "
            f"p99 {figures['new_item_visible_ms_p99']:.0f} ms"
        )
        print(
            f"withdrawn ({figures['withdrawn_items']} items in {figures['withdrawn_holders']} users' lists): absent "
            f"from new lists p50 {_fmt('{:.0f}', figures['withdrawn_absent_ms_p50'])} ms, p99 "
            f"{_fmt('{:.0f}', figures['withdrawn_absent_ms_p99'])} ms; last list refreshed p50 "
            f"{_fmt('{:.0f}', figures['withdrawn_refreshed_ms_p50'])} ms, p99 "
            f"{_fmt('{:.0f}', figures['withdrawn_refreshed_ms_p99'])} ms "
            f"({figures['withdrawn_refresh_missing']} missing)"
        )
    finally:
        await watcher.stop()
        worker.stop()
    eval_records: Sequence[Any]
    if opts.taobao is not None and opts.taobao.exists():
        records = _taobao_records(opts.taobao, opts.taobao_limit)
        result.taobao = await taobao_phase(settings, records, workdir)
        eval_records = _taobao_records(opts.taobao, opts.eval_limit)
        figures["eval_dataset"] = f"{opts.taobao.name} (first {opts.eval_limit:,} rows)"
    else:
        from streamrec.io.logs import Record

        # without their text, so the harness embeds them as the throughput runs did (fallback vectors)
        eval_items = [dataclasses.replace(e.item, title="", description=None) for e in embeddings]
        eval_records = [Record("items", i.item_id, i.to_dict(), i.ts) for i in eval_items] + [
            Record("events", e.user_id, e.to_dict(), e.ts) for e in events[: opts.eval_limit]
        ]
        figures["eval_dataset"] = "synthetic"
    figures.update(eval_throughput(eval_records, settings))
    print(f"prequential evaluation: {figures['eval_events_per_s']:,.0f} events/s")
    figures["bench_seconds"] = time.perf_counter() - t0
    return result


TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("ceiling_events_per_s", "raw aiokafka consume (events/s)", "{:,.0f}"),
    ("worker_events_per_s", "worker, backlog drained (events/s)", "{:,.0f}"),
    ("worker_over_ceiling", "worker / ceiling", "{:.3f}"),
    ("latency_ms_p50", "latency p50 (ms)", "{:.1f}"),
    ("latency_ms_p99", "latency p99 (ms)", "{:.1f}"),
    ("encoder_items_per_s", "encoder (items/s)", "{:,.0f}"),
    ("new_item_visible_ms_p99", "new item visible p99 (ms)", "{:,.0f}"),
    ("withdrawn_absent_ms_p50", "withdrawn → absent from new lists p50 (ms)", "{:,.0f}"),
    ("withdrawn_absent_ms_p99", "withdrawn → absent from new lists p99 (ms)", "{:,.0f}"),
    ("withdrawn_refreshed_ms_p50", "withdrawn → last list refreshed p50 (ms)", "{:,.0f}"),
    ("withdrawn_refreshed_ms_p99", "withdrawn → last list refreshed p99 (ms)", "{:,.0f}"),
    ("rss_bytes_per_user", "RSS growth per user (bytes)", "{:,.0f}"),
    ("rss_core_bytes_per_user", "  of which the core process", "{:,.0f}"),
    ("profile_bytes_per_user", "stored profile per user (bytes)", "{:,.0f}"),
    ("eval_events_per_s", "prequential eval (events/s)", "{:,.0f}"),
)


def format_table(result: BenchResult) -> str:
    lines = [f"{'figure':<44} {'synthetic':>12} {'taobao':>12}"]
    for key, label, fmt in TABLE_ROWS:
        syn = result.figures.get(key)
        tb = (result.taobao or {}).get(key)
        lines.append(f"{label:<44} {_fmt(fmt, syn):>12} {_fmt(fmt, tb):>12}")
    return "\n".join(lines)


def run_bench(settings: Settings, opts: BenchOptions, json_out: Path | None = None) -> BenchResult:
    """Start a local broker, run every phase, print the table and write the JSON."""
    limit_threads(
        settings.encoder.torch_threads
    )  # as every worker does: one intra-op thread per process is fastest here
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = settings.replace(broker=broker.url, web_port=free_port(), data_dir=str(workdir / "data"))
        print(f"local broker on {broker.url}; logs in {workdir}")
        result = asyncio.run(_run(settings, opts, workdir, broker.process.pid if broker.process else None))
    print(format_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
        print(f"figures written to {json_out}")
    return result


def _fmt(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)
