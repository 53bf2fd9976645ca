"""AbsHistogram: binning as np.histogram, exact growth by doubling, zeros kept, fixed size."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.calibration.histogram import NUM_BINS, AbsHistogram, histogram_arrays
from tfquant.errors import TfquantError


def synthetic_histograms(
    num_bins: int = 2048, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """{name: (counts, edges, unsigned)}: the shapes calibration meets, built by AbsHistogram.

    Shared by the entropy and MSE tests (vectorised search == reference on each).
    """
    rng = np.random.default_rng(seed)

    def build(x: np.ndarray, batches: int = 1) -> tuple[np.ndarray, np.ndarray]:
        h = AbsHistogram.empty(num_bins)
        for b in np.array_split(np.abs(x).astype(np.float32), batches):
            h.update(b)
        return h.counts, h.edges

    out: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    gauss = rng.standard_normal(50_000)
    laplace = rng.laplace(size=50_000)
    out["gaussian"] = (*build(gauss), False)
    out["laplace"] = (*build(laplace), False)
    out["half_normal"] = (*build(np.abs(rng.standard_normal(50_000))), True)
    out["post_relu"] = (*build(np.maximum(rng.normal(0.5, 1.0, 50_000), 0.0)), True)
    with_outliers = laplace.copy()
    with_outliers[:5] *= 60.0
    out["laplace_outliers"] = (*build(with_outliers), False)
    out["gaussian_one_far_outlier"] = (*build(np.append(gauss, 200.0)), False)
    out["laplace_grown_in_batches"] = (*build(np.sort(np.abs(laplace)), batches=7), False)
    counts, edges = build(gauss)
    holes = counts.copy()
    holes[1::3] = 0  # every third bin empty, including bin 1 (so bin 0 becomes empty too)
    out["gaussian_empty_bins"] = (holes, edges, False)
    tail_gap = counts.copy()
    tail_gap[-2] = 0  # the bin below the top empty: the cut there has KL = inf
    out["gaussian_tail_gap"] = (tail_gap, edges, False)
    out["sparse_grid"] = (*build(rng.choice(np.linspace(0.0, 1.0, 40), 5_000)), False)
    out["sparse_few_values"] = (*build(rng.exponential(size=300)), True)
    out["uniform"] = (*build(rng.uniform(-1, 1, 20_000)), False)
    out["exponential"] = (*build(rng.exponential(size=20_000)), True)
    out["bimodal"] = (*build(np.concatenate([rng.normal(0, 0.1, 20_000), rng.normal(3, 0.3, 5_000)])), False)
    big = (counts * 20_011).astype(np.int64)  # ~1e9 values: large-count rounding
    out["gaussian_1e9_values"] = (big, edges, False)
    return out


def test_counts_equal_np_histogram_on_the_same_edges() -> None:
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal(100_000)).astype(np.float32)
    h = AbsHistogram.empty()
    h.update(x)
    assert h.upper == float(x.max())
    np.testing.assert_array_equal(h.counts, np.histogram(x.astype(np.float64), bins=h.edges)[0])


def test_batches_within_the_range_add_up_to_one_histogram() -> None:
    rng = np.random.default_rng(2)
    x = np.abs(rng.laplace(size=30_000)).astype(np.float32)
    x[0] = x.max() * 2  # the first batch holds the overall max: no growth
    h = AbsHistogram.empty(512)
    for batch in np.array_split(x, 5):
        h.update(batch)
    np.testing.assert_array_equal(h.counts, np.histogram(x.astype(np.float64), bins=h.edges)[0])


def test_growth_by_doubling_is_exact() -> None:
    rng = np.random.default_rng(3)
    # Maxima 1 -> 3 (range doubles twice, to 4) -> 2 (no growth) -> 7.5 (to 8).
    batches = [rng.uniform(0, top, 5000) for top in (1.0, 3.0, 2.0, 7.5)]
    for b, top in zip(batches, (1.0, 3.0, 2.0, 7.5)):
        b[0] = top
    batches = [b.astype(np.float32) for b in batches]
    h = AbsHistogram.empty(256)
    uppers = []
    for b in batches:
        h.update(b)
        uppers.append(h.upper)
    assert uppers == [1.0, 4.0, 4.0, 8.0]
    everything = np.concatenate(batches).astype(np.float64)
    # A value equal to the range's upper end when it was binned (1.0, 4.0's batch has none)
    # is in the bin just below that edge, as in the last, closed bin of np.histogram.
    everything[everything == 1.0] = np.nextafter(1.0, 0.0)
    expected = np.histogram(everything, bins=np.linspace(0.0, 8.0, 257))[0]
    np.testing.assert_array_equal(h.counts, expected)
    assert h.total == sum(len(b) for b in batches)


def test_bin_count_and_memory_stay_fixed() -> None:
    h = AbsHistogram.empty()
    for scale in (1.0, 10.0, 1e3, 1e6):
        h.update(np.full(1000, scale, dtype=np.float32))
        assert h.counts.shape == (NUM_BINS,) and h.counts.dtype == np.int64
    assert h.total == 4000
    assert h.upper >= 1e6


def test_growth_far_beyond_the_bin_count_merges_everything_into_bin_0() -> None:
    h = AbsHistogram.empty(16)
    h.update(np.linspace(0, 1, 100, dtype=np.float32))
    h.update(np.array([2.0**40], dtype=np.float32))
    assert h.upper == 2.0**40
    assert h.counts[0] == 100 and h.counts[-1] == 1 and h.total == 101


def test_zeros_are_never_lost() -> None:
    h = AbsHistogram.empty(64)
    h.update(np.zeros(7, dtype=np.float32))  # before any range exists
    assert h.upper == 0.0 and h.counts[0] == 7 and h.total == 7
    h.update(np.array([0.0, 0.5, 1.0], dtype=np.float32))
    h.update(np.array([0.0, 3.0], dtype=np.float32))  # grows to 4: zeros stay in bin 0
    assert h.upper == 4.0
    assert h.counts[0] == 9  # the nine zeros; bin 0 is [0, 1/16) now
    assert h.total == 12


def test_empty_batch_changes_nothing() -> None:
    h = AbsHistogram.empty(8)
    h.update(np.array([], dtype=np.float32))
    assert h.upper == 0.0 and h.total == 0


def test_edges_width_and_centers() -> None:
    h = AbsHistogram.empty(4)
    h.update(np.array([0.1, 2.0], dtype=np.float32))
    assert h.width == 0.5
    np.testing.assert_array_equal(h.edges, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(h.centers, [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_array_equal(h.counts, [1, 0, 0, 1])


def test_any_float_dtype_and_shape() -> None:
    h = AbsHistogram.empty(8)
    h.update(np.array([[1.0, 2.0], [4.0, 8.0]], dtype=np.float16))
    h.update(np.array([8.0], dtype=np.float64))
    np.testing.assert_array_equal(h.counts, [0, 1, 1, 0, 1, 0, 0, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    h = AbsHistogram.empty(8)
    with pytest.raises(TfquantError, match="non-finite"):
        h.update(np.array([1.0, bad], dtype=np.float32))


def test_negative_values_are_rejected() -> None:
    with pytest.raises(TfquantError, match=r"negative value \(-1.0\).*np.abs"):
        AbsHistogram.empty(8).update(np.array([1.0, -1.0], dtype=np.float32))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_num_bins_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(TfquantError, match="num_bins must be a positive integer"):
        AbsHistogram.empty(bad)  # type: ignore[arg-type]


def test_histogram_arrays_checks_what_a_search_is_given() -> None:
    counts, edges = np.array([1, 2, 3]), np.array([0.0, 1.0, 2.0, 3.0])
    c, e = histogram_arrays(counts, edges, min_bins=3, equal_width=True)
    assert c.dtype == np.int64 and e.dtype == np.float64
    c[0] = 99
    assert counts[0] == 1  # a copy: searches may edit it
    with pytest.raises(TfquantError, match="3 counts needs 4 edges, got 3"):
        histogram_arrays(counts, edges[:3])
    with pytest.raises(TfquantError, match="has 3 bins but this search needs at least 129"):
        histogram_arrays(counts, edges, min_bins=129)
    with pytest.raises(TfquantError, match="not all 0"):
        histogram_arrays(np.zeros(3), edges)
    with pytest.raises(TfquantError, match=">= 0"):
        histogram_arrays(np.array([1, -1, 1]), edges)
    with pytest.raises(TfquantError, match="increase from 0"):
        histogram_arrays(counts, np.array([0.5, 1.0, 2.0, 3.0]))
    with pytest.raises(TfquantError, match="equal-width"):
        histogram_arrays(counts, np.array([0.0, 1.0, 2.5, 3.0]), equal_width=True)
