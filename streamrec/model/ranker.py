"""The fusion ranker: a linear model over retrieval and attribute features, learned online.

``score(user, item) = θ · x(user, item)`` where ``x`` holds semantic similarity (long-term, intent,
query), collaborative signal (co-visitation rank, session-neighbour rank, co-embedding similarity), category
affinity and item attributes (popularity, price, freshness).
Each labelled event takes one SGD step ``θ ← θ − η∇L`` on a pairwise logistic (BPR) loss that ranks the
taken item above items that were shown and not taken plus sampled ones, weighted by event strength.
A linear model keeps every score explainable: the largest terms ``θ_i·x_i`` are the "reasons".

>>> import numpy as np
>>> from streamrec.settings import RankerSettings
>>> r = FusionRanker(RankerSettings(learning_rate=0.5))
>>> pos = np.zeros((1, len(FEATURES)), np.float32); pos[0, FEATURES.index("price")] = 1.0
>>> neg = np.zeros((1, 1, len(FEATURES)), np.float32)
>>> before = r.weight("price")
>>> r.step(pos, neg, np.ones(1, np.int64), np.ones(1, np.float32)) > 0
True
>>> r.weight("price") > before, r.steps
(True, 1)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamrec.model.numeric import sigmoid
from streamrec.settings import RankerSettings

FEATURES: tuple[str, ...] = (
    "sim_long",
    "sim_intent",
    "sim_query",
    "covisit",
    "coemb",
    "category",
    "popularity",
    "price",
    "freshness",
    "seen",
    "session",
)
"""``session`` is last so that, while it is off (zero), a score sums the other terms in the order it did without it."""
#: α/β priors: where the model starts before it has seen a single event (all features are O(1)).
PRIOR_WEIGHTS: dict[str, float] = {
    "sim_long": 1.0,
    "sim_intent": 1.0,
    "sim_query": 4.0,
    "covisit": 0.5,
    "session": 0.5,
    "coemb": 0.0,
    "category": 1.0,
    "popularity": 0.3,
    "price": 0.0,
    "freshness": 0.1,
    "seen": 0.0,
}
REASON_LABELS: dict[str, str] = {
    "sim_long": "similar to your history",
    "sim_intent": "matches what you are looking at now",
    "sim_query": "matches your search",
    "covisit": "often viewed together with your recent items",
    "session": "in sessions like yours",
    "coemb": "picked by people who picked your recent items",
    "category": "from a category you like",
    "popularity": "popular right now",
    "price": "price",
    "freshness": "new arrival",
    "seen": "you viewed this before",
}
MODEL_NAME = "fusion"
REASON_TABLE_MAX_TOP = 3
_REASON_TABLES: dict[int, dict[int, tuple[str, ...]]] = {}


def _reason_table(top: int) -> dict[int, tuple[str, ...]]:
    """Readable reasons for every (feature order, sign) code of :meth:`FusionRanker.reasons_many`."""
    table = _REASON_TABLES.get(top)
    if table is None:
        table = {}
        for combo in itertools.permutations(range(len(FEATURES)), top):
            for signs in itertools.product((0, 1), repeat=top):
                code = 0
                for f, sign in zip(combo, signs, strict=True):
                    code = (code * len(FEATURES) + f) * 2 + sign
                table[code] = tuple(REASON_LABELS[FEATURES[f]] for f, sign in zip(combo, signs, strict=True) if sign)
        _REASON_TABLES[top] = table
    return table


RMS_EPS = 1e-8
DENOM_EPS = 1e-6


class FusionRanker:
    """Linear fusion ranker with in-place online SGD and snapshot/restore."""

    def __init__(self, cfg: RankerSettings) -> None:
        self.cfg = cfg
        self._weights_np = prior_vector().astype(np.float32)
        self.steps = 0
        self._sq = np.zeros(len(FEATURES), np.float32)

    # --- inference ----------------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """Current θ (F,); each :meth:`step` replaces it with a new array."""
        return self._weights_np

    def weight(self, feature: str) -> float:
        return float(self._weights_np[FEATURES.index(feature)])

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores for a (..., F) feature array."""
        return x @ self._weights_np

    def reasons(self, x: np.ndarray, top: int = 2) -> list[str]:
        """The features that contributed most to one item's score, as readable labels."""
        return list(self.reasons_many(x[None, :], top)[0])

    def reasons_many(self, x: np.ndarray, top: int = 2) -> list[tuple[str, ...]]:
        """:meth:`reasons` for each row of an (N, F) feature matrix, with one sort for all rows.

        Each row's answer depends only on which features rank first, second, … and which of them are
        positive, so the readable tuples come from a table built once instead of per row.
        """
        contrib = x * self._weights_np
        top = min(top, len(FEATURES))
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
        positive = np.take_along_axis(contrib, order, axis=1) > 0
        if top > REASON_TABLE_MAX_TOP:  # the table would have F!/(F-top)!·2^top entries
            return [
                tuple(REASON_LABELS[FEATURES[f]] for f, p in zip(row, pos, strict=True) if p)
                for row, pos in zip(order.tolist(), positive.tolist(), strict=True)
            ]
        code = np.zeros(len(x), np.int64)
        for j in range(top):
            code = (code * len(FEATURES) + order[:, j]) * 2 + positive[:, j]
        table = _reason_table(top)
        return [table[c] for c in code.tolist()]

    @property
    def version(self) -> str:
        return f"{MODEL_NAME}@{self.steps}"

    # --- learning -----------------------------------------------------------------------------------
    def step(self, pos: np.ndarray, neg: np.ndarray, n_neg: np.ndarray, weight: np.ndarray) -> float:
        """One SGD step on a batch of labelled events; returns the loss before the step.

        pos: (B, F) features of the taken items; neg: (B, M, F) negatives, padded; n_neg: (B,) how many of
        the M are real; weight: (B,) event strength. Events with no negatives contribute nothing.
        The gradient of the pairwise logistic loss of a linear model is closed-form, so it is computed
        directly (same value as autograd, a fraction of its overhead) and applied as ``θ ← θ − η∇L``
        (per-feature normalised with the default RMSProp optimizer).
        """
        if not self.cfg.learn or len(pos) == 0:
            return 0.0
        theta = self._weights_np
        pos = np.asarray(pos, np.float32)
        neg = np.asarray(neg, np.float32)
        mask = (np.arange(neg.shape[1])[None, :] < np.asarray(n_neg)[:, None]).astype(np.float32)
        w = np.asarray(weight, np.float32)
        diff = pos[:, None, :] - neg  # (B, M, F)
        margin = diff @ theta  # (B, M)
        counts = mask.sum(1)
        denom = max(float((w * (counts > 0)).sum()), DENOM_EPS)
        coef = w / np.maximum(counts, 1.0) / np.float32(denom)  # (B,)
        pair_w = mask * coef[:, None]  # (B, M)
        loss = float((np.logaddexp(0.0, -margin) * pair_w).sum()) + 0.5 * self.cfg.l2 * float(theta @ theta)
        # d softplus(-m)/dm = -sigmoid(-m); the L2 part is applied as plain (decoupled) weight decay, so
        # features that rarely fire (e.g. search similarity) are not normalised into fast shrinkage
        grad = -np.einsum("bm,bmf->f", sigmoid(-margin) * pair_w, diff)
        step = np.float32(self.cfg.learning_rate) * (self._scale(grad) + np.float32(self.cfg.l2) * theta)
        self._weights_np = (theta - step).astype(np.float32)
        self.steps += 1
        return loss

    def _scale(self, grad: np.ndarray) -> np.ndarray:
        """Plain SGD, or RMSProp: each feature's step is normalised by its recent gradient magnitude.

        Features differ a lot in how often and how strongly they fire (co-visitation is zero for most pairs,
        similarity never is); per-feature normalisation lets rare-but-decisive ones learn as fast as the rest.
        """
        if self.cfg.optimizer == "sgd":
            return grad
        rho = self.cfg.rms_decay
        self._sq *= np.float32(rho)
        self._sq += np.float32(1.0 - rho) * grad * grad
        corrected = self._sq / np.float32(1.0 - rho ** (self.steps + 1))
        return grad / (np.sqrt(corrected) + np.float32(RMS_EPS))

    # --- persistence --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Parameters + step count, as published to the compacted ``model-snapshots`` topic."""
        return {
            "model": MODEL_NAME,
            "version": self.version,
            "steps": self.steps,
            "features": list(FEATURES),
            "params": {"weight": self._weights_np.tolist(), "grad_sq": self._sq.tolist()},
            "ts": time.time(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Resume from a snapshot, its features matched to this code's by name (:func:`aligned`)."""
        snap = aligned(snap)
        self._weights_np = np.array(snap["params"]["weight"], np.float32)
        self._sq = np.array(snap["params"].get("grad_sq", [0.0] * len(FEATURES)), np.float32)
        self.steps = int(snap["steps"])

    # --- model sharing (see SharedModel) ----------------------------------------------------------------
    def set_weights(self, weights: np.ndarray) -> None:
        """Replace θ (used when peers' contributions are merged in); the optimizer state is kept."""
        self._weights_np = np.asarray(weights, np.float32).reshape(-1).copy()

    def set_grad_sq(self, grad_sq: list[float]) -> None:
        """Restore this worker's RMSProp state (per worker: it describes the gradients *this* worker saw)."""
        self._sq = np.array(grad_sq, np.float32)


def by_feature(values: Sequence[float], names: Sequence[str], missing: Mapping[str, float]) -> list[float]:
    """``values`` (one per feature of ``names``) in this code's :data:`FEATURES` order; a feature ``names`` lacks
    takes its value in ``missing`` (0 if absent), one this code lacks is dropped.

    >>> by_feature([0.5, 2.0], ["gone", "price"], {})[FEATURES.index("price")]
    2.0
    """
    given = dict(zip(names, values, strict=True))
    return [float(given.get(f, missing.get(f, 0.0))) for f in FEATURES]


def aligned(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with every per-feature vector in this code's feature order, so that a model from code with a
    feature more or less (an upgrade adding a signal) keeps what it learned for the features both share: a new
    feature starts at its prior (its contribution and optimizer state at 0). Raises ``ValueError`` when the two
    share no feature."""
    names = list(snap.get("features", ()))
    if names == list(FEATURES):
        return snap
    if not set(names) & set(FEATURES):
        raise ValueError(f"snapshot features {names} share none with {list(FEATURES)}")
    out = dict(snap, features=list(FEATURES))
    params = snap.get("params")
    if params is not None:
        out["params"] = dict(params, weight=by_feature(params["weight"], names, PRIOR_WEIGHTS))
        if "grad_sq" in params:
            out["params"]["grad_sq"] = by_feature(params["grad_sq"], names, {})
    contribution = snap.get("contribution")
    if contribution is not None:
        out["contribution"] = dict(contribution, delta=by_feature(contribution["delta"], names, {}))
    return out


def prior_vector() -> np.ndarray:
    """θ before any learning: :data:`PRIOR_WEIGHTS` in :data:`FEATURES` order (the same on every worker)."""
    return np.array([PRIOR_WEIGHTS[f] for f in FEATURES], np.float64)
