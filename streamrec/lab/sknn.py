"""V-SKNN (Ludewig & Jannach 2018): session-based nearest neighbours, a cheap baseline a team can run.

The query is the user's latest session (its distinct items in order of their last occurrence, the last
``MAX_QUERY_ITEMS`` of them), each item weighted by its position: ``linear`` gives the ``p``-th of ``n`` items
``p / n`` (the newest 1), ``log`` gives ``1 / log10(n - p + 1.7)``, ``none`` gives 1. A past session's similarity is
the summed weight of the query items it contains; of the past sessions (of all users) that share an item with the
query, the ``sample`` most recent are kept, their ``k`` most similar are the neighbours, and an item's score is the
summed similarity of the neighbours that contain it. Sessions are the event's ``session_id`` when the log has one,
else a user's events with gaps under ``session_gap_s``.

Efficiency: each item keeps only the ``sample + 1`` sessions that most recently added it (one more, as the
query's own session may be among them), so a request touches at most that many sessions per query item, and both
the similarities and the item scores are numpy bincounts over those short lists. A session's recency is its last
event; one that added an item long ago and stayed active can have dropped out of that item's list.

List rules are the other baselines' (:mod:`streamrec.lab.baselines`): purchased and recently touched items are
excluded, and a list the neighbours cannot fill is topped up with decayed popularity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamrec.lab.baselines import PopularityBaseline, _fill
from streamrec.model.events import ITEM_EVENT_TYPES, Event, ItemEmbedding
from streamrec.model.sessions import DECAYS
from streamrec.settings import Settings

SESSION_GAP_S = 30 * 60.0
"""A user's events further apart than this start a new session (when the log has no ``session_id``)."""
MAX_QUERY_ITEMS = 50
"""The query is at most the session's last 50 distinct items: bounded work per request on long rating bursts."""
INITIAL_CAPACITY = 1024


@dataclass(frozen=True)
class SknnParams:
    """V-SKNN's knobs: neighbours, candidate sample, position decay, session gap."""

    k: int = 100
    sample: int = 500
    decay: str = "linear"
    session_gap_s: float = SESSION_GAP_S

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; choose from {sorted(DECAYS)}")
        if self.k < 1 or self.sample < 1:
            raise ValueError("k and sample must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SKNN_GRID: tuple[SknnParams, ...] = tuple(
    SknnParams(k=k, sample=sample, decay=decay)
    for decay in ("linear", "log", "none")
    for k in (10, 20, 50, 100, 200)
    for sample in (250, 500, 1000)
)
"""The tuning grid (chosen on each log's replay prefix, see :mod:`streamrec.lab.evaluation`)."""


class _Growable:
    """A numpy array that doubles when a row past its end is written."""

    def __init__(self, dtype: Any) -> None:
        self.data = np.zeros(INITIAL_CAPACITY, dtype)

    def set(self, row: int, value: Any) -> None:
        if row >= len(self.data):
            self.data = np.concatenate([self.data, np.zeros(max(row + 1, len(self.data)), self.data.dtype)])
        self.data[row] = value


@dataclass
class _UserState:
    session: int
    key: str | None
    last_ts: float


class SknnBaseline:
    """Session-based kNN over the recent sessions of all users (V-SKNN), with the shared list rules."""

    name = "sknn"

    def __init__(self, settings: Settings, params: SknnParams | None = None) -> None:
        self.params = params or SknnParams()
        self.decay = DECAYS[self.params.decay]
        self.popularity = PopularityBaseline(settings)
        self.users: dict[str, _UserState] = {}
        # a session's distinct items (oldest first; a repeat moves to the end) and the time of its last event
        self.session_items: list[dict[int, None]] = []
        self.session_last = _Growable(np.float64)
        # item row → the sessions that most recently added it (insertion order = recency), at most ``sample + 1``
        self.item_sessions: dict[int, dict[int, None]] = {}
        # numpy copies of the two, rebuilt when their dict changed
        self._item_arrays: dict[int, np.ndarray] = {}
        self._session_arrays: dict[int, np.ndarray] = {}

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.popularity.upsert_item(emb)

    @property
    def ids(self) -> list[str]:
        """Item ids by row: the popularity counter's rows, so that ties can go to the more popular item."""
        return self.popularity.ids

    def _session_for(self, event: Event) -> int:
        """The session this event belongs to: the user's current one, or a new one (new session id or a gap)."""
        state = self.users.get(event.user_id)
        key = event.session_id
        if state is not None:
            same = key == state.key if key is not None else event.ts - state.last_ts <= self.params.session_gap_s
            if same:
                state.last_ts = event.ts
                return state.session
        session = len(self.session_items)
        self.session_items.append({})
        self.users[event.user_id] = _UserState(session, key, event.ts)
        return session

    def learn(self, event: Event) -> None:
        if event.item_id is not None and event.type in ITEM_EVENT_TYPES:
            session = self._session_for(event)
            row = self.popularity._row(event.item_id)
            items = self.session_items[session]
            items.pop(row, None)
            items[row] = None
            self._session_arrays.pop(session, None)
            holders = self.item_sessions.setdefault(row, {})
            holders.pop(session, None)
            holders[session] = None
            if len(holders) > self.params.sample + 1:
                del holders[next(iter(holders))]
            self._item_arrays.pop(row, None)
            self.session_last.set(session, event.ts)
        self.popularity.learn(event)

    def _item_array(self, row: int) -> np.ndarray:
        arr = self._item_arrays.get(row)
        if arr is None:
            holders = self.item_sessions[row]
            arr = self._item_arrays[row] = np.fromiter(holders, np.int64, len(holders))
        return arr

    def _session_array(self, session: int) -> np.ndarray:
        arr = self._session_arrays.get(session)
        if arr is None:
            items = self.session_items[session]
            arr = self._session_arrays[session] = np.fromiter(items, np.int64, len(items))
        return arr

    def query(self, user_id: str) -> tuple[int, list[int], list[float]] | None:
        """The user's latest session, its last query items and their position weights (None without one)."""
        state = self.users.get(user_id)
        if state is None:
            return None
        items = list(self.session_items[state.session])
        n = len(items)
        start = max(0, n - MAX_QUERY_ITEMS)
        return state.session, items[start:], [self.decay(p, n) for p in range(start + 1, n + 1)]

    def neighbours(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The neighbour sessions of the user's latest session and their similarities, most similar first.

        Ties go to the more recent session (later last event, then the later-opened session).
        """
        empty = np.zeros(0, np.int64), np.zeros(0)
        q = self.query(user_id)
        if q is None:
            return empty
        own, rows, weights = q
        arrays = [self._item_array(r) for r in rows]
        lengths = [len(a) for a in arrays]
        if not sum(lengths):
            return empty
        candidates = np.concatenate(arrays)
        sims = np.bincount(candidates, weights=np.repeat(weights, lengths), minlength=len(self.session_items))
        sims[own] = 0.0
        found = np.flatnonzero(sims)
        last = self.session_last.data[found]
        if len(found) > self.params.sample:
            # the most recent ``sample`` candidates (ties: the later-opened session)
            keep = np.lexsort((-found, -last))[: self.params.sample]
            found, last = found[keep], last[keep]
        order = np.lexsort((-found, -last, -sims[found]))[: self.params.k]
        return found[order], sims[found[order]]

    def scores(self, user_id: str) -> dict[str, float]:
        """Every candidate item's score: the summed similarity of the neighbours that contain it."""
        sessions, sims = self.neighbours(user_id)
        return {self.ids[r]: s for r, s in zip(*self._item_scores(sessions, sims), strict=True)}

    def _item_scores(self, sessions: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate item rows, best first (ties: the more popular item now, then the one first seen), and scores."""
        if not len(sessions):
            return np.zeros(0, np.int64), np.zeros(0)
        arrays = [self._session_array(int(s)) for s in sessions]
        items = np.concatenate(arrays)
        score = np.bincount(items, weights=np.repeat(sims, [len(a) for a in arrays]), minlength=len(self.ids))
        rows = np.flatnonzero(score)
        rows = rows[np.lexsort((-self.popularity.counts[rows], -score[rows]))]
        return rows, score[rows]

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.popularity.histories.get(user_id)
        exclude = hist.excluded() if hist else set()
        rows, _ = self._item_scores(*self.neighbours(user_id))
        ranked = [self.ids[r] for r in rows[: k + len(exclude)]]
        return _fill(ranked, self.popularity, k, exclude)

    def stats(self) -> dict[str, Any]:
        return {"params": self.params.to_dict()}
