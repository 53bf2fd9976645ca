"""Streaming statistics equal the same quantities computed on all the data at once."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.calibration import TensorStatistics


def _batches(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.laplace(0.3, 1.5, size=(50, 7, 3)).astype(np.float32) for _ in range(6)]


def test_extremes_and_moments_match_numpy_on_all_data():
    stats = TensorStatistics.empty("t")
    batches = _batches()
    for b in batches:
        stats.update(b)
    allv = np.concatenate([b.reshape(-1) for b in batches]).astype(np.float64)
    assert stats.count == allv.size
    assert stats.min == pytest.approx(allv.min())
    assert stats.max == pytest.approx(allv.max())
    np.testing.assert_allclose(stats.mean, allv.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.std, allv.std(), rtol=1e-5)
    assert stats.histogram.total == allv.size
    assert not stats.non_negative


def test_laplace_b_is_mean_absolute_deviation_when_batches_share_the_mean():
    stats = TensorStatistics.empty("t")
    rng = np.random.default_rng(1)
    base = rng.laplace(0.0, 2.0, size=4000).astype(np.float32)
    base -= base.mean()
    for _ in range(3):  # three batches with exactly the same mean
        stats.update(rng.permutation(base))
    expected = np.mean(np.abs(base.astype(np.float64) - base.mean()))
    np.testing.assert_allclose(stats.laplace_b, expected, rtol=1e-5)


def test_moving_average_follows_its_recurrence():
    stats = TensorStatistics.empty("t")
    batches = _batches(2)
    c = 0.25
    lo, hi = None, None
    for b in batches:
        stats.update(b, ema_constant=c)
        bl, bh = float(b.min()), float(b.max())
        lo = bl if lo is None else (1 - c) * lo + c * bl
        hi = bh if hi is None else (1 - c) * hi + c * bh
    assert stats.ema_min == pytest.approx(lo)
    assert stats.ema_max == pytest.approx(hi)
    assert stats.min <= stats.ema_min <= stats.ema_max <= stats.max


def test_non_negative_tensor_is_detected_and_histogram_counts_every_value():
    stats = TensorStatistics.empty("relu")
    rng = np.random.default_rng(3)
    for _ in range(4):
        stats.update(np.maximum(rng.normal(size=1000), 0).astype(np.float32))
    assert stats.non_negative
    assert stats.histogram.total == 4000


def test_memory_does_not_grow_with_the_calibration_set():
    stats = TensorStatistics.empty("t")
    rng = np.random.default_rng(4)
    for k in range(20):
        stats.update((rng.normal(size=2000) * (k + 1)).astype(np.float32))
    assert stats.histogram.counts.shape == (2048,)
    assert stats.histogram.total == 40000


def test_a_clip_that_would_saturate_most_values_falls_back_to_the_observed_range():
    from tfquant.calibration import QuantTarget, make_calibrator

    # rsqrt(var + eps)-like: all values far from 0; the KL search collapses onto one bin
    stats = TensorStatistics.empty("rsqrt")
    rng = np.random.default_rng(5)
    for _ in range(5):
        stats.update(rng.uniform(0.53, 1.45, size=5000).astype(np.float32))
    r = make_calibrator("entropy").compute_range(stats, QuantTarget(bits=8))
    assert (r.lo, r.hi) == (stats.min, stats.max)
    assert r.note and "saturate" in r.note
    # an ordinary clip of a zero-centred tensor is kept, without a note
    normal = TensorStatistics.empty("n")
    normal.update(rng.normal(size=20000).astype(np.float32))
    r = make_calibrator("percentile", percentile=99.0).compute_range(normal, QuantTarget(bits=8))
    assert r.note is None and r.hi < normal.max


def test_nan_in_an_activation_is_a_clear_error():
    from tfquant.errors import TfquantError

    stats = TensorStatistics.empty("conv")
    with pytest.raises(TfquantError, match="'conv' has NaN/Inf"):
        stats.update(np.array([1.0, np.nan], np.float32))
