"""Worker telemetry in Prometheus' text exposition format (``/metrics``), with no client library.

A worker exposes counters (events, dead letters, recommendations), gauges (consumer lag, items indexed,
model steps) and an event → recommendation latency histogram. Prometheus computes rates from counters;
``streamrec status`` reads the same page and prints it for people.

>>> h = Histogram((10.0, 100.0))
>>> for ms in (4.0, 40.0, 400.0):
...     h.observe(ms)
>>> h.cumulative(), h.count, h.total
([1, 2, 3], 3, 444.0)
>>> print(render([Metric("streamrec_events_total", "counter", "Events applied.", 7.0)]))
# HELP streamrec_events_total Events applied.
# TYPE streamrec_events_total counter
streamrec_events_total 7.0
<BLANKLINE>
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 15, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)
"""Event → recommendation latency buckets (ms): fine where the targets are (≤ 50 ms), coarse beyond."""
ONLINE_RANK_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 10, 20)
"""Buckets of the rank at which an event's item stood in its user's last published list (hits only)."""


class Histogram:
    """Fixed-bucket histogram (Prometheus semantics: cumulative ``le`` buckets plus ``+Inf``, sum, count)."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` (``times`` times: histograms rebuilt from counts kept elsewhere)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.count += times
        self.total += value * times

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (what a bucketed histogram can tell); nan if empty."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        for bound, cum in zip((*self.bounds, math.inf), self.cumulative(), strict=True):
            if cum >= rank:
                return bound
        return math.inf


@dataclass(frozen=True)
class Metric:
    """One metric family: a single value, one value per label set (``labels``), a histogram, or one histogram
    per label set (``histograms``)."""

    name: str
    kind: str
    help: str
    value: float | None = None
    labels: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    histogram: Histogram | None = None
    histograms: dict[tuple[tuple[str, str], ...], Histogram] = field(default_factory=dict)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition format (version 0.0.4) for ``metrics``."""
    lines: list[str] = []
    for m in metrics:
        lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}"]
        if m.histogram is not None:
            lines += _histogram_lines(m.name, (), m.histogram)
        elif m.histograms:
            for key, h in sorted(m.histograms.items()):
                lines += _histogram_lines(m.name, key, h)
        elif m.labels or m.value is None:  # a labelled family with no label values yet has no samples
            lines += [f"{m.name}{_labels(key)} {value}" for key, value in sorted(m.labels.items())]
        else:
            lines.append(f"{m.name} {m.value}")
    return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: tuple[tuple[str, str], ...], h: Histogram) -> list[str]:
    lines = []
    for bound, cum in zip((*h.bounds, math.inf), h.cumulative(), strict=True):
        le = "+Inf" if bound == math.inf else f"{bound:g}"
        lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {cum}")
    return [*lines, f"{name}_sum{_labels(labels)} {h.total}", f"{name}_count{_labels(labels)} {h.count}"]


def parse(text: str) -> dict[str, float]:
    """Samples of an exposition page by full sample name (labels included): what ``streamrec status`` shows."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def format_status(samples: dict[str, float]) -> str:
    """The figures people ask for first, from a /metrics page's samples."""
    latency = {
        name.split('le="')[1].rstrip('"}'): count
        for name, count in samples.items()
        if name.startswith("streamrec_event_to_recommendation_ms_bucket")
    }
    total = samples.get("streamrec_event_to_recommendation_ms_count", 0.0)

    def quantile(q: float) -> str:
        for le, cum in latency.items():
            if total and cum >= q * total:
                return f"≤ {le} ms"
        return "-"

    lag = {k: v for k, v in samples.items() if k.startswith("streamrec_consumer_lag{")}

    def discovery_sum(family: str) -> float:
        return sum(v for k, v in samples.items() if k.startswith(family + "{") and 'discovery="discovery"' in k)

    scored, hits = discovery_sum("streamrec_online_scored_total"), discovery_sum("streamrec_online_hits_total")
    online = f"{hits / scored:.3f} ({scored:,.0f} discovery events)" if scored else "-"
    rows = [
        ("events applied", f"{samples.get('streamrec_events_total', 0):,.0f}"),
        ("events/s (since start)", f"{samples.get('streamrec_events_per_second', 0):,.1f}"),
        ("consumer lag", f"{samples.get('streamrec_consumer_lag_total', 0):,.0f} ({len(lag)} partitions)"),
        ("latency p50 / p99", f"{quantile(0.5)} / {quantile(0.99)} ({total:,.0f} events)"),
        ("recommendations", f"{samples.get('streamrec_recommendations_total', 0):,.0f}"),
        ("dead letters", f"{samples.get('streamrec_dead_letters_total', 0):,.0f}"),
        ("misrouted events", f"{samples.get('streamrec_misrouted_events_total', 0):,.0f} (README: other clients)"),
        ("online hit rate", online),
        ("model steps", f"{samples.get('streamrec_model_steps', 0):,.0f}"),
        ("items indexed", f"{samples.get('streamrec_items_indexed', 0):,.0f}"),
        ("users", f"{samples.get('streamrec_users', 0):,.0f}"),
    ]
    return "\n".join(f"{label:<26} {value}" for label, value in rows)
