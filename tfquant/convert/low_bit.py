"""Sub-8-bit weights, ACIQ bit allocation and bias correction, as runnable int8 models.

A post-conversion rewrite of a calibrated int8 model (:mod:`tfquant.convert.calibrated`).
TFLite's int8 weights are symmetric with one scale per output channel, so an output channel
c can live on its own b_c-bit grid inside int8 storage: integers in
[-(2^(b_c-1) - 1), 2^(b_c-1) - 1] with scale Δ_c = α_c / (2^(b_c-1) - 1). The int8 kernels
run it unchanged; only the stored values and scales differ. For every CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED op whose weights the converter made int8:

1. the float weights W come from the calibrated float model (same tensor name; clipped
   there already when a weight calibrator other than max was asked for), α_c = max|W_c|;
2. bit widths b_c: the recipe's recorded ``channel_bits`` if it has them, else
   ``weight_bits`` for every channel (uniform) or the ACIQ allocation
   (:func:`tfquant.algorithms.aciq_allocation.allocate_bits`: 2^b_c ∝ α_c^(2/3), mean exactly
   ``weight_bits``);
3. W is rounded onto the channels' grids (:func:`tfquant.algorithms.bias_correction.quantize_channels`);
4. bias correction (:func:`tfquant.algorithms.bias_correction.correct`): mean_std scales
   Δ_c by the spread ratio ξ_c; mean and mean_std add Σ_k (W_k,c - W'_k,c)·E[x_k] to the
   bias, with E[x] the per-channel mean of the op's input over the calibration set (from
   the statistics pass that chose the activation ranges, so no second pass); sequential
   adds Σ_k W_k,c·E[x_k] - Σ_k W'_k,c·E[x'_k], with E[x'] measured in the float model whose
   earlier layers already hold their quantized, corrected weights (one pass per layer, in
   op order), so each bias also absorbs the shift its quantized inputs bring;
5. the int32 bias is re-expressed in its new scale s_in·Δ_c (TFLite requires bias scale =
   input scale × weight scale). An op without a bias (the converter turns a Dense layer's
   bias into a separate ADD) gets a new int32 bias holding the correction alone.

The layout of E[x_k] per weight follows the op: CONV_2D weights (O, H, W, I) read input
channel i at every (h, w); DEPTHWISE_CONV_2D (1, H, W, I·m) channel c reads input channel
c // m; FULLY_CONNECTED (O, I) reads feature i (when the input's last axis is not I, the
per-tensor mean is used for every k). Zero padding at the borders is ignored (the
expectation is that of an interior output position).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfquant.algorithms.aciq_allocation import allocate_bits, uniform_bits
from tfquant.algorithms.bias_correction import correct, quantize_channels
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError
from tfquant.qtypes import BiasCorrection, WeightBitAllocation
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer

_INT32 = np.iinfo(np.int32)


def _as_matrix(w: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """W (any layout) -> (K, C) with the channel axis last, and the moved shape."""
    moved = np.moveaxis(w, axis, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape


def _from_matrix(m: np.ndarray, moved_shape: tuple[int, ...], axis: int) -> np.ndarray:
    return np.moveaxis(m.reshape(moved_shape), -1, axis)


def _input_statistics(
    model: Any, index: int, statistics: Mapping[str, TensorStatistics]
) -> TensorStatistics | None:
    """Statistics of the op input ``index``: by name, or (for the model input, which a
    QUANTIZE op turns into the int8 tensor) those of the QUANTIZE op's float input."""
    name, _, _ = flatbuffer.tensor_info(model, index)
    if name in statistics:
        return statistics[name]
    producer = flatbuffer.producer_inputs(model, index)
    if producer is not None and producer[0] == "QUANTIZE":
        source, _, _ = flatbuffer.tensor_info(model, producer[1][0])
        return statistics.get(source)
    return None


def expected_input(op: flatbuffer.WeightedOp, weight_shape: tuple[int, ...],
                   stats: TensorStatistics) -> np.ndarray:
    """E[x_k] for every weight of ``op``, broadcastable to its (K, C) matrix."""
    mu = stats.channel_mean
    if op.op == "DEPTHWISE_CONV_2D":
        channels = weight_shape[3]
        if mu is not None and channels % mu.size == 0:
            return np.repeat(mu, channels // mu.size)[None, :]
        return np.full((1, 1), stats.mean)
    if op.op == "CONV_2D":
        _, h, w, i = weight_shape
        if mu is not None and mu.size == i:
            return np.broadcast_to(mu, (h, w, i)).reshape(-1, 1)
        return np.full((1, 1), stats.mean)
    if mu is not None and mu.size == weight_shape[1]:  # FULLY_CONNECTED (O, I)
        return mu.reshape(-1, 1)
    return np.full((1, 1), stats.mean)


def rewrite(
    tflite: bytes,
    float_model: bytes,
    statistics: Mapping[str, TensorStatistics],
    recipe: Recipe,
    *,
    inputs: np.ndarray | None = None,
) -> tuple[bytes, dict[str, tuple[int, ...]]]:
    """Puts the weights of ``tflite`` on the recipe's per-channel grids (module docstring).

    Args:
      tflite: the int8 model the converter's quantizer made from ``float_model``.
      float_model: the calibrated float model (float weights, same tensor names).
      statistics: the calibration statistics by tensor name (for bias correction).
      recipe: ``weight_bits``, ``weight_bit_allocation``, ``bias_correction`` and, when
        set, ``channel_bits`` to reproduce.
      inputs: the calibration inputs; bias correction ``sequential`` runs the float model,
        with the layers done so far replaced by their quantized, corrected weights, over
        them once per layer to get E[x'] of the next layer's input.

    Returns:
      ``(model bytes, weight tensor name -> bit width of each output channel)``.

    Raises:
      TfquantError: recorded ``channel_bits`` that do not fit the model, or bias correction
        without statistics for an op's input.
    """
    model = flatbuffer.read(tflite)
    source = flatbuffer.read(float_model)
    floats = {}
    for i in range(len(source.subgraphs[0].tensors)):
        tname, kind, _ = flatbuffer.tensor_info(source, i)
        if kind == "FLOAT32":
            floats.setdefault(tname, i)
    method = recipe.bias_correction
    sequential = method is BiasCorrection.SEQUENTIAL
    if sequential and inputs is None:
        raise TfquantError(
            "bias correction sequential needs the calibration inputs; calibrate with "
            "tfquant.convert.calibrated.calibrate (it keeps them)"
        )
    float_ops = {flatbuffer.tensor_info(source, f.weight)[0]: f for f in flatbuffer.weighted_ops(source)}
    recorded = recipe.channel_bits or {}
    bits_by_tensor: dict[str, tuple[int, ...]] = {}
    done: set[int] = set()
    for op in flatbuffer.weighted_ops(model):
        wname, wtype, wshape = flatbuffer.tensor_info(model, op.weight)
        if wtype != "INT8" or op.weight in done:
            continue
        done.add(op.weight)
        scales, _, qdim = flatbuffer.tensor_quantization(model, op.weight)
        if wname in floats and flatbuffer.tensor_info(source, floats[wname])[2] == wshape:
            w = flatbuffer.tensor_data(source, floats[wname]).astype(np.float64)
        else:  # the converter renamed it: its int8 values are the best float copy left
            q8 = flatbuffer.tensor_data(model, op.weight).astype(np.float64)
            shape = [-1 if a == qdim else 1 for a in range(q8.ndim)]
            w = q8 * (scales.reshape(shape) if scales.size > 1 else scales[0])
        per_channel = scales.size > 1
        w2, moved = _as_matrix(w, op.channel_axis)
        channels = w2.shape[1]
        if per_channel:
            alpha = np.max(np.abs(w2), axis=0)
        else:
            alpha = np.full(channels, np.max(np.abs(w2)))
        if wname in recorded:
            bits = np.asarray(recorded[wname], np.int64)
            if bits.size != channels:
                raise TfquantError(
                    f"the recipe's channel_bits for {wname!r} has {bits.size} entries but the "
                    f"tensor has {channels} output channels; drop channel_bits from the recipe"
                )
        elif recipe.weight_bit_allocation is WeightBitAllocation.ACIQ and per_channel:
            bits = allocate_bits(alpha, recipe.weight_bits)
        else:
            bits = uniform_bits(channels, recipe.weight_bits)
        q, scale = quantize_channels(w2, alpha, bits)
        if not per_channel:
            scale = scale[:1]
        delta = np.zeros(channels)
        if method is not BiasCorrection.NONE:
            stats = _input_statistics(model, op.input, statistics)
            if stats is None:
                raise TfquantError(
                    f"no calibration statistics for the input of {wname!r}, so its bias cannot "
                    "be corrected; use --bias_correction none"
                )
            use = method if per_channel and method is BiasCorrection.MEAN_STD else BiasCorrection.MEAN
            fop = float_ops.get(wname) if sequential else None
            expected_q = None
            if fop is not None:
                from tfquant.calibration import collect_statistics

                name_in = flatbuffer.tensor_info(source, fop.input)[0]
                seen = collect_statistics(flatbuffer.write(source), inputs, {fop.input: name_in})
                expected_q = expected_input(op, wshape, seen.tensors[name_in])
            scale_c, delta = correct(
                w2, q, np.broadcast_to(scale, (channels,)), expected_input(op, wshape, stats), use,
                expected_quantized_input=expected_q,
            )
            if fop is not None:  # the work model now holds this layer as quantized
                w_new = _from_matrix(q * np.broadcast_to(scale_c, (channels,)), moved, op.channel_axis)
                flatbuffer.set_float_data(source, fop.weight, w_new)
                if fop.bias >= 0 and flatbuffer.tensor_info(source, fop.bias)[1] == "FLOAT32":
                    b = flatbuffer.tensor_data(source, fop.bias).astype(np.float64)
                    flatbuffer.set_float_data(source, fop.bias, b + delta)
            scale = scale_c if per_channel else scale
        flatbuffer.set_tensor_data(
            model, op.weight, _from_matrix(q, moved, op.channel_axis).astype(np.int8),
            scales=scale, quantized_dimension=qdim,
        )
        if op.bias >= 0:
            _rewrite_bias(model, op, scale, delta)
        elif method is not BiasCorrection.NONE:  # e.g. a Dense whose bias became an ADD
            _add_bias(model, op, wname, scale, delta)
        bits_by_tensor[wname] = tuple(int(b) for b in bits)
    return flatbuffer.write(model), bits_by_tensor


def _rewrite_bias(model: Any, op: flatbuffer.WeightedOp, weight_scale: np.ndarray, delta: np.ndarray) -> None:
    """b_float + delta re-expressed as int32 at scale s_in·Δ_c."""
    _, btype, _ = flatbuffer.tensor_info(model, op.bias)
    if btype != "INT32":
        return
    old = flatbuffer.tensor_data(model, op.bias).astype(np.float64)
    old_scales, _, _ = flatbuffer.tensor_quantization(model, op.bias)
    in_scales, _, _ = flatbuffer.tensor_quantization(model, op.input)
    b = old * old_scales + delta
    new_scales = float(in_scales[0]) * np.asarray(weight_scale, np.float64)
    q = np.clip(np.round(b / new_scales), _INT32.min, _INT32.max).astype(np.int32)
    flatbuffer.set_tensor_data(model, op.bias, q, scales=new_scales, quantized_dimension=0)


def _add_bias(model: Any, op: flatbuffer.WeightedOp, wname: str, weight_scale: np.ndarray,
              delta: np.ndarray) -> None:
    """A new int32 bias holding only the correction, for an op that had none."""
    in_scales, _, _ = flatbuffer.tensor_quantization(model, op.input)
    scales = float(in_scales[0]) * np.broadcast_to(np.asarray(weight_scale, np.float64), delta.shape)
    q = np.clip(np.round(delta / scales), _INT32.min, _INT32.max).astype(np.int32)
    flatbuffer.add_bias(model, op.position, q, scales=scales if np.size(weight_scale) > 1 else scales[:1],
                        tensor_name=f"{wname}/tfquant_bias_correction")
