"""Static weight fake-quantization: every kernel quantized and dequantized once, in numpy.

The parameters come from :mod:`tfquant.numerics` (the project's one place for scale /
zero-point maths); this module only decides which axes are output channels and which
statistics feed ``symmetric_params`` / ``affine_params`` (Krishnamoorthi 2018, arXiv
1806.08342, Sec. 2.1):

* symmetric: Δ_c = max|W_c| / (2^(b-1) - 1), z = 0, narrow range (TFLite's int8 weights);
* asymmetric: [min W_c, max W_c] widened to contain 0, Δ_c = (max - min) / (2^b - 1),
  z_c = round(-2^(b-1) - min / Δ_c);

with c running over output channels (per_channel) or one c for the whole kernel
(per_tensor). W_hat = Δ (clamp(q_min, q_max, round(W / Δ) + z) - z).

Output channels come from :func:`tfquant.models.kernels.layer_kernel` (Conv1D/2D/3D and
Dense ``(..., in, out)`` -> axis -1; DepthwiseConv2D ``(kh, kw, C, m)`` -> axes (2, 3),
channel c·m + j, as in TFLite's ``(1, kh, kw, C·m)`` depthwise weights).
``tfquant/algorithms/weight_grid.py`` has a symmetric-only twin of the grid maths for
training-time code (TF ops); this one adds the asymmetric scheme, in numpy.
"""

from __future__ import annotations

import dataclasses

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.models.kernels import KernelKind, layer_kernel
from tfquant.numerics import QuantParams, affine_params, fake_quantize, symmetric_params
from tfquant.qtypes import Granularity
from tfquant.simulation.spec import SimSpec, WeightScheme

# The kernels the simulation quantizes; transposed convolutions stay float (separable ones
# have no single kernel, see tfquant.models.kernels).
SIMULATED_KINDS = frozenset({KernelKind.CONV, KernelKind.DENSE, KernelKind.DEPTHWISE})


def quantized_kernel_index(layer: keras.layers.Layer) -> tuple[int, tuple[int, ...]] | None:
    """``(index in layer.get_weights(), output-channel axes)`` of the kernel to quantize.

    The kernel and its axes come from :func:`tfquant.models.kernels.layer_kernel`; None for
    layers whose weights the simulation leaves float (transposed and separable
    convolutions, attention, normalisation, embeddings, ...).
    """
    info = layer_kernel(layer)
    if info is None or info.kind not in SIMULATED_KINDS:
        return None
    index = next(i for i, v in enumerate(layer.weights) if v is info.variable)
    return index, info.channel_axes


def kernel_params(w: np.ndarray, spec: SimSpec, channel_axes: tuple[int, ...]) -> tuple[QuantParams, np.ndarray]:
    """The quantization parameters of kernel ``w`` and ``w`` viewed as (elements, channels).

    Per-tensor kernels are viewed as (elements, 1), so one code path serves both.
    """
    rank = w.ndim
    chan = [a % rank for a in channel_axes]
    moved = np.moveaxis(w, chan, list(range(rank - len(chan), rank)))
    n_channels = int(np.prod([w.shape[a] for a in chan]))
    flat = moved.reshape(-1, n_channels)
    if spec.weight_granularity is Granularity.PER_TENSOR:
        flat = flat.reshape(-1, 1)
    if spec.weight_scheme is WeightScheme.SYMMETRIC:
        p = symmetric_params(np.max(np.abs(flat), axis=0), bits=spec.weight_bits, narrow_range=True)
    else:
        p = affine_params(flat.min(axis=0), flat.max(axis=0), bits=spec.weight_bits)
    return dataclasses.replace(p, axis=1), flat


def fake_quantize_kernel(w: np.ndarray, spec: SimSpec, channel_axes: tuple[int, ...]) -> np.ndarray:
    """``w`` quantized and dequantized as ``spec`` says (float, same shape and dtype)."""
    w = np.asarray(w)
    rank = w.ndim
    chan = [a % rank for a in channel_axes]
    p, flat = kernel_params(w.astype(np.float64), spec, channel_axes)
    fq = fake_quantize(flat, p)
    moved_shape = np.moveaxis(w, chan, list(range(rank - len(chan), rank))).shape
    fq = fq.reshape(moved_shape)
    return np.moveaxis(fq, list(range(rank - len(chan), rank)), chan).astype(w.dtype)
