"""What each recent user was last offered, kept in memory to learn against: bounded, reserved up front."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

EMPTY_ROWS = np.zeros(0, np.int32)
EMPTY_ROWS.flags.writeable = False
"""The shown list of a user with no offer kept (shared, read-only)."""


class OfferCache:
    """Each recent user's last offer: the candidate pool a list was ranked from, the list as published and the
    listed rows not taken since.

    Learning needs both when the user's next labelled event comes — the pool to tell whether the ranker could
    have made the choice and to draw negatives, the list for shown-not-taken negatives — and the list as published
    (ranked, with its kind) to score the event against it (online quality). They are not part of the
    durable profile (after a restart or a rebalance the first new list starts the next offer either way). All
    offers live in row-per-slot arrays reserved and touched at start: memory is fixed by ``users``, whatever
    the number of users, and an offer costs no per-user arrays (each with its header, scattered over the heap;
    docs/performance.md, "Where the memory goes"). The least recently offered user makes room.

    >>> offers = OfferCache(users=2, pool_width=4, list_width=2)
    >>> offers.remember("a", np.array([7, 3, 9]), np.array([9, 3]))
    >>> offers.pool("a").tolist(), offers.shown("a").tolist()
    ([7, 3, 9], [9, 3])
    >>> offers.taken("a", 9)
    >>> offers.shown("a").tolist(), offers.published("a").tolist()
    ([3], [9, 3])
    >>> offers.remember("b", np.array([1]), np.array([1]))
    >>> offers.remember("c", np.array([2]), np.array([2]))
    >>> "a" in offers, offers.pool("a"), len(offers)
    (False, None, 2)
    """

    def __init__(self, users: int, pool_width: int, list_width: int) -> None:
        if users < 1 or pool_width < 1 or list_width < 1:
            raise ValueError(
                f"an offer cache needs room for a user, a pool and a list, got {users=}, {pool_width=}, {list_width=}"
            )
        self._slot: OrderedDict[str, int] = OrderedDict()
        """User → slot, least recently offered first."""
        self._free = list(range(users - 1, -1, -1))
        self._pools = np.full((users, pool_width), -1, np.int32)  # full, not empty: the pages are taken now
        self._lists = np.full((users, list_width), -1, np.int32)
        self._ranked = np.full((users, list_width), -1, np.int32)
        """The list as published, in rank order: taking an item does not change it."""
        self._pool_len = np.zeros(users, np.int32)
        self._list_len = np.zeros(users, np.int32)
        self._ranked_len = np.zeros(users, np.int32)
        self._kind = np.zeros(users, np.int8)
        """The published list's kind code (the caller's: e.g. behaviour or search)."""

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._slot

    @property
    def nbytes(self) -> int:
        """Memory held by the offers' arrays (fixed, whatever the number of users)."""
        arrays = (self._pools, self._lists, self._ranked, self._pool_len, self._list_len, self._ranked_len, self._kind)
        return sum(a.nbytes for a in arrays)

    def pool(self, user_id: str) -> np.ndarray | None:
        """Rows of the pool ``user_id``'s last list was ranked from (a read-only view), or None if none is kept."""
        slot = self._slot.get(user_id)
        return None if slot is None else self._view(self._pools, slot, self._pool_len)

    def shown(self, user_id: str) -> np.ndarray:
        """Rows of ``user_id``'s last list not taken since (a read-only view; empty if no offer is kept)."""
        slot = self._slot.get(user_id)
        return EMPTY_ROWS if slot is None else self._view(self._lists, slot, self._list_len)

    def published(self, user_id: str) -> np.ndarray:
        """Rows of ``user_id``'s last list as published, in rank order (a read-only view; empty if none is kept)."""
        slot = self._slot.get(user_id)
        return EMPTY_ROWS if slot is None else self._view(self._ranked, slot, self._ranked_len)

    def published_ranks(
        self, user_ids: Sequence[str], rows: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each ``rows[i]`` stands in ``user_ids[i]``'s last published list, for the users that have one:
        (indices into the inputs, 1-based ranks with 0 for "not in the list", the lists' kind codes).

        One lookup per pair, then one vectorised comparison for all of them (the recommender scores a whole
        batch's events at once).

        >>> offers = OfferCache(users=2, pool_width=3, list_width=3)
        >>> offers.remember("a", np.array([4, 5, 6]), np.array([6, 4]), kind=1)
        >>> [x.tolist() for x in offers.published_ranks(["a", "b", "a"], [4, 4, 5])]
        [[0, 2], [2, 0], [1, 1]]
        """
        slot_of = self._slot.get
        slots = np.fromiter((slot_of(u, -1) for u in user_ids), np.int64, len(user_ids))
        which = np.flatnonzero(slots >= 0)
        slots = slots[which]
        wanted = np.asarray(rows, np.int64)[which]
        listed = self._ranked[slots]
        match = (listed == wanted[:, None]) & (np.arange(listed.shape[1]) < self._ranked_len[slots][:, None])
        ranks = np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0)
        return which, ranks, self._kind[slots].astype(np.int64)

    @staticmethod
    def _view(rows: np.ndarray, slot: int, lengths: np.ndarray) -> np.ndarray:
        view = rows[slot, : lengths[slot]]
        view.flags.writeable = False
        return view

    def remember(self, user_id: str, pool: np.ndarray, shown: np.ndarray, kind: int = 0) -> None:
        """Keep ``pool`` and the published list ``shown`` (rows, in rank order) as ``user_id``'s offer, replacing
        any earlier one; ``kind`` is a small code the caller gives the list (see :meth:`published_ranks`)."""
        slot = self._slot.get(user_id)
        if slot is None:
            slot = self._free.pop() if self._free else self._slot.popitem(last=False)[1]
            self._slot[user_id] = slot
        else:
            self._slot.move_to_end(user_id)
        self._pools = self._fit(self._pools, len(pool))
        self._lists = self._fit(self._lists, len(shown))
        self._ranked = self._fit(self._ranked, len(shown))
        self._pools[slot, : len(pool)] = pool
        self._pool_len[slot] = len(pool)
        self._lists[slot, : len(shown)] = shown
        self._list_len[slot] = len(shown)
        self._ranked[slot, : len(shown)] = shown
        self._ranked_len[slot] = len(shown)
        self._kind[slot] = kind

    @staticmethod
    def _fit(rows: np.ndarray, width: int) -> np.ndarray:
        """``rows`` widened if an offer needs more columns than reserved (pools are bounded by the settings
        that size them, so this is a safety net, never a truncation)."""
        if width <= rows.shape[1]:
            return rows
        return np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=-1)

    def taken(self, user_id: str, row: int) -> None:
        """``user_id`` took ``row``: it is no longer a shown-not-taken item of their offer."""
        slot = self._slot.get(user_id)
        if slot is None:
            return
        n = int(self._list_len[slot])
        listed = self._lists[slot, :n]
        kept = listed[listed != row]
        listed[: len(kept)] = kept
        self._list_len[slot] = len(kept)

    def forget(self, user_id: str) -> None:
        """Drop ``user_id``'s offer (privacy requests); its slot is free for the next user."""
        slot = self._slot.pop(user_id, None)
        if slot is not None:
            self._pool_len[slot] = self._list_len[slot] = self._ranked_len[slot] = 0
            self._free.append(slot)


PUBLISHED_INITIAL_USERS = 1024


class PublishedLists:
    """The rows of the last list published to each user, to find whose list holds a withdrawn item.

    One row of ``width`` int32 per user in a growing array (and the user's slot in a dict): ~200 bytes a user,
    searched for a set of items in one vectorised pass. In memory only: after a restart or a rebalance, lists
    published before are not known here (their users get a fresh list with their next event).

    >>> lists = PublishedLists(width=3)
    >>> for user, rows in (("a", [4, 7]), ("b", [7, 9, 1]), ("c", [2])):
    ...     lists.remember(user, np.array(rows))
    >>> lists.users_listing([7]), lists.users_listing([1, 2])
    (['a', 'b'], ['b', 'c'])
    >>> lists.forget("b"); lists.users_listing([7]), len(lists)
    (['a'], 2)
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._slot: dict[str, int] = {}
        self._users: list[str | None] = []
        self._free: list[int] = []
        self._rows = np.full((PUBLISHED_INITIAL_USERS, width), -1, np.int32)

    def __len__(self) -> int:
        return len(self._slot)

    def remember(self, user_id: str, rows: np.ndarray) -> None:
        """``rows`` (at most ``width``) is the list just published to ``user_id``."""
        slot = self._slot.get(user_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._users[slot] = user_id
            else:
                slot = len(self._users)
                self._users.append(user_id)
                if slot >= len(self._rows):
                    self._rows = np.concatenate([self._rows, np.full_like(self._rows, -1)])
            self._slot[user_id] = slot
        n = min(len(rows), self.width)
        self._rows[slot, :n] = rows[:n]
        self._rows[slot, n:] = -1

    def users_listing(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """Users whose last list holds any of ``rows`` (in the order they were first remembered)."""
        if not self._users:
            return []
        hit = np.isin(self._rows[: len(self._users)], np.asarray(rows, np.int64)).any(axis=1)
        users = self._users
        return [u for u in (users[s] for s in np.flatnonzero(hit).tolist()) if u is not None]

    def forget(self, user_id: str) -> None:
        slot = self._slot.pop(user_id, None)
        if slot is not None:
            self._rows[slot] = -1
            self._users[slot] = None
            self._free.append(slot)
