"""The tolerance helpers the cross-program tests use (tests/helpers.py) see what they must."""

import numpy as np
import pytest

from helpers import EPS32, assert_bitwise, assert_close, close_rows, ulps_apart


def test_ulps_are_float32_epsilons_of_the_scale():
    x = np.linspace(-1.0, 1.0, 9, dtype=np.float32)
    assert ulps_apart(x, x) == 0.0
    y = x.copy()
    y[3] = np.nextafter(y[3], np.float32(2.0))
    assert 0 < ulps_apart(x, y) <= 1.0
    y[3] = x[3] + 6 * EPS32  # 6 ulps of the leaf's scale (1.0)
    assert ulps_apart(x, y) == pytest.approx(6.0, rel=0.2)
    assert ulps_apart({"a": 1.0, "n": 3}, {"a": 1.0, "n": 4}) == float("inf")  # counts are exact
    assert ulps_apart(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == float("inf")


def test_assert_close_fails_past_its_ulps_and_on_real_bugs():
    w = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert_close(w, w * np.float32(1 + 2 * EPS32), 4)
    with pytest.raises(AssertionError, match="ulps apart"):
        assert_close(w, w * np.float32(1 + 1e-3), 8)  # an LR off by 0.1%: ~8000 ulps
    with pytest.raises(AssertionError):
        assert_close({"step": 3, "loss": 1.0}, {"step": 4, "loss": 1.0}, 8)  # a skipped step
    rows = [{"step": s, "loss": 1.0 / (s + 1), "wall_time": s} for s in range(4)]
    close_rows(rows, [dict(r, wall_time=0) for r in rows], 1)
    with pytest.raises(AssertionError):
        close_rows(rows[1:], rows[:-1], 8)  # shifted by a step


def test_assert_bitwise_is_bitwise():
    x = np.float32([1.0, 2.0])
    assert_bitwise(x, x.copy())
    with pytest.raises(AssertionError):
        assert_bitwise(x, np.nextafter(x, np.float32(3.0)))
    with pytest.raises(AssertionError, match="dtype"):
        assert_bitwise(x, x.astype(np.float64))
