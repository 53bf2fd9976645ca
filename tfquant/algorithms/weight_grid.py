"""Kernels of weight layers and the symmetric b-bit weight grid, in TensorFlow.

Which axes of a kernel are its output channels, and a differentiable-graph twin of
:func:`tfquant.numerics.symmetric_params` + :func:`tfquant.numerics.fake_quantize` for
weights, so that training-time code (QGT's regulariser, BN-folded QAT layers) can put
weights on the same grid that TFLite uses (Krishnamoorthi 2018, arXiv 1806.08342,
Sec. 2.1): symmetric, narrow range,

    Δ = amax / (2^(b-1) - 1),   Q_b(w) = Δ · clamp(-(2^(b-1) - 1), 2^(b-1) - 1, round(w / Δ)),

with amax = max|w| per output channel (or per tensor) -- the ``max`` scale. The ``mse`` scale
(:func:`mse_scale`) instead picks, per channel, the Δ among f·amax/(2^(b-1)-1), f in
:data:`MSE_FRACTIONS`, that minimises the squared rounding error Σ (w - Q_b(w))² (the
MSE-optimal clipping of e.g. Banner et al. 2019 / Nagel et al. 2021, arXiv 2106.08295,
Sec. 3.4, restricted to a grid search); at 2 bits the max scale rounds most weights to 0.
The ``max`` scale is the formula of
:func:`tfquant.numerics.symmetric_params` applied to TF tensors (q_min/q_max are taken from
the ``QuantParams`` it returns, amax = 0 maps to 1 as there), so it can run inside
``tf.function`` and on gradient tapes; ``tests/algorithms/test_weight_grid.py`` checks that
both agree with the numpy maths.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.models.kernels import layer_kernel
from tfquant.numerics import fake_quantize, symmetric_params


def check_bits(bits: object) -> int:
    """Returns ``bits`` if it is an int in [2, 16], the range the numerics support.

    Raises:
        TfquantError: Otherwise, naming the value.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise TfquantError(f"bits must be an integer in [2, 16], got {bits!r}")
    return int(bits)


def kernel_of(layer: keras.layers.Layer) -> tuple[tf.Variable, tuple[int, ...]] | None:
    """``(kernel variable, output-channel axes)`` of ``layer``, or None.

    :func:`tfquant.models.kernels.layer_kernel` as a pair: Dense / Conv1D-3D ``(-1,)``,
    DepthwiseConv2D ``(2, 3)`` (channel ``c * mult + m``), Conv*Transpose ``(-2,)``;
    SeparableConv2D, wrappers, unbuilt and other layers None (their weights stay float in
    every algorithm here).
    """
    info = layer_kernel(layer)
    return None if info is None else (info.variable, info.channel_axes)


def reduce_axes(rank: int, channel_axes: Sequence[int]) -> tuple[int, ...]:
    """The axes of a rank-``rank`` kernel that are not output-channel axes."""
    keep = {a % rank for a in channel_axes}
    return tuple(a for a in range(rank) if a not in keep)


def num_output_channels(shape: Sequence[int], channel_axes: Sequence[int]) -> int:
    """Number of per-channel scales of a kernel: the product of its channel-axis sizes."""
    return int(np.prod([shape[a] for a in channel_axes]))


def symmetric_scale(amax: tf.Tensor, bits: int) -> tf.Tensor:
    """Δ = amax / q_max (narrow range), amax = 0 mapped to 1: ``symmetric_params`` in TF.

    q_max comes from the ``QuantParams`` that ``symmetric_params`` returns; dividing by it
    (rather than multiplying by 1/q_max) keeps Δ exact whenever amax / q_max is
    representable, so weights on a power-of-two grid have zero distance to it.
    """
    qmax = symmetric_params(1.0, bits=check_bits(bits), narrow_range=True).qmax
    a = tf.abs(amax)
    return tf.where(a > 0, a, tf.ones_like(a)) / tf.constant(float(qmax), a.dtype)


SCALES = ("max", "mse")
"""How a kernel's grid step Δ is chosen: ``max`` (Δ = max|w| / q_max, TFLite's own) or
``mse`` (:func:`mse_scale`)."""

MSE_FRACTIONS = tuple(round(0.20 + 0.05 * i, 2) for i in range(17))
"""Candidate ranges f·max|w_c| of :func:`mse_scale`: 0.20, 0.25, ..., 1.00."""


def check_scale(scale: object) -> str:
    """Returns ``scale`` if it is one of :data:`SCALES`.

    Raises:
        TfquantError: Otherwise, naming the value and the choices.
    """
    if scale not in SCALES:
        raise TfquantError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return str(scale)


def _amax(w: tf.Tensor, per_channel: bool, channel_axes: Sequence[int]) -> tf.Tensor:
    magnitude = tf.abs(w)
    if per_channel:
        return tf.reduce_max(magnitude, axis=reduce_axes(w.shape.rank, channel_axes), keepdims=True)
    return tf.reduce_max(magnitude)


def mse_scale(
    w: tf.Tensor, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,)
) -> tf.Tensor:
    """The MSE-optimal symmetric b-bit scale of ``w`` among :data:`MSE_FRACTIONS` of the max scale.

        Δ_c = argmin_{Δ = f·max|w_c|/q_max, f in {0.20, 0.25, ..., 1.00}} Σ_{i in c} (w_i - Q_Δ(w_i))²

    with Q_Δ the narrow-range round-and-clamp of :func:`round_to_grid` (weights beyond q_max·Δ
    are clipped); ties go to the smallest f. Broadcastable to ``w``; no gradient. Args as
    :func:`weight_scale`.
    """
    w = tf.convert_to_tensor(w)
    p = symmetric_params(1.0, bits=check_bits(bits), narrow_range=True)
    base = symmetric_scale(_amax(w, per_channel, channel_axes), bits)
    axes = reduce_axes(w.shape.rank, channel_axes) if per_channel else None
    best, best_err = base, None
    for f in MSE_FRACTIONS:
        step = base * f
        q = tf.clip_by_value(tf.round(w / step), float(p.qmin), float(p.qmax)) * step
        err = tf.reduce_sum(tf.square(w - q), axis=axes, keepdims=per_channel)
        if best_err is None:
            best, best_err = step, err
        else:
            better = err < best_err
            best, best_err = tf.where(better, step, best), tf.where(better, err, best_err)
    return tf.stop_gradient(best)


def weight_scale(
    w: tf.Tensor, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,),
    scale: str = "max",
) -> tf.Tensor:
    """The symmetric b-bit scale of ``w``, broadcastable to ``w``; no gradient flows through it.

    Args:
        w: A kernel.
        bits: Bit width b in [2, 16].
        per_channel: One scale per output channel (``channel_axes``) or one per tensor.
        channel_axes: Output-channel axes of ``w`` (see :func:`kernel_of`).
        scale: ``max`` (Δ = max|w| / q_max) or ``mse`` (:func:`mse_scale`).
    """
    w = tf.convert_to_tensor(w)
    if check_scale(scale) == "mse":
        return mse_scale(w, bits, per_channel=per_channel, channel_axes=channel_axes)
    return tf.stop_gradient(symmetric_scale(_amax(w, per_channel, channel_axes), bits))


def round_to_grid(
    w: tf.Tensor, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,),
    scale: str = "max", step: tf.Tensor | np.ndarray | None = None,
) -> tf.Tensor:
    """Q_b(w) = Δ · clamp(-(2^(b-1)-1), 2^(b-1)-1, round(w/Δ)), round half to even like numpy.

    Args: as :func:`weight_scale`; ``step``: a given Δ (broadcastable to ``w``, e.g. a grid
    frozen during training) instead of one computed from ``w``. The result has no useful
    gradient (tf.round's is zero); wrap it with :func:`straight_through` to train through it.
    """
    w = tf.convert_to_tensor(w)
    p = symmetric_params(1.0, bits=check_bits(bits), narrow_range=True)
    delta = (weight_scale(w, bits, per_channel=per_channel, channel_axes=channel_axes, scale=scale)
             if step is None else tf.cast(tf.convert_to_tensor(step), w.dtype))
    q = tf.clip_by_value(tf.round(w / delta), float(p.qmin), float(p.qmax))
    return q * delta


def straight_through(w: tf.Tensor, w_q: tf.Tensor) -> tf.Tensor:
    """Forward value ``w_q``, gradient of the identity: w + stop_gradient(w_q - w)."""
    return w + tf.stop_gradient(w_q - w)


@keras.utils.register_keras_serializable(package="tfquant")
class SymmetricWeightQuantizer:
    """A serialisable ``weight_quantizer(w) -> w_q``: :func:`round_to_grid` at ``bits``.

    Args:
        bits: Bit width in [2, 16].
        per_channel: Per-output-channel scales (TFLite's int8 weight scheme) or per tensor.
        channel_axes: Output-channel axes of the kernels it will see: (-1,) for Conv2D and
            Dense, (2, 3) for DepthwiseConv2D.

    Raises:
        TfquantError: If ``bits`` is not an integer in [2, 16].
    """

    def __init__(
        self, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,),
        scale: str = "max",
    ) -> None:
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)
        self.channel_axes = tuple(int(a) for a in channel_axes)
        self.scale = check_scale(scale)

    def __call__(self, w: tf.Tensor) -> tf.Tensor:
        return round_to_grid(
            w, self.bits, per_channel=self.per_channel, channel_axes=self.channel_axes,
            scale=self.scale,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "per_channel": self.per_channel,
            "channel_axes": list(self.channel_axes),
            "scale": self.scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SymmetricWeightQuantizer":
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"SymmetricWeightQuantizer(bits={self.bits}, per_channel={self.per_channel}, "
            f"channel_axes={self.channel_axes}, scale={self.scale!r})"
        )


def fake_quantize_kernel(
    w: np.ndarray, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,),
    scale: str = "max",
) -> np.ndarray:
    """Numpy: ``w`` fake-quantized by :func:`tfquant.numerics.fake_quantize` (symmetric, narrow).

    The kernel is viewed as (elements, channels) with the channel axes moved last, so one
    ``QuantParams`` with ``axis=1`` covers every layout (depthwise, transposed). With
    ``scale="mse"``: :func:`round_to_grid` with :func:`mse_scale` (same rounding, half to even).
    """
    w = np.asarray(w)
    if check_scale(scale) == "mse":
        return round_to_grid(tf.constant(w, tf.float32), bits, per_channel=per_channel,
                             channel_axes=channel_axes, scale="mse").numpy().astype(w.dtype)
    rank = w.ndim
    chan = [a % rank for a in channel_axes]
    if not per_channel:
        p = symmetric_params(np.max(np.abs(w)), bits=check_bits(bits), narrow_range=True)
        return fake_quantize(w, p).astype(w.dtype)
    moved = np.moveaxis(w, chan, list(range(rank - len(chan), rank)))
    flat = moved.reshape(-1, int(np.prod([w.shape[a] for a in chan])))
    p = symmetric_params(np.max(np.abs(flat), axis=0), bits=check_bits(bits), narrow_range=True)
    p = dataclasses.replace(p, axis=1)
    fq = fake_quantize(flat, p).reshape(moved.shape)
    return np.moveaxis(fq, list(range(rank - len(chan), rank)), chan).astype(w.dtype)
