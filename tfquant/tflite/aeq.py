"""AI Edge Quantizer (ai-edge-quantizer 0.10): per-op static quantization with injected ranges.

The one place tfquant calls AEQ. :func:`quantize` takes a float .tflite, one precision per
op (int8 / int16 activations with int8 weights; unlisted ops stay float) and a range per
activation tensor chosen by tfquant's calibrators, and returns the mixed model. AEQ inserts
QUANTIZE ops where int8 and int16 meet and QUANTIZE / DEQUANTIZE where integer and float
meet. Why AEQ for mixed models (and not the converter's quantizer, which has one inference
type per model): BUILD_NOTES.md, "Mixed precision (issue 11)".

Every op gets its own AEQ rule, whose regex is the op's *scope* (its output tensor names
joined by ``;`` plus a trailing ``;``, AEQ's ``get_op_scope``) anchored and escaped, so
tfquant decides the precision of each op itself (its rules: :mod:`tfquant.recipes.layers`)
and AEQ's own rule-order semantics never come into play.

AEQ stores the bias of a quantized CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED as int32
``round(b_c / (s_in · s_w,c))`` (int64 holding the same values for int16 activations) and does
not check the range (``symmetric_quantize_bias_tensor``, ``check_error=False``): it clips in
float32, where 2^31 - 1 rounds up to 2^31, so an overflowing bias *wraps* to -2^31, sign
flipped, without a message. :func:`bias_ratios` and :func:`bias_overflow` predict this from
the float model and the injected ranges with AEQ's own scale formula, so the caller can keep
such an op float (:func:`tfquant.convert.mixed.plan`).
"""

from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import numpy as np

from tfquant.errors import TfquantError

_BITS = {"int8": 8, "int16x8": 16}

BIAS_LIMIT = float(np.nextafter(np.float32(2**31), np.float32(0)))
"""Largest |b_c| / (s_in · s_w,c) AEQ's int32 bias holds: the largest float32 below 2^31
(2^31 - 128; above it AEQ's float32 clip reaches 2^31 and the int32 cast wraps)."""


def _modules():  # imported lazily: AEQ pulls TensorFlow in
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    return algorithm_manager, qtyping, quantizer


def op_scope(output_names: Sequence[str]) -> str:
    """AEQ's scope of an op whose outputs are ``output_names`` (``get_op_scope``)."""
    names = [n for n in output_names if n]
    return ";".join(names) + (";" if names else "")


def supports(op_type: str, precision: str, *, per_channel: bool = True) -> bool:
    """Whether AEQ has a static ``precision`` (int8 / int16x8) config for ``op_type``."""
    algorithm_manager, qtyping, _ = _modules()
    try:
        op = qtyping.TFLOperationName(op_type)
    except ValueError:
        return False
    try:
        algorithm_manager.check_op_quantization_config(
            algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT, op, _op_config(precision, per_channel)
        )
    except ValueError:
        return False
    return True


def _scale(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """AEQ's scale for (min, max) (``tensor_zp_scale_from_min_max``: symmetric bound / q_max,
    else (max(hi, 0) - min(lo, 0)) / (2^bits - 1))."""
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor

    _, qtyping, _ = _modules()
    _, scale = uniform_quantize_tensor.tensor_zp_scale_from_min_max(
        np.asarray(lo, np.float32), np.asarray(hi, np.float32), bits, symmetric,
        qtyping.QuantGranularity.TENSORWISE)
    return np.asarray(scale, np.float64)


def bias_ratios(float_tflite: bytes, *, per_channel: bool = True) -> dict[str, tuple[str, np.ndarray]]:
    """op scope -> (its activation input's name, |b_c| / s_w,c per output channel) for every
    CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op of the float model with constant weights
    and bias. s_w,c = max|W_c| / 127: AEQ's symmetric int8 weight scale per output channel
    (per_channel) or of the whole kernel. The op's int32 bias is then
    round(ratio_c / s_in): see :func:`bias_overflow`."""
    from tfquant.tflite import flatbuffer

    model = flatbuffer.read(float_tflite)
    out = {}
    for w in flatbuffer.weighted_ops(model):
        if w.bias < 0:
            continue
        try:
            kernel, bias = flatbuffer.tensor_data(model, w.weight), flatbuffer.tensor_data(model, w.bias)
        except TfquantError:  # weights computed at run time: no constant to scale
            continue
        axes = tuple(a for a in range(kernel.ndim) if a != w.channel_axis) if per_channel else None
        bound = np.max(np.abs(kernel), axis=axes)
        s_w = _scale(-bound, bound, 8, True)
        op = model.subgraphs[0].operators[w.position]
        scope = op_scope([flatbuffer.name(model.subgraphs[0].tensors[i].name) for i in op.outputs if i >= 0])
        out[scope] = (flatbuffer.tensor_info(model, w.input)[0],
                      np.abs(bias.astype(np.float64)).reshape(-1) / s_w)
    return out


def bias_overflow(ratios: np.ndarray, input_range: tuple[float, float], precision: str, *,
                  int8_symmetric: bool = False) -> float:
    """max_c |b_c| / (s_in · s_w,c): the largest int32 bias AEQ would write for an op whose
    :func:`bias_ratios` entry is ``ratios`` and whose input has ``input_range`` (s_in: AEQ's
    activation scale at ``precision``, int16 symmetric). Above :data:`BIAS_LIMIT` it wraps."""
    bits = _BITS[precision]
    s_in = _scale(np.float32(input_range[0]), np.float32(input_range[1]), bits, bits == 16 or int8_symmetric)
    return float(np.max(ratios) / float(s_in)) if ratios.size else 0.0


def _op_config(precision: str, per_channel: bool, int8_symmetric: bool = False):
    _, qtyping, _ = _modules()
    bits = _BITS[precision]
    return qtyping.OpQuantizationConfig(
        activation_tensor_config=qtyping.TensorQuantizationConfig(
            num_bits=bits, symmetric=bits == 16 or int8_symmetric, granularity=qtyping.QuantGranularity.TENSORWISE
        ),
        weight_tensor_config=qtyping.TensorQuantizationConfig(
            num_bits=8,
            symmetric=True,
            granularity=(
                qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
            ),
        ),
        compute_precision=qtyping.ComputePrecision.INTEGER,
        explicit_dequantize=False,
    )


def quantize(
    float_tflite: bytes,
    op_precisions: Mapping[str, tuple[str, str]],
    ranges: Mapping[str, tuple[float, float]],
    *,
    per_channel: bool = True,
    int8_symmetric: bool = False,
) -> bytes:
    """Quantizes ``float_tflite`` op by op.

    Args:
      float_tflite: the float model.
      op_precisions: op scope (:func:`op_scope`) -> (TFLite op name, ``int8`` or
        ``int16x8``). Ops not listed stay float.
      ranges: activation tensor name -> (min, max), for every non-constant float tensor
        that a quantized op reads or writes (AEQ's injected calibration result).
      per_channel: per-output-channel weight scales (else one per tensor).
      int8_symmetric: int8 activations with zero point 0 (else affine).

    Raises:
      TfquantError: AEQ rejected the configuration.
    """
    algorithm_manager, qtyping, quantizer = _modules()
    q = quantizer.Quantizer(bytearray(float_tflite))
    if not op_precisions:
        return bytes(float_tflite)
    for scope, (op_type, precision) in op_precisions.items():
        q.update_quantization_recipe(
            regex="^" + re.escape(scope) + "$",
            operation_name=qtyping.TFLOperationName(op_type),
            op_config=_op_config(precision, per_channel, int8_symmetric),
            algorithm_key=algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT,
        )
    qsv = {
        name: {"min": np.array(lo, dtype=np.float32), "max": np.array(hi, dtype=np.float32)}
        for name, (lo, hi) in ranges.items()
    }
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # AEQ logs a line per op otherwise
    try:
        result = q.quantize(qsv, enable_progress_report=False, enable_progress_bar=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise TfquantError(
            f"AI Edge Quantizer could not quantize the mixed model: {' '.join(str(e).split())[:300]}; "
            "set the failing op to float with a layer rule"
        ) from None
    finally:
        logging.getLogger().setLevel(level)
    return bytes(result.quantized_model)
