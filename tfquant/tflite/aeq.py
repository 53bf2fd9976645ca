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
"""

from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import numpy as np

from tfquant.errors import TfquantError

_BITS = {"int8": 8, "int16x8": 16}


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
