"""ACIQ against the paper's table, the closed-form error, and samples from its priors."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.calibration import QuantTarget, TensorStatistics
from tfquant.calibration.aciq import AciqCalibrator, expected_error, optimal_clip_ratio
from tfquant.errors import TfquantError

# Banner et al. 2019, Sec. 4 (methods.md section 3): optimal α*/b and α*/σ for M = 1..8.
LAPLACE = [1.86, 2.83, 3.89, 5.03, 6.20, 7.41, 8.64, 9.89]
GAUSSIAN = [1.24, 1.71, 2.15, 2.55, 2.93, 3.28, 3.61, 3.92]


@pytest.mark.parametrize("prior,table", [("laplace", LAPLACE), ("gaussian", GAUSSIAN)])
def test_optimal_ratios_reproduce_the_papers_table(prior, table):
    got = [optimal_clip_ratio(m, prior) for m in range(1, 9)]
    np.testing.assert_allclose(got, table, atol=0.015)  # the paper rounds to 2 decimals


@pytest.mark.parametrize("prior", ["laplace", "gaussian"])
def test_the_ratio_minimises_the_expected_error_on_a_grid(prior):
    for bits in (2, 4, 8):
        best = optimal_clip_ratio(bits, prior)
        grid = np.linspace(0.2, 20, 4000)
        errors = [expected_error(a, bits=bits, prior=prior) for a in grid]
        assert expected_error(best, bits=bits, prior=prior) <= min(errors) + 1e-12
        assert abs(best - grid[int(np.argmin(errors))]) < 0.01


def _stats(values: np.ndarray) -> TensorStatistics:
    s = TensorStatistics.empty("t")
    for chunk in np.array_split(values.astype(np.float32), 5):
        s.update(chunk)
    return s


def test_laplace_samples_are_clipped_at_ratio_times_b_around_the_mean():
    rng = np.random.default_rng(0)
    x = rng.laplace(0.5, 0.2, size=200_000)
    r = AciqCalibrator(prior="laplace").compute_range(_stats(x), QuantTarget(bits=4))
    b = np.mean(np.abs(x - x.mean()))
    np.testing.assert_allclose(r.hi - x.mean(), optimal_clip_ratio(4, "laplace") * b, rtol=2e-3)
    np.testing.assert_allclose(x.mean() - r.lo, optimal_clip_ratio(4, "laplace") * b, rtol=2e-3)


def test_gaussian_samples_are_clipped_at_ratio_times_sigma():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 3.0, size=200_000)
    r = AciqCalibrator(prior="gaussian").compute_range(_stats(x), QuantTarget(bits=2))
    np.testing.assert_allclose(r.hi - x.mean(), optimal_clip_ratio(2, "gaussian") * x.std(), rtol=2e-3)


def test_non_negative_tensor_is_one_sided_with_the_next_bit_width():
    rng = np.random.default_rng(2)
    x = np.abs(rng.laplace(0.0, 1.0, size=100_000))
    stats = _stats(x)
    r = AciqCalibrator(prior="laplace").compute_range(stats, QuantTarget(bits=3))
    assert r.lo == pytest.approx(x.min())
    np.testing.assert_allclose(r.hi, optimal_clip_ratio(4, "laplace") * stats.laplace_b, rtol=1e-6)


def test_range_never_exceeds_what_was_observed():
    x = np.random.default_rng(3).uniform(-1, 1, size=10_000)  # light tails: α*·b > max
    r = AciqCalibrator(prior="laplace").compute_range(_stats(x), QuantTarget(bits=8))
    assert (r.lo, r.hi) == (pytest.approx(x.min()), pytest.approx(x.max()))


def test_unknown_prior_is_a_clear_error():
    with pytest.raises(TfquantError, match="unknown ACIQ prior 'cauchy'"):
        AciqCalibrator(prior="cauchy")
    with pytest.raises(TfquantError, match="ACIQ bits"):
        optimal_clip_ratio(0, "laplace")
