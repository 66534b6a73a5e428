from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.model.metrics import OnlineScores, PrequentialScore, hit_rank, mrr_at_rank, ndcg_at_rank


def test_hand_computed_examples() -> None:
    ranked = ["a", "b", "c", "d"]
    assert [hit_rank(x, ranked) for x in "adz"] == [1, 4, None]
    assert ndcg_at_rank(1) == 1.0
    assert ndcg_at_rank(3) == pytest.approx(0.5)  # 1/log2(4)
    assert ndcg_at_rank(4) == pytest.approx(1 / math.log2(5))
    assert mrr_at_rank(4) == 0.25 and mrr_at_rank(None) == 0.0


def test_prequential_score_discovery_vs_all_and_windows() -> None:
    s = PrequentialScore(window=2)
    for rank, discovery in [(1, True), (None, True), (3, False), (2, True), (None, True), (None, False)]:
        s.add(rank, discovery)
    summary = s.summary()
    assert summary["recall"] == pytest.approx(2 / 4)
    assert summary["ndcg"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert summary["mrr"] == pytest.approx((1 + 0.5) / 4)
    assert summary["recall_all"] == pytest.approx(3 / 6)
    assert s.windowed_recall() == [0.5, 0.5]


def test_online_quality_means_are_the_harness_means_of_the_same_ranks() -> None:
    rng = np.random.default_rng(3)
    ranks = rng.integers(0, 8, size=500)  # 0: not in the list
    repeats = rng.random(500) < 0.3
    scores = OnlineScores(k=7, kinds=("behaviour", "search"), window=50)
    for start in range(0, 500, 37):  # in uneven batches
        part = slice(start, start + 37)
        scores.add(np.zeros(len(ranks[part]), np.int64), repeats[part], ranks[part])
    offline = PrequentialScore(window=50)
    for rank, repeat in zip(ranks.tolist(), repeats.tolist(), strict=True):
        offline.add(rank or None, not repeat)
    figures = scores.counts().figures()
    assert figures["scored"] == offline.discovery.n and figures["scored_all"] == 500
    for name, value in offline.summary().items():
        assert figures[name] == pytest.approx(value, abs=1e-12), name


def test_the_online_window_holds_the_newest_scored_events_only() -> None:
    scores = OnlineScores(k=3, kinds=("behaviour",), window=4)
    kinds = np.zeros(6, np.int64)
    scores.add(kinds[:3], np.zeros(3, bool), np.array([1, 1, 1]))
    assert scores.counts().figures()["window"]["scored"] == 3
    scores.add(kinds[:3], np.zeros(3, bool), np.array([0, 0, 2]))  # wraps: the two oldest hits drop out
    window = scores.counts().figures()["window"]
    assert (window["scored"], window["recall"], window["mrr"]) == (4, 0.5, (1 + 0.5) / 4)
    scores.add(kinds, np.ones(6, bool), np.array([3, 3, 0, 0, 0, 0]))  # a batch larger than the window
    counts = scores.counts()
    assert counts.recent.sum() == 4 and counts.recent[0, 1, 0] == 4  # the batch's newest four: repeats, missed
    assert counts.since_start.sum() == 12 and counts.hits() == {
        ("behaviour", "discovery"): 4,
        ("behaviour", "repeat"): 2,
    }


def test_a_rank_beyond_k_is_a_miss_and_bad_sizes_are_refused() -> None:
    scores = OnlineScores(k=2, kinds=("behaviour",), window=5)
    scores.add(np.zeros(3, np.int64), np.zeros(3, bool), np.array([1, 2, 3]))
    assert scores.counts().hit_ranks() == {("behaviour", "discovery"): [1, 1], ("behaviour", "repeat"): [0, 0]}
    assert scores.counts().figures()["recall"] == 2 / 3
    with pytest.raises(ValueError, match="window"):
        OnlineScores(k=2, kinds=("behaviour",), window=0)
