"""Per-channel b-bit weight grids and ACIQ-style bias correction that stays on the grid.

Weights are viewed as a matrix W (K, C): C output channels, K weights per channel.

Grid (TFLite's symmetric narrow-range int8 weight grid at b_c bits, as in
:mod:`tfquant.algorithms.weight_grid`): q_max,c = 2^(b_c - 1) - 1, Δ_c = α_c / q_max,c,
q = clamp(-q_max,c, q_max,c, round(W/Δ_c)), W_q = Δ_c·q. α_c = 0 maps to Δ_c = 1 (as
:func:`tfquant.numerics.symmetric_params` does).

Bias correction (Banner, Nahshan, Soudry 2019, arXiv 1810.05723, Sec. 4.3): quantization
shifts the mean and shrinks or widens the spread of each channel's weights; the paper
restores both,

    W_q,c <- (W_q,c - mean(W_q,c)) · ‖W_c - mean(W_c)‖ / ‖W_q,c - mean(W_q,c)‖ + mean(W_c),

which leaves the grid. Here the two parts go where an int8 model can hold them:

* spread (``mean_std``): ξ_c = ‖W_c - mean W_c‖ / ‖W_q,c - mean W_q,c‖ multiplies the
  channel's scale, Δ_c <- ξ_c·Δ_c; the integers stay, so the channel stays on its grid;
* mean (``mean`` and ``mean_std``): the remaining error W_c - W'_c (W' = Δ_c·q after the
  spread step) changes the channel's output by Σ_k (W_k,c - W'_k,c)·x_k, whose expectation
  is folded into the bias, b_c <- b_c + Σ_k (W_k,c - W'_k,c)·E[x_k], with E[x_k] the
  expected input from the calibration statistics. When E[x_k] is the same for every k
  this is exactly the paper's mean shift times the summed input,
  (mean W_c - mean W'_c)·Σ_k E[x_k]; with per-input-channel expectations it also removes
  the part of the shift that correlates with the input, so the output channel's mean over
  the calibration data is restored exactly (zero padding aside; tested on a real layer).
"""

from __future__ import annotations

import numpy as np

from tfquant.errors import TfquantError
from tfquant.qtypes import BiasCorrection


def channel_qmax(bits: np.ndarray) -> np.ndarray:
    """q_max,c = 2^(b_c - 1) - 1 (narrow range)."""
    return np.power(2, np.asarray(bits, np.int64) - 1) - 1


def quantize_channels(
    w: np.ndarray, alpha: np.ndarray, bits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Channel c of ``w`` (K, C) on its own b_c-bit grid clipped to [-α_c, α_c].

    Returns:
      ``(q, scale)``: int8 integers (K, C) with |q_c| <= 2^(b_c-1) - 1, and Δ_c (C,) float64.
    """
    w = np.asarray(w, np.float64)
    qmax = channel_qmax(bits).astype(np.float64)
    a = np.abs(np.asarray(alpha, np.float64))
    scale = np.where(a > 0, a, 1.0) / qmax
    q = np.clip(np.round(w / scale), -qmax, qmax)
    return q.astype(np.int8), scale


def spread_factor(w: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """ξ_c = ‖W_c - mean W_c‖ / ‖W_q,c - mean W_q,c‖ per column; 1 where either is 0."""
    w = np.asarray(w, np.float64)
    w_q = np.asarray(w_q, np.float64)
    num = np.linalg.norm(w - w.mean(axis=0), axis=0)
    den = np.linalg.norm(w_q - w_q.mean(axis=0), axis=0)
    ok = (den > 0) & (num > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), 1.0)


def correct(
    w: np.ndarray,
    q: np.ndarray,
    scale: np.ndarray,
    expected_input: np.ndarray,
    method: BiasCorrection | str,
    *,
    expected_quantized_input: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bias correction of one quantized weight matrix (see the module docstring).

    Args:
      w: float weights (K, C).
      q: their integers (K, C) on the channels' grids.
      scale: Δ_c (C,).
      expected_input: E[x_k] for each weight, broadcastable to (K, C) (e.g. (K, 1) for a
        convolution, whose channels all read the same inputs).
      method: none, mean, mean_std or sequential (mean's formula; the caller passes
        ``expected_quantized_input``).
      expected_quantized_input: E[x_k] of the layer's input in the model whose upstream
        layers are already quantized and corrected; then the bias restores the float
        model's expected output, Σ_k W_k,c·E[x_k] - Σ_k W'_k,c·E[x'_k] (sequential
        correction). ``None``: the same as ``expected_input``.

    Returns:
      ``(scale', bias_delta)``: the channel scales (ξ_c·Δ_c for mean_std, else Δ_c) and the
      amounts (C,) to add to the float bias.
    """
    method = BiasCorrection.parse(method, what="bias correction")
    w = np.asarray(w, np.float64)
    scale = np.asarray(scale, np.float64)
    if method is BiasCorrection.NONE:
        return scale, np.zeros(w.shape[1])
    qf = np.asarray(q, np.float64)
    if method is BiasCorrection.MEAN_STD:
        scale = scale * spread_factor(w, qf * scale)
    expected = np.broadcast_to(np.asarray(expected_input, np.float64), w.shape)
    if not np.all(np.isfinite(expected)):
        raise TfquantError("the expected input has NaN/Inf values; check the calibration data")
    if expected_quantized_input is None:
        return scale, np.sum((w - qf * scale) * expected, axis=0)
    expected_q = np.broadcast_to(np.asarray(expected_quantized_input, np.float64), w.shape)
    return scale, np.sum(w * expected - qf * scale * expected_q, axis=0)
