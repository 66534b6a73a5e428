"""Online co-embeddings: small item vectors learned from co-visits, relating items through shared neighbours."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streamrec.model.catalog import INITIAL_CAPACITY
from streamrec.model.numeric import sigmoid
from streamrec.settings import RetrievalSettings

COEMB_INIT_SCALE = 0.1
"""Co-embeddings start as small random vectors (norm ≈ this), so the first co-visits decide their direction."""
REPLAY_STEP_VISITS = 64
"""With ``coemb_replay``, a batch's visits and their replays are stepped this many at a time: one step for a
worker's whole batch (thousands of visits, ten times as many replays) drove the vectors to overflow
(docs/evaluation.md, "Fourth round: the co-embedding signal"); a prequential replay's step (one visit and its
replays) is one step."""
COEMB_GROWTH = 1.125
"""Co-embedding capacity grows by this factor (at least to the row needed): the first visits reach the end of a
loaded catalogue at once, and a small factor keeps the unused tail small where doubling would leave up to half
the array allocated, initialised and never used."""


class CoEmbedding:
    """Online item embeddings learned from co-visits (skip-gram with negative sampling, one step per event).

    Co-visitation counts only know pairs that were seen together; embeddings trained on the same pairs also
    relate items through shared neighbours (two films each co-watched with a third), which is what a sparse,
    young co-visitation graph misses. Vectors are small (``coemb_dim``) and updated in place.
    """

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.dim = cfg.coemb_dim
        self.window = cfg.coemb_train_window or cfg.cooc_window
        self.lr = cfg.coemb_learning_rate
        self.negatives = cfg.coemb_negatives
        self.rng = np.random.default_rng(cfg.seed)
        self.min_visits = cfg.coemb_min_visits
        self.user_window = cfg.coemb_user_window or cfg.cooc_window
        self.user_decay = cfg.coemb_user_decay
        self.user_half_life = cfg.coemb_user_half_life
        self.negative_power = cfg.coemb_negative_power
        self.vectors = self._init(INITIAL_CAPACITY)
        self.context: np.ndarray | None = None
        """Context vectors (``coemb_context_vectors``), zero at first as in word2vec; None: ``vectors`` serve both."""
        if cfg.coemb_context_vectors:
            self.context = np.zeros_like(self.vectors)
        self.visits = np.zeros(INITIAL_CAPACITY, np.int32)
        self.n = 0
        self.replay = cfg.coemb_replay
        capacity = cfg.coemb_replay_capacity if self.replay else 0
        self._replay_rows = np.zeros(capacity, np.int64)
        self._replay_contexts = np.full((capacity, self.window), -1, np.int64)
        """Past visits kept for replay: each row and its training context (padded with -1), a ring."""
        self._replay_n = 0
        self._replay_pos = 0

    def _init(self, n: int) -> np.ndarray:
        return (self.rng.standard_normal((n, self.dim)) / math.sqrt(self.dim) * COEMB_INIT_SCALE).astype(np.float32)

    def _ensure(self, row: int) -> None:
        if row >= len(self.vectors):
            grow = max(row + 1, int(len(self.vectors) * COEMB_GROWTH)) - len(self.vectors)
            self.vectors = np.concatenate([self.vectors, self._init(grow)])
            self.visits = np.concatenate([self.visits, np.zeros(grow, np.int32)])
            if self.context is not None:
                self.context = np.concatenate([self.context, np.zeros((grow, self.dim), np.float32)])
        self.n = max(self.n, row + 1)

    def add(self, previous_rows: Sequence[int], row: int) -> None:
        """``row`` was visited after ``previous_rows``: pull it towards them, push it from random items."""
        self.add_many([(previous_rows, row)])

    def add_many(self, visits: Sequence[tuple[Sequence[int], int]]) -> None:
        """One SGD step for a batch of visits (``(previous_rows, row)``, in stream order).

        Every (item, context) and (item, negative) pair's gradient is taken at the vectors as they were before
        the batch and all are added at once: two gathers and two scatter-adds per batch instead of a dozen
        small array operations per event (docs/performance.md, "Inside the core").
        """
        if not visits:
            return
        window = self.window
        rows = np.fromiter((row for _, row in visits), np.int64, len(visits))
        contexts = [[r for r in prev[-window:] if r != row] for prev, row in visits]
        self._ensure(max(int(rows.max()), max((max(c) for c in contexts if c), default=0)))
        np.add.at(self.visits, rows, 1)
        lens = np.fromiter(map(len, contexts), np.int64, len(contexts))
        learning = lens > 0
        if not learning.any():
            return
        if self.replay:
            rows, contexts = self._with_replay(rows, contexts, learning)
            lens = np.fromiter(map(len, contexts), np.int64, len(contexts))
            learning = lens > 0
        if not self.replay or len(rows) <= REPLAY_STEP_VISITS:
            self._step(rows, contexts, lens, learning)
            return
        # replayed visits multiply a batch's same-direction updates of popular items: in steps of a bounded size
        for start in range(0, len(rows), REPLAY_STEP_VISITS):
            end = start + REPLAY_STEP_VISITS
            self._step(rows[start:end], contexts[start:end], lens[start:end], learning[start:end])

    def _step(self, rows: np.ndarray, contexts: list[list[int]], lens: np.ndarray, learning: np.ndarray) -> None:
        """One SGD step for these visits, every gradient taken at the vectors as they are now."""
        if not learning.any():
            return
        ctx = np.fromiter((r for c in contexts for r in c), np.int64, int(lens.sum()))
        centres = rows[learning]
        neg = self._negatives(len(centres))
        keep = neg != centres[:, None]
        centre = np.concatenate([np.repeat(rows, lens), np.broadcast_to(centres[:, None], neg.shape)[keep]])
        other = np.concatenate([ctx, neg[keep]])
        labels = np.zeros(len(other), np.float32)
        labels[: len(ctx)] = 1.0
        outer = self.vectors if self.context is None else self.context
        vc = self.vectors[centre]
        vo = outer[other]
        g = (self.lr * (labels - sigmoid(np.einsum("nd,nd->n", vc, vo))))[:, None]
        np.add.at(self.vectors, centre, g * vo)
        np.add.at(outer, other, g * vc)

    def _with_replay(
        self, rows: np.ndarray, contexts: list[list[int]], learning: np.ndarray
    ) -> tuple[np.ndarray, list[list[int]]]:
        """The batch's visits and ``coemb_replay`` past ones per new visit that trains; the new ones are kept."""
        old = np.empty(0, np.int64)
        if self._replay_n:
            old = self.rng.integers(0, self._replay_n, size=self.replay * int(learning.sum()))
        old_rows = self._replay_rows[old]
        old_contexts = [c[c >= 0].tolist() for c in self._replay_contexts[old]]
        capacity = len(self._replay_rows)
        for row, context in zip(rows[learning].tolist(), (c for c in contexts if c), strict=True):
            pos = self._replay_pos
            self._replay_rows[pos] = row
            self._replay_contexts[pos] = -1
            self._replay_contexts[pos, : len(context)] = context
            self._replay_pos = (pos + 1) % capacity
            self._replay_n = min(self._replay_n + 1, capacity)
        return np.concatenate([rows, old_rows]), contexts + old_contexts

    def _negatives(self, n: int) -> np.ndarray:
        """``coemb_negatives`` rows for each of ``n`` visits: uniform over known rows, or ∝ visits**power."""
        shape = (n, self.negatives)
        if self.negative_power <= 0.0:
            return self.rng.integers(0, self.n, size=shape)
        cdf = np.cumsum(self.visits[: self.n].astype(np.float64) ** self.negative_power)
        return np.minimum(np.searchsorted(cdf, self.rng.random(shape) * cdf[-1], side="right"), self.n - 1)

    def _age_weights(self, n: int) -> np.ndarray:
        """Weights of ``n`` items, oldest first, by ``coemb_user_decay``: the newest weighs 1."""
        if self.user_decay == "uniform":
            return np.ones(n, np.float32)
        if self.user_decay == "exponential":
            return np.exp2(-np.arange(n - 1, -1, -1) / self.user_half_life).astype(np.float32)
        return 1.0 / np.arange(n, 0, -1, dtype=np.float32)

    def user_vector(self, seed_rows: Sequence[int]) -> np.ndarray | None:
        """The user's recent items' vectors (context vectors where kept), the most recent weighing most (unit
        length)."""
        seeds = [r for r in seed_rows[-self.user_window :] if r < self.n and self.visits[r] >= self.min_visits]
        if not seeds:
            return None
        w = self._age_weights(len(seeds))
        u = w @ (self.vectors if self.context is None else self.context)[seeds]
        norm = float(np.linalg.norm(u))
        return u / norm if norm > 0 else None

    def similarity_many(self, users: Sequence[np.ndarray | None], rows: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Cosine between ``users[seg[i]]`` and row ``rows[i]``'s vector; 0 for unknown rows or no user vector."""
        out = np.zeros(len(rows), np.float32)
        has_user = np.array([u is not None for u in users], bool)
        if not has_user.any():
            return out
        user_vecs = np.stack([u if u is not None else np.zeros(self.dim, np.float32) for u in users])
        known = (rows < self.n) & has_user[seg]
        known[known] = self.visits[rows[known]] >= self.min_visits
        v = self.vectors[rows[known]]
        dots = np.einsum("nd,nd->n", v, user_vecs[seg[known]])
        out[known] = dots / np.maximum(np.linalg.norm(v, axis=1), 1e-12)
        return out
