"""Exact packed sizes of a model's weights at b bits (QGT's size column; moved from qgt.py)."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.algorithms.weight_grid import check_bits, kernel_of, num_output_channels

FLOAT32_BYTES = 4


def _packed_kernels(model: keras.Model) -> dict[int, tuple[int, ...]]:
    """id(kernel variable) -> channel axes, for every kernel in ``model`` (nested too)."""
    kernels: dict[int, tuple[int, ...]] = {}
    for module in (model, *model.submodules):
        if isinstance(module, keras.layers.Layer):
            found = kernel_of(module)
            if found is not None:
                kernels[id(found[0])] = found[1]
    return kernels


def packed_size_bytes(model: keras.Model, bits: int, *, per_channel: bool = True) -> int:
    """Exact bytes of ``model``'s weights with every Conv/Dense kernel packed at ``bits``.

        size = Σ_kernels [ceil(n_K · b / 8) + 4 · s_K] + Σ_other float weights 4 · n_v

    n_K = elements of kernel K, packed densely at b bits per tensor (no per-row padding);
    s_K = its number of float32 scales: one per output channel (per_channel) or 1; symmetric
    quantization has no zero points. Every other floating-point variable of the model
    (biases, BatchNorm γ/β/moving statistics, embeddings, ...) counts as float32, 4 bytes per
    element; integer bookkeeping variables (step counters) are not counted. Kernels are
    those of :func:`tfquant.algorithms.weight_grid.kernel_of` (SeparableConv2D, QAT
    wrappers and FoldedConvBN stay float32). Fold BNs first
    (:func:`tfquant.algorithms.fold_batch_norms`) for the deployed size; graph and
    metadata overhead of a .tflite file is not included.

    Args:
        model: A built tf-keras model.
        bits: Kernel bit width in [2, 16].
        per_channel: One scale per output channel, or one per kernel.

    Raises:
        TfquantError: If ``bits`` is not an integer in [2, 16].
    """
    b = check_bits(bits)
    kernels = _packed_kernels(model)
    total = 0
    for v in model.weights:
        if not v.dtype.is_floating:
            continue
        n = int(np.prod(v.shape))
        if id(v) in kernels:
            scales = num_output_channels(v.shape, kernels[id(v)]) if per_channel else 1
            total += -(-n * b // 8) + FLOAT32_BYTES * scales
        else:
            total += FLOAT32_BYTES * n
    return total


def float32_size_bytes(model: keras.Model) -> int:
    """Bytes of every floating-point variable of ``model`` stored as float32 (4 per element)."""
    return sum(
        FLOAT32_BYTES * int(np.prod(v.shape)) for v in model.weights if v.dtype.is_floating
    )
