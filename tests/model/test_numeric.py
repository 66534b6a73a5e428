from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.numeric import DecayClock, freshness


def test_decay_clock_rescale_keeps_ratios() -> None:
    clock = DecayClock(1.0)
    assert clock.growth(0.0) == 1.0
    assert clock.needs_rescale(61.0)
    factor = clock.rebase(61.0)
    assert factor == pytest.approx(2.0**-61) and clock.growth(61.0) == 1.0


def test_freshness_halves() -> None:
    assert freshness(np.array([10.0, 0.0, 20.0]), 10.0, 10.0) == pytest.approx([1.0, 0.5, 1.0])
