from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.events import Item, ItemEmbedding
from streamrec.model.retrieval import (
    Catalog,
    CoEmbedding,
    CoVisitation,
    CovisScores,
    DecayClock,
    covis_rank_table,
    freshness,
)
from streamrec.settings import Settings

S = Settings.of(embedding_dim=4, popularity_half_life_s=10.0, cooc_window=2)


def emb(item_id: str, vec: list[float], ts: float = 1.0, category: str | None = "c") -> ItemEmbedding:
    return ItemEmbedding(
        Item(item_id, item_id, ts, category=category, price=5.0), np.array(vec, np.float32), "m", "text"
    )


def test_upsert_replaces_vector_and_ignores_stale_versions() -> None:
    cat = Catalog(S.retrieval)
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
    cat = Catalog(S.retrieval)
    for i in range(2500):
        cat.upsert(emb(f"i{i}", [1, i % 7, 0, 1]))
    row = cat.ensure("unknown-item")
    assert (len(cat), cat.n_indexed, cat.item_id(row)) == (2501, 2500, "unknown-item")
    assert not cat.has_vector[row] and cat.category_of(row) is None


def test_decayed_popularity_ranks_recent_activity_higher() -> None:
    cat = Catalog(S.retrieval)
    for name in "abc":
        cat.ensure(name)
    cat.add_popularity(cat.row_of["a"], 4.0, ts=0.0)
    cat.add_popularity(cat.row_of["b"], 3.0, ts=10.0)  # one half-life later
    assert cat.popularity_at(np.array([0, 1, 2]), 10.0) == pytest.approx([2.0, 3.0, 0.0])
    assert [cat.item_id(int(r)) for r in cat.top_popular(5)] == ["b", "a"]


def test_most_popular_set_follows_every_update_like_a_full_sort() -> None:
    """The incrementally kept top set equals sorting the whole catalogue, ties broken by lower row."""
    cat = Catalog(Settings.of(embedding_dim=4, popularity_half_life_s=1.0, candidates_per_source=8).retrieval)
    rng = np.random.default_rng(7)
    for i in range(60):
        cat.ensure(f"i{i}")
    for step in range(3000):
        # skewed rows, integer weights (many exact ties), time moving on (decay + rescales past 2^60)
        row = int(min(rng.zipf(1.3), 60) - 1)
        cat.add_popularity(row, float(rng.integers(1, 3)), ts=step * 0.11)
        if step % 97 == 0:
            pop = cat.popularity[:60]
            expected = sorted(np.flatnonzero(pop > 0).tolist(), key=lambda r: (-pop[r], r))
            assert cat.top_popular(8).tolist() == expected[:8]
            assert cat.top_popular(20).tolist()[:8] == expected[:8]  # beyond the kept set: a full scan
    assert cat.pop_clock.t0 > 0.0  # the counters were rescaled on the way


def dict_walk(cv: CoVisitation, seeds: list[int], ts: float) -> dict[int, float]:
    """Co-visitation scores the plain way: walk the seeds' neighbour dicts, most recent seed first."""
    g = cv.clock.growth(ts)
    expected: dict[int, float] = {}
    for distance, seed in enumerate(reversed(seeds[-cv.window :]), start=1):
        for other, w in cv.neighbours(seed).items():
            expected[other] = expected.get(other, 0.0) + w * (1.0 / (distance * g))
    return expected


def random_covisitation(steps: int, seed: int = 5) -> tuple[CoVisitation, list[int]]:
    cv = CoVisitation(Settings.of(cooc_window=4, cooc_max_neighbours=6, popularity_half_life_s=7.0).retrieval)
    rng = np.random.default_rng(seed)
    history: list[int] = []
    for step in range(steps):
        row = int(rng.integers(0, 30))
        cv.add(history, row, float(rng.integers(1, 4)), step * 0.5)
        history = [*history, row][-4:]
    return cv, history


def test_covisitation_arrays_match_a_dict_walk_exactly() -> None:
    cv, history = random_covisitation(400)
    expected = dict_walk(cv, history, 200.0)
    found = cv.score_arrays(history, 200.0)
    assert found.rows.tolist() == list(expected) and found.scores.tolist() == list(expected.values())
    ranked = sorted(expected, key=expected.__getitem__, reverse=True)
    assert found.top(5).tolist() == ranked[:5]
    value = dict(zip(found.rows.tolist(), found.rank_values().tolist(), strict=True))
    assert [value[ranked[0]], value[ranked[3]]] == pytest.approx([1.0, 1 / np.log2(5.0)])


def test_many_users_covisitation_scores_in_one_pass_are_each_users_own_to_the_bit() -> None:
    cv, _ = random_covisitation(300)
    rng = np.random.default_rng(9)
    seed_lists = [[], [99], [3], [3, 3], *[rng.integers(0, 32, size=rng.integers(1, 7)).tolist() for _ in range(40)]]
    for _ in range(2):  # the second round reads neighbour arrays cached by the first, after more co-visits
        for seeds, found in zip(seed_lists, cv.score_arrays_many(seed_lists, 150.0), strict=True):
            expected = dict_walk(cv, seeds, 150.0)
            assert found.rows.tolist() == list(expected) and found.scores.tolist() == list(expected.values())
            ranked = sorted(expected, key=lambda r: -expected[r])  # stable: ties keep first appearance
            assert found.top(len(expected)).tolist() == ranked
        times = [150.0 + i % 7 for i in range(len(seed_lists))]  # one time per user, as training examples have
        for seeds, t, found in zip(seed_lists, times, cv.score_arrays_many(seed_lists, times), strict=True):
            expected = dict_walk(cv, seeds, t)
            assert found.rows.tolist() == list(expected) and found.scores.tolist() == list(expected.values())
        for step in range(50):
            cv.add([int(rng.integers(0, 30))], int(rng.integers(0, 30)), 1.0, 150.0 + step)


def test_decay_clock_rescale_keeps_ratios() -> None:
    clock = DecayClock(1.0)
    assert clock.growth(0.0) == 1.0
    assert clock.needs_rescale(61.0)
    factor = clock.rebase(61.0)
    assert factor == pytest.approx(2.0**-61) and clock.growth(61.0) == 1.0


def test_covisitation_is_symmetric_recency_weighted_and_bounded() -> None:
    cv = CoVisitation(Settings.of(cooc_window=2, cooc_max_neighbours=2, popularity_half_life_s=1e9).retrieval)
    cv.add([], 1, 1.0, 0.0)
    cv.add([1], 2, 1.0, 0.0)
    cv.add([1, 2], 3, 1.0, 0.0)  # 3 co-visits 2 (distance 1) and 1 (distance 2)
    assert cv.scores([3], 0.0) == pytest.approx({2: 1.0, 1: 0.5})
    assert cv.scores([1], 0.0) == pytest.approx({2: 1.0, 3: 0.5})
    assert cv.top([1, 2], 0.0, n=1, exclude=[1, 2]) == pytest.approx({3: 1.0 + 0.5 * 0.5})
    for other in range(10, 20):
        cv.add([5], other, float(other), 0.0)
    assert len(cv.neighbours(5)) <= 2 * 2


def test_a_batched_coembedding_step_takes_every_gradient_at_the_vectors_before_the_batch() -> None:
    emb = CoEmbedding(Settings.of(coemb_negatives=0, coemb_learning_rate=0.5, seed=4).retrieval)
    emb.add([], 9)  # rows 0..9 exist
    v = emb.vectors.copy()
    emb.add_many([([3, 5], 7), ([7], 3)])

    def g(a: int, b: int) -> float:
        return 0.5 * (1.0 - 1.0 / (1.0 + np.exp(-float(v[a] @ v[b]))))

    # pairs (7, 3), (7, 5), (3, 7): each moves both ends, all from the same starting vectors
    np.testing.assert_allclose(emb.vectors[7], v[7] + g(7, 3) * v[3] + g(7, 5) * v[5] + g(3, 7) * v[3], rtol=1e-5)
    np.testing.assert_allclose(emb.vectors[3], v[3] + g(7, 3) * v[7] + g(3, 7) * v[7], rtol=1e-5)
    np.testing.assert_allclose(emb.vectors[5], v[5] + g(7, 5) * v[7], rtol=1e-5)
    assert emb.visits[[3, 5, 7, 9]].tolist() == [1, 0, 1, 1]


def similarity(emb: CoEmbedding, user: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    return emb.similarity_many([user], rows, np.zeros(len(rows), np.int64))


def _trained_coembedding(sessions: list[list[int]], repeats: int, batched: bool = False) -> CoEmbedding:
    """One visit at a time, or (``batched``) one :meth:`CoEmbedding.add_many` step per pass over the sessions."""
    emb = CoEmbedding(Settings.of(cooc_window=3, seed=1).retrieval)
    for _ in range(repeats):
        visits = [(session[:i], row) for session in sessions for i, row in enumerate(session)]
        if batched:
            emb.add_many(visits)
        else:
            for previous, row in visits:
                emb.add(previous, row)
    return emb


@pytest.mark.parametrize("batched", [False, True])
def test_coembedding_relates_items_through_shared_neighbours(batched: bool) -> None:
    # 0 and 2 are never visited together, only each with 1; 3-4-5 form a separate taste; 10..209 are
    # unrelated pairs (a catalogue for the negatives to come from)
    filler = [[10 + 2 * i, 11 + 2 * i] for i in range(100)]
    emb = _trained_coembedding([[0, 1], [1, 2], [3, 4], [4, 5], *filler], repeats=100, batched=batched)
    assert emb.visits[:3].tolist() == [100, 200, 100]
    sims = similarity(emb, emb.user_vector([0]), np.arange(210))
    assert sims[2] > 0.5
    assert sims[2] > sims[3:6].max() + 0.5
    assert sims[2] > sims[10:].max() + 0.3


def test_coembedding_weighs_the_latest_item_most_and_knows_nothing_of_unseen_rows() -> None:
    emb = _trained_coembedding([[0, 1], [2, 3], *[[10 + 2 * i, 11 + 2 * i] for i in range(100)]], repeats=100)
    after_3 = similarity(emb, emb.user_vector([0, 2]), np.array([3, 1]))  # 2 is the latest
    assert after_3[0] > after_3[1]
    assert emb.user_vector([]) is None
    assert similarity(emb, None, np.array([0, 1])).tolist() == [0.0, 0.0]
    assert similarity(emb, emb.user_vector([0]), np.array([emb.n + 5])).tolist() == [0.0]
    # several users in one call: each candidate is compared with its own user's vector
    users = [emb.user_vector([0]), None, emb.user_vector([2])]
    rows = np.array([1, 3, 1, 3, 1, 3])
    both = emb.similarity_many(users, rows, np.array([0, 0, 1, 1, 2, 2]))
    np.testing.assert_allclose(both[:2], similarity(emb, users[0], rows[:2]), rtol=1e-6)
    assert both[2:4].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(both[4:], similarity(emb, users[2], rows[4:]), rtol=1e-6)


def test_freshness_halves() -> None:
    assert freshness(np.array([10.0, 0.0, 20.0]), 10.0, 10.0) == pytest.approx([1.0, 0.5, 1.0])


def test_ivf_index_is_built_at_the_threshold_and_retrained_as_the_catalogue_doubles() -> None:
    s = Settings.of(embedding_dim=8, ann_threshold=3_000, ann_nprobe=64, seed=3)
    cat = Catalog(s.retrieval)
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
    s = Settings.of(embedding_dim=4, popularity_half_life_s=1.0)
    cat = Catalog(s.retrieval)
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


def test_covis_rank_table_keys_each_users_items_and_values_their_rank() -> None:
    """Value 1/log2(rank + 2) for each user's item at that rank (ties already broken in ``order``), keyed by user."""
    rng = np.random.default_rng(4)
    covis = [CovisScores.empty()]
    for n in (1, 5, 9):
        scores = rng.integers(0, 3, n).astype(np.float64)
        covis.append(CovisScores(rng.permutation(40)[:n], scores, np.lexsort((np.arange(n), -scores))))
    covis.append(CovisScores.empty())
    keys, values = covis_rank_table(covis, 41)
    got = dict(zip(keys.tolist(), values.tolist(), strict=True))
    expected = {
        u * 41 + int(c.rows[position]): float(np.float32(1.0 / np.log2(rank + 2.0)))
        for u, c in enumerate(covis)
        for rank, position in enumerate(c.order)
    }
    assert len(keys) == 15 and got == expected and values.dtype == np.float32
    assert covis[3].rank_values().tolist() == values[6:15].tolist()  # one user's values: the same table, in rows order
