from __future__ import annotations

import math

import pytest

from streamrec.model.metrics import PrequentialScore, hit_rank, mrr_at_rank, ndcg_at_rank


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
