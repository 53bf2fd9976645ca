"""The compiled statistics (numba) equal the numpy reference, ``TensorStatistics.update_numpy``.

Same semantics, numerically equivalent: min, max, the moving averages, the count, the
histogram's range and every bin count exactly; the float64 sums (mean, m2, Σ|x - mean|, Σx
per channel) up to the order of addition.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfquant.calibration import AbsHistogram, AbsHistograms, TensorStatistics, fused
from tfquant.errors import TfquantError

# numba is pinned in requirements.txt: a missing numba fails here (it would silently slow the
# statistics pass 2-3x); only the documented switch TFQUANT_NUMBA=0 turns these tests off.
pytestmark = pytest.mark.skipif(os.environ.get("TFQUANT_NUMBA") == "0",
                                reason="TFQUANT_NUMBA=0 turns the compiled statistics off")


def test_compiled_statistics_are_available() -> None:
    assert fused.AVAILABLE, "numba is not installed: run ./run_all.sh (requirements.txt pins numba 0.68.1)"


def _both(batches: list[np.ndarray], **kw) -> tuple[TensorStatistics, TensorStatistics]:
    compiled, reference = TensorStatistics.empty("t", **kw), TensorStatistics.empty("t", **kw)
    for b in batches:
        compiled.update(b)
        reference.update_numpy(b)
    return compiled, reference


def _assert_equivalent(compiled: TensorStatistics, reference: TensorStatistics) -> None:
    for field in ("min", "max", "ema_min", "ema_max", "count"):
        assert getattr(compiled, field) == getattr(reference, field), field
    assert compiled.histogram.upper == reference.histogram.upper
    np.testing.assert_array_equal(compiled.histogram.counts, reference.histogram.counts)
    scale = max(abs(reference.min), abs(reference.max), 1e-30)
    np.testing.assert_allclose(compiled.mean, reference.mean, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(compiled.m2, reference.m2, rtol=1e-9, atol=1e-12 * scale**2)
    np.testing.assert_allclose(compiled.sum_abs_dev, reference.sum_abs_dev, rtol=1e-9, atol=1e-12 * scale)
    if reference.channel_sum is None:
        assert compiled.channel_sum is None
    else:
        np.testing.assert_allclose(compiled.channel_sum, reference.channel_sum, rtol=1e-9,
                                   atol=1e-9 * scale * reference.count)


def test_mixed_signs_per_channel_and_a_growing_range():
    rng = np.random.default_rng(0)
    batches = [rng.laplace(0.3, 1.5 * 4**k, size=(20, 5, 5, 7)).astype(np.float32) for k in range(4)]
    compiled, reference = _both(batches)
    _assert_equivalent(compiled, reference)
    assert compiled.histogram.upper > float(np.abs(batches[0]).max())  # the range doubled


def test_relu_outputs_all_zero_batches_and_values_on_bin_edges():
    rng = np.random.default_rng(1)
    relu = np.maximum(rng.standard_normal((30, 4, 16)), 0).astype(np.float32)
    edges = (np.arange(2049) * (6.0 / 2048)).astype(np.float32)  # exact edges of [0, 6]
    batches = [np.zeros((8, 3), np.float32), np.array([6.0], np.float32), edges, relu, -edges, relu * 50]
    compiled, reference = _both(batches)
    _assert_equivalent(compiled, reference)
    assert compiled.histogram.counts[0] >= 24 + np.count_nonzero(relu == 0)


@pytest.mark.parametrize("shape", [(), (1,), (1000, 1), (3, 1, 2), (17, 3)])
def test_small_and_degenerate_shapes(shape):
    rng = np.random.default_rng(2)
    batches = [rng.normal(-2.0, 3.0, size=shape).astype(np.float32) for _ in range(3)]
    _assert_equivalent(*_both(batches, num_bins=64))


def test_non_contiguous_and_float64_input_is_read_as_float32():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(12, 9, 6))
    batches = [a[:, ::2, :], a.transpose(2, 0, 1), a.astype(np.float32)[::3]]
    _assert_equivalent(*_both(batches))


def test_m2_is_the_float64_sum_of_squared_float32_deviations():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(400_000) * 3 + 1000).astype(np.float32)  # a float32 sum would round
    compiled, reference = _both([x])
    d = (x - np.float32(x.astype(np.float64).mean())).astype(np.float64)
    exact = float(np.sum(d * d))
    assert compiled.m2 == pytest.approx(exact, rel=1e-12)
    assert reference.m2 == pytest.approx(exact, rel=1e-12)


def test_batches_longer_than_one_kernel_call_are_split(monkeypatch):
    rng = np.random.default_rng(5)
    batches = [rng.normal(size=(37, 11)).astype(np.float32) * s for s in (1.0, 9.0)]
    whole = _both(batches)[0]
    monkeypatch.setattr(fused, "MAX_VALUES", 50)
    split, reference = _both(batches)
    _assert_equivalent(split, reference)
    np.testing.assert_array_equal(split.histogram.counts, whole.histogram.counts)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    stats = TensorStatistics.empty("layer_3")
    x = np.ones((4, 5), np.float32)
    x[2, 1] = bad
    with pytest.raises(TfquantError, match="layer_3.*NaN/Inf"):
        stats.update(x)


def test_without_numba_the_numpy_reference_runs(monkeypatch):
    x = np.linspace(-3, 5, 101, dtype=np.float32)
    compiled = TensorStatistics.empty("t")
    compiled.update(x)
    monkeypatch.setattr(fused, "AVAILABLE", False)
    fallback, reference = _both([x])
    assert fallback.m2 == reference.m2  # the same numpy code, so bit for bit
    _assert_equivalent(compiled, reference)


def test_abs_histogram_bins_float32_batches_as_numpy_does():
    rng = np.random.default_rng(6)
    batches = [np.abs(rng.laplace(0, 2.0**k, size=(40, 9))).astype(np.float32) for k in (0, 3, 1)]
    batches.insert(1, (np.arange(257) * (float(batches[0].max()) / 256)).astype(np.float32))  # edges
    compiled, reference = AbsHistogram.empty(256), AbsHistogram.empty(256)
    for b in batches:
        compiled.update(b)
        reference.update_numpy(b)
    assert compiled.upper == reference.upper
    np.testing.assert_array_equal(compiled.counts, reference.counts)
    per_channel = AbsHistograms(per_channel=True, num_bins=64)
    per_channel.update(rng.normal(size=(30, 4)).astype(np.float32))
    assert [h.total for h in per_channel.histograms] == [30] * 4


_finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=_finite),
                min_size=1, max_size=4))
def test_any_finite_batches_give_equivalent_statistics(batches):
    compiled, reference = _both(batches, num_bins=128)
    _assert_equivalent(compiled, reference)
    assert compiled.histogram.total == sum(b.size for b in batches)
    assert math.isfinite(compiled.m2)


@pytest.mark.parametrize("channels", [1, 3, 7, 511, 512, 513, 700, 1300])
def test_channel_sums_and_extremes_for_any_row_length(channels):
    # the moments kernel keeps ~512-value periods (a multiple of the channel count) and folds them
    rng = np.random.default_rng(channels)
    for rows in (1, 2, 5, 97):
        x = rng.normal(0.5, 2.0, size=(rows, channels)).astype(np.float32)
        x[rng.integers(rows), rng.integers(channels)] = 40.0  # the extremes somewhere in the middle or tail
        x[rng.integers(rows), rng.integers(channels)] = -30.0
        _assert_equivalent(*_both([x, x[::-1].copy()]))


def test_runs_of_zeros_and_an_all_zero_batch_after_the_range_is_set():
    rng = np.random.default_rng(7)
    relu6 = np.clip(rng.normal(0, 3, size=(50, 8, 8, 16)), 0, 6).astype(np.float32)  # ~50% zeros, 6.0s
    relu6[:10] = 0.0  # long runs of zeros, counted in the spread slots of bin 0
    batches = [relu6, np.zeros((3, 5, 16), np.float32), relu6 * 0.5, np.full((4, 16), 6.0, np.float32)]
    compiled, reference = _both(batches)
    _assert_equivalent(compiled, reference)
    assert compiled.histogram.counts[0] >= np.count_nonzero(relu6 == 0) + 240
    one_bin = _both(batches, num_bins=1)
    _assert_equivalent(*one_bin)
    assert one_bin[0].histogram.counts[0] == sum(b.size for b in batches)


def test_values_on_and_next_to_every_edge_get_the_division_s_bin():
    # bins are min(⌊|x| / w⌋, n - 1) with a float64 division, on edges and one float32 step either side
    for upper in (6.0, 0.7, 3.3e-3, 1234.5):
        edges = (np.arange(1, 257, dtype=np.float64) * (np.float32(upper) / 256)).astype(np.float32)
        x = np.concatenate([np.float32(upper).reshape(1), edges, np.nextafter(edges, np.float32(0)),
                            np.nextafter(edges, np.float32(np.inf)), -edges])
        compiled, reference = _both([np.float32(upper).reshape(1), x], num_bins=256)
        _assert_equivalent(compiled, reference)
        assert compiled.histogram.upper == float(np.float32(upper)) or compiled.histogram.upper >= float(x.max())


@pytest.mark.parametrize("where", [0, 1, 5000, -1])
def test_non_finite_values_anywhere_are_refused(where):
    stats = TensorStatistics.empty("t")
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((2000, 3), np.float32).reshape(-1)
        x[where] = bad
        with pytest.raises(TfquantError, match="NaN/Inf"):
            stats.update(x.reshape(2000, 3))
    assert stats.count == 0


# --- the float32 bin index (fused.blocks16) is the float64 division's, value by value ---

def _division_bins(values: np.ndarray, width: float, bins: int) -> np.ndarray:
    """The numpy path's bin of each value: min(⌊|x| / w⌋, n - 1), a float64 division."""
    return np.minimum(np.floor(np.abs(values).astype(np.float64) / width), bins - 1).astype(np.int64)


def _float32_bins(values: np.ndarray, width32: np.float32, bins: int) -> np.ndarray:
    """The pipelined loop's index of each value, read from its ring (slot n = the last bin, the
    8 slots after it = bin 0), in groups of as many blocks of 16 as the ring holds."""
    fused.kernels()
    recip32 = np.float32(1.0 / np.float64(width32))
    group = fused._RING_BLOCKS * 16
    result = []
    for start in range(0, values.size, group):
        part = values[start : start + group]
        padded = np.zeros(-(-part.size // 16) * 16, np.float32)
        padded[: part.size] = part
        ring = np.full(group, bins + 9, np.uint32)
        hist = np.zeros(bins + 10, np.int32)
        fused._pipelined_compiled(padded, 0, padded.size, np.float32(0), width32, recip32, np.uint32(bins + 1),
                                  ring, hist)
        result.append(ring[: part.size].astype(np.int64))
    j = np.concatenate(result) if result else np.zeros(0, np.int64)
    j[(j > bins) & (j <= bins + 8)] = 0  # the spread slots of bin 0
    return np.minimum(j, bins - 1)


def _edges_and_neighbours(width32: np.float32, bins: int) -> np.ndarray:
    """k·w rounded to float32 for k = 0..n, with both float32 neighbours, all within [0, n·w], ±."""
    upper = np.float32(np.float64(width32) * bins)
    edges = (np.arange(bins + 1, dtype=np.float64) * np.float64(width32)).astype(np.float32)
    v = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf))])
    v = v[(v >= 0) & (v.astype(np.float64) <= np.float64(width32) * bins)]
    v = np.concatenate([v, [upper, np.float32(0)]]).astype(np.float32)
    return np.concatenate([v, -v])


@pytest.mark.parametrize("width", [6.0 / 2048, 1.0, 0.1, 3.3e-7, 2.0**-100, 1.7e30, 12345.678])
@pytest.mark.parametrize("bins", [2048, 100, 7])
def test_float32_bins_equal_the_float64_division_on_every_edge(width, bins):
    width32 = np.float32(width)
    v = _edges_and_neighbours(width32, bins)
    np.testing.assert_array_equal(_float32_bins(v, width32, bins), _division_bins(v, float(width32), bins))


@settings(max_examples=200, deadline=None, database=None)
@given(st.floats(2.0**-100, 2.0**100, width=32), st.integers(1, 4096),
       st.lists(st.floats(0, 1, width=32), min_size=1, max_size=50), st.lists(st.integers(0, 4096), max_size=20))
def test_float32_bins_equal_the_float64_division(width, bins, fractions, multiples):
    width32 = np.float32(width)
    upper = np.float64(width32) * bins
    x = [np.float32(f * upper) for f in fractions]
    for k in multiples:  # k·w rounded and its neighbours, where the rounding of |x|·r matters most
        e = np.float32(min(k, bins) * np.float64(width32))
        x += [e, np.nextafter(e, np.float32(0)), np.nextafter(e, np.float32(np.inf))]
    v = np.array([a for a in x if 0 <= np.float64(a) <= upper], dtype=np.float32)
    np.testing.assert_array_equal(_float32_bins(v, width32, bins), _division_bins(v, float(width32), bins))


@pytest.mark.parametrize("width", [6.0 / 2048, 0.1, 2.0**-120, 2.0**-140])
def test_the_kernel_bins_as_numpy_with_float32_and_float64_widths(width):
    """0.1 (not a float32) and the tiny widths take the float64 division; the others the float32 index."""
    bins = 2048
    fused_dev = fused.kernels()[1]
    v = _edges_and_neighbours(np.float32(width), bins)
    if width == 0.1:  # not a float32 value: any float32 x in [0, n·w]
        v = np.concatenate([v, (np.arange(bins + 1) * width).astype(np.float32)])
        v = v[np.abs(v.astype(np.float64)) <= bins * width]
    else:
        width = float(np.float32(width))
    counts = np.zeros(bins, np.int64)
    fused_dev(v, np.float32(0.0), width, counts)
    np.testing.assert_array_equal(counts, np.bincount(_division_bins(v, width, bins), minlength=bins))


def test_a_histogram_whose_width_is_not_a_float32_value():
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(40, 30)).astype(np.float32) * s for s in (1.0, 3.0, 0.5)]
    compiled, reference = _both(batches, num_bins=100)  # upper / 100 is not a float32 value
    assert float(np.float32(compiled.histogram.width)) != compiled.histogram.width
    _assert_equivalent(compiled, reference)


@pytest.mark.parametrize("width", [0.5, 0.1])
def test_values_beyond_the_range_are_counted_in_the_last_bin(width):
    """The kernel clamps (as before: the callers always cover |x|), whichever index path it takes."""
    counts = np.zeros(16, np.int64)
    v = np.array([0.0, 0.25, 7.9, 8.0, 100.0, -1e30, 3e38], np.float32)
    fused.kernels()[1](v, np.float32(0.0), width, counts)
    expected = np.bincount(np.minimum(np.floor(np.abs(v.astype(np.float64)) / width), 15).astype(np.int64),
                           minlength=16)
    np.testing.assert_array_equal(counts, expected)
    fused.kernels()[1](np.full(40, np.nan, np.float32), np.float32(0.0), width, counts)  # callers refuse NaN
    assert counts.sum() == v.size + 40  # counted somewhere, nothing written out of bounds


_PIPELINE_SIZES = sorted({0, 1, 15, 16, 17, 63, 64, 65, 16 * fused._LAG - 1, 16 * fused._LAG, 16 * fused._LAG + 1,
                          16 * fused._RING_BLOCKS + 5, 1000, fused._SUPER - 1, fused._SUPER, fused._SUPER + 17})


@pytest.mark.parametrize("size", _PIPELINE_SIZES)
@pytest.mark.parametrize("width", [8.0 / 2048, 0.1])  # the pipelined loop (float32 width) and the division
def test_the_kernel_counts_and_sums_every_value_whatever_the_size(size, width):
    """Blocks of 16 in the pipelined loop (their last _LAG blocks counted after it), the rest in chunks."""
    rng = np.random.default_rng(size)
    v = np.maximum(rng.normal(0.5, 2.0, size), -7.9).astype(np.float32)
    v[rng.random(size) < 0.3] = 0.0  # runs of bin 0 over the spread slots
    v[: min(size, 3)] = np.float32(8.0)  # |x| = upper: slot n
    mean = np.float32(v.astype(np.float64).mean()) if size else np.float32(0)
    counts = np.zeros(2048, np.int64)
    sq, ab = fused.kernels()[1](v, mean, width, counts)
    np.testing.assert_array_equal(counts, np.bincount(_division_bins(v, width, 2048), minlength=2048))
    d = np.abs((v - mean).astype(np.float64))
    assert sq == pytest.approx(float(np.sum(d * d)), rel=1e-12, abs=1e-300)
    assert ab == pytest.approx(float(np.sum(d)), rel=1e-12, abs=1e-300)


def test_the_pipelined_loop_reads_a_non_contiguous_batch_as_contiguous():
    v = np.linspace(-3.0, 5.0, 4001, dtype=np.float32)[::3]
    counts = np.zeros(64, np.int64)
    fused.kernels()
    hist = np.zeros(64 + 10, np.int32)
    ring = np.full(fused._RING_BLOCKS * 16, 64 + 9, np.uint32)
    n16 = v.size - v.size % 16
    fused._pipelined_compiled(v, 0, n16, np.float32(0), np.float32(0.125), np.float32(8.0), np.uint32(65), ring, hist)
    blocks = n16 // 16
    for b in range(max(0, blocks - fused._LAG), blocks):
        np.add.at(hist, ring[(b % fused._RING_BLOCKS) * 16 : (b % fused._RING_BLOCKS) * 16 + 16], 1)
    counts += hist[:64]
    counts[63] += hist[64]
    counts[0] += hist[65:73].sum()
    np.testing.assert_array_equal(counts, np.bincount(_division_bins(v[:n16], 0.125, 64), minlength=64))
