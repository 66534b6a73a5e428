"""Beyond accuracy: what the lists of a replay look like — coverage, diversity, new-item exposure, novelty.

Accumulated over every list the harness scores (the same lists Recall@k is computed on), for every system:

* ``coverage`` — catalogue coverage@k: the share of the log's items that appeared in at least one list;
* ``diversity`` — intra-list diversity: 1 − the mean cosine between the embeddings of two items of a list (items
  without an embedding are left out; lists with fewer than two embedded items count as 0);
* ``new_exposure`` — the share of list slots that went to *new* items: items with fewer than
  :data:`NEW_ITEM_EVENTS` interactions in the log so far;
* ``novelty`` — the mean self-information of listed items, ``−log2((c + 1)/(N + 1))`` bits, ``c`` the item's
  interactions so far and ``N`` all interactions so far: recommending what everyone already saw scores low.

>>> m = ListMetrics({"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 0.0])}, catalogue=4)
>>> for item in ["a"] * 7:
...     m.observe(item)
>>> m.add(["a", "b"]); m.add(["a", "c"])
>>> {k: round(v, 3) for k, v in m.summary().items()}
{'coverage': 0.75, 'diversity': 0.5, 'new_exposure': 0.5, 'novelty': 1.5}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

NEW_ITEM_EVENTS = 5
"""An item with fewer interactions than this in the log so far counts as new (cold) for ``new_exposure``."""
METRIC_NAMES = ("coverage", "diversity", "new_exposure", "novelty")


class ItemVectors:
    """Unit embeddings of the log's items by id, built once and shared by every system's accumulator."""

    def __init__(self, row_of: dict[str, int], unit: np.ndarray) -> None:
        self.row_of = row_of
        self.unit = unit

    @classmethod
    def of(cls, vectors: Mapping[str, np.ndarray]) -> ItemVectors:
        ids = list(vectors)
        if not ids:
            return cls({}, np.zeros((0, 1), np.float32))
        matrix = np.array([vectors[i] for i in ids], np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls({item: i for i, item in enumerate(ids)}, matrix / np.maximum(norms, 1e-12))


class ListMetrics:
    """Running sums of the beyond-accuracy metrics of one system's lists (see the module docstring)."""

    def __init__(self, vectors: Mapping[str, np.ndarray] | ItemVectors, catalogue: int) -> None:
        self.items = vectors if isinstance(vectors, ItemVectors) else ItemVectors.of(vectors)
        self.catalogue = max(catalogue, 1)
        self.counts: dict[str, int] = {}
        self.interactions = 0
        self.listed: set[str] = set()
        self.lists = 0
        self.slots = 0
        self.diversity = 0.0
        self.new_slots = 0
        self.novelty = 0.0

    def observe(self, item_id: str) -> None:
        """One interaction with ``item_id`` (after the list for it was scored)."""
        self.counts[item_id] = self.counts.get(item_id, 0) + 1
        self.interactions += 1

    def add(self, ranked: Sequence[str]) -> None:
        """One published list."""
        self.lists += 1
        self.slots += len(ranked)
        self.listed.update(ranked)
        counts = [self.counts.get(i, 0) for i in ranked]
        self.new_slots += sum(c < NEW_ITEM_EVENTS for c in counts)
        log_total = math.log2(self.interactions + 1)
        self.novelty += sum(log_total - math.log2(c + 1) for c in counts)
        rows = [r for r in map(self.items.row_of.get, ranked) if r is not None]
        n = len(rows)
        if n >= 2:
            v = self.items.unit[rows]
            s = v.sum(axis=0)
            pair_sum = (float(s @ s) - float(np.einsum("ij,ij->", v, v))) / 2.0
            self.diversity += 1.0 - pair_sum / (n * (n - 1) / 2)

    def summary(self) -> dict[str, float]:
        lists, slots = max(self.lists, 1), max(self.slots, 1)
        return {
            "coverage": len(self.listed) / self.catalogue,
            "diversity": self.diversity / lists,
            "new_exposure": self.new_slots / slots,
            "novelty": self.novelty / slots,
        }
