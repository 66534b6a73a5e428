"""One fusion model across workers: every worker's contribution to θ, exchanged on the ``model-snapshots`` topic.

Kept apart from the ranker: the ranker learns from one worker's events; this adds up what every worker learned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamrec.model.ranker import FEATURES, MODEL_NAME, FusionRanker, aligned, prior_vector

SNAPSHOT_KEY_PREFIX = f"{MODEL_NAME}/"


def snapshot_key(worker_id: str) -> bytes:
    """Key of a worker's contribution on the compacted ``model-snapshots`` topic."""
    return f"{SNAPSHOT_KEY_PREFIX}{worker_id}".encode()


class SharedModel:
    """One fusion model across workers: ``θ = prior + Σ_w D_w`` over every worker's cumulative contribution.

    Each worker owns ``D_self`` — the sum of the changes its own SGD steps made — and publishes it with its
    step count under its own key of the compacted ``model-snapshots`` topic (``fusion/<worker id>``).
    Every worker adds the latest ``D_p`` of each peer to its own parameters (replacing the one it added
    before), so all workers hold the same model up to the last exchange, and the result equals one model
    that took every worker's steps — the sum of per-shard updates, as one worker seeing all events would
    make, rather than an average that would divide each shard's learning by the number of workers.

    The merge is a last-value-per-key sum: commutative, idempotent (a snapshot seen twice changes nothing),
    and compaction-safe (only each key's newest value matters). A restarted worker with the same id resumes
    its own contribution, steps and optimizer state from its last snapshot; a worker that never comes back
    keeps contributing what it published. Worker ids must be unique among live workers.

    >>> from streamrec.settings import RankerSettings
    >>> a, b = SharedModel(FusionRanker(RankerSettings()), "a"), SharedModel(FusionRanker(RankerSettings()), "b")
    >>> a.ranker.set_weights(a.ranker.weights + 1.0); a.ranker.steps = 3  # as if a took 3 steps
    >>> b.merge(a.contribution()), b.merge(a.contribution())  # idempotent
    (True, False)
    >>> float(b.ranker.weight("price")), b.ranker.steps, b.own_steps
    (1.0, 3, 0)
    """

    def __init__(self, ranker: FusionRanker, worker_id: str) -> None:
        self.ranker = ranker
        self.worker_id = worker_id
        self.peers: dict[str, tuple[np.ndarray, int]] = {}
        """Per peer, the contribution (delta, steps) currently added into θ."""

    @property
    def key(self) -> bytes:
        """This worker's key on the snapshot topic."""
        return snapshot_key(self.worker_id)

    def _peer_sum(self) -> tuple[np.ndarray, int]:
        delta = np.zeros(len(FEATURES), np.float64)
        steps = 0
        for d, s in self.peers.values():
            delta += d
            steps += s
        return delta, steps

    @property
    def own_delta(self) -> np.ndarray:
        """``D_self = θ − prior − Σ peers``: what this worker's own steps changed."""
        peer_delta, _ = self._peer_sum()
        return self.ranker.weights.astype(np.float64) - prior_vector() - peer_delta

    @property
    def own_steps(self) -> int:
        """SGD steps this worker took (the ranker's step count is the whole model's: own + peers')."""
        return self.ranker.steps - self._peer_sum()[1]

    def contribution(self) -> dict[str, Any]:
        """The snapshot this worker publishes: the whole model (``params``/``steps``, as a single worker
        would publish) plus its own contribution and the worker id, which peers merge."""
        snap = self.ranker.snapshot()
        snap["worker"] = self.worker_id
        snap["contribution"] = {"delta": self.own_delta.tolist(), "steps": self.own_steps}
        return snap

    def merge(self, snap: dict[str, Any]) -> bool:
        """Add a peer's newest contribution (replacing its previous one); False when nothing changed.

        Ignored: this worker's own snapshots, snapshots without a contribution (single-worker format),
        a feature list sharing nothing with this code's, and a contribution no newer (by steps) than the one already
        added. A peer on code with a feature more or less contributes to the features both have (:func:`aligned`).
        """
        peer = snap.get("worker")
        if peer is None or peer == self.worker_id or snap.get("contribution") is None:
            return False
        try:
            contrib = aligned(snap)["contribution"]
        except ValueError:
            return False
        delta = np.asarray(contrib["delta"], np.float64)
        steps = int(contrib["steps"])
        old_delta, old_steps = self.peers.get(peer, (np.zeros(len(FEATURES), np.float64), 0))
        if peer in self.peers and steps <= old_steps:
            return False
        self.ranker.set_weights(self.ranker.weights.astype(np.float64) + delta - old_delta)
        self.ranker.steps += steps - old_steps
        self.peers[peer] = (delta, steps)
        return True

    def resume(self, snap: dict[str, Any]) -> None:
        """Take back this worker's own contribution, steps and optimizer state from its last snapshot (its features
        matched to this code's by name, so an upgrade that adds a feature keeps what was learned)."""
        snap = aligned(snap)
        contrib = snap["contribution"]
        delta = np.asarray(contrib["delta"], np.float64)
        self.ranker.set_weights(self.ranker.weights.astype(np.float64) + delta - self.own_delta)
        self.ranker.steps += int(contrib["steps"]) - self.own_steps
        if "grad_sq" in snap.get("params", {}):
            self.ranker.set_grad_sq(snap["params"]["grad_sq"])

    def restore(self, snaps: dict[bytes, dict[str, Any]]) -> bool:
        """Start-up: resume this worker's own snapshot and merge every peer's; True if anything was restored."""
        restored = False
        own = snaps.get(self.key)
        if own is not None and "contribution" in own:
            self.resume(own)
            restored = True
        for key, snap in snaps.items():
            if key != self.key and self.merge(snap):
                restored = True
        return restored
