"""MSE amax: the vectorised search returns exactly the reference loop's amax."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.calibration.test_histogram import synthetic_histograms
from tfquant.calibration.base import QuantTarget, Range
from tfquant.calibration.histogram import AbsHistogram
from tfquant.calibration.mse import MseCalibrator, _mse_closed_form, mse_amax
from tfquant.calibration.reference import mse_amax_reference
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError


@functools.lru_cache(maxsize=None)
def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    return synthetic_histograms(2048)


def _configs() -> list[tuple[str, int, bool]]:
    out = []
    for i, (name, (_, _, unsigned)) in enumerate(_cases().items()):
        out += [(name, 8, unsigned), (name, 8, not unsigned)]
        if i % 2 == 0:
            out.append((name, 4, unsigned))
        if i % 4 == 1:
            out += [(name, 9, False), (name, 12, True), (name, 16, False)]  # 9: widest closed form
    return out


@pytest.mark.parametrize("name, bits, unsigned", _configs())
def test_vectorised_equals_reference(name: str, bits: int, unsigned: bool) -> None:
    counts, edges, _ = _cases()[name]
    got = mse_amax(counts, edges, bits=bits, unsigned=unsigned)
    assert got == mse_amax_reference(counts, edges, bits=bits, unsigned=unsigned)


@pytest.mark.parametrize("qmax", [7, 127, 255])
def test_closed_form_values_equal_direct_fake_quantization(qmax: int) -> None:
    counts, edges, _ = _cases()["laplace_outliers"]
    n = len(counts)
    centers = (edges[1:] + edges[:-1]) / 2
    direct = []
    for i in range(128, n):
        scale = qmax / centers[i]
        quant = np.clip(np.round(centers * scale), 0, qmax) / scale
        direct.append(np.mean(counts * (quant - centers) ** 2))
    direct = np.array(direct)
    got = _mse_closed_form(counts, edges[-1] / n, qmax, 128)
    kept = np.isfinite(got)
    np.testing.assert_allclose(got[kept], direct[kept], rtol=1e-9)
    # Cuts ruled out by their clipping error alone (inf) are worse than the minimum.
    assert kept[np.argmin(direct)] and np.all(direct[~kept] > direct.min())


def test_amax_is_a_bin_centre_at_or_below_the_max() -> None:
    for counts, edges, unsigned in _cases().values():
        amax = mse_amax(counts, edges, bits=8, unsigned=unsigned)
        centers = (edges[1:] + edges[:-1]) / 2
        assert amax in centers[128:]
        assert amax <= edges[-1]


def test_uniform_data_keeps_nearly_the_whole_range() -> None:
    # Clipping a uniform tensor costs far more than 8-bit rounding saves.
    counts, edges, _ = _cases()["uniform"]
    assert mse_amax(counts, edges, bits=8, unsigned=False) > 0.98 * edges[-1]


def test_fewer_bits_clip_more() -> None:
    # 5 values at ~60x the Laplace scale among 50k: at 8 bits their squared clipping error
    # outweighs the rounding noise of a wide range, at 4 bits (step 8x coarser) it does not.
    counts, edges, _ = _cases()["laplace_outliers"]
    amax8 = mse_amax(counts, edges, bits=8, unsigned=False)
    amax4 = mse_amax(counts, edges, bits=4, unsigned=False)
    assert amax4 < 0.25 * edges[-1] < amax8


def test_only_zeros_gives_zero() -> None:
    h = AbsHistogram.empty(256)
    h.update(np.zeros(5, dtype=np.float32))
    assert mse_amax(h.counts, h.edges, bits=8, unsigned=True) == 0.0


def test_unequal_bins_and_bad_arguments_are_rejected() -> None:
    counts, edges, _ = _cases()["laplace"]
    bent = edges.copy()
    bent[5] += 0.3 * (edges[6] - edges[5])
    with pytest.raises(TfquantError, match="equal-width bins"):
        mse_amax(counts, bent, bits=8, unsigned=False)
    with pytest.raises(TfquantError, match=r"bits must be an integer in \[2, 16\], got 0"):
        mse_amax(counts, edges, bits=0, unsigned=False)
    with pytest.raises(TfquantError, match="start_bin must be an integer >= 1"):
        mse_amax(counts, edges, bits=8, unsigned=False, start_bin=-1)
    with pytest.raises(TfquantError, match="needs at least 2049"):
        mse_amax(counts, edges, bits=8, unsigned=False, start_bin=2048)


@pytest.mark.parametrize("relu", [False, True])
def test_calibrator_uses_the_unsigned_grid_for_non_negative_tensors(relu: bool) -> None:
    rng = np.random.default_rng(6)
    x = rng.laplace(size=50_000).astype(np.float32)
    x[0] = -60.0
    if relu:
        x = np.maximum(x, 0.0)
    stats = TensorStatistics.empty("t")
    stats.update(x)
    h = stats.histogram
    amax = mse_amax(h.counts, h.edges, bits=8, unsigned=relu)
    cal = MseCalibrator()
    assert cal.name == "mse"
    r = cal.compute_range(stats, QuantTarget(bits=8))
    assert r == Range(max(float(x.min()), -amax), min(float(x.max()), amax))
    assert (r.lo == 0.0) == relu
