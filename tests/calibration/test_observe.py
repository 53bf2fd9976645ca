"""The statistics pass and its observers: batch-wise summaries equal the whole-set numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant.calibration.histogram import AbsHistogram
from tfquant.calibration.keras_outputs import keras_batches, keras_min_max
from tfquant.calibration.observe import AbsHistograms, MinMax, fan_out, statistics_pass


def _batches(x: np.ndarray, size: int) -> list[list[np.ndarray]]:
    return [[x[i : i + size], -x[i : i + size]] for i in range(0, len(x), size)]


@pytest.mark.parametrize("per_channel", [False, True])
def test_min_max_over_batches_equals_min_max_of_the_whole_set(per_channel: bool) -> None:
    x = np.random.default_rng(0).normal(size=(37, 5, 3)).astype(np.float32)
    a, b = MinMax(per_channel=per_channel), MinMax(per_channel=per_channel)
    assert statistics_pass(_batches(x, 8), [a, b]) == 5
    axis = (0, 1) if per_channel else None
    np.testing.assert_array_equal(a.lo, x.min(axis=axis))
    np.testing.assert_array_equal(a.hi, x.max(axis=axis))
    np.testing.assert_array_equal(b.lo, -x.max(axis=axis))
    assert a.lo.dtype == np.float64 and a.lo.shape == ((3,) if per_channel else ())


def test_abs_histograms_equal_one_histogram_per_column_fed_the_same_batches() -> None:
    x = np.random.default_rng(1).laplace(size=(50, 4)).astype(np.float32)
    observed = AbsHistograms(per_channel=True, num_bins=64)
    whole = AbsHistograms(per_channel=False, num_bins=64)
    statistics_pass(([x[i : i + 16]] * 2 for i in range(0, 50, 16)), [observed, whole])
    for c in range(4):
        h = AbsHistogram.empty(64)
        for i in range(0, 50, 16):
            h.update(np.abs(x[i : i + 16, c]))
        np.testing.assert_array_equal(observed.histograms[c].counts, h.counts)
        assert observed.histograms[c].upper == h.upper
    assert len(whole.histograms) == 1 and whole.histograms[0].total == x.size


def test_fan_out_feeds_every_observer_and_a_count_mismatch_fails() -> None:
    seen: list[float] = []
    m = MinMax()
    statistics_pass([[np.array([1.0, 4.0])]], [fan_out(m, lambda v: seen.append(float(v.sum())))])
    assert (float(m.lo), float(m.hi), seen) == (1.0, 4.0, [5.0])
    with pytest.raises(ValueError):
        statistics_pass([[np.zeros(2), np.zeros(2)]], [MinMax()])


@pytest.mark.parametrize("compiled", [False, True])
def test_keras_min_max_equals_the_extremes_of_the_full_prediction(compiled: bool) -> None:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    out = keras.layers.Dense(3, name="o")(hidden)
    model = keras.Model(inputs, out)
    x = np.random.default_rng(2).normal(size=(70, 6)).astype(np.float32)
    full = keras.Model(inputs, [hidden, out]).predict(x, verbose=0)
    batches = list(keras_batches(model, [hidden, out], x, batch_size=32, compiled=compiled))
    assert [len(b[0]) for b in batches] == [32, 32, 6]
    ranges = keras_min_max(model, [hidden, out], x, batch_size=32, compiled=compiled, per_channel=True)
    for m, values in zip(ranges, full):
        np.testing.assert_allclose(m.lo, values.min(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m.hi, values.max(axis=0), rtol=1e-6, atol=1e-6)
    assert np.all(ranges[0].lo >= 0.0)  # after a ReLU
