"""Decayed item-to-item co-visitation: which items users visit one after another, and how recently.

Counts grow by ``w·g(t)`` on a :class:`~streamrec.model.numeric.DecayClock` (decay in O(1) per update), are
kept per item as one packed array of neighbours, and are scored for many users in one pass
(:meth:`CoVisitation.score_arrays_many`), which the features turn into rank values (:func:`covis_rank_table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.model.numeric import DecayClock, segment_owners
from streamrec.settings import RetrievalSettings

NEIGHBOUR = np.dtype([("row", np.int32), ("count", np.float64)])
"""One co-visitation neighbour, packed (12 bytes)."""


@dataclass(frozen=True, slots=True)
class CovisScores:
    """A user's co-visited items and their decayed scores, in order of first appearance (ties keep it)."""

    rows: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    """Positions from the highest score down (stable: equal scores keep first-appearance order)."""

    @classmethod
    def empty(cls) -> CovisScores:
        """No co-visited items: one shared, immutable instance, so the users without any cost no allocations."""
        return _NO_COVIS

    def __len__(self) -> int:
        return len(self.rows)

    def top(self, n: int, blocked: np.ndarray | None = None) -> np.ndarray:
        """Rows of the ``n`` best co-visited items, best first (leaving out rows ``blocked`` marks: withdrawn or
        excluded items, so they do not take the places of offerable ones)."""
        order = self.order
        if blocked is not None and len(order):
            order = order[~blocked[self.rows[order]]]
        return self.rows[order[:n]]

    def rank_values(self) -> np.ndarray:
        """Each item's rank value here (see :func:`covis_rank_table`), in ``rows`` order."""
        return covis_rank_table([self], 1)[1]


def covis_rank_table(covis: Sequence[CovisScores], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``user * width + row`` and rank values of many users' co-visited items, for a batch in one pass.

    An item's rank value is 1/log2(rank + 2), NDCG-style: scale-free across datasets and decay settings, and
    any co-visited item scores above every item that was never co-visited (0).
    """
    lens = np.fromiter(map(len, covis), np.int64, len(covis))
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    rows = np.concatenate([np.zeros(0, np.int64), *(c.rows for c in covis)])
    order = np.concatenate([np.zeros(0, np.int64), *(c.order for c in covis)]) + starts
    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows)) - starts
    return segment_owners(lens) * width + rows, (1.0 / np.log2(rank + 2.0)).astype(np.float32)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_NO_COVIS = CovisScores(
    _read_only(np.zeros(0, np.int64)), _read_only(np.zeros(0, np.float64)), _read_only(np.zeros(0, np.int64))
)


class CoVisitation:
    """Decayed item-to-item co-visitation counts from users' consecutive interactions (bounded).

    Each item's neighbours are kept as one packed array of (row int32, count float64) records in insertion
    order: 12 bytes a neighbour (a fraction of a dict of Python floats; docs/performance.md, "Where the memory
    goes"), one heap object per item, and fields scoring reads as they are. A batch of visits opens the items
    it touches as dicts, applies every visit in stream order, and packs them back.
    """

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.window = cfg.cooc_window
        self.max_neighbours = cfg.cooc_max_neighbours
        self.clock = DecayClock(cfg.item_half_life_s)
        self._neighbours: dict[int, np.ndarray] = {}
        """Item row → its neighbours (a :data:`NEIGHBOUR` array)."""

    def neighbours(self, row: int) -> dict[int, float]:
        """``row``'s neighbours and their counts (on the clock's current scale), in insertion order."""
        found = self._neighbours.get(row)
        return {} if found is None else dict(zip(found["row"].tolist(), found["count"].tolist(), strict=True))

    def add(self, previous_rows: Sequence[int], row: int, weight: float, ts: float) -> None:
        """``row`` was visited after ``previous_rows`` (most recent last): strengthen both directions."""
        self.add_many([(previous_rows, row, weight, ts)])

    def add_many(self, visits: Sequence[tuple[Sequence[int], int, float, float]]) -> None:
        """:meth:`add` for each ``(previous_rows, row, weight, ts)``, in order."""
        opened: dict[int, dict[int, float]] = {}
        for previous_rows, row, weight, ts in visits:
            if self.clock.needs_rescale(ts):
                factor = self.clock.rebase(ts)
                for packed in self._neighbours.values():
                    packed["count"] *= factor
                for nbrs in opened.values():
                    for key in nbrs:
                        nbrs[key] *= factor
            g = self.clock.growth(ts)
            recent = [r for r in previous_rows[-self.window :] if r != row]
            for distance, prev in enumerate(reversed(recent), start=1):
                w = weight * g / distance
                self._bump(opened, prev, row, w)
                self._bump(opened, row, prev, w)
        for row, nbrs in opened.items():
            packed = np.empty(len(nbrs), NEIGHBOUR)
            packed["row"] = np.fromiter(nbrs.keys(), np.int32, len(nbrs))
            packed["count"] = np.fromiter(nbrs.values(), np.float64, len(nbrs))
            self._neighbours[row] = packed

    def _bump(self, opened: dict[int, dict[int, float]], a: int, b: int, w: float) -> None:
        nbrs = opened.get(a)
        if nbrs is None:
            nbrs = opened[a] = self.neighbours(a)
        nbrs[b] = nbrs.get(b, 0.0) + w
        if len(nbrs) > 2 * self.max_neighbours:
            keep = sorted(nbrs.items(), key=lambda kv: kv[1], reverse=True)[: self.max_neighbours]
            opened[a] = dict(keep)

    def scores(self, seed_rows: Sequence[int], ts: float) -> dict[int, float]:
        """Co-visitation score of every neighbour of the seeds (most recent seed weighs most), decayed to ts."""
        found = self.score_arrays(seed_rows, ts)
        return dict(zip(found.rows.tolist(), found.scores.tolist(), strict=True))

    def score_arrays(self, seed_rows: Sequence[int], ts: float) -> CovisScores:
        """:meth:`scores` as arrays, neighbours in order of first appearance (most recent seed first)."""
        return self.score_arrays_many([seed_rows], ts)[0]

    def score_arrays_many(self, seed_lists: Sequence[Sequence[int]], ts: float | Sequence[float]) -> list[CovisScores]:
        """:meth:`score_arrays` for many users in one pass: their seeds' neighbour arrays are concatenated,
        keyed by (user, row), summed with one ``np.bincount`` and ordered with one ``np.lexsort``.

        ``ts``: one time for all, or one per seed list. The same float64 additions happen in the same order as
        one user at a time (each key's terms in order of appearance, most recent seed first), and ties keep
        first-appearance order, so the results are the same to the bit.
        """
        out = [CovisScores.empty()] * len(seed_lists)
        if self.clock.t0 is None:
            return out
        times = [ts] * len(seed_lists) if isinstance(ts, float | int) else ts
        growth: dict[float, float] = {}
        keys: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        owners: list[int] = []
        factors: list[float] = []
        for user, (seed_rows, t) in enumerate(zip(seed_lists, times, strict=True)):
            g = growth.get(t)
            if g is None:
                g = growth[t] = self.clock.growth(t)
            seeds = list(seed_rows[-self.window :])
            for distance, seed in enumerate(reversed(seeds), start=1):
                found = self._neighbours.get(seed)
                if found is not None:
                    keys.append(found["row"])
                    vals.append(found["count"])
                    owners.append(user)
                    factors.append(1.0 / (distance * g))
        if not keys:
            return out
        lens = np.fromiter(map(len, keys), np.int64, len(keys))
        all_keys = np.concatenate(keys)
        all_vals = np.concatenate(vals) * np.repeat(np.asarray(factors, np.float64), lens)
        width = int(all_keys.max()) + 1
        combined = np.repeat(np.asarray(owners, np.int64), lens) * width + all_keys
        uniq, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        sums = np.bincount(inverse, weights=all_vals, minlength=len(uniq))
        appearance = np.argsort(first)  # users' blocks in order, each in first-appearance order
        uniq, sums = uniq[appearance], sums[appearance]
        users = uniq // width
        rows = uniq - users * width
        ranked = np.lexsort((np.arange(len(uniq)), -sums, users))  # per user: best first, ties by appearance
        bounds = np.searchsorted(users, np.arange(len(seed_lists) + 1))
        for user in np.unique(users).tolist():
            start, end = int(bounds[user]), int(bounds[user + 1])
            out[user] = CovisScores(rows[start:end], sums[start:end], ranked[start:end] - start)
        return out

    def top(self, seed_rows: Sequence[int], ts: float, n: int, exclude: Iterable[int] = ()) -> dict[int, float]:
        scores = self.scores(seed_rows, ts)
        for row in exclude:
            scores.pop(row, None)
        if len(scores) <= n:
            return scores
        best = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return dict(best)
