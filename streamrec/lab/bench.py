"""``streamrec bench``: the worker against the limits that matter, as ratios, and the absolute figures, in one run.

Everything runs on the local machine against the local broker with a fixed seed: a synthetic catalogue with text
and a skewed event stream (hot users and items, a long tail), plus the Taobao sample when it is present.
The recommender worker, its Faust floor and the encoder run as separate processes, as deployed; this process
only produces, watches and times. Figures go to a JSON file and are printed, the ratios first.

Ratios (measured in the same run, so comparable across machines; :data:`TARGETS`):

* ``worker_over_floor`` — ``worker_events_per_s`` / ``faust_floor_events_per_s``;
* ``latency_over_transport_p99`` — ``latency_ms_p99`` / ``transport_latency_ms_p99``;
* ``rss_bytes_per_user`` — the median of ``rss_bytes_per_user_windows``.

Absolute figures (of this machine only; ``machine`` says which, ISA flags included):

* ``ceiling_events_per_s`` — a bare aiokafka consumer reading the same event backlog;
* ``faust_floor_events_per_s`` — the worker's own Faust app draining the same backlog with an agent that decodes
  each event and publishes a real-sized profile and list per user of each batch, no recommender work
  (:mod:`streamrec.lab.floor`);
* ``worker_events_per_s`` — the worker draining the pre-filled backlog, from its first batch until the broker
  holds the recommendation that reflects every user's last event (checked user by user);
* ``transport_latency_ms_p50/p99`` — raw aiokafka, produce → consume through the same broker with the worker's
  fetch wait, at the latency phase's offered rate and load generator;
* ``latency_ms_p50/p99`` — event published → recommendation for that user received, at that steady load, with
  ``latency_cpu_cores``: the CPU each process used meanwhile (worker, its core, broker, this load generator),
  and ``latency_ms_max_by_second``: the slowest latency per second of sending (peaks: stalls; a plateau: queueing);
  ``latency_bench_gc_pause_ms_max``: the longest garbage-collection pause of this (measuring) process meanwhile;
* ``rss_bytes_per_user_windows`` — the worker's resident memory growth per new user in each of three growth
  windows: the backlog is three equal cohorts of events, each from its own fresh copy of the shop's users, and
  a window is the drain of one cohort; read as each batch left the worker (``rss_settled_bytes``: its
  temporaries freed, in step with the counts of events and users), not mid-batch;
* ``encoder_items_per_s`` — the text encoder on catalogue texts, on ``encoder_path`` (``cpu-bf16`` where the CPU
  has native bf16 and it agrees with fp32, else ``cpu-fp32``); ``new_item_visible_ms_p99`` — an item upsert
  published → indexed by the worker (through the encoder process); ``eval_events_per_s`` — the in-process
  prequential harness;
* ``withdrawn_absent_ms_p50/p99`` — a withdrawal of one of the most listed items published (through the encoder)
  → no list generated from then on holds it; ``withdrawn_refreshed_ms_p50/p99`` — the same withdrawal → a fresh
  list without it received for each user whose last list held it, with a trickle of live events meanwhile.

The catalogue for the throughput runs is embedded with the deterministic fallback vectors (category + id):
the worker's cost per event does not depend on where its vectors came from, and encoding 50,000 texts on
a CPU would take minutes of the run; the encoder is timed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import multiprocessing
import os
import platform
import statistics
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
from streamrec.io.recommendations import WATCH_MAX_RECORDS, WATCH_POLL_MS, RecommendationWatcher
from streamrec.io.topics import apply_topics, load_topics
from streamrec.lab.broker import LocalBroker, free_port
from streamrec.lab.floor import create_floor_topics, run_floor
from streamrec.lab.processes import CpuMeter, Service, wait_for_services, worker_stats
from streamrec.lab.synthetic import Shop, make_events, make_shop
from streamrec.model.events import Event, Item, ItemEmbedding, dumps
from streamrec.settings import Settings

STARTUP_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = 900.0
SLOWEST_EVENTS_PER_S = 50.0
"""A drain slower than this is reported as a failure rather than waited for."""
SEND_CHUNK = 5_000
FETCH_MS = 100
DRAIN_POLL_S = 1.0
"""How often a drain is checked on (``/stats``): each request costs the worker's loop time that grows with its
users (``stats_request_ms``), so not more often than the memory windows need."""
LOAD_TICK_S = 0.01
"""The latency phase's load generator sends what is due every this long (at 500/s: 5 events per tick)."""
WARMUP_TEXTS = 64
WARMUP_ITEMS = 3
REFRESH_TIMEOUT_S = 60.0
"""How long the withdrawal phase waits for the last fresh list before it counts the rest as missing."""
TAOBAO_SAMPLE = "taobao-userbehavior-sample/UserBehavior_head.csv"
COHORT_SEED_STEP = 1_000
"""Cohort ``k`` of the backlog draws its events with seed + k × this (the latency phase's events use seed + 1)."""
TRANSPORT_TOPIC = "bench-transport"
"""The transport phase's topic (partitioned like ``events``)."""
FLOOR_APP_ID = "streamrec-floor"
ISA_FLAGS: dict[str, str] = {
    "avx2": "avx2",
    "avx512": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "amx": "amx_tile",
    "amx_bf16": "amx_bf16",
}
"""CPU features that change the figures (vector width, bf16 arithmetic), as reported → the ``/proc/cpuinfo`` flag
that has it: reported so that figures from different machines are never compared."""
CPU_INFO = Path("/proc/cpuinfo")
TARGETS: dict[str, tuple[str, float]] = {
    "worker_over_floor": (">=", 0.5),
    "latency_over_transport_p99": ("<=", 3.0),
    "rss_bytes_per_user": ("<=", 2_000.0),
}
"""The targets, as ratios (or per-user bytes) measured in one run: comparable across machines."""


@dataclass(frozen=True)
class BenchOptions:
    items: int = 50_000
    users: int = 20_000
    """Users of the synthetic shop: each growth window's cohort is a fresh copy of them."""
    events: int = 150_000
    windows: int = 3
    """Growth windows (and cohorts of the backlog) that ``rss_bytes_per_user`` is the median of."""
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
    latency_only: bool = False
    """Only what ``latency_over_transport_p99`` needs: the backlog drained (the worker warmed up), the transport and
    the latency phase; no encoder, floor, new items, withdrawals, Taobao or evaluation."""

    @classmethod
    def quick(cls, taobao: Path | None = None) -> BenchOptions:
        """A CI-sized run (about two minutes here): every figure, from small inputs."""
        return cls(
            items=2_000,
            users=300,
            events=6_000,
            latency_s=4.0,
            encoder_texts=64,
            new_items=5,
            new_item_rate=20.0,
            withdrawals=3,
            withdrawal_rate=2.0,
            withdrawal_events_per_s=40.0,
            taobao=taobao,
            taobao_limit=3_000,
            eval_limit=1_000,
        )


@dataclass
class BenchResult:
    machine: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    taobao: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.figures,
            "targets": targets(self.figures),
            "machine": self.machine,
            "options": self.options,
            "taobao": self.taobao,
        }


def targets(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of :data:`TARGETS`: its bound, today's value and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for key, (op, bound) in TARGETS.items():
        value = figures.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out


def cpu_description(path: Path = CPU_INFO) -> tuple[str, dict[str, bool]]:
    """The CPU model (first ``model name`` of ``/proc/cpuinfo``, else the platform's word) and which of
    :data:`ISA_FLAGS` it has."""
    from streamrec.encoding.encoder import cpu_flags

    model = platform.processor() or platform.machine() or "unknown"
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = cpu_flags(path)
    return model, {name: flag in flags for name, flag in ISA_FLAGS.items()}


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, the ISA flags that matter (:data:`ISA_FLAGS`), libraries."""
    import faiss
    import torch

    cpu_model, isa = cpu_description()
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cpu_model": cpu_model,
        "isa": isa,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
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


def cohort_events(shop: Shop, n_events: int, cohorts: int, seed: int, start_ts: float) -> list[Event]:
    """A backlog of ``cohorts`` consecutive, equal streams of ``n_events`` in all, each from its own fresh copy of
    the shop's users (cohort 0 the shop's own ids, cohort ``k`` the ids suffixed ``~k``) with its own draws.

    Each cohort brings as many new users and events as the others, so the worker's memory growth per new user
    can be measured once per cohort (a growth window) and the windows compared. A single stream would not do:
    with skewed users, nearly all of them show up in its first third.
    """
    out: list[Event] = []
    per = n_events // cohorts
    for k in range(cohorts):
        users = shop.favourites if k == 0 else {f"{u}~{k}": fav for u, fav in shop.favourites.items()}
        n = n_events - per * (cohorts - 1) if k == cohorts - 1 else per
        out += make_events(Shop(shop.items, users), n, seed=seed + k * COHORT_SEED_STEP, start_ts=start_ts + len(out))
    return out


@dataclass(frozen=True)
class MemorySample:
    """One ``/stats`` reading during a drain: events applied, users with a profile, resident memory."""

    events: int
    profiles: int
    rss_bytes: int
    core_rss_bytes: int


def growth_windows(
    ready: MemorySample, samples: Sequence[MemorySample], final: MemorySample, n_events: int, windows: int
) -> tuple[list[float], list[float]]:
    """Resident memory growth per new user (whole worker, core process) in ``windows`` consecutive windows.

    Window ``k`` runs from the first reading with at least ``k/windows`` of the events applied to the first with
    ``(k+1)/windows`` (the last one ends at ``final``; the first starts at ``ready``, the catalogue-loaded baseline).
    """
    marks = [ready]
    for k in range(1, windows):
        due = n_events * k / windows
        marks.append(next((s for s in samples if s.events >= due), final))
    marks.append(final)
    total: list[float] = []
    core: list[float] = []
    for a, b in itertools.pairwise(marks):
        users = max(b.profiles - a.profiles, 1)
        total.append((b.rss_bytes - a.rss_bytes) / users)
        core.append((b.core_rss_bytes - a.core_rss_bytes) / users)
    return total, core


# --- phases -------------------------------------------------------------------------------------------------
async def publish_backlog(
    settings: Settings, embeddings: Sequence[ItemEmbedding], events: Sequence[Event], name: str
) -> dict[str, Any]:
    """Publish a catalogue and an event backlog, then measure the ceiling: a bare consumer reading the backlog."""
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
    return {
        "items": len(embeddings),
        "events": len(events),
        "produce_events_per_s": produce_rate,
        "produce_embeddings_per_s": embed_rate,
        "ceiling_events_per_s": ceiling_rate,
    }


async def drain_backlog(
    settings: Settings,
    events: Sequence[Event],
    workdir: Path,
    name: str,
    windows: int = 1,
    keep_running: bool = False,
    program: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Service, RecommendationWatcher]:
    """Time a worker draining the published backlog; its memory growth per new user over ``windows`` windows.

    ``program``: what runs ``worker`` instead of ``python -m streamrec`` (a profiling wrapper)."""
    worker = Service(f"worker-{name}", ["worker", "--loglevel", "warning"], settings, workdir, program).start()
    watcher = RecommendationWatcher(settings.kafka, keep_latest=keep_running)
    samples: list[MemorySample] = []
    try:
        await wait_for_services(lambda: worker_stats(settings), STARTUP_TIMEOUT_S, "the worker", [worker])
        await watcher.start()
        last_ts = _last_ts(events)
        n = len(events)

        async def drained() -> dict[str, Any] | None:
            stats = await worker_stats(settings)
            if stats is None:
                return None
            samples.append(memory_sample(stats))
            if stats["events"] + stats["duplicates_skipped"] + stats["dead_letters"] < n:
                return None
            return stats if watcher.missing(last_ts) == 0 else None

        timeout = max(DRAIN_TIMEOUT_S, n / SLOWEST_EVENTS_PER_S)
        stats = await wait_for_services(drained, timeout, f"the worker to drain {n:,} events", [worker], DRAIN_POLL_S)
        t0 = time.perf_counter()
        await worker_stats(settings)
        stats_request_ms = (time.perf_counter() - t0) * 1000.0
    except BaseException:
        await watcher.stop()
        worker.stop()
        raise
    elapsed = watcher.last_record_ms / 1000.0 - stats["first_batch_at"]
    spent = {k: stats["cpu_seconds"][k] - t0 for k, t0 in stats["cpu_seconds_at_first_batch"].items()}
    """What each of the worker's processes spent from its first batch on, by its own account."""
    users = len(last_ts)
    ready = MemorySample(0, 0, stats["rss_ready_bytes"], stats["core_rss_ready_bytes"])
    per_user, core_per_user = growth_windows(ready, samples, memory_sample(stats), n, windows)
    figures = {
        "users": users,
        "worker_events_per_s": n / max(elapsed, 1e-9),
        "worker_seconds": elapsed,
        "drain_cpu_cores": {name: round(s / max(elapsed, 1e-9), 3) for name, s in spent.items()},
        "drain_cpu_us_per_event": {name: round(s / max(stats["events"], 1) * 1e6, 1) for name, s in spent.items()},
        "recommendations": stats["recommendations"],
        "batches": stats["batches"],
        "batch_ms_p50": stats["processing_ms_p50"],
        "batch_ms_p99": stats["processing_ms_p99"],
        "rss_bytes": stats["rss_bytes"],
        "rss_bytes_per_user_windows": per_user,
        "rss_bytes_per_user": statistics.median(per_user),
        "rss_bytes_per_user_total": (stats["rss_bytes"] - stats["rss_ready_bytes"]) / max(users, 1),
        "rss_core_bytes_per_user_windows": core_per_user,
        "rss_core_bytes_per_user": statistics.median(core_per_user),
        "profile_bytes_per_user": stats["profile_bytes"] / max(stats["profiles"], 1),
        "stats_request_ms": stats_request_ms,
    }
    cpu = ", ".join(
        f"{k} {c:.2f} cores, {figures['drain_cpu_us_per_event'][k]:,.0f} µs/event"
        for k, c in figures["drain_cpu_cores"].items()
    )
    print(f"[{name}] worker drained {n:,} events in {elapsed:.1f}s: {figures['worker_events_per_s']:,.0f}/s ({cpu})")
    if not keep_running:
        await watcher.stop()
        worker.stop()
    return figures, worker, watcher


def memory_sample(stats: dict[str, Any]) -> MemorySample:
    """The worker's memory as its last batch left it (no batch's temporaries in it), in step with its counts."""
    read = "rss_settled_bytes", "core_rss_settled_bytes"
    if not stats["rss_settled_bytes"]:  # no batch yet
        read = "rss_bytes", "core_rss_bytes"
    return MemorySample(int(stats["events"]), int(stats["profiles"]), int(stats[read[0]]), int(stats[read[1]]))


async def offer_load(producer: Any, topic: str, events: Sequence[Event], rate: float) -> dict[str, float]:
    """Send ``events`` at ``rate``/s, each stamped with its send time; returns each user's last stamp.

    Every :data:`LOAD_TICK_S` the events due by then go out through a producer with the usual linger, as an
    upstream service's client would batch them: one produce request per event (linger 0) would cost this generator
    and the broker CPU taken from the worker (docs/performance.md).
    """
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    sent = 0
    while sent < len(events):
        due = min(len(events), int((time.perf_counter() - t0) * rate) + 1)
        ts = time.time()
        for e in events[sent:due]:
            await producer.send(topic, dumps(e.to_dict() | {"ts": ts}), key=e.user_id.encode())
            last[e.user_id] = ts
        sent = due
        await asyncio.sleep(LOAD_TICK_S)
    await producer.flush()
    return last


def freeze_own_heap() -> None:
    """Take this process's heap (the shop, the backlog, the watcher's state) out of the garbage collector's scans
    before a timed latency phase: a full collection of it paused the load generator and the watcher for 0.3–0.5 s,
    which the latency figures would have charged to the worker (docs/performance.md)."""
    gc.collect()
    gc.freeze()


class GcPauses:
    """The longest garbage-collection pause of this process while the block runs (ms): what a latency measured
    here may owe to the measuring process itself."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self._start = 0.0

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.longest_ms = max(self.longest_ms, (time.perf_counter() - self._start) * 1000.0)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._note)


async def steady_latency(
    settings: Settings,
    watcher: RecommendationWatcher,
    events: Sequence[Event],
    rate: float,
    services: Sequence[Service],
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """Send events at ``rate``/s (:func:`offer_load`); latency = recommendation received − event's send time.

    The CPU each process uses meanwhile is measured too: broker, load generator and worker may share the cores.
    """
    producer = make_producer(settings.kafka)
    await producer.start()
    stats = await worker_stats(settings) or {}
    worker_pid = services[0].process.pid if services and services[0].process else None
    meter = CpuMeter(
        {"worker": worker_pid, "core": stats.get("core_pid"), "broker": broker_pid, "bench": os.getpid()}
    ).start()
    watcher.latencies_ms.clear()
    watcher.latency_sent.clear()
    watcher.measure_latency = True
    try:
        last = await offer_load(producer, settings.kafka.topic("events"), events, rate)

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
        "latency_ms_max_by_second": max_by_second(watcher.latency_sent, watcher.latencies_ms),
    }


def max_by_second(sent: Sequence[float], latencies_ms: Sequence[float]) -> list[float]:
    """The slowest latency of the events sent in each second of a phase, in order: a tail made of a few
    stalls shows as isolated peaks, one of steady queueing as a plateau.

    >>> max_by_second([10.2, 10.9, 11.5, 13.5], [5.0, 7.0, 3.0, 9.0])
    [7.0, 3.0, 0.0, 9.0]
    """
    if not len(sent):
        return []
    seconds = (np.asarray(sent) - min(sent)).astype(np.int64)
    out = np.zeros(int(seconds.max()) + 1)
    np.maximum.at(out, seconds, np.asarray(latencies_ms, np.float64))
    return [round(float(v), 1) for v in out]


async def transport_latency(
    settings: Settings, events: Sequence[Event], rate: float, broker_pid: int | None = None
) -> dict[str, Any]:
    """What the transport alone costs: the latency phase's events and load generator (:func:`offer_load`) into a
    topic partitioned like ``events``, read back by a bare aiokafka consumer with the worker's fetch wait
    (``fetch_max_wait_ms``) polling as the bench's watcher does; latency = received − send time."""
    topic = settings.kafka.topic(TRANSPORT_TOPIC)
    like_events = dataclasses.replace(load_topics()["events"], name=TRANSPORT_TOPIC)
    await apply_topics(settings.kafka, {TRANSPORT_TOPIC: like_events})
    consumer = make_consumer(settings.kafka, fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms)
    producer = make_producer(settings.kafka)
    await consumer.start()
    await producer.start()
    latencies: list[float] = []
    try:
        tps = await partitions_of(settings.kafka, consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def receive() -> None:
            while len(latencies) < len(events):
                batch = await consumer.getmany(timeout_ms=WATCH_POLL_MS, max_records=WATCH_MAX_RECORDS)
                now = time.time()
                latencies.extend((now - orjson.loads(r.value)["ts"]) * 1000.0 for rs in batch.values() for r in rs)

        meter = CpuMeter({"broker": broker_pid, "bench": os.getpid()}).start()
        reader = asyncio.create_task(receive())
        try:
            await offer_load(producer, topic, events, rate)
            await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT_S)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await producer.stop()
        await consumer.stop()
    lat = np.array(latencies)
    return {
        "transport_events": len(lat),
        "transport_fetch_max_wait_ms": settings.kafka.fetch_max_wait_ms,
        "transport_latency_ms_p50": float(np.percentile(lat, 50)),
        "transport_latency_ms_p99": float(np.percentile(lat, 99)),
        "transport_cpu_cores": {name: round(cores, 3) for name, cores in meter.cores().items()},
    }


@dataclass(frozen=True)
class EncodeTiming:
    seconds: float
    path: str
    """:attr:`TextEncoder.path <streamrec.encoding.encoder.TextEncoder.path>`: which arithmetic ran."""
    reason: str
    bf16_min_cosine: float | None


def _encode_timed(settings: Settings, texts: Sequence[str], ready: Any = None) -> EncodeTiming:
    """Load the encoder, warm it up, wait for the others (``ready``: a barrier), then time one ``encode``."""
    from streamrec.encoding.encoder import TextEncoder

    limit_threads(settings.encoder.torch_threads)
    encoder = TextEncoder.from_settings(settings)
    encoder.encode(list(texts[:WARMUP_TEXTS]))
    if ready is not None:
        ready.wait()
    t0 = time.perf_counter()
    encoder.encode(list(texts))
    return EncodeTiming(time.perf_counter() - t0, encoder.path, encoder.precision_reason, encoder.bf16_min_cosine)


def _encode_shard(args: tuple[Settings, Sequence[str], Any]) -> EncodeTiming:
    return _encode_timed(*args)


def encoder_throughput(settings: Settings, texts: Sequence[str], processes: int) -> dict[str, Any]:
    """Items/s of the text encoder on catalogue texts (after a warm-up batch): one process alone, then
    ``processes`` processes encoding a share each at once, as ``streamrec encoder`` runs them (CPU only)."""
    alone = _encode_timed(settings, texts)
    seconds, device = alone.seconds, alone.path.split("-")[0]
    out: dict[str, Any] = {
        "encoder_device": device,
        "encoder_path": alone.path,
        "encoder_path_reason": alone.reason,
        "encoder_bf16_min_cosine": alone.bf16_min_cosine,
        "encoder_texts": len(texts),
        "encoder_items_per_s_one_process": len(texts) / seconds,
    }
    if processes <= 1 or device == "cuda":
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
    slowest = max(t.seconds for t in timed)
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
    the first list received without the item. A user's newest list then is the last one generated before the
    withdrawal, counting one still in flight at that moment (with live traffic the watcher's view lags)."""
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
            if rec["generated_at"] <= t0:  # made before the withdrawal but received after: the user's newest list
                # then, so whether they held the item is decided by it (a user's lists arrive in order)
                (holders[item].add if item in listed else holders[item].discard)(rec["user_id"])
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

        async def all_refreshed() -> bool:
            return len(refreshed_s) >= sum(len(h) for h in holders.values())

        with contextlib.suppress(TimeoutError):
            await wait_for_services(all_refreshed, REFRESH_TIMEOUT_S, "the refreshed lists", services)
    finally:
        await producer.stop()
        watcher.listener = None
    pairs = {(item, user) for item, users in holders.items() for user in users}
    stats = await worker_stats(settings) or {}
    applied = np.array(stats.get("withdrawal_applied_ms_recent", [])[-len(targets) :], np.float64)
    absent = np.array(
        [max(a, last_held_s.get(i, 0.0) * 1000.0) for i, a in zip(targets, applied, strict=False)], np.float64
    )
    refreshed = np.array(sorted(t for pair, t in refreshed_s.items() if pair in pairs), np.float64) * 1000.0
    return {
        "withdrawn_items": len(targets),
        "withdrawn_holders": len(pairs),
        "withdrawn_absent_ms_p50": float(np.percentile(absent, 50)) if len(absent) else None,
        "withdrawn_absent_ms_p99": float(np.percentile(absent, 99)) if len(absent) else None,
        "withdrawn_refreshed_ms_p50": float(np.percentile(refreshed, 50)) if len(refreshed) else None,
        "withdrawn_refreshed_ms_p99": float(np.percentile(refreshed, 99)) if len(refreshed) else None,
        "withdrawn_refresh_missing": len(pairs - refreshed_s.keys()),
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
    figures = await publish_backlog(settings, fallback_embeddings(items, settings), events, "taobao")
    drained, _, _ = await drain_backlog(settings, events, workdir, "taobao")
    return figures | drained | _worker_ratios(figures | drained)


async def faust_floor(
    settings: Settings, shop: Shop, events: Sequence[Event], workdir: Path, broker_pid: int | None
) -> dict[str, Any]:
    """The worker's Faust app draining the published backlog, publishing real-sized outputs, no recommender work
    (:mod:`streamrec.lab.floor`), in its own consumer group."""
    floor_settings = settings.replace(app_id=FLOOR_APP_ID, web_port=free_port())
    await create_floor_topics(floor_settings)
    items = [i.item_id for i in shop.items]
    users = sorted({e.user_id for e in events})
    floor = await asyncio.to_thread(
        run_floor, floor_settings, "publish", len(events), items, users, workdir, broker_pid
    )
    return {
        "faust_floor_events_per_s": floor["events_per_s"],
        "faust_floor_seconds": floor["seconds"],
        "faust_floor_cpu_cores": {"faust": round(floor["faust_process_cores"], 3), "broker": floor["broker_cores"]},
        "faust_floor_profile_bytes": floor["profile_bytes"],
        "faust_floor_list_bytes": floor["list_bytes"],
    }


def _worker_ratios(figures: dict[str, Any]) -> dict[str, float]:
    out = {"worker_over_ceiling": figures["worker_events_per_s"] / max(figures["ceiling_events_per_s"], 1e-9)}
    if "faust_floor_events_per_s" in figures:
        out["worker_over_floor"] = figures["worker_events_per_s"] / max(figures["faust_floor_events_per_s"], 1e-9)
    if "transport_latency_ms_p99" in figures and "latency_ms_p99" in figures:
        out["latency_over_transport_p99"] = figures["latency_ms_p99"] / max(figures["transport_latency_ms_p99"], 1e-9)
    return out


async def _run(settings: Settings, opts: BenchOptions, workdir: Path, broker_pid: int | None = None) -> BenchResult:
    from streamrec.encoding.encoder import fallback_embeddings, item_text

    result = BenchResult(machine=machine(), options={k: str(v) for k, v in asdict(opts).items()})
    figures = result.figures
    t0 = time.perf_counter()
    now = time.time()
    seed = settings.retrieval.seed
    shop = make_shop(opts.items, opts.users, seed=seed, ts=now - opts.events - 1.0)
    events = cohort_events(shop, opts.events, opts.windows, seed, start_ts=now - opts.events)
    live = make_events(shop, int(opts.latency_rate * opts.latency_s), seed=seed + 1)
    print(
        f"synthetic shop: {len(shop.items):,} items, {opts.windows} cohorts of {len(shop.favourites):,} users, "
        f"{len(events):,} events ({time.perf_counter() - t0:.1f}s)"
    )
    if not opts.latency_only:
        texts = [item_text(i) for i in shop.items[: opts.encoder_texts]]
        figures.update(encoder_throughput(settings, texts, opts.encoder_processes))
        print(
            f"encoder ({figures['encoder_path']}: {figures['encoder_path_reason']}): "
            f"{figures['encoder_items_per_s']:,.0f} items/s with {figures['encoder_processes']} process(es); "
            f"one process alone {figures['encoder_items_per_s_one_process']:,.0f}"
        )
    embeddings = fallback_embeddings(shop.items, settings)
    figures.update(await publish_backlog(settings, embeddings, events, "synthetic"))
    if not opts.latency_only:
        figures.update(await faust_floor(settings, shop, events, workdir, broker_pid))
        print(f"[synthetic] Faust floor: {figures['faust_floor_events_per_s']:,.0f} events/s")
    freeze_own_heap()
    figures.update(await transport_latency(settings, live, opts.latency_rate, broker_pid))
    print(
        f"transport at {opts.latency_rate:,.0f}/s: p50 {figures['transport_latency_ms_p50']:.1f} ms, "
        f"p99 {figures['transport_latency_ms_p99']:.1f} ms"
    )
    drained, worker, watcher = await drain_backlog(settings, events, workdir, "synthetic", opts.windows, True)
    figures.update(drained)
    try:
        freeze_own_heap()
        with GcPauses() as pauses:
            figures.update(await steady_latency(settings, watcher, live, opts.latency_rate, [worker], broker_pid))
        figures["latency_bench_gc_pause_ms_max"] = pauses.longest_ms
        cpu = ", ".join(f"{name} {cores:.2f}" for name, cores in figures["latency_cpu_cores"].items())
        print(
            f"latency at {opts.latency_rate:,.0f}/s: p50 {figures['latency_ms_p50']:.1f} ms, "
            f"p99 {figures['latency_ms_p99']:.1f} ms; CPU cores used meanwhile: {cpu}"
        )
        if not opts.latency_only:
            figures.update(await _freshness(settings, shop, opts, workdir, watcher, worker))
    finally:
        await watcher.stop()
        worker.stop()
    figures.update(_worker_ratios(figures))
    if not opts.latency_only:
        figures.update(await _taobao_and_eval(result, settings, opts, embeddings, events, workdir))
    figures["bench_seconds"] = time.perf_counter() - t0
    return result


async def _freshness(
    settings: Settings, shop: Shop, opts: BenchOptions, workdir: Path, watcher: RecommendationWatcher, worker: Service
) -> dict[str, Any]:
    """New items visible and withdrawals, on the running worker."""
    figures: dict[str, Any] = {}
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
    return figures


async def _taobao_and_eval(
    result: BenchResult,
    settings: Settings,
    opts: BenchOptions,
    embeddings: Sequence[ItemEmbedding],
    events: Sequence[Event],
    workdir: Path,
) -> dict[str, Any]:
    """The Taobao drain (into ``result.taobao``) and the prequential evaluation's speed."""
    figures: dict[str, Any] = {}
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
    return figures


RATIO_ROWS: tuple[tuple[str, str, str], ...] = (
    ("worker_over_floor", "worker / Faust floor (events/s)", "{:.3f}"),
    ("latency_over_transport_p99", "latency p99 / transport p99", "{:.2f}"),
    ("rss_bytes_per_user", "RSS growth per user, bytes (median)", "{:,.0f}"),
)
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("faust_floor_events_per_s", "Faust floor, backlog drained (events/s)", "{:,.0f}"),
    ("worker_events_per_s", "worker, backlog drained (events/s)", "{:,.0f}"),
    ("ceiling_events_per_s", "raw aiokafka consume (events/s)", "{:,.0f}"),
    ("worker_over_ceiling", "worker / raw consume", "{:.3f}"),
    ("transport_latency_ms_p50", "transport latency p50 (ms)", "{:.1f}"),
    ("transport_latency_ms_p99", "transport latency p99 (ms)", "{:.1f}"),
    ("latency_ms_p50", "latency p50 (ms)", "{:.1f}"),
    ("latency_ms_p99", "latency p99 (ms)", "{:.1f}"),
    ("encoder_items_per_s", "encoder (items/s)", "{:,.0f}"),
    ("new_item_visible_ms_p99", "new item visible p99 (ms)", "{:,.0f}"),
    ("withdrawn_absent_ms_p50", "withdrawn → absent from new lists p50 (ms)", "{:,.0f}"),
    ("withdrawn_absent_ms_p99", "withdrawn → absent from new lists p99 (ms)", "{:,.0f}"),
    ("withdrawn_refreshed_ms_p50", "withdrawn → last list refreshed p50 (ms)", "{:,.0f}"),
    ("withdrawn_refreshed_ms_p99", "withdrawn → last list refreshed p99 (ms)", "{:,.0f}"),
    ("rss_bytes_per_user_total", "RSS growth per user, whole drain (B)", "{:,.0f}"),
    ("rss_core_bytes_per_user", "  of which the core process (median)", "{:,.0f}"),
    ("profile_bytes_per_user", "stored profile per user (bytes)", "{:,.0f}"),
    ("eval_events_per_s", "prequential eval (events/s)", "{:,.0f}"),
)


def format_table(result: BenchResult) -> str:
    """The ratios and their targets first, then the absolute figures of this machine."""
    figures, taobao, width = result.figures, result.taobao or {}, 40
    goals = targets(figures)
    lines = [f"{'ratio (comparable across machines)':<{width}} {'synthetic':>12} {'target':>10}  met"]
    for key, label, fmt in RATIO_ROWS:
        goal = goals.get(key, {})
        met = {True: "yes", False: "no", None: "-"}[goal.get("met")]
        lines.append(f"{label:<{width}} {_fmt(fmt, figures.get(key)):>12} {goal.get('target', ''):>10}  {met}")
    windows = ", ".join(f"{v:,.0f}" for v in figures.get("rss_bytes_per_user_windows", []))
    lines.append(f"{'  (growth windows)':<{width}} {windows}")
    cpu, cores = result.machine.get("cpu_model", "?"), result.machine.get("cores", "?")
    isa = ", ".join(k for k, v in result.machine.get("isa", {}).items() if v) or "none of " + ", ".join(ISA_FLAGS)
    lines += ["", f"on this machine ({cpu}, {cores} cores; {isa}); encoder {figures.get('encoder_path', '-')}"]
    lines.append(f"{'figure':<{width}} {'synthetic':>12} {'taobao':>12}")
    for key, label, fmt in TABLE_ROWS:
        lines.append(f"{label:<{width}} {_fmt(fmt, figures.get(key)):>12} {_fmt(fmt, taobao.get(key)):>12}")
    return "\n".join(lines)


def run_bench(settings: Settings, opts: BenchOptions, json_out: Path | None = None) -> BenchResult:
    """Start a local broker, run every phase, print the table and write the JSON."""
    limit_threads(settings.encoder.torch_threads)  # as every worker does: one intra-op thread per process
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = settings.replace(broker=broker.url, web_port=free_port(), data_dir=str(workdir / "data"))
        print(f"local broker on {broker.url}; logs in {workdir}")
        try:
            result = asyncio.run(_run(settings, opts, workdir, broker.process.pid if broker.process else None))
        finally:
            gc.unfreeze()  # the heap frozen for the latency phases (freeze_own_heap) is the collector's again
    print(format_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
        print(f"figures written to {json_out}")
    return result


def _fmt(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)
