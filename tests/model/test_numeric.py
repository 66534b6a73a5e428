from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.features import taste, tastes
from streamrec.model.numeric import DecayClock, decay, halvings, segment_owners, sigmoid, unit, unit_rows
from streamrec.model.profiles import UserProfile


def test_decay_clock_rescale_keeps_ratios() -> None:
    clock = DecayClock(1.0)
    assert clock.growth(0.0) == 1.0
    assert clock.needs_rescale(61.0)
    factor = clock.rebase(61.0)
    assert factor == pytest.approx(2.0**-61) and clock.growth(61.0) == 1.0


def test_decay_halves_per_half_life_and_never_grows_backwards() -> None:
    assert decay(10.0, 10.0) == 0.5 and decay(30.0, 10.0) == 0.125
    assert decay(-5.0, 10.0) == 1.0 and decay(0.0, 10.0) == 1.0
    assert isinstance(decay(3.0, 10.0), float)
    # arrays: the freshness of items published at these times, seen at 10 (one from the future counts as new)
    assert decay(10.0 - np.array([10.0, 0.0, 20.0, -10.0]), 10.0).tolist() == [1.0, 0.5, 1.0, 0.25]


def test_growth_is_the_exact_inverse_of_decay() -> None:
    """The clock's growth and the decays share one exponential: 2^x is 0.5^-x to the bit, floats and arrays."""
    x = np.random.default_rng(3).uniform(-240.0, 240.0, 20_000)
    assert all(halvings(-v) == 2.0**v for v in x.tolist())
    assert (halvings(-x) == np.power(2.0, x)).all()
    clock = DecayClock(7.0)
    clock.log2_growth(0.0)
    assert [clock.growth(t) for t in (7.0, 21.0, -14.0)] == [2.0, 8.0, 0.25]


def test_unit_and_segment_owners() -> None:
    v = np.array([3.0, 0.0, 4.0], np.float32)
    assert unit(v).tolist() == pytest.approx([0.6, 0.0, 0.8]) and unit(v).dtype == np.float32
    assert unit(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert segment_owners(np.array([2, 0, 3])).tolist() == [0, 0, 2, 2, 2]


def test_sigmoid_is_the_logistic_function_and_cannot_overflow() -> None:
    x = np.linspace(-20.0, 20.0, 81)
    np.testing.assert_allclose(sigmoid(x), 1.0 / (1.0 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    with np.errstate(all="raise"):  # no overflow warning, where 1/(1 + e^-x) needed a clip
        extreme = sigmoid(np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32))
    assert extreme.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0] and extreme.dtype == np.float32


def test_unit_rows_is_unit_of_each_row_to_the_bit() -> None:
    """The batch normalises in a few array calls and must give each row exactly what :func:`unit` gives it,
    so that rankings do not move (a norm summed in another order differs in the last bits)."""
    rng = np.random.default_rng(5)
    m = (rng.standard_normal((2_000, 384)) * rng.uniform(1e-4, 1e4, (2_000, 1))).astype(np.float32)
    m[7] = 0.0
    rows = unit_rows(m)
    assert rows.dtype == np.float32 and rows.shape == m.shape
    assert all(np.array_equal(rows[i], unit(m[i])) for i in range(len(m)))
    assert not rows[7].any() and unit_rows(np.zeros((0, 4), np.float32)).shape == (0, 4)
    profiles = [UserProfile("u", m[2 * i], m[2 * i + 1]) for i in range(50)] + [UserProfile.new("v", 384)]
    assert all(np.array_equal(t, taste(p)) for t, p in zip(tastes(profiles, 384), profiles, strict=True))
