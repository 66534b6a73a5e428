"""Session neighbours (V-SKNN, Ludewig & Jannach 2018) as a candidate source and a ranker feature.

A session is one user's run of item events: the events' ``session_id`` when they carry one, else events less
than ``session_gap_s`` apart. The query is the user's latest session (its distinct items, the newest
``session_query_items``), each item weighted by its position (``log``: the ``p``-th of ``n`` weighs
``1 / log10(n - p + 1.7)``, the newest most). A past session's similarity is the summed weight of the query items
it holds; of the sessions (any user's, the query's own excluded) sharing an item with the query, the
``session_sample`` most recent are kept, their ``session_neighbours`` most similar are the neighbours, and an
item's score is the summed similarity of the neighbours holding it. Where items are rarely revisited, one shared
item is weak evidence: a past session can be required to share ``session_min_overlap`` items with the query
(all of them, if the query has fewer), and an item to be held by ``session_min_support`` neighbours.

Bounded: each item keeps the ``session_sample + 1`` sessions that most recently added it, each session its newest
``session_max_items`` items, and the index its newest ``session_capacity`` sessions (the oldest make room).
Sessions are personal data: :meth:`SessionIndex.forget` erases every session of a user.

>>> from streamrec.settings import RetrievalSettings
>>> idx = SessionIndex(RetrievalSettings(session_neighbours=5, session_capacity=100, session_min_support=1))
>>> for user, row, ts in [("a", 1, 0.0), ("a", 2, 1.0), ("b", 1, 2.0), ("b", 3, 3.0), ("c", 1, 4.0)]:
...     idx.add(user, None, row, ts)
>>> found = idx.scores_many(["c"])[0]
>>> found.rows.tolist(), found.top(2).tolist()
([1, 3, 2], [1, 3])
>>> idx.forget("b"), idx.scores_many(["c"])[0].rows.tolist()
(1, [1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.model.covisitation import CovisScores
from streamrec.settings import RetrievalSettings

LOG_DECAY_OFFSET = 1.7
"""``log`` decay: the newest query item weighs ``1 / log10(1.7)`` ≈ 4.3, the one before ``1 / log10(2.7)`` ≈ 2.3 …"""
INITIAL_SLOTS = 1024


def _linear(position: int, length: int) -> float:
    return position / length


def _log(position: int, length: int) -> float:
    return 1.0 / math.log10(length - position + LOG_DECAY_OFFSET)


def _none(position: int, length: int) -> float:
    return 1.0


DECAYS: dict[str, Callable[[int, int], float]] = {"linear": _linear, "log": _log, "none": _none}
"""Weight of the ``position``-th (1-based, oldest first) of a query's ``length`` items."""


@dataclass(slots=True)
class _Session:
    owner: str
    key: str | None
    items: dict[int, None] = field(default_factory=dict)
    """Distinct item rows, oldest first (a repeat moves to the end)."""
    array: np.ndarray | None = None
    """``items`` as an array, rebuilt after a change."""


class SessionIndex:
    """Recent sessions of all users, indexed by item, scored for a user's latest session (V-SKNN)."""

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.gap = cfg.session_gap_s
        self.k = cfg.session_neighbours
        self.sample = cfg.session_sample
        self.query_items = cfg.session_query_items
        self.max_items = cfg.session_max_items
        self.capacity = cfg.session_capacity
        self.min_overlap = cfg.session_min_overlap
        self.min_support = cfg.session_min_support
        self.decay = DECAYS[cfg.session_decay]
        self._sessions: dict[int, _Session] = {}
        """Slot → session, oldest first (insertion order)."""
        self._last = np.zeros(INITIAL_SLOTS, np.float64)
        """Time of each slot's session's latest event."""
        self._opened = np.zeros(INITIAL_SLOTS, np.int64)
        """Order in which each slot's session was opened (ties of recency go to the later one)."""
        self._free: list[int] = []
        self._next_slot = 0
        self._opens = 0
        self._current: dict[str, int] = {}
        """User → slot of their latest session."""
        self._owned: dict[str, list[int]] = {}
        """User → slots of all their sessions kept (for :meth:`forget`)."""
        self._holders: dict[int, dict[int, None]] = {}
        """Item row → the slots of the sessions that most recently added it (at most ``sample + 1``)."""
        self._holder_arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    # --- learning -----------------------------------------------------------------------------------
    def add(self, user_id: str, session_id: str | None, row: int, ts: float) -> None:
        """``user_id`` visited ``row`` at ``ts`` (in their session ``session_id``, or by the time gap)."""
        if self.capacity == 0:
            return
        slot = self._session_for(user_id, session_id, ts)
        session = self._sessions[slot]
        session.items.pop(row, None)
        session.items[row] = None
        session.array = None
        if len(session.items) > self.max_items:
            dropped = next(iter(session.items))
            del session.items[dropped]
            self._unhold(dropped, slot)
        holders = self._holders.setdefault(row, {})
        holders.pop(slot, None)
        holders[slot] = None
        if len(holders) > self.sample + 1:
            del holders[next(iter(holders))]
        self._holder_arrays.pop(row, None)
        self._last[slot] = max(self._last[slot], ts)

    def add_many(self, visits: Sequence[tuple[str, str | None, int, float]]) -> None:
        """:meth:`add` for each ``(user_id, session_id, row, ts)``, in order."""
        for user_id, session_id, row, ts in visits:
            self.add(user_id, session_id, row, ts)

    def _session_for(self, user_id: str, session_id: str | None, ts: float) -> int:
        slot = self._current.get(user_id)
        if slot is not None:
            session = self._sessions[slot]
            same = session.key == session_id if session_id is not None else ts - self._last[slot] <= self.gap
            if same:
                return slot
        if len(self._sessions) >= self.capacity:
            self._drop(next(iter(self._sessions)))
        slot = self._free.pop() if self._free else self._grow()
        self._sessions[slot] = _Session(user_id, session_id)
        self._last[slot] = ts
        self._opened[slot] = self._opens
        self._opens += 1
        self._current[user_id] = slot
        self._owned.setdefault(user_id, []).append(slot)
        return slot

    def _grow(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        if slot >= len(self._last):
            self._last = np.concatenate([self._last, np.zeros(len(self._last))])
            self._opened = np.concatenate([self._opened, np.zeros(len(self._opened), np.int64)])
        return slot

    def _unhold(self, row: int, slot: int) -> None:
        holders = self._holders.get(row)
        if holders is not None and slot in holders:
            del holders[slot]
            self._holder_arrays.pop(row, None)
            if not holders:
                del self._holders[row]

    def _drop(self, slot: int) -> None:
        """Erase one session: from its items' holders, its owner's list, and the slots in use."""
        session = self._sessions.pop(slot)
        for row in session.items:
            self._unhold(row, slot)
        owned = self._owned[session.owner]
        owned.remove(slot)
        if not owned:
            del self._owned[session.owner]
        if self._current.get(session.owner) == slot:
            del self._current[session.owner]
        self._last[slot] = 0.0
        self._free.append(slot)

    def forget(self, user_id: str) -> int:
        """Erase every session of ``user_id`` (privacy requests); returns how many there were."""
        slots = list(self._owned.get(user_id, ()))
        for slot in slots:
            self._drop(slot)
        return len(slots)

    # --- scoring ------------------------------------------------------------------------------------
    def _holder_array(self, row: int) -> np.ndarray:
        arr = self._holder_arrays.get(row)
        if arr is None:
            holders = self._holders.get(row, {})
            arr = self._holder_arrays[row] = np.fromiter(holders, np.int64, len(holders))
        return arr

    def _items(self, slot: int) -> np.ndarray:
        session = self._sessions[slot]
        if session.array is None:
            session.array = np.fromiter(session.items, np.int64, len(session.items))
        return session.array

    def neighbours(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the neighbours of the user's latest session and their similarities, most similar first
        (ties: the more recent session)."""
        empty = np.zeros(0, np.int64), np.zeros(0)
        own = self._current.get(user_id)
        if own is None:
            return empty
        items = list(self._sessions[own].items)
        n = len(items)
        start = max(0, n - self.query_items)
        arrays = [self._holder_array(r) for r in items[start:]]
        lengths = [len(a) for a in arrays]
        if not sum(lengths):
            return empty
        weights = np.repeat([self.decay(p, n) for p in range(start + 1, n + 1)], lengths)
        holders = np.concatenate(arrays)
        sims = np.bincount(holders, weights=weights, minlength=self._next_slot)
        if self.min_overlap > 1:
            # one shared item is weak evidence where items are rarely revisited: such sessions are no neighbours
            overlap = np.bincount(holders, minlength=self._next_slot)
            sims[overlap < min(self.min_overlap, len(arrays))] = 0.0
        sims[own] = 0.0
        found = np.flatnonzero(sims)
        last, opened = self._last[found], self._opened[found]
        if len(found) > self.sample:
            keep = np.lexsort((-opened, -last))[: self.sample]
            found, last, opened = found[keep], last[keep], opened[keep]
        order = np.lexsort((-opened, -last, -sims[found]))[: self.k]
        return found[order], sims[found[order]]

    def scores_many(self, user_ids: Sequence[str]) -> list[CovisScores]:
        """Each user's neighbour-scored items (rows in first-appearance order, best first in ``order``)."""
        out: list[CovisScores] = []
        for user_id in user_ids:
            slots, sims = self.neighbours(user_id)
            if not len(slots):
                out.append(CovisScores.empty())
                continue
            arrays = [self._items(int(s)) for s in slots]
            items = np.concatenate(arrays)
            weights = np.repeat(sims, [len(a) for a in arrays])
            rows, first, inverse = np.unique(items, return_index=True, return_inverse=True)
            sums = np.bincount(inverse, weights=weights, minlength=len(rows))
            appearance = np.argsort(first, kind="stable")
            if self.min_support > 1:
                support = np.bincount(inverse, minlength=len(rows))[appearance]
                appearance = appearance[support >= self.min_support]
            rows, sums = rows[appearance], sums[appearance]
            out.append(CovisScores(rows, sums, np.lexsort((np.arange(len(rows)), -sums))))
        return out
