from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.coembedding import CoEmbedding
from streamrec.settings import Settings


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


def _with_unit_rows(**overrides: object) -> CoEmbedding:
    """Rows 0..3 visited enough, each vector the unit axis of its row (so a user vector shows its weights)."""
    emb = CoEmbedding(Settings.of(coemb_dim=4, coemb_min_visits=1, **overrides).retrieval)
    emb.add([], 3)
    emb.vectors[:4] = np.eye(4, dtype=np.float32)
    emb.visits[:4] = 1
    return emb


def _weights(emb: CoEmbedding, seeds: list[int]) -> list[float]:
    u = emb.user_vector(seeds)
    assert u is not None
    return [round(float(w), 4) for w in u / u.max()]


def test_the_user_vector_takes_its_window_and_weighting_from_the_settings() -> None:
    seeds = [0, 1, 2, 3]  # 3 is the newest
    assert _weights(_with_unit_rows(cooc_window=3), seeds) == [0.0, 0.3333, 0.5, 1.0]  # today: 1/rank, cooc_window
    assert _weights(_with_unit_rows(cooc_window=3, coemb_user_window=4), seeds) == [0.25, 0.3333, 0.5, 1.0]
    assert _weights(_with_unit_rows(coemb_user_decay="uniform"), seeds) == [1.0, 1.0, 1.0, 1.0]
    exponential = _with_unit_rows(coemb_user_decay="exponential", coemb_user_half_life=1.0)
    assert _weights(exponential, seeds) == [0.125, 0.25, 0.5, 1.0]


def test_unigram_negatives_come_only_from_visited_rows_in_proportion_to_visits_to_the_power() -> None:
    emb = CoEmbedding(Settings.of(coemb_negatives=4000, coemb_negative_power=0.5, seed=3).retrieval)
    emb.add([], 9)  # rows 0..9 exist, only 9 visited so far
    emb.visits[2] = 16
    emb.visits[9] = 4  # weights 16**0.5 = 4 and 4**0.5 = 2: row 2 drawn twice as often as row 9
    drawn = emb._negatives(1)
    counts = np.bincount(drawn.ravel(), minlength=10)
    assert set(np.flatnonzero(counts).tolist()) == {2, 9}
    assert abs(counts[2] / counts[9] - 2.0) < 0.2
    uniform = CoEmbedding(Settings.of(coemb_negatives=4000, seed=3).retrieval)
    uniform.add([], 9)
    assert set(np.unique(uniform._negatives(1)).tolist()) == set(range(10))


def test_context_vectors_score_what_followed_the_user_s_item_not_what_preceded_it() -> None:
    # 1 followed 0 and 2 followed 1; every filler item is visited after its partner and so has a trained vector
    sessions = [[0, 1], [1, 2], *[[10 + 2 * i, 11 + 2 * i, 10 + 2 * i] for i in range(100)]]
    visits = [(s[:i], row) for s in sessions for i, row in enumerate(s)]
    emb = CoEmbedding(Settings.of(cooc_window=3, seed=1, coemb_context_vectors=True).retrieval)
    shared = CoEmbedding(Settings.of(cooc_window=3, seed=1).retrieval)
    for _ in range(300):  # context vectors start at zero, so they learn more slowly than one shared table
        emb.add_many(visits)
        shared.add_many(visits)
    assert emb.context is not None and shared.context is None
    sims = similarity(emb, emb.user_vector([1]), np.arange(210))
    assert int(np.argmax(sims)) == 2
    assert sims[0] < 0.0 < sims[2]
    # one shared table makes both of 1's neighbours alike to it, what came before as much as what came after
    assert similarity(shared, shared.user_vector([1]), np.array([0, 2])).min() > 0.5


def test_a_visit_trains_against_its_own_window_of_previous_items() -> None:
    emb = CoEmbedding(Settings.of(coemb_negatives=0, cooc_window=3, coemb_train_window=1).retrieval)
    emb.add([], 9)
    v = emb.vectors.copy()
    emb.add([3, 5], 7)  # only 5, the newest, is within the window of one
    assert np.array_equal(emb.vectors[3], v[3])
    assert not np.array_equal(emb.vectors[5], v[5]) and not np.array_equal(emb.vectors[7], v[7])


def test_replay_retrains_past_visits_with_the_new_ones() -> None:
    emb = CoEmbedding(Settings.of(coemb_negatives=0, coemb_replay=2, coemb_replay_capacity=2).retrieval)
    emb.add([], 9)
    emb.add([1], 2)  # nothing kept yet: only the new visit trains
    assert emb._replay_n == 1 and emb._replay_rows[0] == 2 and emb._replay_contexts[0, :2].tolist() == [1, -1]
    v = emb.vectors.copy()
    emb.add([4, 5], 6)  # 6 with 4 and 5, and twice 2 with 1 (the only past visit)
    g = 0.05 * (1.0 - 1.0 / (1.0 + np.exp(-float(v[2] @ v[1]))))
    np.testing.assert_allclose(emb.vectors[1], v[1] + 2 * g * v[2], rtol=1e-5)
    assert emb.visits[[1, 2, 6]].tolist() == [0, 1, 1]  # replays are not visits
    emb.add([7], 8)  # the ring holds two: the oldest (2 after 1) goes
    assert sorted(emb._replay_rows.tolist()) == [6, 8] and emb._replay_n == 2
    off = CoEmbedding(Settings.of(coemb_negatives=0).retrieval)
    off.add([1], 2)
    assert off._replay_n == 0 and len(off._replay_rows) == 0


def test_replay_in_a_large_batch_is_stepped_in_bounded_pieces_and_stays_finite() -> None:
    # a worker's batch: thousands of visits, ten replays each; one step for all of it drove the vectors to overflow
    filler = [[10 + 2 * i, 11 + 2 * i] for i in range(100)]
    sessions = [[0, 1], [1, 2], [3, 4], [4, 5], *filler]
    visits = [(s[:i], r) for s in sessions for i, r in enumerate(s)]
    emb = CoEmbedding(Settings.of(cooc_window=3, seed=1, coemb_replay=10).retrieval)
    for _ in range(100):
        emb.add_many(visits)
    assert np.isfinite(emb.vectors).all()
    assert float(np.abs(emb.vectors[:210]).max()) < 10.0
