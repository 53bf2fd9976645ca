"""Per-channel bit widths and bias correction in the simulation: the Keras twin of
:mod:`tfquant.convert.low_bit`, for cells TFLite cannot run (4-bit activations).

:func:`kernel_edit` returns a ``kernel_edit`` for :func:`tfquant.simulation.simulate` that
puts each kernel of a BN-folded model on the same grids as the int8 rewrite: channel c of a
Conv / DepthwiseConv2D / Dense kernel on its own b_c-bit symmetric narrow-range grid,
α_c = max|W_c| (:func:`tfquant.algorithms.bias_correction.quantize_channels`), b_c uniform or
from the ACIQ allocation (:func:`tfquant.algorithms.aciq_allocation.allocate_bits`), then
bias correction (:func:`tfquant.algorithms.bias_correction.correct`) with E[x] the
per-channel mean of the layer's input over the calibration set. Keras kernels keep output
channels last: Conv (kh, kw, cin, cout) reads input channel i at every (h, w), Dense
(in, out) feature i, DepthwiseConv2D (kh, kw, cin, m) channel c·m + j reads input channel c.
A layer without a bias is quantized but not corrected (there is nowhere to fold the shift).
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.algorithms.aciq_allocation import allocate_bits, uniform_bits
from tfquant.algorithms.bias_correction import correct, quantize_channels
from tfquant.calibration.keras_outputs import keras_batches
from tfquant.calibration.observe import statistics_pass
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError
from tfquant.models.kernels import KernelKind, layer_kernel
from tfquant.qtypes import BiasCorrection, WeightBitAllocation
from tfquant.simulation.weights import quantized_kernel_index

_BATCH = 100


def _input_means(model: keras.Model, layers: list[keras.layers.Layer], x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean of each layer's input over ``x`` (one statistics pass)."""
    tensors = [layer.input for layer in layers]
    stats = [TensorStatistics.empty(layer.name) for layer in layers]
    statistics_pass(keras_batches(model, tensors, x, batch_size=_BATCH, compiled=True), [s.update for s in stats])
    return {s.name: s.channel_mean for s in stats}


def _expected(layer: keras.layers.Layer, kernel_shape: tuple[int, ...], mu: np.ndarray) -> np.ndarray:
    info = layer_kernel(layer)
    if info is not None and info.kind is KernelKind.DEPTHWISE:
        return np.repeat(mu, kernel_shape[3])[None, :] if mu.size == kernel_shape[2] else np.full((1, 1), mu.mean())
    fan_in = kernel_shape[-2]
    if mu.size != fan_in:
        return np.full((1, 1), mu.mean())
    return np.broadcast_to(mu, (*kernel_shape[:-2], fan_in)).reshape(-1, 1)


def kernel_edit(
    folded: keras.Model,
    x: np.ndarray | None,
    *,
    weight_bits: int,
    allocation: WeightBitAllocation | str = WeightBitAllocation.UNIFORM,
    bias_correction: BiasCorrection | str = BiasCorrection.NONE,
) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """A ``kernel_edit`` for :func:`tfquant.simulation.simulate` and the bits it gives each channel.

    Args:
      folded: The BN-folded functional model that ``simulate`` will rebuild (pass
        ``SimSpec(fold_bn=False)`` with it, so the layer names match).
      x: Calibration inputs, for the expected inputs of bias correction (unused without it).
      weight_bits: Mean bit width, 2..8.
      allocation: uniform or aciq.
      bias_correction: none, mean or mean_std.

    Returns:
      ``(edit, bits)``: the edit, and layer name -> bit width of each output channel (filled
      as the edit runs).
    """
    allocation = WeightBitAllocation.parse(allocation, what="weight bit allocation")
    method = BiasCorrection.parse(bias_correction, what="bias correction")
    if method is BiasCorrection.SEQUENTIAL:
        raise TfquantError(
            "bias correction sequential runs in the int8 path only (tfquant.convert.low_bit); "
            "simulate mean or mean_std"
        )
    layers = [layer for layer in folded.layers if quantized_kernel_index(layer) is not None]
    means = _input_means(folded, layers, x) if method is not BiasCorrection.NONE else {}
    bits_by_layer: dict[str, tuple[int, ...]] = {}

    def edit(layer: keras.layers.Layer, w: list) -> list:
        index, axes = quantized_kernel_index(layer)
        kernel = np.asarray(w[index], np.float64)
        rank = kernel.ndim
        chan = [a % rank for a in axes]
        moved = np.moveaxis(kernel, chan, list(range(rank - len(chan), rank)))
        mat = moved.reshape(-1, int(np.prod([kernel.shape[a] for a in chan])))
        alpha = np.abs(mat).max(axis=0)
        bits = (allocate_bits(alpha, weight_bits) if allocation is WeightBitAllocation.ACIQ
                else uniform_bits(mat.shape[1], weight_bits))
        q, scale = quantize_channels(mat, alpha, bits)
        bias_index = next((i for i, v in enumerate(layer.weights) if getattr(layer, "bias", None) is v), None)
        if method is not BiasCorrection.NONE and bias_index is not None and means.get(layer.name) is not None:
            scale, delta = correct(mat, q, scale, _expected(layer, kernel.shape, means[layer.name]), method)
            w[bias_index] = (np.asarray(w[bias_index], np.float64) + delta).astype(w[bias_index].dtype)
        fq = (q * scale).reshape(moved.shape)
        w[index] = np.moveaxis(fq, list(range(rank - len(chan), rank)), chan).astype(w[index].dtype)
        bits_by_layer[layer.name] = tuple(int(b) for b in bits)
        return w

    return edit, bits_by_layer
