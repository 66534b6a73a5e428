"""A worker's pages reduced to one reading; rates, quantiles and worker discovery from snapshot keys."""

from __future__ import annotations

import math

import pytest

from streamrec.dashboard.readings import (
    OnlineQuality,
    WorkerReading,
    histogram_quantile,
    parse_samples,
    rate,
    split_sample,
    worker_url_from_snapshot_key,
)
from streamrec.worker.telemetry import Histogram, Metric, render


def page(events: float, lag: dict[int, float], latencies: list[float]) -> str:
    h = Histogram()
    for ms in latencies:
        h.observe(ms)
    return render(
        [
            Metric("streamrec_events_total", "counter", "Events.", events),
            Metric(
                "streamrec_consumer_lag", "gauge", "Lag.", labels={(("partition", str(p)),): v for p, v in lag.items()}
            ),
            Metric("streamrec_event_to_recommendation_ms", "histogram", "Latency.", histogram=h),
            Metric("streamrec_items_indexed", "gauge", "Items.", 12.0),
        ]
    )


def test_a_reading_holds_counters_lag_per_partition_and_the_latency_buckets() -> None:
    r = WorkerReading.from_pages(
        "http://w:1", 5.0, page(7, {0: 3, 11: 4}, [4.0, 40.0, 400.0]), {"worker_id": "w:1", "assigned_partitions": [0]}
    )
    assert (r.events_total, r.items_indexed, r.recommendations_total) == (7.0, 12.0, None)
    assert r.lag == {0: 3.0, 11: 4.0}
    assert r.latency_le[:3] == (5.0, 10.0, 15.0) and math.isinf(r.latency_le[-1])
    assert r.latency_cumulative[0] == 1.0 and r.latency_cumulative[-1] == 3.0
    assert (r.worker_id, r.assigned_partitions) == ("w:1", [0])


def test_a_sample_that_is_not_a_number_does_not_spoil_the_page() -> None:
    """Older workers rendered a labelled family with no label set (lag before any partition is assigned) as
    ``name None``: that line is skipped, the rest of the page is read."""
    text = "# TYPE streamrec_consumer_lag gauge\nstreamrec_consumer_lag None\nstreamrec_events_total 9\n"
    assert parse_samples(text) == {"streamrec_events_total": 9.0}
    r = WorkerReading.from_pages("u", 0.0, text, {})
    assert (r.events_total, r.lag) == (9.0, {})


def test_labels_are_split_and_unescaped() -> None:
    assert split_sample('m{le="+Inf",x="a\\"b"}') == ("m", {"le": "+Inf", "x": 'a"b'})
    assert split_sample("plain") == ("plain", {})


def test_rates_need_two_readings_and_skip_a_counter_reset() -> None:
    assert rate(10.0, 30.0, 4.0) == 5.0
    assert rate(30.0, 10.0, 4.0) is None  # the worker restarted
    assert rate(None, 10.0, 4.0) is None
    assert rate(1.0, 2.0, 0.0) is None


def test_latency_between_two_readings_and_its_quantiles() -> None:
    a = WorkerReading.from_pages("u", 0.0, page(0, {}, [4.0] * 10), {})
    b = WorkerReading.from_pages("u", 2.0, page(0, {}, [4.0] * 10 + [12.0] * 10), {})
    delta = b.latency_delta(a)
    assert delta is not None and delta[:3] == (0.0, 0.0, 10.0)  # the ten new events all fell in (10, 15]
    assert histogram_quantile(b.latency_le, delta, 0.5) == pytest.approx(12.5)
    assert histogram_quantile(b.latency_le, b.latency_cumulative, 0.5) == pytest.approx(5.0)
    assert a.latency_delta(b) is None  # counts went down: a restart, no delta
    assert histogram_quantile((1.0, math.inf), (0.0, 4.0), 0.99) == 1.0  # in +Inf: the largest finite bound
    assert histogram_quantile((1.0, math.inf), (0.0, 0.0), 0.5) is None


def test_online_quality_reads_the_documented_shape_only() -> None:
    assert OnlineQuality.from_stats({"k": 20, "scored": 10, "recall": 0.5, "ndcg": 0.25}) == OnlineQuality(
        20, 10.0, 0.5, 0.25
    )
    assert OnlineQuality.from_stats({"k": 20, "recall": 0.5}) is None
    assert OnlineQuality.from_stats(None) is None
    reading = WorkerReading.from_pages("u", 0.0, "", {"ranker_weights": {"price": 1}, "online_quality": "x"})
    assert reading.ranker_weights == {"price": 1.0} and reading.online_quality is None


@pytest.mark.parametrize(
    ("key", "url"),
    [
        (b"fusion/shop-7.internal:6066", "http://shop-7.internal:6066"),
        (b"fusion/10.0.0.5:6070", "http://10.0.0.5:6070"),
        (b"fusion/this-host:6067", "http://127.0.0.1:6067"),
        (b"fusion/[::1]:6066", "http://[::1]:6066"),
        (b"fusion/worker-a", None),  # a custom id: not an address
        (b"fusion/w:x", None),
        (b"fusion/w:70000", None),
        (b"fusion/evil/path:80", None),
        (b"fusion/a b:80", None),
        (b"fusion", None),  # the single-worker snapshot: no id at all
        (b"other/h:1", None),
        (None, None),
    ],
)
def test_workers_are_found_from_default_worker_ids(key: bytes | None, url: str | None) -> None:
    assert worker_url_from_snapshot_key(key, own_hostname="this-host") == url
