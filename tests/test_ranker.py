from __future__ import annotations

import numpy as np
import pytest

from streamrec.ranker import FEATURES, PRIOR_WEIGHTS, FusionRanker
from streamrec.settings import Settings

F = len(FEATURES)


def _batch(feature: str, n: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positives carry ``feature`` = 1, negatives 0: the ranker should learn to weigh it up."""
    pos = np.zeros((n, F), np.float32)
    pos[:, FEATURES.index(feature)] = 1.0
    neg = np.zeros((n, 3, F), np.float32)
    return pos, neg, np.full(n, 3, np.int64), np.ones(n, np.float32)


def test_sgd_step_moves_theta_along_negative_gradient() -> None:
    r = FusionRanker(Settings(learning_rate=0.1, l2=0.0))
    w0 = r.weights.copy()
    loss = r.step(*_batch("freshness"))
    i = FEATURES.index("freshness")
    # d/dθ softplus(-(θ·p - θ·n)) = -σ(-(Δ)) · (p - n); with θ_i·1 = 0.1 prior, σ(-0.1)
    expected = w0[i] + 0.1 * (1.0 / (1.0 + np.exp(0.1)))
    assert r.weights[i] == pytest.approx(expected, rel=1e-5)
    others = [j for j in range(F) if j != i]
    np.testing.assert_allclose(r.weights[others], w0[others])
    assert loss == pytest.approx(np.log1p(np.exp(-0.1)), rel=1e-5)
    assert r.steps == 1 and r.version == "fusion@1"


def test_learning_reduces_loss_over_steps() -> None:
    r = FusionRanker(Settings(learning_rate=0.2))
    losses = [r.step(*_batch("price")) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_padding_and_no_negative_events_do_not_count() -> None:
    r = FusionRanker(Settings(learning_rate=0.1))
    pos, neg, _, w = _batch("price", 2)
    w0 = r.weights.copy()
    r.step(pos, neg, np.zeros(2, np.int64), w)
    np.testing.assert_allclose(r.weights, w0 * (1 - 0.1 * 1e-4), rtol=1e-6)  # only the L2 shrink


def test_frozen_ranker_does_not_learn() -> None:
    r = FusionRanker(Settings(learn=False))
    r.step(*_batch("price"))
    assert r.steps == 0 and r.weight("price") == PRIOR_WEIGHTS["price"]


def test_snapshot_restore_roundtrip() -> None:
    a = FusionRanker(Settings(learning_rate=0.3))
    for _ in range(5):
        a.step(*_batch("seen"))
    b = FusionRanker(Settings())
    b.restore(a.snapshot())
    np.testing.assert_array_equal(a.weights, b.weights)
    assert b.version == a.version == "fusion@5"
    snap = a.snapshot() | {"features": ["other"]}
    with pytest.raises(ValueError, match="do not match"):
        b.restore(snap)


def test_reasons_name_the_largest_contributions() -> None:
    r = FusionRanker(Settings())
    x = np.zeros(F, np.float32)
    x[FEATURES.index("category")] = 0.9
    x[FEATURES.index("popularity")] = 1.0
    x[FEATURES.index("sim_long")] = 0.1
    assert r.reasons(x) == ["from a category you like", "popular right now"]
