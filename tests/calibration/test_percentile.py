"""Percentile amax: pytorch-quantization's CDF search, checked against np.percentile."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.calibration.base import QuantTarget, Range
from tfquant.calibration.histogram import AbsHistogram
from tfquant.calibration.percentile import BinEdge, PercentileCalibrator, percentile_amax
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError


def _hist(x: np.ndarray) -> AbsHistogram:
    h = AbsHistogram.empty()
    h.update(np.abs(x).astype(np.float32))
    return h


@pytest.mark.parametrize(
    "name, percentile",
    [("uniform", 50.0), ("uniform", 99.0), ("exponential", 99.9), ("exponential", 99.99), ("laplace", 99.0)],
)
def test_within_one_bin_of_np_percentile(name: str, percentile: float) -> None:
    rng = np.random.default_rng(0)
    x = {
        "uniform": lambda: rng.uniform(-1, 1, 200_000),
        "exponential": lambda: rng.exponential(size=200_000),
        "laplace": lambda: rng.laplace(size=200_000),
    }[name]().astype(np.float32)
    h = _hist(x)
    amax = percentile_amax(h.counts, h.edges, percentile)
    expected = np.percentile(np.abs(x), percentile)
    # amax is the lower edge of the bin where the CDF crosses p (one bin higher when the float
    # CDF lands a hair below p exactly at a bin's end).
    assert abs(amax - expected) <= h.width


def test_is_the_lower_edge_of_the_crossing_bin() -> None:
    counts, edges = np.array([1, 1, 1, 1]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert percentile_amax(counts, edges, 50.0) == 1.0  # cdf [.25, .5, .75, 1]
    assert percentile_amax(counts, edges, 50.1) == 2.0
    assert percentile_amax(counts, edges, 100.0) == 3.0


def test_upper_edge_is_the_top_of_the_crossing_bin() -> None:
    counts, edges = np.array([1, 1, 1, 1]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    up = BinEdge.UPPER
    assert percentile_amax(counts, edges, 25.0, edge=up) == 1.0  # cdf [.25, .5, .75, 1]
    assert percentile_amax(counts, edges, 50.0, edge=up) == 2.0
    assert percentile_amax(counts, edges, 50.1, edge=up) == 3.0
    assert percentile_amax(counts, edges, 100.0, edge=up) == 4.0


@pytest.mark.parametrize("edge", list(BinEdge))
def test_closed_form_on_uneven_counts(edge: BinEdge) -> None:
    # counts [2, 0, 6, 2] over edges [0, .5, 1, 3, 4]: cdf [.2, .2, .8, 1].
    counts, edges = np.array([2, 0, 6, 2]), np.array([0.0, 0.5, 1.0, 3.0, 4.0])
    expected = {  # p -> (lower, upper) of the crossing bin
        20.0: (0.0, 0.5), 20.5: (1.0, 3.0), 80.0: (1.0, 3.0), 90.0: (3.0, 4.0),
    }
    for p, (lower, upper) in expected.items():
        assert percentile_amax(counts, edges, p, edge=edge) == (upper if edge is BinEdge.UPPER else lower)


def test_lower_and_upper_bracket_the_empirical_percentile() -> None:
    x = np.random.default_rng(3).exponential(size=50_001).astype(np.float32)
    h = _hist(x)
    for p in (90.0, 99.0, 99.9):
        lo = percentile_amax(h.counts, h.edges, p)
        hi = percentile_amax(h.counts, h.edges, p, edge=BinEdge.UPPER)
        assert hi - lo == pytest.approx(h.width)
        # 50,001 values: p% of them is never a whole count, so the CDF never lands on p.
        assert np.mean(np.abs(x) <= hi) > p / 100 > np.mean(np.abs(x) < lo)


def test_only_zeros_gives_zero() -> None:
    h = AbsHistogram.empty(16)
    h.update(np.zeros(10, dtype=np.float32))
    assert percentile_amax(h.counts, h.edges, 99.99) == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, 100.5, float("nan"), "99"])
def test_percentile_outside_0_100_is_rejected(bad: object) -> None:
    counts, edges = np.array([1, 1]), np.array([0.0, 1.0, 2.0])
    with pytest.raises(TfquantError, match=r"percentile must be .*\(0, 100\]"):
        percentile_amax(counts, edges, bad)  # type: ignore[arg-type]
    with pytest.raises(TfquantError, match=r"\(0, 100\]"):
        PercentileCalibrator(percentile=bad)  # type: ignore[arg-type]


def test_message_names_the_bad_value() -> None:
    with pytest.raises(TfquantError, match="got 120"):
        PercentileCalibrator(percentile=120)


def test_calibrator_range_and_description() -> None:
    cal = PercentileCalibrator()
    assert cal.name == "percentile" and cal.describe() == "percentile 99.99"
    assert PercentileCalibrator(percentile=99.9999).describe() == "percentile 99.9999"
    with pytest.raises(TypeError):
        PercentileCalibrator(99.9)  # type: ignore[misc]  # keyword-only
    rng = np.random.default_rng(1)
    x = rng.laplace(size=100_000).astype(np.float32)
    x[0] = 100.0
    stats = TensorStatistics.empty("t")
    stats.update(x)
    r = PercentileCalibrator(percentile=99.9).compute_range(stats, QuantTarget(bits=8))
    amax = percentile_amax(stats.histogram.counts, stats.histogram.edges, 99.9)
    assert r == Range(max(float(x.min()), -amax), min(float(x.max()), amax))
    assert 5.0 < amax < 10.0  # Laplace(1): |x| percentile 99.9 is ln(1000) = 6.9
