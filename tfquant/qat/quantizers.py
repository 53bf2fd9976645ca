"""Fake quantizers of a QAT model: tfmot ``LastValueQuantizer`` / ``MovingAverageQuantizer``.

Simulated quantization (Krishnamoorthi 2018, arXiv 1806.08342, eq. 4, with a straight-through
gradient inside the range):

    SimQuant(x) = Δ · (clamp(q_min, q_max, round(x / Δ) + z) - z)

* weights (:func:`weight_quantizer`): ``LastValueQuantizer(num_bits=b, per_axis, symmetric=
  True, narrow_range=True)``: the range is the kernel's own min/max at the last training
  step, made symmetric, so Δ = max|w| / (2^(b-1) - 1) and q in [-(2^(b-1) - 1), 2^(b-1) - 1];
* activations (:func:`activation_quantizer`): ``MovingAverageQuantizer(num_bits=b,
  per_axis=False, symmetric=False, narrow_range=False)``: affine, the range an EMA
  (decay 0.999) of per-batch [min, max] widened to contain 0.

The TFLite converter turns each fake quant into a quantized tensor whose scale comes from the
fake quant's range and bit width: a 4-bit weight fake quant becomes an int8 tensor whose
values lie in [-7, 7].

Per-channel layouts. tfmot's per-axis fake quant runs over the last axis, which is the output
channel of Conv2D ``(kh, kw, in, out)`` and Dense ``(in, out)`` kernels but not of
DepthwiseConv2D ``(kh, kw, C, M)`` (last axis M, usually 1, so tfmot's default quantizes
depthwise kernels per tensor). :class:`DepthwiseKernelQuantizer` reshapes the kernel to
``(kh, kw, 1, C·M)`` so each of the C·M output channels gets its own range, as TFLite's
per-channel depthwise weights have; the converter folds the reshapes. Two kernels are always
quantized per tensor, because the converter rejects a per-channel fake quant seen through a
transpose ("'tfl.transpose' op has mismatched quantized axes of input and output"):
Conv2DTranspose ``(kh, kw, out, in)`` (moving out last needs a transpose) and Dense
``(in, out)`` (the converter transposes it to FULLY_CONNECTED's ``(out, in)``). tfmot's
default 8-bit scheme makes the same choice for both.

Sub-8-bit weights. The converter reads a weight fake quant's ``num_bits`` and its range
[-a, a] and stores the kernel with the scale of its *storage* type: INT4 (scale a/7) for
b <= 4, int8 (scale a/127) above. That is the b-bit grid only for b = 2, 4 and 8; a 3-bit
grid (step a/3) lands on {-7, -5, -2, 0, 2, 5, 7}·a/7 and a 5..7-bit grid up to half an int8
step off its levels. :class:`GridKernelQuantizer` therefore rounds b = 3, 5, 6, 7 kernels to
their grid with plain TF ops and declares a storage fake quant whose step is the b-bit step
Δ_b (4-bit over ±7·Δ_b for b = 3, keeping INT4 packing; 8-bit over ±127·Δ_b for b = 5..7):
the values are unchanged and the stored integers are exactly q in [-(2^(b-1)-1),
2^(b-1)-1]. TRANSPOSE_CONV's kernel must be int8 typed (the converter types a 4-bit fake
quant ``i4`` and the op rejects it).
:class:`TransposeKernelQuantizer` therefore rounds a transposed-conv kernel to the b-bit grid
with plain TF ops and then declares it 8-bit, with a range (±127·Δ_b) whose int8 step is the
b-bit step Δ_b: the values are unchanged and the int8 tensor holds q in [-(2^(b-1)-1),
2^(b-1)-1].
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from tfquant.models.kernels import KernelKind
from tfquant.numerics import symmetric_params

_quantizers = tfmot.quantization.keras.quantizers

KERNEL_LAYOUTS: tuple[str, ...] = tuple(kind.value for kind in KernelKind)


def _storage(bits: int) -> tuple[int, float]:
    """(storage bits, q_max of the storage type) of a b-bit kernel: INT4 up to 4 bits, else int8."""
    storage = 4 if bits <= 4 else 8
    return storage, float(symmetric_params(1.0, bits=storage, narrow_range=True).qmax)


class GridKernelQuantizer(_quantizers.LastValueQuantizer):
    """tfmot's symmetric narrow-range ``LastValueQuantizer`` whose export stays on the b-bit grid.

    For b in {2, 4, 8} it *is* tfmot's quantizer (the converter stores those grids exactly).
    For b in {3, 5, 6, 7}, with amax = max|w| (per output channel of the last axis when
    ``per_axis``; the last training step's, kept in the range variables as tfmot does):

        Δ_b = amax / (2^(b-1) - 1),   w_b = Δ_b · clamp(-(2^(b-1)-1), 2^(b-1)-1, round(w / Δ_b))

    with a straight-through gradient (the same values and gradient as tfmot's b-bit fake
    quant, whose nudged range is exactly [-amax, amax] here), followed by a storage fake quant
    over [-S·Δ_b, S·Δ_b] with S = 7 (4-bit, b = 3) or 127 (8-bit, b = 5..7): it leaves w_b
    unchanged and makes the converter store q = w_b / Δ_b with scale Δ_b. ``num_bits`` may be
    changed between traces (QBitOpt re-allocates bits during training).

    Args:
      num_bits: b, 2..8.
      per_axis: one range per channel of the kernel's last axis.
      symmetric, narrow_range: accepted for tfmot's ``from_config``; always True.
    """

    def __init__(
        self,
        num_bits: int,
        per_axis: bool = False,
        symmetric: bool = True,
        narrow_range: bool = True,
    ) -> None:
        del symmetric, narrow_range  # fixed: the TFLite int8 weight scheme
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=True, narrow_range=True)

    stored_exactly: tuple[int, ...] = (2, 4, 8)
    """Bit widths whose plain fake quant the converter already stores on the b-bit grid."""

    @staticmethod
    def storage(bits: int) -> tuple[int, float]:
        """(storage bits, q_max of the storage type) of a b-bit kernel: INT4 up to 4 bits, else int8."""
        return _storage(bits)

    def __call__(
        self, inputs: tf.Tensor, training: bool, weights: dict[str, Any], **kwargs: Any
    ) -> tf.Tensor:
        bits = int(self.num_bits)
        if bits in self.stored_exactly:
            return super().__call__(inputs, training, weights, **kwargs)
        levels = float(symmetric_params(1.0, bits=bits, narrow_range=True).qmax)
        if training:
            axes = list(range(inputs.shape.rank - 1)) if self.per_axis else None
            amax = tf.reduce_max(tf.abs(inputs), axis=axes)
            weights["min_var"].assign(-amax)
            weights["max_var"].assign(amax)
        else:
            amax = tf.maximum(-weights["min_var"], weights["max_var"])
        step = tf.where(amax > 0, amax, tf.ones_like(amax)) / levels
        grid = tf.clip_by_value(tf.round(inputs / step), -levels, levels) * step
        grid = inputs + tf.stop_gradient(grid - inputs)
        storage_bits, storage_max = self.storage(bits)
        if self.per_axis:
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(
                grid, -storage_max * step, storage_max * step, num_bits=storage_bits,
                narrow_range=True)
        return tf.quantization.fake_quant_with_min_max_vars(
            grid, -storage_max * step, storage_max * step, num_bits=storage_bits, narrow_range=True)

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and other.num_bits == self.num_bits
                and other.per_axis == self.per_axis)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class DepthwiseKernelQuantizer(GridKernelQuantizer):
    """Per-output-channel symmetric fake quant of a ``(kh, kw, C, M)`` depthwise kernel.

    One range per output channel ``c·M + m`` (TFLite's depthwise channel order): the kernel is
    viewed as ``(kh, kw, 1, C·M)`` for tfmot's last-axis fake quant and reshaped back.

    Args:
      num_bits: b, 2..8; q in [-(2^(b-1) - 1), 2^(b-1) - 1].
      per_axis, symmetric, narrow_range: accepted for tfmot's ``from_config``; always True.
    """

    def __init__(
        self,
        num_bits: int,
        per_axis: bool = True,
        symmetric: bool = True,
        narrow_range: bool = True,
    ) -> None:
        del per_axis, symmetric, narrow_range  # fixed: the TFLite int8 weight scheme
        super().__init__(num_bits=num_bits, per_axis=True)

    def build(
        self, tensor_shape: tf.TensorShape, name: str, layer: keras.layers.Layer
    ) -> dict[str, Any]:
        channels = int(tensor_shape[2]) * int(tensor_shape[3])
        min_var = layer.add_weight(
            name + "_min",
            shape=(channels,),
            initializer=keras.initializers.Constant(-6.0),
            trainable=False,
        )
        max_var = layer.add_weight(
            name + "_max",
            shape=(channels,),
            initializer=keras.initializers.Constant(6.0),
            trainable=False,
        )
        return {"min_var": min_var, "max_var": max_var}

    def __call__(
        self, inputs: tf.Tensor, training: bool, weights: dict[str, Any], **kwargs: Any
    ) -> tf.Tensor:
        shape = inputs.shape
        flat = tf.reshape(inputs, [shape[0], shape[1], 1, shape[2] * shape[3]])
        quantized = super().__call__(flat, training, weights, **kwargs)
        return tf.reshape(quantized, shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DepthwiseKernelQuantizer) and other.num_bits == self.num_bits

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class TransposeKernelQuantizer(GridKernelQuantizer):
    """Per-tensor symmetric b-bit fake quant of a Conv2DTranspose kernel, stored as int8.

    :class:`GridKernelQuantizer` per tensor with int8 storage at every b < 8 (TRANSPOSE_CONV
    takes only int8 kernels; the converter would type a 4-bit fake quant ``i4``):
    Δ_b = amax / (2^(b-1) - 1), w_b = Δ_b · clamp(-(2^(b-1)-1), 2^(b-1)-1, round(w / Δ_b))
    with a straight-through gradient, then an 8-bit narrow-range fake quant over
    [-127·Δ_b, 127·Δ_b], which keeps w_b and makes the converter store it as int8 with scale Δ_b.

    Args:
      num_bits: b, 2..7 (8 bits needs no detour: use ``LastValueQuantizer``).
      per_axis, symmetric, narrow_range: accepted for tfmot's ``from_config``; fixed.
    """

    stored_exactly = (8,)

    def __init__(
        self,
        num_bits: int,
        per_axis: bool = False,
        symmetric: bool = True,
        narrow_range: bool = True,
    ) -> None:
        del per_axis, symmetric, narrow_range  # fixed: per tensor, symmetric, narrow
        super().__init__(num_bits=num_bits, per_axis=False)

    @staticmethod
    def storage(bits: int) -> tuple[int, float]:
        """Always int8 (TRANSPOSE_CONV's kernel type)."""
        return _storage(8)


def weight_quantizer(kind: str, *, bits: int, per_channel: bool) -> _quantizers.LastValueQuantizer:
    """The symmetric narrow-range weight fake quant for a kernel of layout ``kind``.

    Args:
      kind: ``"conv"`` (Conv2D: output channels last), ``"depthwise"`` (DepthwiseConv2D),
        ``"dense"`` or ``"transpose"`` (Dense, Conv2DTranspose: always per tensor).
      bits: b, 2..8.
      per_channel: one range per output channel (else one per tensor).
    """
    assert kind in KERNEL_LAYOUTS, kind  # internal: only the registry calls this
    if kind == "depthwise" and per_channel:
        return DepthwiseKernelQuantizer(num_bits=bits)
    if kind == "transpose" and bits < 8:
        return TransposeKernelQuantizer(num_bits=bits)
    if bits < 8:  # stays on its grid whatever bits QBitOpt later gives it
        return GridKernelQuantizer(num_bits=bits, per_axis=per_channel and kind == "conv")
    return _quantizers.LastValueQuantizer(
        num_bits=bits,
        per_axis=per_channel and kind == "conv",
        symmetric=True,
        narrow_range=True,
    )


def activation_quantizer(*, bits: int) -> _quantizers.MovingAverageQuantizer:
    """Affine per-tensor activation fake quant with an EMA range (decay 0.999)."""
    return _quantizers.MovingAverageQuantizer(
        num_bits=bits, per_axis=False, symmetric=False, narrow_range=False
    )


def custom_objects() -> dict[str, type]:
    """Quantizer classes of this module, for ``tfmot.quantization.keras.quantize_scope``."""
    return {
        "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer,
        "GridKernelQuantizer": GridKernelQuantizer,
        "TransposeKernelQuantizer": TransposeKernelQuantizer,
    }
