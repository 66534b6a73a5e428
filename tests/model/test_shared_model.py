"""One model across workers: contributions exchanged, merged, resumed."""

from __future__ import annotations

import numpy as np

from streamrec.model.ranker import FEATURES, PRIOR_WEIGHTS, FusionRanker, prior_vector
from streamrec.model.shared_model import SharedModel
from streamrec.settings import Settings
from tests.model.test_ranker import _batch


def _worker(worker_id: str, feature: str, steps: int) -> SharedModel:
    """A worker's shared model after ``steps`` SGD steps of its own on batches favouring ``feature``."""
    shared = SharedModel(FusionRanker(Settings.of(learning_rate=0.1, optimizer="sgd").ranker), worker_id)
    for _ in range(steps):
        shared.ranker.step(*_batch(feature))
    return shared


def test_exchanged_contributions_give_every_worker_the_same_model() -> None:
    a, b = _worker("a", "price", 3), _worker("b", "freshness", 5)
    da, db = a.own_delta.copy(), b.own_delta.copy()
    assert a.merge(b.contribution()) and b.merge(a.contribution())
    expected = prior_vector() + da + db
    np.testing.assert_allclose(a.ranker.weights, expected, atol=1e-6)
    np.testing.assert_allclose(b.ranker.weights, expected, atol=1e-6)
    assert a.ranker.steps == b.ranker.steps == 8
    assert (a.own_steps, b.own_steps) == (3, 5)
    np.testing.assert_allclose(a.own_delta, da, atol=1e-6)  # merging never changes one's own contribution


def test_merge_replaces_a_peers_previous_contribution_and_ignores_stale_or_own() -> None:
    a, b = _worker("a", "price", 2), _worker("b", "freshness", 1)
    old = b.contribution()
    b.ranker.step(*_batch("freshness"))
    new = b.contribution()
    assert a.merge(old) and a.merge(new)
    assert not a.merge(old)  # older than what a holds
    assert not a.merge(new)  # the same again
    assert not a.merge(a.contribution())  # its own
    np.testing.assert_allclose(a.ranker.weights - a.own_delta, prior_vector() + b.own_delta, atol=1e-6)
    assert a.ranker.steps == 2 + 2


def test_a_restarted_worker_resumes_its_contribution_steps_and_optimizer_state() -> None:
    a, b = _worker("a", "price", 4), _worker("b", "freshness", 2)
    a.merge(b.contribution())
    snaps = {a.key: a.contribution(), b.key: b.contribution()}
    fresh = SharedModel(FusionRanker(Settings.of(learning_rate=0.1, optimizer="sgd").ranker), "a")
    assert fresh.restore(snaps)
    np.testing.assert_allclose(fresh.ranker.weights, a.ranker.weights, atol=1e-6)
    assert fresh.ranker.steps == a.ranker.steps == 6 and fresh.own_steps == 4
    assert fresh.ranker.snapshot()["params"]["grad_sq"] == a.ranker.snapshot()["params"]["grad_sq"]
    assert not SharedModel(FusionRanker(Settings().ranker), "c").restore({})


def test_a_peer_on_code_with_a_feature_less_contributes_to_the_features_both_have() -> None:
    a, b = SharedModel(FusionRanker(Settings().ranker), "a"), SharedModel(FusionRanker(Settings().ranker), "b")
    b.ranker.set_weights(b.ranker.weights + 1.0)
    b.ranker.steps = 2
    snap = b.contribution()
    keep = list(FEATURES[:-1])
    old = snap | {"features": keep, "contribution": {"delta": snap["contribution"]["delta"][:-1], "steps": 2}}
    old |= {"params": {"weight": snap["params"]["weight"][:-1]}}
    assert a.merge(old)
    assert [a.ranker.weight(f) for f in keep] == [b.ranker.weight(f) for f in keep]
    assert a.ranker.weight(FEATURES[-1]) == PRIOR_WEIGHTS[FEATURES[-1]]
    assert not a.merge(old | {"worker": "c", "features": [f"x{f}" for f in keep]})  # nothing in common
