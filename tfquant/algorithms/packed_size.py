"""Exact packed sizes of a model's weights at b bits (QGT's size column; moved from qgt.py)."""

from __future__ import annotations

from typing import Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.algorithms.weight_grid import check_bits, kernel_of, num_output_channels

FLOAT32_BYTES = 4


def _packed_kernels(model: keras.Model, bits: int | Mapping[str, int]) -> dict[int, tuple[int, tuple[int, ...]]]:
    """id(kernel variable) -> (its bit width, its channel axes), for every kernel in ``model``
    (nested too) that ``bits`` packs: all of them for one int, the named layers' for a mapping."""
    kernels: dict[int, tuple[int, tuple[int, ...]]] = {}
    for module in (model, *model.submodules):
        if isinstance(module, keras.layers.Layer):
            found = kernel_of(module)
            if found is None:
                continue
            if isinstance(bits, Mapping):
                if module.name in bits:
                    kernels[id(found[0])] = (check_bits(bits[module.name]), found[1])
            else:
                kernels[id(found[0])] = (check_bits(bits), found[1])
    return kernels


def packed_size_bytes(model: keras.Model, bits: int | Mapping[str, int], *, per_channel: bool = True) -> int:
    """Exact bytes of ``model``'s weights with its Conv/Dense kernels packed at ``bits``.

        size = Σ_packed kernels [ceil(n_K · b_K / 8) + 4 · s_K] + Σ_other float weights 4 · n_v

    n_K = elements of kernel K, packed densely at b_K bits per tensor (no per-row padding);
    b_K = ``bits`` for every kernel, or ``bits[layer name]`` per layer (mixed precision,
    e.g. QBitOpt's allocation; a kernel whose layer is not in the mapping stays float32);
    s_K = its number of float32 scales: one per output channel (per_channel) or 1; symmetric
    quantization has no zero points. Every other floating-point variable of the model
    (biases, BatchNorm γ/β/moving statistics, embeddings, ...) counts as float32, 4 bytes per
    element; integer bookkeeping variables (step counters) are not counted. Kernels are
    those of :func:`tfquant.algorithms.weight_grid.kernel_of` (SeparableConv2D, QAT
    wrappers and FoldedConvBN stay float32). Fold BNs first
    (:func:`tfquant.algorithms.fold_batch_norms`) for the deployed size; graph and
    metadata overhead of a .tflite file is not included. Source: the packed-size column of
    QGT (arXiv 2103.06231), generalised to one b per layer.

    Args:
        model: A built tf-keras model.
        bits: Kernel bit width in [2, 16], or layer name -> bit width.
        per_channel: One scale per output channel, or one per kernel.

    Raises:
        TfquantError: If a bit width is not an integer in [2, 16].
    """
    if not isinstance(bits, Mapping):
        check_bits(bits)
    kernels = _packed_kernels(model, bits)
    total = 0
    for v in model.weights:
        if not v.dtype.is_floating:
            continue
        n = int(np.prod(v.shape))
        if id(v) in kernels:
            b, axes = kernels[id(v)]
            scales = num_output_channels(v.shape, axes) if per_channel else 1
            total += -(-n * b // 8) + FLOAT32_BYTES * scales
        else:
            total += FLOAT32_BYTES * n
    return total


def float32_size_bytes(model: keras.Model) -> int:
    """Bytes of every floating-point variable of ``model`` stored as float32 (4 per element)."""
    return sum(
        FLOAT32_BYTES * int(np.prod(v.shape)) for v in model.weights if v.dtype.is_floating
    )
