"""Ranking metrics for one relevant item per test event, and their running accumulators (offline and online).

>>> hit_rank("b", ["a", "b", "c"])
2
>>> round(ndcg_at_rank(2), 4), mrr_at_rank(2), recall_at_rank(None)
(0.6309, 0.5, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def hit_rank(item_id: str, ranked: Sequence[str]) -> int | None:
    """1-based position of ``item_id`` in ``ranked`` (the top-k list), None when it is not there."""
    for pos, candidate in enumerate(ranked, start=1):
        if candidate == item_id:
            return pos
    return None


def recall_at_rank(rank: int | None) -> float:
    """Recall@k with a single relevant item = hit rate: 1 if it is in the list."""
    return 0.0 if rank is None else 1.0


def ndcg_at_rank(rank: int | None) -> float:
    """NDCG@k with a single relevant item: the ideal DCG is 1, so it is ``1 / log2(rank + 1)``."""
    return 0.0 if rank is None else 1.0 / math.log2(rank + 1)


def mrr_at_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


@dataclass
class MetricSums:
    """Sums of per-event metrics; means are taken at the end."""

    n: int = 0
    recall: float = 0.0
    ndcg: float = 0.0
    mrr: float = 0.0

    def add(self, rank: int | None) -> None:
        self.n += 1
        self.recall += recall_at_rank(rank)
        self.ndcg += ndcg_at_rank(rank)
        self.mrr += mrr_at_rank(rank)

    def means(self) -> dict[str, float]:
        d = max(self.n, 1)
        return {"recall": self.recall / d, "ndcg": self.ndcg / d, "mrr": self.mrr / d}


@dataclass
class PrequentialScore:
    """Discovery-event metrics (primary), all-event metrics (secondary), and windowed discovery recall."""

    window: int
    discovery: MetricSums = field(default_factory=MetricSums)
    all_events: MetricSums = field(default_factory=MetricSums)
    windows: list[MetricSums] = field(default_factory=list)

    def add(self, rank: int | None, discovery: bool) -> None:
        self.all_events.add(rank)
        if not discovery:
            return
        if not self.windows or self.windows[-1].n >= self.window:
            self.windows.append(MetricSums())
        self.windows[-1].add(rank)
        self.discovery.add(rank)

    def summary(self) -> dict[str, float]:
        d = self.discovery.means()
        a = self.all_events.means()
        return {**d, "recall_all": a["recall"], "ndcg_all": a["ndcg"], "mrr_all": a["mrr"]}

    def windowed_recall(self) -> list[float]:
        return [w.means()["recall"] for w in self.windows]


DISCOVERY = "discovery"
REPEAT = "repeat"
DISCOVERY_LABELS = (DISCOVERY, REPEAT)
"""Index 0 and 1 of :class:`OnlineCounts`' second axis."""
MISS = 0
"""The rank :class:`OnlineScores` records for an event whose item was not in the list (ranks are 1-based)."""


def is_repeat(item_id: str, recent: Sequence[str], purchased: Sequence[str]) -> bool:
    """The online discovery rule: an item event is a repeat when the user's profile already holds the item —
    among their last ``recent_items`` distinct items or their last ``max_purchased`` purchases — and a
    discovery otherwise.

    The offline harness's rule ("the user's first interaction with the item") needs every pair ever seen; a
    worker keeps bounded profiles, so an item the user touched long ago (beyond those lists) counts as a
    discovery again. ``streamrec eval --protocol published`` uses this same rule.

    >>> is_repeat("a", ["b", "a"], []), is_repeat("c", ["b"], ["c"]), is_repeat("d", ["b"], ["c"])
    (True, True, False)
    """
    return item_id in recent or item_id in purchased


@dataclass(frozen=True, eq=False)
class OnlineCounts:
    """Scored events by (list kind, discovery or repeat, hit rank): since start and over the last ``window``.

    ``since_start[kind, d, r]`` counts the events of list kind ``kinds[kind]`` and discovery label
    ``DISCOVERY_LABELS[d]`` whose item stood at rank ``r`` (1..k) of the list, or was not in it (``r`` = 0).
    Every figure — hits, Recall@k, NDCG@k, MRR@k, the rank histogram — follows from the counts exactly.
    """

    k: int
    kinds: tuple[str, ...]
    window: int
    since_start: np.ndarray
    recent: np.ndarray
    """The same counts over the newest ``window`` scored events."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnlineCounts):
            return NotImplemented
        return (self.k, self.kinds, self.window) == (other.k, other.kinds, other.window) and all(
            np.array_equal(a, b) for a, b in ((self.since_start, other.since_start), (self.recent, other.recent))
        )

    __hash__ = None  # type: ignore[assignment]

    def figures(self) -> dict[str, Any]:
        """``/stats["online_quality"]``: the harness's figure names (discovery events first, then ``*_all`` over
        every scored event) since start, and the same over the window."""
        return {"k": self.k, **quality(self.since_start), "window": {"size": self.window, **quality(self.recent)}}

    def scored(self) -> dict[tuple[str, str], int]:
        """Scored events per (kind, discovery label), since start."""
        return self._per_label(self.since_start.sum(axis=2))

    def hits(self) -> dict[tuple[str, str], int]:
        """Events whose item was in the list, per (kind, discovery label), since start."""
        return self._per_label(self.since_start[:, :, MISS + 1 :].sum(axis=2))

    def hit_ranks(self) -> dict[tuple[str, str], list[int]]:
        """Per (kind, discovery label), how many hits were at rank 1, 2, …, k (index 0 is rank 1), since start."""
        return {
            (kind, label): self.since_start[i, d, MISS + 1 :].tolist()
            for i, kind in enumerate(self.kinds)
            for d, label in enumerate(DISCOVERY_LABELS)
        }

    def _per_label(self, table: np.ndarray) -> dict[tuple[str, str], int]:
        return {
            (kind, label): int(table[i, d])
            for i, kind in enumerate(self.kinds)
            for d, label in enumerate(DISCOVERY_LABELS)
        }


def quality(counts: np.ndarray) -> dict[str, float | int]:
    """Mean Recall/NDCG/MRR of (kinds, 2, k + 1) rank counts: over discovery events, and ``*_all`` over all."""
    ranks = np.arange(counts.shape[-1])
    hit = ranks > MISS
    gains = {
        "recall": hit.astype(np.float64),
        "ndcg": np.where(hit, 1.0 / np.log2(ranks + 1.0, where=hit, out=np.ones(len(ranks))), 0.0),
        "mrr": np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0),
    }
    out: dict[str, float | int] = {}
    for suffix, per_rank in (("", counts[:, 0].sum(axis=0)), ("_all", counts.sum(axis=(0, 1)))):
        n = int(per_rank.sum())
        out[f"scored{suffix}"] = n
        for name, gain in gains.items():
            out[f"{name}{suffix}"] = float(per_rank @ gain) / max(n, 1)
    return out


class OnlineScores:
    """Online quality: each item event scored against the list last published to its user, before learning.

    Kept as rank counts (:class:`OnlineCounts`), since start and over the newest ``window`` scored events (a
    ring of their count cells), so memory is fixed and no figure drifts with floating-point sums. ``add`` takes
    a whole batch's scores as arrays.

    >>> scores = OnlineScores(k=3, kinds=("behaviour", "search"), window=2)
    >>> scores.add(np.array([0, 0, 1]), np.array([False, True, False]), np.array([2, 0, 1]))
    >>> counts = scores.counts()
    >>> counts.hits()[("behaviour", "discovery")], counts.scored()[("behaviour", "repeat")]
    (1, 1)
    >>> f = counts.figures()
    >>> f["scored"], f["recall"], f["mrr"], f["scored_all"], f["window"]["scored_all"], f["window"]["recall"]
    (2, 1.0, 0.75, 3, 2, 1.0)
    """

    def __init__(self, k: int, kinds: tuple[str, ...], window: int) -> None:
        if k < 1 or window < 1 or not kinds:
            raise ValueError(f"online scores need k ≥ 1, window ≥ 1 and a kind, got {k=}, {window=}, {kinds=}")
        self.k = k
        self.kinds = kinds
        self.window = window
        self._shape = (len(kinds), len(DISCOVERY_LABELS), k + 1)
        self._since_start = np.zeros(self._shape, np.int64)
        self._recent = np.zeros(self._shape, np.int64)
        self._ring = np.zeros(window, np.int64)
        """Flat count cell of each of the newest ``window`` scored events, oldest overwritten first."""
        self._added = 0

    def add(self, kinds: np.ndarray, repeats: np.ndarray, ranks: np.ndarray) -> None:
        """Count a batch of scored events: list kind codes, whether each was a repeat, 1-based ranks (0: not
        listed; ranks beyond ``k`` count as misses)."""
        n = len(ranks)
        if n == 0:
            return
        ranks = np.where(np.asarray(ranks) > self.k, MISS, ranks)
        cells = np.ravel_multi_index((np.asarray(kinds), np.asarray(repeats, np.int64), ranks), self._shape)
        size = self._since_start.size
        self._since_start += np.bincount(cells, minlength=size).reshape(self._shape)
        newest = cells[-self.window :]
        pos = (self._added + (n - len(newest)) + np.arange(len(newest))) % self.window
        old = self._ring[pos if self._added >= self.window else pos[pos < self._added]]  # the cells they replace
        self._recent -= np.bincount(old, minlength=size).reshape(self._shape)
        self._recent += np.bincount(newest, minlength=size).reshape(self._shape)
        self._ring[pos] = newest
        self._added += n

    def counts(self) -> OnlineCounts:
        """A copy of the counts (what the core hands the worker with every reply)."""
        return OnlineCounts(self.k, self.kinds, self.window, self._since_start.copy(), self._recent.copy())
