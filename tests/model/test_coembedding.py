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
