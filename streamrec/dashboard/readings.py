"""One reading of a worker — its ``/metrics`` samples and ``/stats`` JSON — and what the dashboard derives from two.

Counters become rates from the difference between two readings (a counter that went down means the worker
restarted: no rate for that step). The latency histogram's difference gives the quantiles of the events in
between, interpolated inside a bucket as Prometheus' ``histogram_quantile`` does.

>>> page = 'streamrec_events_total 40\\nstreamrec_consumer_lag{partition="2"} 5'
>>> r = WorkerReading.from_pages("http://w:1", 10.0, page, {})
>>> r.events_total, r.lag
(40.0, {2: 5.0})
>>> later = WorkerReading.from_pages("http://w:1", 12.0, "streamrec_events_total 100", {})
>>> rate(r.events_total, later.events_total, later.t - r.t)
30.0
>>> histogram_quantile((10.0, 20.0, math.inf), (0.0, 10.0, 10.0), 0.5)
15.0
"""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from streamrec.worker.telemetry import parse

LATENCY_METRIC = "streamrec_event_to_recommendation_ms"
SNAPSHOT_PREFIX = b"fusion/"
"""Key prefix of a worker's contribution on ``model-snapshots`` (``fusion/<worker id>``)."""
_LABELLED = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]+\])$")
MAX_PORT = 65_535


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_samples(text: str) -> dict[str, float]:
    """A ``/metrics`` page's samples by full name (:func:`~streamrec.worker.telemetry.parse`), skipping any line
    whose value is not a number instead of failing on the whole page (older workers rendered a labelled family
    with no label set, e.g. consumer lag before partitions are assigned, as ``name None``)."""
    kept = [
        line
        for line in text.splitlines()
        if line.strip() and (line.startswith("#") or _is_number(line.rpartition(" ")[2]))
    ]
    return parse("\n".join(kept))


def split_sample(name: str) -> tuple[str, dict[str, str]]:
    """``name{a="1",b="2"}`` → ``("name", {"a": "1", "b": "2"})``."""
    m = _LABELLED.match(name)
    if m is None:
        return name, {}
    return m.group(1), {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2))}


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def rate(before: float | None, after: float | None, dt: float) -> float | None:
    """Per-second rate of a counter between two readings; None without both, for dt ≤ 0 or after a reset."""
    if before is None or after is None or dt <= 0 or after < before:
        return None
    return (after - before) / dt


def histogram_quantile(les: tuple[float, ...], cumulative: tuple[float, ...], q: float) -> float | None:
    """Quantile ``q`` of a cumulative bucketed histogram, linear inside the bucket that holds it (Prometheus'
    rule); the largest finite bound when it falls in ``+Inf``; None when the histogram is empty."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for le, cum in zip(les, cumulative, strict=True):
        if cum >= rank:
            if math.isinf(le):
                return lower
            inside = cum - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, cum
    return lower


@dataclass(frozen=True)
class WorkerReading:
    """What one worker said at time ``t`` (its pages' figures; ``stats`` is the raw ``/stats`` JSON)."""

    url: str
    t: float
    events_total: float | None = None
    recommendations_total: float | None = None
    dead_letters_total: float | None = None
    duplicates_total: float | None = None
    lag: dict[int, float] = field(default_factory=dict)
    latency_le: tuple[float, ...] = ()
    latency_cumulative: tuple[float, ...] = ()
    model_steps: float | None = None
    items_indexed: float | None = None
    users: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    stats_fresh: bool = True
    """Whether ``stats`` was read with this reading (False: the last one read, kept; ``/stats`` is read less often)."""

    @classmethod
    def from_pages(
        cls, url: str, t: float, metrics_text: str, stats: dict[str, Any] | None, stats_fresh: bool = True
    ) -> WorkerReading:
        samples = parse_samples(metrics_text)
        lag: dict[int, float] = {}
        buckets: list[tuple[float, float]] = []
        for name, value in samples.items():
            base, labels = split_sample(name)
            if base == "streamrec_consumer_lag" and "partition" in labels:
                try:
                    lag[int(labels["partition"])] = value
                except ValueError:
                    continue
            elif base == f"{LATENCY_METRIC}_bucket" and "le" in labels:
                try:
                    buckets.append((_le(labels["le"]), value))
                except ValueError:
                    continue
        buckets.sort()
        return cls(
            url=url,
            t=t,
            events_total=samples.get("streamrec_events_total"),
            recommendations_total=samples.get("streamrec_recommendations_total"),
            dead_letters_total=samples.get("streamrec_dead_letters_total"),
            duplicates_total=samples.get("streamrec_duplicates_total"),
            lag=lag,
            latency_le=tuple(le for le, _ in buckets),
            latency_cumulative=tuple(c for _, c in buckets),
            model_steps=samples.get("streamrec_model_steps"),
            items_indexed=samples.get("streamrec_items_indexed"),
            users=samples.get("streamrec_users"),
            stats=dict(stats or {}),
            stats_fresh=stats_fresh,
        )

    @property
    def worker_id(self) -> str | None:
        value = self.stats.get("worker_id")
        return str(value) if value is not None else None

    @property
    def assigned_partitions(self) -> list[int]:
        value = self.stats.get("assigned_partitions")
        return [int(p) for p in value] if isinstance(value, list) else sorted(self.lag)

    @property
    def ranker_weights(self) -> dict[str, float] | None:
        """``/stats["ranker_weights"]`` (feature → θ) where the worker exposes it."""
        value = self.stats.get("ranker_weights")
        if not isinstance(value, dict):
            return None
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None

    @property
    def online_quality(self) -> OnlineQuality | None:
        """``/stats["online_quality"]`` where the worker exposes it (see :class:`OnlineQuality`)."""
        return OnlineQuality.from_stats(self.stats.get("online_quality"))

    def latency_delta(self, before: WorkerReading | None) -> tuple[float, ...] | None:
        """Cumulative bucket counts of the events observed since ``before``; None without an earlier reading,
        across a restart (a count went down) or a change of buckets."""
        if before is None:
            return None
        if before.latency_le != self.latency_le:
            return None
        delta = tuple(a - b for a, b in zip(self.latency_cumulative, before.latency_cumulative, strict=True))
        return None if any(d < 0 for d in delta) else delta


@dataclass(frozen=True)
class OnlineQuality:
    """A worker's online Recall@k / NDCG@k on its live traffic: ``{"k", "scored", "recall", "ndcg"}`` in
    ``/stats["online_quality"]``, where ``scored`` counts the discovery events the worker scored since it started
    and ``recall`` / ``ndcg`` are their means (the worker shows more: MRR, every scored event, a window). The
    dashboard plots each interval's value from two readings (``Δ(recall·scored) / Δscored``), summed over
    workers."""

    k: int
    scored: float
    recall: float
    ndcg: float

    @classmethod
    def from_stats(cls, value: Any) -> OnlineQuality | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(int(value["k"]), float(value["scored"]), float(value["recall"]), float(value["ndcg"]))
        except (KeyError, TypeError, ValueError):
            return None


def worker_url_from_snapshot_key(key: bytes | None, own_hostname: str | None = None) -> str | None:
    """The base URL of the worker that published a ``fusion/<worker id>`` snapshot, when its id is the default
    ``<hostname>:<web_port>``; None for other keys (custom ids: set ``STREAMREC_DASHBOARD_WORKERS``).

    This machine's own hostname becomes ``127.0.0.1``: a worker bound to loopback answers only there.

    >>> worker_url_from_snapshot_key(b"fusion/shop-7:6066", own_hostname="me")
    'http://shop-7:6066'
    >>> worker_url_from_snapshot_key(b"fusion/me:6067", own_hostname="me")
    'http://127.0.0.1:6067'
    >>> worker_url_from_snapshot_key(b"fusion/worker-a", own_hostname="me") is None
    True
    """
    if key is None or not key.startswith(SNAPSHOT_PREFIX):
        return None
    try:
        worker_id = key[len(SNAPSHOT_PREFIX) :].decode()
    except UnicodeDecodeError:
        return None
    host, sep, port = worker_id.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= MAX_PORT or not _HOST.match(host):
        return None
    own = socket.gethostname() if own_hostname is None else own_hostname
    if host == own:
        host = "127.0.0.1"
    return f"http://{host}:{int(port)}"
