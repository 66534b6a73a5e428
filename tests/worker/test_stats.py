"""/stats and /metrics come from one declaration of each figure, under the names their readers use."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.metrics import OnlineScores
from streamrec.worker.core import CoreState
from streamrec.worker.stats import COUNTER, FIGURES, INFO, Figure, Reading, WorkerStats, metrics, stats_json
from streamrec.worker.telemetry import Histogram, format_status, parse, render

STATS_KEYS = [
    "events",
    "events_per_s",
    "duplicates_skipped",
    "offset_gaps_filled",
    "item_updates_applied",
    "recommendations",
    "forgotten_users",
    "misrouted_events",
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
    "cpu_seconds",
    "cpu_seconds_at_first_batch",
    "rss_bytes",
    "rss_ready_bytes",
    "core_rss_ready_bytes",
    "rss_settled_bytes",
    "core_rss_settled_bytes",
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
    "ranker_weights",
    "online_quality",
]
"""What /stats shows, in this order (``streamrec status``, the lab and the tests read these keys)."""

METRICS = {
    "streamrec_events_total": "counter",
    "streamrec_events_per_second": "gauge",
    "streamrec_duplicates_total": "counter",
    "streamrec_forgotten_users_total": "counter",
    "streamrec_misrouted_events_total": "counter",
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
    "streamrec_cpu_seconds_total": "counter",
    "streamrec_online_scored_total": "counter",
    "streamrec_online_hits_total": "counter",
    "streamrec_online_hit_rank": "histogram",
}


def online_scores() -> OnlineScores:
    """Five scored events: behaviour lists hit at ranks 1 and 4 (discoveries) and missed once (a repeat); a search
    list hit at rank 2 and missed once (both discoveries)."""
    scores = OnlineScores(k=20, kinds=("behaviour", "search"), window=3)
    scores.add(np.array([0, 0, 0, 1, 1]), np.array([False, False, True, False, False]), np.array([1, 4, 0, 2, 0]))
    return scores


def reading() -> Reading:
    stats = WorkerStats(started=100.0, events=7, duplicates=2, recommendations=5, forgotten=1, batches=3)
    stats.offset_gaps_filled, stats.item_updates_applied, stats.misrouted = 4, 6, 11
    stats.latencies_ms.extend([1.0, 3.0])
    stats.item_visible_ms.extend([2.0, 4.04])
    stats.items_withdrawn, stats.lists_refreshed, stats.refresh_pending, stats.rules_in_force = 2, 11, 3, 1
    stats.withdrawal_applied_ms.extend([30.0, 50.0, 40.04])
    stats.cpu_at_first_batch = {"worker": 1.5, "core": 2.0}
    latency = Histogram((10.0, 100.0))
    latency.observe(12.0)
    return Reading(
        stats=stats,
        core=CoreState(
            items_indexed=80,
            model_version="fusion@9",
            model_steps=9,
            own_steps=4,
            peers=("b",),
            cpu_seconds=6.25,
            ranker_weights={"sim_long": 1.5, "price": -0.25},
            online=online_scores().counts(),
        ),
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
        cpu_seconds=3.5,
        now=110.0,
    )


def test_stats_keys_and_values() -> None:
    shown = stats_json(reading())
    assert list(shown) == STATS_KEYS
    assert shown["events"] == 7 and shown["events_per_s"] == 0.7 and shown["duplicates_skipped"] == 2
    assert (shown["offset_gaps_filled"], shown["item_updates_applied"], shown["forgotten_users"]) == (4, 6, 1)
    assert shown["misrouted_events"] == 11
    assert (shown["profiles"], shown["profile_bytes"]) == (2, 5)
    assert shown["processing_ms_p50"] == 2.0 and shown["item_visible_ms_recent"] == [2.0, 4.0]
    assert shown["next_offsets"] == {"0": 10, "2": 5} and list(shown["next_offsets"]) == ["0", "2"]
    assert (shown["model_peers"], shown["core_pid"], shown["model_restored_own_steps"]) == (["b"], 4242, 3)
    assert (shown["items_withdrawn"], shown["lists_refreshed"], shown["refresh_pending"]) == (2, 11, 3)
    assert shown["withdrawal_applied_ms_p50"] == 40.04 and shown["withdrawal_applied_ms_recent"] == [30.0, 50.0, 40.0]
    assert shown["ranker_weights"] == {"sim_long": 1.5, "price": -0.25}
    assert shown["cpu_seconds"] == {"worker": 3.5, "core": 6.25}
    assert shown["cpu_seconds_at_first_batch"] == {"worker": 1.5, "core": 2.0}
    in_process = stats_json(Reading(**{**reading().__dict__, "core_pid": None}))  # no core process of its own
    assert in_process["cpu_seconds"] == {"worker": 3.5}


def test_online_quality_on_stats() -> None:
    quality = stats_json(reading())["online_quality"]
    assert (quality["k"], quality["scored"], quality["scored_all"]) == (20, 4, 5)
    assert quality["recall"] == 3 / 4 and quality["recall_all"] == 3 / 5
    assert quality["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 2) / 4)
    assert quality["ndcg"] == pytest.approx((1 + 1 / np.log2(5) + 1 / np.log2(3)) / 4)
    window = quality["window"]  # the newest three: the behaviour repeat missed, the search hit and miss
    assert (window["size"], window["scored"], window["scored_all"], window["recall"]) == (3, 2, 3, 1 / 2)
    assert stats_json(Reading(**{**reading().__dict__, "core": CoreState()}))["online_quality"] is None


def test_online_quality_metrics_by_kind_and_discovery() -> None:
    samples = parse(render(metrics(reading())))
    b_disc, b_rep = 'kind="behaviour",discovery="discovery"', 'kind="behaviour",discovery="repeat"'
    s_disc, s_rep = 'kind="search",discovery="discovery"', 'kind="search",discovery="repeat"'
    assert {k: samples[f"streamrec_online_scored_total{{{k}}}"] for k in (b_disc, b_rep, s_disc, s_rep)} == {
        b_disc: 2,
        b_rep: 1,
        s_disc: 2,
        s_rep: 0,
    }
    assert {k: samples[f"streamrec_online_hits_total{{{k}}}"] for k in (b_disc, b_rep, s_disc, s_rep)} == {
        b_disc: 2,
        b_rep: 0,
        s_disc: 1,
        s_rep: 0,
    }
    rank = "streamrec_online_hit_rank"
    assert [samples[f'{rank}_bucket{{{b_disc},le="{le}"}}'] for le in ("1", "2", "3", "5", "20", "+Inf")] == [
        1,
        1,
        1,
        2,
        2,
        2,
    ]
    assert (samples[f"{rank}_sum{{{b_disc}}}"], samples[f"{rank}_count{{{b_disc}}}"]) == (5, 2)
    assert samples[f'{rank}_bucket{{{s_disc},le="1"}}'] == 0 and samples[f'{rank}_bucket{{{s_disc},le="2"}}'] == 1
    assert samples[f"{rank}_count{{{s_rep}}}"] == 0


def test_metrics_names_kinds_and_samples() -> None:
    shown = metrics(reading())
    assert {m.name: m.kind for m in shown} == METRICS
    samples = parse(render(shown))
    assert samples["streamrec_events_total"] == 7
    assert samples["streamrec_misrouted_events_total"] == 11
    assert "misrouted events           11 (README: other clients)" in format_status(samples)
    assert samples["streamrec_users"] == 2
    assert samples['streamrec_cpu_seconds_total{process="worker"}'] == 3.5
    assert samples['streamrec_cpu_seconds_total{process="core"}'] == 6.25
    assert samples['streamrec_consumer_lag{partition="0"}'] == 3
    assert samples['streamrec_consumer_lag{partition="2"}'] == 0
    assert samples["streamrec_consumer_lag_total"] == 3
    assert samples['streamrec_event_to_recommendation_ms_bucket{le="100"}'] == 1
    assert samples["streamrec_event_to_recommendation_ms_count"] == 1


def test_a_figure_on_both_pages_shows_the_same_value() -> None:
    r = reading()
    shown, samples = stats_json(r), parse(render(metrics(r)))
    both = [f for f in FIGURES if f.key is not None and f.metric is not None]
    assert len(both) == 15
    for f in both:
        if f.label is not None:  # one sample per label value
            shown_samples = {f'{f.metric}{{{f.label}="{k}"}}': v for k, v in shown[f.key].items()}  # type: ignore[index]
            assert {name: samples[name] for name in shown_samples} == shown_samples, f.key
        else:
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
    fresh = render(metrics(Reading(**{**idle.__dict__, "core": CoreState()})))  # before the core's first reply
    assert "# TYPE streamrec_online_hit_rank histogram" in fresh
    assert not [line for line in fresh.splitlines() if line.startswith("streamrec_online")]


def test_status_shows_the_online_hit_rate_of_discovery_events() -> None:
    shown = format_status(parse(render(metrics(reading()))))
    assert "online hit rate            0.750 (4 discovery events)" in shown  # 3 hits of 4, both list kinds
    fresh = Reading(**{**reading().__dict__, "core": CoreState()})
    assert "online hit rate            -" in format_status(parse(render(metrics(fresh))))
