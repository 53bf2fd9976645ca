"""Entropy (KL) amax: the vectorised search returns exactly the reference loop's amax."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from tests.calibration.test_histogram import synthetic_histograms
from tfquant.calibration.base import QuantTarget, Range
from tfquant.calibration.entropy import EntropyCalibrator, entropy_amax, kl_divergences
from tfquant.calibration.histogram import AbsHistogram
from tfquant.calibration.reference import entropy_amax_reference
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError

ROOT = Path(__file__).resolve().parents[2]
# The reference loop costs ~0.1 s per 512-bin histogram (~1 s at 2048 bins).
NUM_BINS = 512


@functools.lru_cache(maxsize=None)
def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    return synthetic_histograms(NUM_BINS)


def _configs() -> list[tuple[str, int, bool]]:
    out = []
    for i, (name, (_, _, unsigned)) in enumerate(_cases().items()):
        out.append((name, 8, unsigned))
        if i % 3 == 0:
            out.append((name, 8, not unsigned))
        if i % 3 == 1:
            out.append((name, 4, unsigned))
    return out


@pytest.mark.parametrize("name, bits, unsigned", _configs())
def test_vectorised_equals_reference(name: str, bits: int, unsigned: bool) -> None:
    counts, edges, _ = _cases()[name]
    got = entropy_amax(counts, edges, bits=bits, unsigned=unsigned)
    assert got == entropy_amax_reference(counts, edges, bits=bits, unsigned=unsigned)


def test_vectorised_equals_reference_at_2048_bins() -> None:
    counts, edges, _ = synthetic_histograms(2048)["laplace_outliers"]
    got = entropy_amax(counts, edges, bits=8, unsigned=False)
    assert got == entropy_amax_reference(counts, edges, bits=8, unsigned=False)


def test_kl_values_match_scipy_on_the_reference_distributions() -> None:
    counts, edges, _ = _cases()["gaussian_tail_gap"]
    bins = counts.copy()
    bins[0] = bins[1]
    kl = kl_divergences(counts, edges, bits=8, unsigned=False)
    for i in (128, 200, 333, 510, 511, 512):
        space = np.linspace(0, i, 129)
        level = np.digitize(np.arange(i), space) - 1
        q = np.zeros(i)
        for k in range(128):
            members = (level == k) & (bins[:i] > 0)
            q[members] = bins[:i][members].sum() / max(members.sum(), 1)
        p = bins[:i].astype(np.float64)
        p[-1] += bins[i:].sum()
        np.testing.assert_allclose(kl[i - 128], scipy_entropy(p, q), rtol=1e-9, atol=1e-14)
    assert np.isinf(kl[511 - 128])  # bin 510 empty while bin 511 holds the tail: Q misses mass


def test_bits16_every_bin_is_a_level_so_only_the_clipped_tail_costs() -> None:
    counts, edges, _ = _cases()["laplace"]
    b = counts.astype(np.float64)
    b[0] = b[1]
    n, total = len(b), b.sum()
    cuts = np.arange(128, n + 1)
    tail = np.array([b[i:].sum() for i in cuts])
    last = b[cuts - 1]
    # Q = bins[:i], P the same with the tail added to bin i - 1:
    # KL = log(S/N) + (b_{i-1} + T)/N · log(1 + T/b_{i-1}).
    with np.errstate(divide="ignore"):
        expected = np.log1p(-tail / total) + (last + tail) / total * np.log1p(tail / last)
    expected[(last == 0) & (tail > 0)] = np.inf
    expected[tail == 0] = 0.0
    kl = kl_divergences(counts, edges, bits=16, unsigned=False)
    np.testing.assert_allclose(kl, expected, rtol=1e-9, atol=1e-15)
    # KL = 0 exactly once nothing is clipped, and ties go to the last cut: amax = max|x|.
    assert entropy_amax(counts, edges, bits=16, unsigned=False) == edges[-1]
    assert entropy_amax_reference(counts, edges, bits=16, unsigned=False) == edges[-1]


def test_a_single_far_outlier_is_clipped() -> None:
    rng = np.random.default_rng(4)
    h = AbsHistogram.empty(NUM_BINS)
    h.update(np.abs(np.append(rng.standard_normal(50_000), 12.0)).astype(np.float32))
    amax = entropy_amax(h.counts, h.edges, bits=8, unsigned=False)
    assert h.upper == 12.0
    assert 2.5 < amax < 6.0  # the Gaussian bulk, not the outlier at 12 sigma


def test_no_cut_below_start_bin() -> None:
    # With the outlier at 200 sigma the whole bulk lies below bin 128 of 512: every cut from
    # 128 on leaves the outlier in the tail above an empty bin (KL = inf) but the last one.
    counts, edges, _ = _cases()["gaussian_one_far_outlier"]
    assert edges[-1] == 200.0
    assert entropy_amax(counts, edges, bits=8, unsigned=False) == 200.0


def test_the_callers_histogram_is_not_modified() -> None:
    counts, edges, _ = _cases()["post_relu"]
    before = counts.copy()
    entropy_amax(counts, edges, bits=8, unsigned=True)
    np.testing.assert_array_equal(counts, before)


def test_no_mass_after_b0_equals_b1_gives_the_top_edge() -> None:
    # All values in bin 0: b_0 := b_1 = 0 leaves nothing; every KL is inf, the last cut wins.
    counts = np.zeros(256, dtype=np.int64)
    counts[0] = 10
    edges = np.linspace(0.0, 1.0, 257)
    assert entropy_amax(counts, edges, bits=8, unsigned=False) == 1.0
    assert entropy_amax_reference(counts, edges, bits=8, unsigned=False) == 1.0


@pytest.mark.parametrize("bits", [1, 17, 8.0, True])
def test_bad_bits_are_rejected(bits: object) -> None:
    counts, edges, _ = _cases()["laplace"]
    with pytest.raises(TfquantError, match=r"bits must be an integer in \[2, 16\]"):
        entropy_amax(counts, edges, bits=bits, unsigned=False)  # type: ignore[arg-type]


def test_bad_start_bin_and_too_few_bins_are_rejected() -> None:
    counts, edges, _ = _cases()["laplace"]
    with pytest.raises(TfquantError, match="start_bin must be an integer >= 1, got 0"):
        entropy_amax(counts, edges, bits=8, unsigned=False, start_bin=0)
    with pytest.raises(TfquantError, match="needs at least 128"):
        entropy_amax(np.ones(100), np.linspace(0, 1, 101), bits=8, unsigned=False)
    with pytest.raises(TfquantError, match="needs at least 128"):
        kl_divergences(np.ones(100), np.linspace(0, 1, 101), bits=8, unsigned=False)


@pytest.mark.parametrize("relu", [False, True])
def test_calibrator_uses_the_unsigned_grid_for_non_negative_tensors(relu: bool) -> None:
    rng = np.random.default_rng(5)
    x = rng.laplace(size=50_000).astype(np.float32)
    x[0] = 80.0
    if relu:
        x = np.maximum(x, 0.0)
    stats = TensorStatistics.empty("t")
    stats.update(x)
    h = stats.histogram
    amax = entropy_amax(h.counts, h.edges, bits=8, unsigned=relu)
    cal = EntropyCalibrator()
    assert cal.name == "entropy" and cal.describe() == "entropy"
    r = cal.compute_range(stats, QuantTarget(bits=8))
    assert r == Range(max(float(x.min()), -amax), min(float(x.max()), amax))
    assert r.hi < 80.0
    assert (r.lo == 0.0) == relu


def test_benchmark_script_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "experiments/bench_calibration_search.py", "--repeats", "1", "--samples",
         "20000", "--num_bins", "384"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("(identical)") == 4
    assert "speed-up" in proc.stdout
