"""/stats and /metrics come from one declaration of each figure, under the names their readers use."""

from __future__ import annotations

import pytest

from streamrec.worker.core import CoreState
from streamrec.worker.stats import COUNTER, FIGURES, INFO, Figure, Reading, WorkerStats, metrics, stats_json
from streamrec.worker.telemetry import Histogram, parse, render

STATS_KEYS = [
    "events",
    "events_per_s",
    "duplicates_skipped",
    "offset_gaps_filled",
    "item_updates_applied",
    "recommendations",
    "forgotten_users",
    "batches",
    "dead_letters",
    "items_indexed",
    "model_version",
    "processing_ms_p50",
    "processing_ms_p99",
    "items_live",
    "item_visible_ms_p50",
    "item_visible_ms_p99",
    "item_visible_ms_recent",
    "items_withdrawn",
    "withdrawal_applied_ms_p50",
    "withdrawal_applied_ms_recent",
    "lists_refreshed",
    "refresh_ms_p99",
    "refresh_pending",
    "rules_in_force",
    "catalog_ready_at",
    "first_batch_at",
    "last_batch_at",
    "rss_bytes",
    "rss_ready_bytes",
    "core_rss_ready_bytes",
    "profiles",
    "profile_bytes",
    "worker_id",
    "assigned_partitions",
    "next_offsets",
    "model_ready",
    "model_steps",
    "model_own_steps",
    "model_restored_steps",
    "model_restored_own_steps",
    "model_peers",
    "core_pid",
    "core_rss_bytes",
]
"""What /stats has always shown, in this order (``streamrec status``, the lab and the tests read these keys)."""

METRICS = {
    "streamrec_events_total": "counter",
    "streamrec_events_per_second": "gauge",
    "streamrec_duplicates_total": "counter",
    "streamrec_forgotten_users_total": "counter",
    "streamrec_recommendations_total": "counter",
    "streamrec_dead_letters_total": "counter",
    "streamrec_consumer_lag": "gauge",
    "streamrec_consumer_lag_total": "gauge",
    "streamrec_event_to_recommendation_ms": "histogram",
    "streamrec_model_steps": "gauge",
    "streamrec_items_indexed": "gauge",
    "streamrec_users": "gauge",
    "streamrec_items_withdrawn_total": "counter",
    "streamrec_lists_refreshed_total": "counter",
    "streamrec_refresh_pending": "gauge",
    "streamrec_rules_in_force": "gauge",
}


def reading() -> Reading:
    stats = WorkerStats(started=100.0, events=7, duplicates=2, recommendations=5, forgotten=1, batches=3)
    stats.offset_gaps_filled, stats.item_updates_applied = 4, 6
    stats.latencies_ms.extend([1.0, 3.0])
    stats.item_visible_ms.extend([2.0, 4.04])
    stats.items_withdrawn, stats.lists_refreshed, stats.refresh_pending, stats.rules_in_force = 2, 11, 3, 1
    stats.withdrawal_applied_ms.extend([30.0, 50.0, 40.04])
    latency = Histogram((10.0, 100.0))
    latency.observe(12.0)
    return Reading(
        stats=stats,
        core=CoreState(items_indexed=80, model_version="fusion@9", model_steps=9, own_steps=4, peers=("b",)),
        core_pid=4242,
        dead_letters=1,
        table={b"a": b"xyz", b"b": b"12"},
        worker_id="w1",
        assigned_partitions=[0, 2],
        next_offsets={2: 5, 0: 10},
        consumer_lag={0: 3, 2: 0},
        latency=latency,
        model_ready=True,
        restored_steps=8,
        restored_own_steps=3,
        rss_bytes=1000,
        now=110.0,
    )


def test_stats_keys_and_values() -> None:
    shown = stats_json(reading())
    assert list(shown) == STATS_KEYS
    assert shown["events"] == 7 and shown["events_per_s"] == 0.7 and shown["duplicates_skipped"] == 2
    assert (shown["offset_gaps_filled"], shown["item_updates_applied"], shown["forgotten_users"]) == (4, 6, 1)
    assert (shown["profiles"], shown["profile_bytes"]) == (2, 5)
    assert shown["processing_ms_p50"] == 2.0 and shown["item_visible_ms_recent"] == [2.0, 4.0]
    assert shown["next_offsets"] == {"0": 10, "2": 5} and list(shown["next_offsets"]) == ["0", "2"]
    assert (shown["model_peers"], shown["core_pid"], shown["model_restored_own_steps"]) == (["b"], 4242, 3)
    assert (shown["items_withdrawn"], shown["lists_refreshed"], shown["refresh_pending"]) == (2, 11, 3)
    assert shown["withdrawal_applied_ms_p50"] == 40.04 and shown["withdrawal_applied_ms_recent"] == [30.0, 50.0, 40.0]


def test_metrics_names_kinds_and_samples() -> None:
    shown = metrics(reading())
    assert {m.name: m.kind for m in shown} == METRICS
    samples = parse(render(shown))
    assert samples["streamrec_events_total"] == 7
    assert samples["streamrec_users"] == 2
    assert samples['streamrec_consumer_lag{partition="0"}'] == 3
    assert samples['streamrec_consumer_lag{partition="2"}'] == 0
    assert samples["streamrec_consumer_lag_total"] == 3
    assert samples['streamrec_event_to_recommendation_ms_bucket{le="100"}'] == 1
    assert samples["streamrec_event_to_recommendation_ms_count"] == 1


def test_a_figure_on_both_pages_shows_the_same_value() -> None:
    r = reading()
    shown, samples = stats_json(r), parse(render(metrics(r)))
    both = [f for f in FIGURES if f.key is not None and f.metric is not None]
    assert len(both) == 13
    for f in both:
        assert samples[f.metric] == shown[f.key], f.key  # type: ignore[index]


def test_a_figure_must_be_shown_somewhere_as_a_prometheus_type() -> None:
    with pytest.raises(ValueError, match="key"):
        Figure(None, None, COUNTER, "nowhere", lambda r: 0)
    with pytest.raises(ValueError, match="Prometheus type"):
        Figure("worker_id", "streamrec_worker_id", INFO, "not a number", lambda r: r.worker_id)


def test_a_labelled_metric_without_label_values_has_no_sample_line() -> None:
    """A worker between generations holds no partitions: its lag family is declared but has no samples."""
    idle = reading()
    idle = Reading(**{**idle.__dict__, "consumer_lag": {}, "assigned_partitions": []})
    text = render(metrics(idle))
    assert "# TYPE streamrec_consumer_lag gauge" in text
    assert not [line for line in text.splitlines() if line.startswith("streamrec_consumer_lag ")]
    samples = parse(text)  # what `streamrec status` reads: must not choke on the empty family
    assert samples["streamrec_consumer_lag_total"] == 0.0
    assert not [k for k in samples if k.startswith("streamrec_consumer_lag{")]
