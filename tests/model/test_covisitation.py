from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.covisitation import CoVisitation, CovisScores, covis_rank_table
from streamrec.settings import Settings


def dict_walk(cv: CoVisitation, seeds: list[int], ts: float) -> dict[int, float]:
    """Co-visitation scores the plain way: walk the seeds' neighbour dicts, most recent seed first."""
    g = cv.clock.growth(ts)
    expected: dict[int, float] = {}
    for distance, seed in enumerate(reversed(seeds[-cv.window :]), start=1):
        for other, w in cv.neighbours(seed).items():
            expected[other] = expected.get(other, 0.0) + w * (1.0 / (distance * g))
    return expected


def random_covisitation(steps: int, seed: int = 5) -> tuple[CoVisitation, list[int]]:
    cv = CoVisitation(Settings.of(cooc_window=4, cooc_max_neighbours=6, model_half_life_s=7.0).retrieval)
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


def test_covisitation_is_symmetric_recency_weighted_and_bounded() -> None:
    cv = CoVisitation(Settings.of(cooc_window=2, cooc_max_neighbours=2, model_half_life_s=1e9).retrieval)
    cv.add([], 1, 1.0, 0.0)
    cv.add([1], 2, 1.0, 0.0)
    cv.add([1, 2], 3, 1.0, 0.0)  # 3 co-visits 2 (distance 1) and 1 (distance 2)
    assert cv.scores([3], 0.0) == pytest.approx({2: 1.0, 1: 0.5})
    assert cv.scores([1], 0.0) == pytest.approx({2: 1.0, 3: 0.5})
    assert cv.top([1, 2], 0.0, n=1, exclude=[1, 2]) == pytest.approx({3: 1.0 + 0.5 * 0.5})
    for other in range(10, 20):
        cv.add([5], other, float(other), 0.0)
    assert len(cv.neighbours(5)) <= 2 * 2


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


def test_top_leaves_blocked_rows_out_and_fills_their_places() -> None:
    """Withdrawn or excluded items must not take the places of offerable ones among a user's co-visited items."""
    covis = CoVisitation(Settings.of(cooc_window=2).retrieval)
    covis.add_many([([0], 1, 3.0, 0.0), ([0], 2, 2.0, 0.0), ([0], 3, 1.0, 0.0)])
    found = covis.score_arrays([0], 0.0)
    assert found.top(2).tolist() == [1, 2]
    blocked = np.zeros(4, bool)
    blocked[1] = True
    assert found.top(2, blocked).tolist() == [2, 3]


def test_covisits_decay_with_the_models_half_life_when_it_is_set() -> None:
    for model_half_life, expected in ((0.0, 0.25), (2.0, 0.5)):  # 0: popularity_half_life_s (1 s) applies
        s = Settings.of(cooc_window=1, popularity_half_life_s=1.0, model_half_life_s=model_half_life)
        cv = CoVisitation(s.retrieval)
        cv.add([1], 2, 1.0, 0.0)
        assert cv.scores([1], 2.0) == pytest.approx({2: expected})
