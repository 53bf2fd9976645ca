"""Uniform affine / symmetric quantization maths: the one place scales are computed.

Krishnamoorthi 2018 ("Quantizing deep convolutional networks for efficient inference",
arXiv 1806.08342), Sec. 2.1, with N = 2^b levels:

* affine: the range [x_min, x_max] is first widened to contain 0, then
  Δ = (x_max - x_min) / (N - 1), z = round(-x_min / Δ) + q_min, and
  q = clamp(q_min, q_max, round(x / Δ) + z), x_hat = (q - z) · Δ.
* symmetric: z = 0, Δ = amax / q_max with amax = max(|x_min|, |x_max|); "narrow range"
  (TFLite's int8 weight spec) uses q in [-(N/2 - 1), N/2 - 1].

The integer grid is signed ([-N/2, N/2 - 1]) as in TFLite int8/int16.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfquant.errors import TfquantError


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Scale(s) and zero point(s) of a quantized tensor (per-tensor or along ``axis``)."""

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    narrow_range: bool = False
    axis: int | None = None

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) + (1 if self.narrow_range else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise TfquantError(f"bits must be an integer in [2, 16], got {bits!r}")


def affine_params(x_min: np.ndarray | float, x_max: np.ndarray | float, *, bits: int = 8) -> QuantParams:
    """Affine (asymmetric) parameters for the range [x_min, x_max], widened to contain 0."""
    _check_bits(bits)
    raw_lo = np.asarray(x_min, dtype=np.float64)
    raw_hi = np.asarray(x_max, dtype=np.float64)
    if not (np.all(np.isfinite(raw_lo)) and np.all(np.isfinite(raw_hi))):
        raise TfquantError("range bounds must be finite; check the calibration data for NaN/Inf")
    if np.any(raw_hi < raw_lo):
        raise TfquantError(f"x_max must be >= x_min, got x_min={raw_lo}, x_max={raw_hi}")
    lo, hi = np.minimum(raw_lo, 0.0), np.maximum(raw_hi, 0.0)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = span / (qmax - qmin)
    zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax).astype(np.int64)
    return QuantParams(scale=scale, zero_point=zero_point, bits=bits)


def symmetric_params(
    amax: np.ndarray | float, *, bits: int = 8, narrow_range: bool = True
) -> QuantParams:
    """Symmetric parameters: Δ = amax / (2^(b-1) - 1), z = 0."""
    _check_bits(bits)
    a = np.abs(np.asarray(amax, dtype=np.float64))
    qmax = 2 ** (bits - 1) - 1
    scale = np.where(a > 0, a, 1.0) / qmax
    return QuantParams(
        scale=scale, zero_point=np.zeros_like(scale, dtype=np.int64), bits=bits,
        narrow_range=narrow_range,
    )


def _broadcast(p: QuantParams, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale, zp = np.asarray(p.scale), np.asarray(p.zero_point)
    if p.axis is not None and scale.ndim == 1:
        shape = [1] * x.ndim
        shape[p.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return scale, zp


def quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    """q = clamp(q_min, q_max, round(x / Δ) + z), as int64 (round half to even, as numpy)."""
    x = np.asarray(x, dtype=np.float64)
    scale, zp = _broadcast(p, x)
    return np.clip(np.round(x / scale) + zp, p.qmin, p.qmax).astype(np.int64)


def dequantize(q: np.ndarray, p: QuantParams) -> np.ndarray:
    """x_hat = (q - z) · Δ."""
    q = np.asarray(q, dtype=np.float64)
    scale, zp = _broadcast(p, q)
    return (q - zp) * scale


def fake_quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    """SimQuant(x) = dequantize(quantize(x)) (Krishnamoorthi 2018, eq. 4)."""
    return dequantize(quantize(x, p), p)
