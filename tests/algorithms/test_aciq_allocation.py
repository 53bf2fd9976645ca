"""ACIQ per-channel bit allocation: exact mean, brute-force optimum, monotonicity, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfquant.algorithms.aciq_allocation import (
    allocate_bits,
    allocation_cost,
    relaxed_bits,
)
from tfquant.errors import TfquantError

alphas = st.lists(st.floats(min_value=1e-4, max_value=1e3), min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(alphas, st.integers(min_value=2, max_value=8))
def test_mean_is_met_exactly_and_bits_stay_in_range(alpha: list[float], mean: int) -> None:
    bits = allocate_bits(np.array(alpha), mean)
    assert bits.dtype.kind == "i"
    assert bits.sum() == mean * len(alpha)
    assert bits.min() >= 2 and bits.max() <= 8


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-3, max_value=50.0), min_size=1, max_size=4),
    st.integers(min_value=2, max_value=6),
    st.integers(min_value=2, max_value=4),
    st.integers(min_value=0, max_value=4),
)
def test_matches_brute_force_on_small_cases(alpha: list[float], mean: int, lo: int, span: int) -> None:
    hi = min(8, max(lo, mean) + span)
    lo = min(lo, mean)
    a = np.array(alpha)
    x = relaxed_bits(a, mean)
    best = min(
        allocation_cost(np.array(c), x)
        for c in itertools.product(range(lo, hi + 1), repeat=len(a))
        if sum(c) == mean * len(a)
    )
    got = allocate_bits(a, mean, min_bits=lo, max_bits=hi)
    assert got.sum() == mean * len(a)
    assert allocation_cost(got, x) == pytest.approx(best, rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(alphas, st.integers(min_value=2, max_value=8))
def test_a_wider_channel_never_gets_fewer_bits(alpha: list[float], mean: int) -> None:
    a = np.array(alpha)
    bits = allocate_bits(a, mean)
    order = np.argsort(a, kind="stable")
    assert np.all(np.diff(bits[order]) >= 0) or np.all(
        np.diff(a[order])[np.diff(bits[order]) < 0] == 0
    )


def test_follows_two_to_the_bits_proportional_to_alpha_to_the_two_thirds() -> None:
    # alpha^(2/3) = 1, 2, 4, 8: each channel's relaxed width is one bit above the previous;
    # unclipped, the integers are x_i + c rounded for one common shift c (spread <= 1).
    a = np.array([1.0, 2.0, 4.0, 8.0]) ** 1.5
    x = relaxed_bits(a, 5)
    np.testing.assert_allclose(np.diff(x), [1.0, 1.0, 1.0])
    bits = allocate_bits(a, 5)
    assert bits.sum() == 20
    assert np.all(np.diff(bits) >= 0)
    assert np.ptp(bits - x) <= 1.0 + 1e-9


def test_equal_ranges_get_equal_bits() -> None:
    np.testing.assert_array_equal(allocate_bits(np.full(7, 0.3), 4), np.full(7, 4))


def test_zero_channels_get_the_fewest_bits() -> None:
    bits = allocate_bits(np.array([0.0, 1.0, 1.0]), 4)
    assert bits[0] == 2 and bits.sum() == 12


@pytest.mark.parametrize(
    "alpha, mean, kwargs, match",
    [
        ([1.0], 9, {}, "mean bit width"),
        ([1.0], 1, {}, "mean bit width"),
        ([1.0], 4, {"min_bits": 5}, "outside"),
        ([1.0], 4, {"min_bits": 6, "max_bits": 3}, "min_bits 6 is above"),
        ([], 4, {}, "non-empty"),
        ([-1.0], 4, {}, ">= 0"),
        ([float("nan")], 4, {}, "finite"),
    ],
)
def test_bad_input_raises(alpha, mean, kwargs, match) -> None:
    with pytest.raises(TfquantError, match=match):
        allocate_bits(np.array(alpha, dtype=np.float64), mean, **kwargs)
