"""ACIQ: analytical clipping for integer quantization (Banner, Nahshan, Soudry 2019,
"Post-training 4-bit quantization of convolutional networks for rapid-deployment",
arXiv 1810.05723, Sec. 3-4).

Clipping a tensor to [-α, α] and quantizing it uniformly with 2^M levels costs, in expected
squared error, the clipping error plus the rounding noise α²/(3·4^M):

* Laplace(0, b):   E(α) = 2b²·exp(-α/b) + α²/(3·4^M)
* Gaussian(0, σ):  E(α) = (α² + σ²)(1 - erf(α/(σ√2))) - √(2/π)·α·σ·exp(-α²/(2σ²))
  + α²/(3·4^M)

Both scale with b (σ), so α* = r_M·b (r_M·σ) with a ratio r_M that depends on M alone;
:func:`optimal_clip_ratio` minimises E numerically (scipy) and reproduces the paper's
table (Laplace M = 1..8: 1.86, 2.83, 3.89, 5.03, 6.20, 7.41, 8.64, 9.89; Gaussian: 1.24,
1.71, 2.15, 2.55, 2.93, 3.28, 3.61, 3.92; tested).

The tensor's parameters come from the calibration statistics: b = E|x - mean|,
σ = std(x). A two-sided tensor is clipped to [mean - α, mean + α] with α = r_M·b; a
non-negative tensor (fused ReLU) uses only half the grid's span on values that occur, so it
is clipped to [0, α] with α = r_{M+1}·b (the paper: the symmetric value for M + 1 bits).
Either range is then intersected with the observed [min, max] (clipping beyond the data
wastes levels). M is the activation bit width (8 for int8, 16 for int16x8).
"""

from __future__ import annotations

import functools
import math

from scipy import optimize, special

from tfquant.calibration.base import Calibrator, QuantTarget, Range
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError

PRIORS = ("laplace", "gaussian")


def expected_error(alpha: float, *, bits: int, prior: str) -> float:
    """E(α) for a unit-scale prior (b = 1 or σ = 1); see the module docstring."""
    noise = alpha**2 / (3.0 * 4.0**bits)
    if prior == "laplace":
        return 2.0 * math.exp(-alpha) + noise
    clip = (alpha**2 + 1.0) * special.erfc(alpha / math.sqrt(2.0)) - math.sqrt(
        2.0 / math.pi
    ) * alpha * math.exp(-(alpha**2) / 2.0)
    return clip + noise


@functools.lru_cache(maxsize=None)
def optimal_clip_ratio(bits: int, prior: str) -> float:
    """α*/b (Laplace) or α*/σ (Gaussian) that minimises the expected error at ``bits``."""
    if prior not in PRIORS:
        raise TfquantError(f"unknown ACIQ prior {prior!r}; choose one of: {', '.join(PRIORS)}")
    if not isinstance(bits, int) or not 1 <= bits <= 32:
        raise TfquantError(f"ACIQ bits must be an integer in [1, 32], got {bits!r}")
    hi = 64.0 if prior == "laplace" else 16.0
    result = optimize.minimize_scalar(
        lambda a: expected_error(a, bits=bits, prior=prior),
        bounds=(1e-6, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(result.x)


class AciqCalibrator(Calibrator):
    """Analytical clipping with a Laplace or Gaussian prior (see the module docstring)."""

    name = "aciq"

    def __init__(self, *, prior: str = "laplace") -> None:
        prior = str(prior).lower()
        if prior not in PRIORS:
            raise TfquantError(
                f"unknown ACIQ prior {prior!r}; choose one of: {', '.join(PRIORS)}"
            )
        self.prior = prior

    def describe(self) -> str:
        return f"aciq {self.prior}"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        spread = stats.laplace_b if self.prior == "laplace" else stats.std
        lo_obs, hi_obs = float(stats.min), float(stats.max)
        if stats.non_negative:
            alpha = optimal_clip_ratio(target.bits + 1, self.prior) * spread
            return Range(lo_obs, max(lo_obs, min(hi_obs, alpha)))
        alpha = optimal_clip_ratio(target.bits, self.prior) * spread
        mean = stats.mean  # lies in [min, max], so lo <= mean <= hi
        return Range(max(lo_obs, mean - alpha), min(hi_obs, mean + alpha))
