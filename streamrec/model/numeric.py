"""Small numeric helpers the model's modules share: exponential decay, the decayed counters' clock, segments.

Kept in one place so that every part of the model decays, normalises and segments the same way.
"""

from __future__ import annotations

import numpy as np

RESCALE_LOG2 = 60.0
"""Rescale decayed counters when the growth factor passes 2^60, far from float64 overflow."""
GROWTH_LOG2_BOUND = 4 * RESCALE_LOG2
"""``g(t)`` is clamped to 2^±240: an event or a read hundreds of half-lives away from the clock's origin (a stray
``ts`` of 0 among current ones, a far-future ``ts``) then weighs next to nothing, instead of overflowing
(OverflowError) or underflowing to a zero divisor — either of which used to crash the worker's core."""


class DecayClock:
    """The growth factor ``g(t)`` shared by a family of decayed counters."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.t0: float | None = None

    def log2_growth(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        return (ts - self.t0) / self.half_life_s

    def growth(self, ts: float) -> float:
        return float(2.0 ** min(max(self.log2_growth(ts), -GROWTH_LOG2_BOUND), GROWTH_LOG2_BOUND))

    def needs_rescale(self, ts: float) -> bool:
        return self.log2_growth(ts) > RESCALE_LOG2

    def rebase(self, ts: float) -> float:
        """Move ``t0`` to ``ts``; returns the factor every stored counter must be multiplied by."""
        factor = 1.0 / self.growth(ts)
        self.t0 = ts
        return factor


def segment_owners(lens: np.ndarray) -> np.ndarray:
    """For segments of these lengths laid end to end (one per user of a batch), each element's segment index."""
    return np.repeat(np.arange(len(lens), dtype=np.int64), lens)


def freshness(item_ts: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """1 for an item published now, halving every ``half_life_s``; items from the future count as new."""
    age = np.maximum(now - item_ts, 0.0)
    return np.power(0.5, age / half_life_s)
