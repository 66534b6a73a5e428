"""The model's shared arithmetic: exponential decay, the decayed counters' clock, sigmoid, unit vectors, segments.

One definition of each, so that profiles, popularity, co-visitation and freshness all decay by the same formula.

>>> decay(10.0, 10.0), decay(-5.0, 10.0), decay(np.array([0.0, 20.0]), 10.0).tolist()
(0.5, 1.0, [1.0, 0.25])
>>> clock = DecayClock(half_life_s=10.0)
>>> clock.growth(0.0), clock.growth(20.0)  # the first time seen is the origin
(1.0, 4.0)
>>> unit(np.array([3.0, 4.0])).tolist(), unit(np.zeros(2)).tolist()
([0.6, 0.8], [0.0, 0.0])
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

RESCALE_LOG2 = 60.0
"""Rescale decayed counters when the growth factor passes 2^60, far from float64 overflow."""
GROWTH_LOG2_BOUND = 4 * RESCALE_LOG2
"""``g(t)`` is clamped to 2^±240: an event or a read hundreds of half-lives away from the clock's origin (a stray
``ts`` of 0 among current ones, a far-future ``ts``) then weighs next to nothing, instead of overflowing
(OverflowError) or underflowing to a zero divisor, either of which would stop the worker's core."""


@overload
def halvings(n: float) -> float: ...
@overload
def halvings(n: np.ndarray) -> np.ndarray: ...
def halvings(n: float | np.ndarray) -> float | np.ndarray:
    """``0.5^n``: what is left of a quantity after ``n`` half-lives (``n < 0``: grown by ``2^-n``).

    The one exponential of every decay here: a float goes through Python's ``**`` (libm's ``pow``), an array
    through numpy's ``power``; ``halvings(-x)`` is bit for bit ``2.0 ** x``.
    """
    return 0.5**n


@overload
def decay(age: float, half_life: float) -> float: ...
@overload
def decay(age: np.ndarray, half_life: float) -> np.ndarray: ...
def decay(age: float | np.ndarray, half_life: float) -> float | np.ndarray:
    """The factor exponential decay with ``half_life`` applies over ``age`` (seconds): ``0.5^(age/half_life)``.

    Ages ≤ 0 give 1 (nothing grows backwards: an event or item from the future counts as now). Floats or arrays.
    """
    if isinstance(age, np.ndarray):
        return halvings(np.maximum(age, 0.0) / half_life)
    return 1.0 if age <= 0.0 else float(halvings(age / half_life))


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
        """``2^((ts - t0)/half_life)``, the inverse of :func:`decay` (clamped to 2^±:data:`GROWTH_LOG2_BOUND`)."""
        return float(halvings(-min(max(self.log2_growth(ts), -GROWTH_LOG2_BOUND), GROWTH_LOG2_BOUND)))

    def needs_rescale(self, ts: float) -> bool:
        return self.log2_growth(ts) > RESCALE_LOG2

    def rebase(self, ts: float) -> float:
        """Move ``t0`` to ``ts``; returns the factor every stored counter must be multiplied by."""
        factor = 1.0 / self.growth(ts)
        self.t0 = ts
        return factor


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function ``1/(1 + e^-x)``, written ``(1 + tanh(x/2))/2``: it cannot overflow, so needs no clip."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def segment_owners(lens: np.ndarray) -> np.ndarray:
    """For segments of these lengths laid end to end (one per user of a batch), each element's segment index."""
    return np.repeat(np.arange(len(lens), dtype=np.int64), lens)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length (zeros stay zeros)."""
    n = math.sqrt(float(v @ v))  # what np.linalg.norm computes for a 1-D vector, without its overhead
    return v / n if n > 0.0 else v
