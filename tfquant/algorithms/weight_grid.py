"""Kernels of weight layers and the symmetric b-bit weight grid, in TensorFlow.

Which axes of a kernel are its output channels, and a differentiable-graph twin of
:func:`tfquant.numerics.symmetric_params` + :func:`tfquant.numerics.fake_quantize` for
weights, so that training-time code (QGT's regulariser, BN-folded QAT layers) can put
weights on the same grid that TFLite uses (Krishnamoorthi 2018, arXiv 1806.08342,
Sec. 2.1): symmetric, narrow range,

    Δ = amax / (2^(b-1) - 1),   Q_b(w) = Δ · clamp(-(2^(b-1) - 1), 2^(b-1) - 1, round(w / Δ)),

with amax = max|w| per output channel (or per tensor). This is the formula of
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


def weight_scale(
    w: tf.Tensor, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,)
) -> tf.Tensor:
    """The symmetric b-bit scale of ``w``, broadcastable to ``w``; no gradient flows through it.

    Args:
        w: A kernel.
        bits: Bit width b in [2, 16].
        per_channel: One scale per output channel (``channel_axes``) or one per tensor.
        channel_axes: Output-channel axes of ``w`` (see :func:`kernel_of`).
    """
    w = tf.convert_to_tensor(w)
    magnitude = tf.abs(w)
    if per_channel:
        amax = tf.reduce_max(magnitude, axis=reduce_axes(w.shape.rank, channel_axes), keepdims=True)
    else:
        amax = tf.reduce_max(magnitude)
    return tf.stop_gradient(symmetric_scale(amax, bits))


def round_to_grid(
    w: tf.Tensor, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,)
) -> tf.Tensor:
    """Q_b(w) = Δ · clamp(-(2^(b-1)-1), 2^(b-1)-1, round(w/Δ)), round half to even like numpy.

    Args: as :func:`weight_scale`. The result has no useful gradient (tf.round's is zero);
    wrap it with :func:`straight_through` to train through it.
    """
    w = tf.convert_to_tensor(w)
    p = symmetric_params(1.0, bits=check_bits(bits), narrow_range=True)
    scale = weight_scale(w, bits, per_channel=per_channel, channel_axes=channel_axes)
    q = tf.clip_by_value(tf.round(w / scale), float(p.qmin), float(p.qmax))
    return q * scale


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
        self, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,)
    ) -> None:
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)
        self.channel_axes = tuple(int(a) for a in channel_axes)

    def __call__(self, w: tf.Tensor) -> tf.Tensor:
        return round_to_grid(
            w, self.bits, per_channel=self.per_channel, channel_axes=self.channel_axes
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "per_channel": self.per_channel,
            "channel_axes": list(self.channel_axes),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SymmetricWeightQuantizer":
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"SymmetricWeightQuantizer(bits={self.bits}, per_channel={self.per_channel}, "
            f"channel_axes={self.channel_axes})"
        )


def fake_quantize_kernel(
    w: np.ndarray, bits: int, *, per_channel: bool = True, channel_axes: Sequence[int] = (-1,)
) -> np.ndarray:
    """Numpy: ``w`` fake-quantized by :func:`tfquant.numerics.fake_quantize` (symmetric, narrow).

    The kernel is viewed as (elements, channels) with the channel axes moved last, so one
    ``QuantParams`` with ``axis=1`` covers every layout (depthwise, transposed).
    """
    w = np.asarray(w)
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
