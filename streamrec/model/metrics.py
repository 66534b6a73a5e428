"""Ranking metrics for one relevant item per test event, and their running accumulators.

>>> hit_rank("b", ["a", "b", "c"])
2
>>> round(ndcg_at_rank(2), 4), mrr_at_rank(2), recall_at_rank(None)
(0.6309, 0.5, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


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
