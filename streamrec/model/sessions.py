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

import numpy as np

from streamrec.model.covisitation import CovisScores
from streamrec.settings import RetrievalSettings

LOG_DECAY_OFFSET = 1.7
"""``log`` decay: the newest query item weighs ``1 / log10(1.7)`` ≈ 4.3, the one before ``1 / log10(2.7)`` ≈ 2.3 …"""
INITIAL_SLOTS = 1024
INLINE_ITEMS = 4
"""Items a session keeps in the slot table; a longer session gets its own array of ``session_max_items``."""
INITIAL_HOLDERS = 4
"""Room an item's holder array starts with (it doubles, up to ``session_sample + 2``)."""
NO_SLOT = -1
_NO_ROWS = np.zeros(0, np.int32)


def _linear(position: int, length: int) -> float:
    return position / length


def _log(position: int, length: int) -> float:
    return 1.0 / math.log10(length - position + LOG_DECAY_OFFSET)


def _none(position: int, length: int) -> float:
    return 1.0


DECAYS: dict[str, Callable[[int, int], float]] = {"linear": _linear, "log": _log, "none": _none}
"""Weight of the ``position``-th (1-based, oldest first) of a query's ``length`` items."""


def _find(arr: np.ndarray, n: int, value: int) -> int:
    """Position of ``value`` in ``arr[:n]``, -1 if it is not there."""
    held = arr[:n].tolist()
    return held.index(value) if value in held else -1


def _cut(arr: np.ndarray, n: int, i: int) -> int:
    """Remove position ``i`` of ``arr[:n]`` (the rest keep their order); the new length."""
    arr[i : n - 1] = arr[i + 1 : n]
    return n - 1


def _move_to_end(arr: np.ndarray, n: int, value: int) -> bool:
    """Move ``value`` to position ``n - 1`` of ``arr[:n]`` if it is there (the rest keep their order)."""
    i = _find(arr, n, value)
    if i < 0:
        return False
    _cut(arr, n, i)
    arr[n - 1] = value
    return True


class SessionIndex:
    """Recent sessions of all users, indexed by item, scored for a user's latest session (V-SKNN).

    Sessions live in slot-indexed arrays (no object per session): their items in a few inline columns (a long
    session in an array of its own), the item → holder-slots index in one small array per item, the open order in
    a ring of slots, and each user's sessions as a chain of slots from the newest.
    """

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
        n = min(INITIAL_SLOTS, max(self.capacity, 1))
        self._last = np.zeros(n, np.float64)
        """Time of each slot's session's latest event."""
        self._opened = np.zeros(n, np.int64)
        """Order in which each slot's session was opened (ties of recency go to the later one)."""
        self._older = np.full(n, NO_SLOT, np.int32)
        """The same user's session opened before this one (:meth:`forget` walks the chain)."""
        self._newer = np.full(n, NO_SLOT, np.int32)
        self._inline = np.zeros((n, INLINE_ITEMS), np.int32)
        """Distinct item rows of each short session, oldest first (a repeat moves to the end)."""
        self._long: dict[int, np.ndarray] = {}
        """Slot → item rows of a session longer than ``INLINE_ITEMS`` (room for ``max_items + 1``)."""
        self._count: list[int] = [0] * n
        """Items each slot's session holds."""
        self._owner: list[str | None] = [None] * n
        """Each slot's user (``None``: a free slot)."""
        self._key: list[str | None] = [None] * n
        """Each slot's ``session_id`` (``None``: split by the time gap)."""
        self._ring = np.zeros(n, np.int32)
        """Slot of the session opened ``opens``-th, at ``opens % len(ring)``; entries of dropped sessions go stale."""
        self._head = 0
        """Open order of the oldest session that may still be kept (the next to make room)."""
        self._opens = 0
        self._alive = 0
        self._free: list[int] = []
        self._next_slot = 0
        self._current: dict[str, int] = {}
        """User → slot of their latest session."""
        self._holders: list[np.ndarray | None] = []
        """Item row → the slots of the sessions that most recently added it, oldest first (at most ``sample + 1``)."""
        self._held: list[int] = []
        """Item row → how many of its holder array's entries are in use."""

    def __len__(self) -> int:
        return self._alive

    # --- learning -----------------------------------------------------------------------------------
    def add(self, user_id: str, session_id: str | None, row: int, ts: float) -> None:
        """``user_id`` visited ``row`` at ``ts`` (in their session ``session_id``, or by the time gap)."""
        if self.capacity == 0:
            return
        slot = self._session_for(user_id, session_id, ts)
        n = self._count[slot]
        items = self._long.get(slot)
        if items is None:
            items = self._inline[slot]
        repeat = bool(n) and _move_to_end(items, n, row)
        if not repeat:
            if n == len(items):
                items = self._long[slot] = _grown(items, self.max_items + 1)
            items[n] = row
            n += 1
            if n > self.max_items:
                dropped = int(items[0])
                n = _cut(items, n, 0)
                self._unhold(dropped, slot)
            self._count[slot] = n
        self._hold(row, slot, repeat)
        if ts > self._last[slot]:
            self._last[slot] = ts

    def add_many(self, visits: Sequence[tuple[str, str | None, int, float]]) -> None:
        """:meth:`add` for each ``(user_id, session_id, row, ts)``, in order."""
        for user_id, session_id, row, ts in visits:
            self.add(user_id, session_id, row, ts)

    def _session_for(self, user_id: str, session_id: str | None, ts: float) -> int:
        slot = self._current.get(user_id)
        if slot is not None:
            same = self._key[slot] == session_id if session_id is not None else ts - self._last[slot] <= self.gap
            if same:
                return slot
        if self._alive >= self.capacity:
            self._drop_oldest()
        previous = self._current.get(user_id, NO_SLOT)
        owner = user_id if previous == NO_SLOT else self._owner[previous]
        slot = self._free.pop() if self._free else self._grow()
        self._owner[slot] = owner
        self._key[slot] = session_id
        self._last[slot] = ts
        self._opened[slot] = self._opens
        if self._opens - self._head >= len(self._ring):
            self._grow_ring()
        self._ring[self._opens % len(self._ring)] = slot
        self._opens += 1
        self._alive += 1
        self._older[slot] = previous
        self._newer[slot] = NO_SLOT
        if previous != NO_SLOT:
            self._newer[previous] = slot
        self._current[user_id] = slot
        return slot

    def _grow(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        n = len(self._last)
        if slot >= n:
            grown = min(2 * n, max(self.capacity, n + 1))
            self._last = _grown(self._last, grown)
            self._opened = _grown(self._opened, grown)
            self._older = _grown(self._older, grown)
            self._newer = _grown(self._newer, grown)
            self._inline = _grown(self._inline, grown)
            self._count += [0] * (grown - n)
            self._owner += [None] * (grown - n)
            self._key += [None] * (grown - n)
        return slot

    def _grow_ring(self) -> None:
        stamps = np.arange(self._head, self._opens)
        ring = np.zeros(2 * len(self._ring), np.int32)
        ring[stamps % len(ring)] = self._ring[stamps % len(self._ring)]
        self._ring = ring

    def _hold(self, row: int, slot: int, present: bool) -> None:
        """``slot`` becomes the newest holder of ``row`` (``present``: it may hold it already)."""
        if row >= len(self._holders):
            extra = row + 1 - len(self._holders)
            self._holders += [None] * extra
            self._held += [0] * extra
        slots = self._holders[row]
        m = self._held[row]
        if present and slots is not None and _move_to_end(slots, m, slot):
            return
        if slots is None or m == len(slots):
            room = min(max(2 * m, INITIAL_HOLDERS), self.sample + 2)
            slots = self._holders[row] = _grown(slots if slots is not None else _NO_ROWS, room)
        slots[m] = slot
        m += 1
        if m > self.sample + 1:
            m = _cut(slots, m, 0)
        self._held[row] = m

    def _unhold(self, row: int, slot: int) -> None:
        slots = self._holders[row] if row < len(self._holders) else None
        if slots is None:
            return
        m = self._held[row]
        i = _find(slots, m, slot)
        if i < 0:
            return
        m = self._held[row] = _cut(slots, m, i)
        if not m:
            self._holders[row] = None

    def _drop_oldest(self) -> None:
        """Make room: drop the session opened first of those kept (skipping ring entries of dropped ones)."""
        while True:
            stamp = self._head
            slot = int(self._ring[stamp % len(self._ring)])
            self._head += 1
            if self._owner[slot] is not None and self._opened[slot] == stamp:
                self._drop(slot)
                return

    def _drop(self, slot: int) -> None:
        """Erase one session: from its items' holders, its owner's chain, and the slots in use."""
        for row in self._items(slot).tolist():
            self._unhold(row, slot)
        older, newer = int(self._older[slot]), int(self._newer[slot])
        if older != NO_SLOT:
            self._newer[older] = newer
        if newer != NO_SLOT:
            self._older[newer] = older
        owner = self._owner[slot]
        if owner is not None and self._current.get(owner) == slot:
            del self._current[owner]
        self._owner[slot] = self._key[slot] = None
        self._count[slot] = 0
        self._long.pop(slot, None)
        self._last[slot] = 0.0
        self._alive -= 1
        self._free.append(slot)

    def forget(self, user_id: str) -> int:
        """Erase every session of ``user_id`` (privacy requests); returns how many there were."""
        slots: list[int] = []
        slot = self._current.get(user_id, NO_SLOT)
        while slot != NO_SLOT:
            slots.append(slot)
            slot = int(self._older[slot])
        for slot in slots:
            self._drop(slot)
        return len(slots)

    # --- scoring ------------------------------------------------------------------------------------
    def _holder_array(self, row: int) -> np.ndarray:
        slots = self._holders[row] if row < len(self._holders) else None
        return _NO_ROWS if slots is None else slots[: self._held[row]]

    def _items(self, slot: int) -> np.ndarray:
        items = self._long.get(slot)
        return (self._inline[slot] if items is None else items)[: self._count[slot]]

    def neighbours(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the neighbours of the user's latest session and their similarities, most similar first
        (ties: the more recent session)."""
        empty = np.zeros(0, np.int64), np.zeros(0)
        own = self._current.get(user_id)
        if own is None:
            return empty
        items = self._items(own).tolist()
        n = len(items)
        start = max(0, n - self.query_items)
        arrays = [self._holder_array(r) for r in items[start:]]
        lengths = [len(a) for a in arrays]
        if not sum(lengths):
            return empty
        weights = np.repeat([self.decay(p, n) for p in range(start + 1, n + 1)], lengths)
        # summed per distinct holder (not over every slot: the query's cost follows its holders, not the index)
        slots, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
        sims = np.bincount(inverse, weights=weights, minlength=len(slots))
        if self.min_overlap > 1:
            # one shared item is weak evidence where items are rarely revisited: such sessions are no neighbours
            overlap = np.bincount(inverse, minlength=len(slots))
            sims[overlap < min(self.min_overlap, len(arrays))] = 0.0
        sims[slots == own] = 0.0
        keep = np.flatnonzero(sims)
        found, sims = slots[keep].astype(np.int64), sims[keep]
        last, opened = self._last[found], self._opened[found]
        if len(found) > self.sample:
            keep = np.lexsort((-opened, -last))[: self.sample]
            found, sims, last, opened = found[keep], sims[keep], last[keep], opened[keep]
        order = np.lexsort((-opened, -last, -sims))[: self.k]
        return found[order], sims[order]

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
            rows, sums = rows[appearance].astype(np.int64), sums[appearance]
            out.append(CovisScores(rows, sums, np.lexsort((np.arange(len(rows)), -sums))))
        return out


def _grown(arr: np.ndarray, n: int) -> np.ndarray:
    """``arr`` extended to ``n`` rows of zeros (untouched, they cost no resident memory until written)."""
    out = np.zeros((n, *arr.shape[1:]), arr.dtype)
    out[: len(arr)] = arr
    return out
