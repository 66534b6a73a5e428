"""The worker's figures, each declared once (:data:`FIGURES`), rendered as ``/stats`` JSON and ``/metrics`` text.

A figure has a ``/stats`` key, a Prometheus metric, or both, a help text, a kind and how to read it from a
:class:`Reading` (everything one request shows, gathered once). ``/stats`` keys and metric names are read by
``streamrec status``, the lab and the tests: they are part of the worker's interface.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.model.metrics import OnlineCounts
from streamrec.worker.core import CoreState
from streamrec.worker.telemetry import ONLINE_RANK_BUCKETS, Histogram, Metric

LATENCY_WINDOW = 10_000
"""Batch times and item visibility times kept for ``/stats`` percentiles (the newest)."""
RECENT_ITEMS_SHOWN = 1_000
MIN_ELAPSED_S = 1e-9

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
INFO = "info"
"""A ``/stats``-only figure that is not a number (ids, lists, flags)."""


@dataclass
class WorkerStats:
    """Counters the worker updates as it runs."""

    started: float = field(default_factory=time.time)
    events: int = 0
    duplicates: int = 0
    item_updates_applied: int = 0
    """Peers' item updates folded into this worker's co-visitation, co-embeddings and popularity."""
    offset_gaps_filled: int = 0
    """Events Faust's consumer skipped over after a rebalance, fetched directly and applied."""
    recommendations: int = 0
    forgotten: int = 0
    """``forget_user`` records processed: ``streamrec forget`` publishes one per ``events`` partition, so one
    request adds the partition count summed over the workers (docs/privacy.md)."""
    misrouted: int = 0
    """Events found on another ``events`` partition than the murmur2 partition of their user id (as delivered:
    an event redelivered after a crash or rebalance counts again)."""
    batches: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    item_visible_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Item timestamp → indexed here, for items that arrive after the catalogue was loaded."""
    items_withdrawn: int = 0
    """Items withdrawn (sold out, delisted) while this worker ran, its catalogue load included."""
    withdrawal_applied_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Withdrawal timestamp → applied here (from then on no new list holds the item), for live withdrawals."""
    lists_refreshed: int = 0
    """Fresh lists published because the user's last list held a withdrawn item."""
    refresh_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Withdrawal applied → the fresh list of a user whose last list held the item published."""
    refresh_pending: int = 0
    """Users waiting for such a fresh list (their number is bounded by ``withdrawal_refresh_per_s``)."""
    rules_in_force: int = 0
    catalog_ready_at: float | None = None
    rss_ready_bytes: int = 0
    """Resident memory when the catalogue was loaded, the core process's included."""
    core_rss_ready_bytes: int = 0
    rss_settled_bytes: int = 0
    """Resident memory right after the last batch took effect (its temporaries freed), the core process's
    included: what the state holds, without a batch in flight (``streamrec bench`` measures growth with it)."""
    core_rss_settled_bytes: int = 0
    first_batch_at: float | None = None
    cpu_at_first_batch: dict[str, float] = field(default_factory=dict)
    """CPU seconds each of the worker's processes had used when the first batch started (what a drain costs)."""
    last_batch_at: float | None = None


@dataclass(frozen=True)
class Reading:
    """Everything one ``/stats`` or ``/metrics`` request shows, read from the worker once."""

    stats: WorkerStats
    core: CoreState
    core_pid: int | None
    dead_letters: int
    table: Mapping[bytes, bytes] | None
    worker_id: str
    assigned_partitions: list[int]
    next_offsets: Mapping[int, int]
    consumer_lag: Mapping[int, int]
    latency: Histogram
    """Event published → its user's recommendation sent (ms)."""
    model_ready: bool
    restored_steps: int
    restored_own_steps: int
    rss_bytes: int
    """This process's resident memory plus the core process's."""
    cpu_seconds: float = 0.0
    """CPU time this process has used."""
    now: float = field(default_factory=time.time)

    @property
    def elapsed_s(self) -> float:
        return max(self.now - self.stats.started, MIN_ELAPSED_S)


@dataclass(frozen=True)
class Figure:
    """One figure a worker shows: on ``/stats`` (``key``), on ``/metrics`` (``metric``) or both."""

    key: str | None
    metric: str | None
    kind: str
    """Prometheus type (counter, gauge, histogram), or info for a ``/stats``-only value that is not a number."""
    help: str
    read: Callable[[Reading], Any]
    label: str | None = None
    """For a metric with one sample per label value (its ``read`` returns that mapping)."""
    labels: tuple[str, ...] = ()
    """For a metric with one sample (or histogram) per combination of these labels' values: its ``read``
    returns a mapping from tuples of values, in this order."""

    def __post_init__(self) -> None:
        if self.key is None and self.metric is None:
            raise ValueError("a figure needs a /stats key, a metric name or both")
        if self.metric is not None and self.kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(f"metric {self.metric}: kind {self.kind!r} is not a Prometheus type")
        if self.label is not None and self.labels:
            raise ValueError(f"metric {self.metric}: give label or labels, not both")

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels or ((self.label,) if self.label is not None else ())


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values) if values else np.zeros(1), q))


def cpu_by_process(r: Reading) -> dict[str, float]:
    """CPU seconds used so far: the worker's process, and the core's own process (as of its last reply)."""
    return {"worker": r.cpu_seconds} | ({"core": r.core.cpu_seconds} if r.core_pid is not None else {})


def _online(r: Reading) -> OnlineCounts | None:
    return r.core.online


def _hit_ranks(r: Reading) -> dict[tuple[str, str], Histogram]:
    """Per (kind, discovery) label pair, the hit ranks as a Prometheus histogram (rebuilt from the core's counts)."""
    online = r.core.online
    if online is None:
        return {}
    out = {}
    for key, per_rank in online.hit_ranks().items():
        h = out[key] = Histogram(ONLINE_RANK_BUCKETS)
        for rank, n in enumerate(per_rank, start=1):
            if n:
                h.observe(rank, n)
    return out


ONLINE_LABELS = ("kind", "discovery")
"""Labels of the online-quality metrics: the published list's kind, and discovery or repeat."""


def _profiles(r: Reading) -> int:
    return len(r.table) if r.table is not None else 0


def _profile_bytes(r: Reading) -> int:
    return sum(len(v) for v in r.table.values()) if r.table is not None else 0


FIGURES: tuple[Figure, ...] = (
    Figure("events", "streamrec_events_total", COUNTER, "Events applied to user state.", lambda r: r.stats.events),
    Figure(
        "events_per_s",
        "streamrec_events_per_second",
        GAUGE,
        "Events applied per second since start.",
        lambda r: r.stats.events / r.elapsed_s,
    ),
    Figure(
        "duplicates_skipped",
        "streamrec_duplicates_total",
        COUNTER,
        "Redelivered events skipped.",
        lambda r: r.stats.duplicates,
    ),
    Figure(
        "offset_gaps_filled",
        None,
        COUNTER,
        "Events the consumer skipped after a rebalance, fetched directly and applied.",
        lambda r: r.stats.offset_gaps_filled,
    ),
    Figure(
        "item_updates_applied",
        None,
        COUNTER,
        "Peers' item updates folded into this worker's item statistics.",
        lambda r: r.stats.item_updates_applied,
    ),
    Figure(
        "recommendations",
        "streamrec_recommendations_total",
        COUNTER,
        "Recommendation lists published.",
        lambda r: r.stats.recommendations,
    ),
    Figure(
        "forgotten_users",
        "streamrec_forgotten_users_total",
        COUNTER,
        "forget_user records processed (streamrec forget publishes one per events partition).",
        lambda r: r.stats.forgotten,
    ),
    Figure(
        "misrouted_events",
        "streamrec_misrouted_events_total",
        COUNTER,
        "Events on another events partition than the murmur2 partition of their user id (see the README's "
        "'Publishing from other clients').",
        lambda r: r.stats.misrouted,
    ),
    Figure("batches", None, COUNTER, "Batches processed.", lambda r: r.stats.batches),
    Figure(
        "dead_letters",
        "streamrec_dead_letters_total",
        COUNTER,
        "Messages rejected to dead-letters.",
        lambda r: r.dead_letters,
    ),
    Figure(
        "items_indexed", "streamrec_items_indexed", GAUGE, "Items in the FAISS index.", lambda r: r.core.items_indexed
    ),
    Figure("model_version", None, INFO, "The fusion ranker's version.", lambda r: r.core.model_version),
    Figure(
        "processing_ms_p50",
        None,
        GAUGE,
        "Batch processing time, median of the recent batches (ms).",
        lambda r: _percentile(r.stats.latencies_ms, 50),
    ),
    Figure(
        "processing_ms_p99",
        None,
        GAUGE,
        "Batch processing time, 99th percentile of the recent batches (ms).",
        lambda r: _percentile(r.stats.latencies_ms, 99),
    ),
    Figure(
        "items_live",
        None,
        GAUGE,
        "Recent items indexed after the catalogue was loaded.",
        lambda r: len(r.stats.item_visible_ms),
    ),
    Figure(
        "item_visible_ms_p50",
        None,
        GAUGE,
        "Item timestamp → indexed, median of the recent live items (ms).",
        lambda r: _percentile(r.stats.item_visible_ms, 50),
    ),
    Figure(
        "item_visible_ms_p99",
        None,
        GAUGE,
        "Item timestamp → indexed, 99th percentile of the recent live items (ms).",
        lambda r: _percentile(r.stats.item_visible_ms, 99),
    ),
    Figure(
        "item_visible_ms_recent",
        None,
        INFO,
        "Item timestamp → indexed of the newest live items (ms).",
        lambda r: [round(x, 1) for x in list(r.stats.item_visible_ms)[-RECENT_ITEMS_SHOWN:]],
    ),
    Figure(
        "items_withdrawn",
        "streamrec_items_withdrawn_total",
        COUNTER,
        "Items withdrawn (sold out, delisted).",
        lambda r: r.stats.items_withdrawn,
    ),
    Figure(
        "withdrawal_applied_ms_p50",
        None,
        GAUGE,
        "Withdrawal timestamp → no new list holds the item, median of the recent live withdrawals (ms).",
        lambda r: _percentile(r.stats.withdrawal_applied_ms, 50),
    ),
    Figure(
        "withdrawal_applied_ms_recent",
        None,
        INFO,
        "Withdrawal timestamp → no new list holds the item, of the newest live withdrawals (ms).",
        lambda r: [round(x, 1) for x in list(r.stats.withdrawal_applied_ms)[-RECENT_ITEMS_SHOWN:]],
    ),
    Figure(
        "lists_refreshed",
        "streamrec_lists_refreshed_total",
        COUNTER,
        "Fresh lists published because the user's last list held a withdrawn item.",
        lambda r: r.stats.lists_refreshed,
    ),
    Figure(
        "refresh_ms_p99",
        None,
        GAUGE,
        "Withdrawal applied → fresh list of a user whose last list held the item, 99th percentile (ms).",
        lambda r: _percentile(r.stats.refresh_ms, 99),
    ),
    Figure(
        "refresh_pending",
        "streamrec_refresh_pending",
        GAUGE,
        "Users waiting for a fresh list because their last list holds a withdrawn item.",
        lambda r: r.stats.refresh_pending,
    ),
    Figure(
        "rules_in_force",
        "streamrec_rules_in_force",
        GAUGE,
        "Business rules in force (the rules topic).",
        lambda r: r.stats.rules_in_force,
    ),
    Figure(
        "catalog_ready_at",
        None,
        GAUGE,
        "When the catalogue was loaded (Unix time).",
        lambda r: r.stats.catalog_ready_at,
    ),
    Figure(
        "first_batch_at", None, GAUGE, "When the first batch started (Unix time).", lambda r: r.stats.first_batch_at
    ),
    Figure("last_batch_at", None, GAUGE, "Last batch ended (Unix time).", lambda r: r.stats.last_batch_at),
    Figure(
        "cpu_seconds",
        "streamrec_cpu_seconds_total",
        COUNTER,
        "CPU time used by the worker's process and its core process (seconds).",
        cpu_by_process,
        label="process",
    ),
    Figure(
        "cpu_seconds_at_first_batch",
        None,
        INFO,
        "CPU seconds of each process when the first batch started (a backlog's cost is the difference).",
        lambda r: dict(r.stats.cpu_at_first_batch),
    ),
    Figure("rss_bytes", None, GAUGE, "Resident memory, the core process's included (bytes).", lambda r: r.rss_bytes),
    Figure(
        "rss_ready_bytes",
        None,
        GAUGE,
        "Resident memory when the catalogue was loaded, the core process's included (bytes).",
        lambda r: r.stats.rss_ready_bytes,
    ),
    Figure(
        "core_rss_ready_bytes",
        None,
        GAUGE,
        "The core process's resident memory when the catalogue was loaded (bytes).",
        lambda r: r.stats.core_rss_ready_bytes,
    ),
    Figure(
        "rss_settled_bytes",
        None,
        GAUGE,
        "Resident memory right after the last batch took effect, the core process's included (bytes).",
        lambda r: r.stats.rss_settled_bytes,
    ),
    Figure(
        "core_rss_settled_bytes",
        None,
        GAUGE,
        "The core process's resident memory right after the last batch (bytes).",
        lambda r: r.stats.core_rss_settled_bytes,
    ),
    Figure("profiles", "streamrec_users", GAUGE, "Users with a profile in this worker's partitions.", _profiles),
    Figure("profile_bytes", None, GAUGE, "Bytes of the profiles in this worker's table.", _profile_bytes),
    Figure("worker_id", None, INFO, "This worker's id.", lambda r: r.worker_id),
    Figure(
        "assigned_partitions",
        None,
        INFO,
        "Partitions of events this worker holds now.",
        lambda r: r.assigned_partitions,
    ),
    Figure(
        "next_offsets",
        None,
        INFO,
        "Per events partition, the offset after the last event processed here.",
        lambda r: {str(p): o for p, o in sorted(r.next_offsets.items())},
    ),
    Figure("model_ready", None, INFO, "The model was restored from the snapshots.", lambda r: r.model_ready),
    Figure(
        "model_steps",
        "streamrec_model_steps",
        GAUGE,
        "SGD steps taken by the fusion ranker.",
        lambda r: r.core.model_steps,
    ),
    Figure("model_own_steps", None, GAUGE, "SGD steps this worker contributed.", lambda r: r.core.own_steps),
    Figure(
        "model_restored_steps",
        None,
        GAUGE,
        "The ranker's steps right after start-up (> 0: resumed from snapshots).",
        lambda r: r.restored_steps,
    ),
    Figure(
        "model_restored_own_steps",
        None,
        GAUGE,
        "This worker's own steps taken back from its last snapshot at start-up.",
        lambda r: r.restored_own_steps,
    ),
    Figure("model_peers", None, INFO, "Workers whose contributions were merged.", lambda r: list(r.core.peers)),
    Figure(
        "core_pid", None, INFO, "The core process's pid (null: the core runs in this process).", lambda r: r.core_pid
    ),
    Figure(
        "core_rss_bytes",
        None,
        GAUGE,
        "The core process's resident memory as of its last reply (bytes).",
        lambda r: r.core.rss_bytes,
    ),
    Figure(
        None,
        "streamrec_consumer_lag",
        GAUGE,
        "Events waiting per assigned partition.",
        lambda r: r.consumer_lag,
        label="partition",
    ),
    Figure(
        None,
        "streamrec_consumer_lag_total",
        GAUGE,
        "Events waiting on all assigned partitions.",
        lambda r: sum(r.consumer_lag.values()),
    ),
    Figure(
        None,
        "streamrec_event_to_recommendation_ms",
        HISTOGRAM,
        "Event published to its user's recommendation sent (ms).",
        lambda r: r.latency,
    ),
    Figure(
        "ranker_weights",
        None,
        INFO,
        "The fusion ranker's current weights θ by feature.",
        lambda r: r.core.ranker_weights,
    ),
    Figure(
        "online_quality",
        None,
        INFO,
        "Item events scored against their user's last published list: Recall/NDCG/MRR@k over discovery events"
        " (and *_all over every scored event), since start and over the newest window.",
        lambda r: online.figures() if (online := _online(r)) is not None else None,
    ),
    Figure(
        None,
        "streamrec_online_scored_total",
        COUNTER,
        "Item events scored against their user's last published list.",
        lambda r: online.scored() if (online := _online(r)) is not None else {},
        labels=ONLINE_LABELS,
    ),
    Figure(
        None,
        "streamrec_online_hits_total",
        COUNTER,
        "Scored item events whose item was in their user's last published list.",
        lambda r: online.hits() if (online := _online(r)) is not None else {},
        labels=ONLINE_LABELS,
    ),
    Figure(
        None,
        "streamrec_online_hit_rank",
        HISTOGRAM,
        "Rank of a hit's item in its user's last published list (1 = first).",
        _hit_ranks,
        labels=ONLINE_LABELS,
    ),
)


def stats_json(reading: Reading, figures: Sequence[Figure] = FIGURES) -> dict[str, Any]:
    """What ``/stats`` shows: every figure with a key."""
    return {f.key: f.read(reading) for f in figures if f.key is not None}


def metrics(reading: Reading, figures: Sequence[Figure] = FIGURES) -> list[Metric]:
    """What ``/metrics`` shows: every figure with a metric name (Prometheus computes rates from the counters)."""
    out: list[Metric] = []
    for f in figures:
        if f.metric is None:
            continue
        value = f.read(reading)
        names = f.label_names
        if names:
            series = {
                tuple(zip(names, map(str, k if isinstance(k, tuple) else (k,)), strict=True)): v
                for k, v in value.items()
            }
            if f.kind == HISTOGRAM:
                out.append(Metric(f.metric, f.kind, f.help, histograms=series))
            else:
                out.append(Metric(f.metric, f.kind, f.help, labels={k: float(v) for k, v in series.items()}))
        elif f.kind == HISTOGRAM:
            out.append(Metric(f.metric, f.kind, f.help, histogram=value))
        else:
            out.append(Metric(f.metric, f.kind, f.help, value))
    return out
