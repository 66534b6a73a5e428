from __future__ import annotations

import numpy as np
import pytest

from streamrec.events import Item, ItemEmbedding
from streamrec.retrieval import Catalog, CoEmbedding, CoVisitation, DecayClock, freshness
from streamrec.settings import Settings

S = Settings(embedding_dim=4, popularity_half_life_s=10.0, cooc_window=2)


def emb(item_id: str, vec: list[float], ts: float = 1.0, category: str | None = "c") -> ItemEmbedding:
    return ItemEmbedding(
        Item(item_id, item_id, ts, category=category, price=5.0), np.array(vec, np.float32), "m", "text"
    )


def test_upsert_replaces_vector_and_ignores_stale_versions() -> None:
    cat = Catalog(S)
    assert cat.upsert(emb("a", [1, 0, 0, 0], ts=5.0))
    assert cat.upsert(emb("b", [0, 1, 0, 0]))
    _, rows = cat.search(np.array([[0, 1, 0, 0]], np.float32), 1)
    assert cat.item_id(int(rows[0, 0])) == "b"
    assert cat.upsert(emb("a", [0, 0.6, 0.8, 0], ts=6.0))  # newer: replaces in FAISS
    assert not cat.upsert(emb("a", [1, 0, 0, 0], ts=4.0))  # older: ignored
    assert cat.n_indexed == 2 and len(cat) == 2
    scores, rows = cat.search(np.array([[0, 0, 1, 0]], np.float32), 2)
    assert [cat.item_id(int(r)) for r in rows[0]] == ["a", "b"]
    assert scores[0, 0] == pytest.approx(0.8)


def test_capacity_grows_and_id_only_items_are_not_indexed() -> None:
    cat = Catalog(S)
    for i in range(2500):
        cat.upsert(emb(f"i{i}", [1, i % 7, 0, 1]))
    row = cat.ensure("unknown-item")
    assert (len(cat), cat.n_indexed, cat.item_id(row)) == (2501, 2500, "unknown-item")
    assert not cat.has_vector[row] and cat.category_of(row) is None


def test_decayed_popularity_ranks_recent_activity_higher() -> None:
    cat = Catalog(S)
    for name in "abc":
        cat.ensure(name)
    cat.add_popularity(cat.row_of["a"], 4.0, ts=0.0)
    cat.add_popularity(cat.row_of["b"], 3.0, ts=10.0)  # one half-life later
    assert cat.popularity_at(np.array([0, 1, 2]), 10.0) == pytest.approx([2.0, 3.0, 0.0])
    assert [cat.item_id(int(r)) for r in cat.top_popular(5)] == ["b", "a"]


def test_decay_clock_rescale_keeps_ratios() -> None:
    clock = DecayClock(1.0)
    assert clock.growth(0.0) == 1.0
    assert clock.needs_rescale(61.0)
    factor = clock.rebase(61.0)
    assert factor == pytest.approx(2.0**-61) and clock.growth(61.0) == 1.0


def test_covisitation_is_symmetric_recency_weighted_and_bounded() -> None:
    cv = CoVisitation(Settings(cooc_window=2, cooc_max_neighbours=2, popularity_half_life_s=1e9))
    cv.add([], 1, 1.0, 0.0)
    cv.add([1], 2, 1.0, 0.0)
    cv.add([1, 2], 3, 1.0, 0.0)  # 3 co-visits 2 (distance 1) and 1 (distance 2)
    assert cv.scores([3], 0.0) == pytest.approx({2: 1.0, 1: 0.5})
    assert cv.scores([1], 0.0) == pytest.approx({2: 1.0, 3: 0.5})
    assert cv.top([1, 2], 0.0, n=1, exclude=[1, 2]) == pytest.approx({3: 1.0 + 0.5 * 0.5})
    for other in range(10, 20):
        cv.add([5], other, float(other), 0.0)
    assert len(cv.neighbours[5]) <= 2 * 2


def _trained_coembedding(sessions: list[list[int]], repeats: int) -> CoEmbedding:
    emb = CoEmbedding(Settings(cooc_window=3, seed=1))
    for _ in range(repeats):
        for session in sessions:
            for i, row in enumerate(session):
                emb.add(session[:i], row)
    return emb


def test_coembedding_relates_items_through_shared_neighbours() -> None:
    # 0 and 2 are never visited together, only each with 1; 3-4-5 form a separate taste; 10..209 are
    # unrelated pairs (a catalogue for the negatives to come from)
    filler = [[10 + 2 * i, 11 + 2 * i] for i in range(100)]
    emb = _trained_coembedding([[0, 1], [1, 2], [3, 4], [4, 5], *filler], repeats=100)
    sims = emb.similarity(emb.user_vector([0]), np.arange(210))
    assert sims[2] > 0.5
    assert sims[2] > sims[3:6].max() + 0.5
    assert sims[2] > sims[10:].max() + 0.3


def test_coembedding_weighs_the_latest_item_most_and_knows_nothing_of_unseen_rows() -> None:
    emb = _trained_coembedding([[0, 1], [2, 3], *[[10 + 2 * i, 11 + 2 * i] for i in range(100)]], repeats=100)
    after_3 = emb.similarity(emb.user_vector([0, 2]), np.array([3, 1]))  # 2 is the latest
    assert after_3[0] > after_3[1]
    assert emb.user_vector([]) is None
    assert emb.similarity(None, np.array([0, 1])).tolist() == [0.0, 0.0]
    assert emb.similarity(emb.user_vector([0]), np.array([emb.n + 5])).tolist() == [0.0]


def test_freshness_halves() -> None:
    assert freshness(np.array([10.0, 0.0, 20.0]), 10.0, 10.0) == pytest.approx([1.0, 0.5, 1.0])


def test_ivf_index_is_built_at_the_threshold_and_retrained_as_the_catalogue_doubles() -> None:
    s = Settings(embedding_dim=8, ann_threshold=3_000, ann_nprobe=64, seed=3)
    cat = Catalog(s)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6_100, 8)).astype(np.float32)
    lists = []
    for i, v in enumerate(vectors):
        cat.upsert(emb(f"i{i}", list(v)))
        if i + 1 in (2_999, 3_000, 5_999, 6_000, 6_100):
            lists.append(getattr(cat.index, "nlist", 0))
    # exact below the threshold, IVF with 4·√n lists at 3,000 items, retrained with more lists at 6,000
    first, second = int(4 * np.sqrt(3_000)), int(4 * np.sqrt(6_000))
    assert lists == [0, first, first, second, second]
    assert cat.n_indexed == 6_100
    unit_rows = vectors[[10, 4_000, 6_050]] / np.linalg.norm(vectors[[10, 4_000, 6_050]], axis=1, keepdims=True)
    _, rows = cat.search(unit_rows, 1)
    assert [cat.item_id(int(r)) for r in rows[:, 0]] == ["i10", "i4000", "i6050"]


def test_relative_popularity_is_scaled_by_the_most_popular_item_across_rescales() -> None:
    s = Settings(embedding_dim=4, popularity_half_life_s=1.0)
    cat = Catalog(s)
    for item_id in "abc":
        cat.upsert(emb(item_id, [1, 0, 0, 0]))
    rows = np.array([0, 1, 2])
    cat.add_popularity(0, 3.0, ts=0.0)
    cat.add_popularity(1, 1.0, ts=0.0)
    assert cat.relative_popularity(rows, 0.0) == pytest.approx([1.0, np.log1p(1.0) / np.log1p(3.0), 0.0])
    cat.add_popularity(2, 100.0, ts=70.0)  # 70 half-lives later: counters are rebased (2^60 guard)
    peak = cat.popularity[:3].max()
    assert cat._peak_popularity == peak and cat.popularity_at(np.array([2]), 70.0) == pytest.approx([100.0])
    assert cat.relative_popularity(rows, 70.0)[2] == pytest.approx(1.0)
