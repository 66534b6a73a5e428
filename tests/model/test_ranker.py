from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.ranker import FEATURES, PRIOR_WEIGHTS, REASON_LABELS, FusionRanker
from streamrec.settings import Settings

F = len(FEATURES)


def _batch(feature: str, n: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positives carry ``feature`` = 1, negatives 0: the ranker should learn to weigh it up."""
    pos = np.zeros((n, F), np.float32)
    pos[:, FEATURES.index(feature)] = 1.0
    neg = np.zeros((n, 3, F), np.float32)
    return pos, neg, np.full(n, 3, np.int64), np.ones(n, np.float32)


def test_sgd_step_moves_theta_along_negative_gradient() -> None:
    r = FusionRanker(Settings.of(learning_rate=0.1, l2=0.0, optimizer="sgd").ranker)
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
    r = FusionRanker(Settings.of(learning_rate=0.2).ranker)
    losses = [r.step(*_batch("price")) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_padding_and_no_negative_events_do_not_count() -> None:
    r = FusionRanker(Settings.of(learning_rate=0.1, optimizer="sgd").ranker)
    pos, neg, _, w = _batch("price", 2)
    w0 = r.weights.copy()
    r.step(pos, neg, np.zeros(2, np.int64), w)
    np.testing.assert_allclose(r.weights, w0 * (1 - 0.1 * 1e-4), rtol=1e-6)  # only the L2 shrink


def test_frozen_ranker_does_not_learn() -> None:
    r = FusionRanker(Settings.of(learn=False).ranker)
    r.step(*_batch("price"))
    assert r.steps == 0 and r.weight("price") == PRIOR_WEIGHTS["price"]


def test_snapshot_restore_roundtrip() -> None:
    a = FusionRanker(Settings.of(learning_rate=0.3).ranker)
    for _ in range(5):
        a.step(*_batch("seen"))
    b = FusionRanker(Settings().ranker)
    b.restore(a.snapshot())
    np.testing.assert_array_equal(a.weights, b.weights)
    assert b.version == a.version == "fusion@5"
    snap = a.snapshot() | {"features": [f"other-{f}" for f in FEATURES]}
    with pytest.raises(ValueError, match="share none"):
        b.restore(snap)


def test_a_snapshot_from_code_with_a_feature_less_or_more_keeps_what_both_share() -> None:
    """An upgrade that adds a feature (or drops one) resumes the learned weights by name; a new one starts at
    its prior."""
    a = FusionRanker(Settings.of(learning_rate=0.3).ranker)
    for _ in range(5):
        a.step(*_batch("seen"))
    snap = a.snapshot()
    new = FEATURES[-1]
    keep = [f for f in FEATURES if f != new]
    old = snap | {
        "features": ["retired", *keep],  # older code: one feature since dropped, none of the newest
        "params": {
            "weight": [7.0, *(snap["params"]["weight"][FEATURES.index(f)] for f in keep)],
            "grad_sq": [7.0, *(snap["params"]["grad_sq"][FEATURES.index(f)] for f in keep)],
        },
    }
    b = FusionRanker(Settings().ranker)
    b.restore(old)
    for f in keep:
        assert b.weight(f) == a.weight(f)
    assert b.weight(new) == PRIOR_WEIGHTS[new] != a.weight(new)
    assert b.steps == a.steps


def test_reasons_name_the_largest_contributions() -> None:
    r = FusionRanker(Settings().ranker)
    x = np.zeros(F, np.float32)
    x[FEATURES.index("category")] = 0.9
    x[FEATURES.index("popularity")] = 1.0
    x[FEATURES.index("sim_long")] = 0.1
    assert r.reasons(x) == ["from a category you like", "popular right now"]
    assert r.reasons(np.zeros(F, np.float32)) == []  # nothing contributes: no reason invented


@pytest.mark.parametrize("top", [1, 2, 3, 4])
def test_reasons_for_many_rows_are_each_rows_largest_positive_terms(top: int) -> None:
    r = FusionRanker(Settings().ranker)
    x = np.random.default_rng(3).normal(size=(50, F)).astype(np.float32)
    x[:10] = -np.abs(x[:10]) * np.sign(r.weights)  # rows where no term is positive …
    x[5:10, FEATURES.index("sim_intent")] *= -1.0  # … and rows where exactly one is
    expected = []
    for row in x:
        contrib = [float(v) * r.weight(f) for v, f in zip(row, FEATURES, strict=True)]
        best = sorted(range(F), key=lambda i: -contrib[i])[:top]
        expected.append(tuple(REASON_LABELS[FEATURES[i]] for i in best if contrib[i] > 0))
    assert r.reasons_many(x, top=top) == expected
    assert {len(e) for e in expected} >= {top - 1, top}  # the sample exercises the "no positive term" cut


def test_closed_form_gradient_equals_autograd() -> None:
    """The hand-derived BPR gradient must match torch autograd on the same loss."""
    import torch

    s = Settings.of(learning_rate=0.3, l2=0.01, optimizer="sgd")
    r = FusionRanker(s.ranker)
    rng = np.random.default_rng(3)
    pos = rng.normal(size=(4, F)).astype(np.float32)
    neg = rng.normal(size=(4, 5, F)).astype(np.float32)
    n_neg = np.array([5, 2, 0, 3], np.int64)
    w = np.array([1.0, 3.0, 2.0, 0.3], np.float32)
    theta = torch.tensor(r.weights.copy(), requires_grad=True)
    mask = (torch.arange(5)[None, :] < torch.from_numpy(n_neg)[:, None]).float()
    margin = (torch.from_numpy(pos) @ theta)[:, None] - torch.from_numpy(neg) @ theta
    per_event = (torch.nn.functional.softplus(-margin) * mask).sum(1) / mask.sum(1).clamp(min=1)
    wt = torch.from_numpy(w)
    loss = (per_event * wt).sum() / (wt * (mask.sum(1) > 0).float()).sum() + 0.5 * 0.01 * (theta**2).sum()
    loss.backward()
    expected = theta.detach().numpy() - 0.3 * theta.grad.numpy()
    reported = r.step(pos, neg, n_neg, w)
    assert reported == pytest.approx(float(loss.detach()), rel=1e-5)
    np.testing.assert_allclose(r.weights, expected, rtol=1e-5, atol=1e-6)
