"""QAT Keras model -> int8 .tflite, and what its weights look like once exported.

:func:`export_tflite` runs ``TFLiteConverter.from_keras_model(qat_model)`` with
``optimizations=[DEFAULT]`` and no representative dataset: every fake quant's range becomes
the int8 scale and zero point of its tensor (Δ = (max - min) / (2^b - 1) for activations,
max|w| / (2^(b-1) - 1) for weights), so the .tflite computes what the QAT model simulated.
The I/O stays float32 (QUANTIZE / DEQUANTIZE at the edges), as in ``tfquant.convert``'s int8
default. The converter leaves in float any op whose tensors carry no fake-quant range (it
refuses ``TFLITE_BUILTINS_INT8`` without a representative dataset, so that switch cannot
enforce int8); :func:`export_tflite` therefore reads the ops back and, unless
``allow_float_ops=True`` (needed with ``skip_layers``), fails naming the float ops, so an
export is int8 end to end or an error.

Sub-8-bit weights: the converter reads each weight fake quant's ``num_bits`` and writes int8
values on the b-bit grid: at most 2^b - 1 evenly spaced values per channel, q = k·g with
|k| <= 2^(b-1) - 1 (at 4 bits g = 1, q in [-7, 7], Δ = max|w| / 7; at 2 bits the converter
uses its 4-bit storage and writes q in {-7, 0, 7} with Δ = max|w| / 7): the int8 kernels run
them unchanged. (TRANSPOSE_CONV kernels get there through
:class:`~tfquant.qat.quantizers.TransposeKernelQuantizer`.) A BatchNormalization
that follows a conv is folded by the converter into the per-channel scales, not the values.
:func:`weight_levels` reads the int8 weights back to check it. Sub-8-bit *activations*
cannot be exported (TFLite has no such kernels); :func:`export_tflite` refuses them.

The exported model carries no tfquant recipe: :class:`~tfquant.recipes.Recipe` describes
post-training conversions, and nothing of it applies to a QAT export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite.converter import ConverterOptions, run_converter
from tfquant.tflite.interpreter import ModelLike, make_interpreter, ops_details
from tfquant.tflite.tfmot_internals import quantize_layer
from tfquant.tflite import tfmot_internals

_qk = tfmot.quantization.keras
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# Weight operand index per op (TRANSPOSE_CONV's inputs are output_shape, weights, input).
_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}


def _quantizers(qat_model: keras.Model) -> Iterator[tuple[str, str, object]]:
    """``(layer name, role, quantizer)`` for every fake quantizer in a QAT model."""
    for layer in qat_model.layers:
        if isinstance(layer, quantize_layer.QuantizeLayer) and layer.quantizer is not None:
            yield layer.name, "input", layer.quantizer
        elif isinstance(layer, _qk.QuantizeWrapper):
            for _, quantizer, _ in tfmot_internals.weight_quantizers(layer):
                yield layer.name, "weight", quantizer
            for activation in tfmot_internals.activation_quantizers(layer):
                yield layer.name, "activation", activation.quantizer
            for quantizer in tfmot_internals.output_quantizers(layer):
                yield layer.name, "output", quantizer


def activation_bits(qat_model: keras.Model) -> dict[str, int]:
    """``{layer name: bits}`` of every activation / output / input fake quantizer."""
    return {
        name: int(q.num_bits)
        for name, role, q in _quantizers(qat_model)
        if role != "weight" and hasattr(q, "num_bits")
    }


def weight_bits(qat_model: keras.Model) -> dict[str, int]:
    """``{layer name: bits}`` of every weight fake quantizer."""
    return {
        name: int(q.num_bits)
        for name, role, q in _quantizers(qat_model)
        if role == "weight" and hasattr(q, "num_bits")
    }


def _check_qat_model(qat_model: object) -> keras.Model:
    if not isinstance(qat_model, keras.Model):
        raise TfquantError(
            f"qat_model must be a tf_keras Model, got {type(qat_model).__name__}; make one "
            "with tfquant.qat.quantize_for_training"
        )
    if not any(True for _ in _quantizers(qat_model)):
        raise TfquantError(
            f"model {qat_model.name!r} has no fake quantizers; make it with "
            "tfquant.qat.quantize_for_training first (or use tfquant.convert.convert "
            "for post-training quantization)"
        )
    return qat_model


def export_tflite(qat_model: keras.Model, *, allow_float_ops: bool = False) -> bytes:
    """Converts a QAT model to an int8 .tflite whose scales are the fake-quant ranges.

    The weight ranges must be the current kernels' (:func:`~tfquant.qat.finetune`
    and :func:`~tfquant.qat.quantize_for_training` leave them so; after your own
    training loop or ``load_weights``, call :func:`~tfquant.qat.sync_weight_ranges`):
    where the converter folds a BatchNormalization it re-derives weight scales from the
    kernel, so a stale range makes the .tflite's weight grid differ from the QAT model's.

    Args:
      qat_model: A model from :func:`~tfquant.qat.quantize_for_training` (fine-tuned
        or not) with 8-bit activations.
      allow_float_ops: Also allow float builtin ops, for layers left unquantized with
        ``skip_layers``; without it the export is int8 end to end or fails.

    Returns:
      The .tflite flatbuffer (float32 input and output, int8 inside).

    Raises:
      TfquantError: not a QAT model; sub-8-bit activations (simulation-only); the converter
        rejected the model (the message names the op).
    """
    qat_model = _check_qat_model(qat_model)
    low = {name: b for name, b in activation_bits(qat_model).items() if b != 8}
    if low:
        name, bits = next(iter(low.items()))
        raise TfquantError(
            f"layer {name!r} has {bits}-bit activations, which TFLite cannot run (int8 "
            "activation kernels only); evaluate the QAT Keras model in simulation, or "
            "quantize with activation_bits=8 to export"
        )
    tflite = run_converter(
        keras_model=qat_model,
        options=ConverterOptions(optimize=True),
        failure=f"TFLite converter failed on QAT model {qat_model.name!r}",
        hint="replace the op in the model or leave its layer unquantized with skip_layers=[...] "
             "(qat --skip_layers NAME)",
    )
    if not allow_float_ops:
        floats = float_ops(tflite)
        if floats:
            raise TfquantError(
                f"the export of QAT model {qat_model.name!r} has float ops "
                f"{', '.join(floats[:4])}{' ...' if len(floats) > 4 else ''} (no fake-quant "
                "range reached them); quantize the layers that make them, or pass "
                "allow_float_ops=True to keep them in float"
            )
    return tflite


def float_ops(tflite: ModelLike) -> list[str]:
    """Ops of the main subgraph that compute in float: ``NAME(first name of its output)``.

    QUANTIZE and DEQUANTIZE (the float I/O edges) are not counted.
    """
    interpreter = make_interpreter(tflite, runtime=Runtime.BUILTIN)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    out = []
    for op in ops_details(interpreter):
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        tensors = [int(i) for i in list(op["inputs"]) + list(op["outputs"]) if int(i) >= 0]
        if any(np.dtype(details[i]["dtype"]) == np.float32 for i in tensors):
            output = details[int(op["outputs"][0])]["name"] if len(op["outputs"]) else "?"
            out.append(f"{op['op_name']}({output.split(';')[0]})")
    return out


@dataclasses.dataclass(frozen=True)
class WeightLevels:
    """The int8 weights of one op of an exported model, as read back.

    Attributes:
      op: Builtin op name (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``,
        ``TRANSPOSE_CONV``).
      tensor: Weight tensor name.
      shape: Weight tensor shape.
      num_scales: 1 (per tensor) or one per output channel.
      quantized_dimension: The channel axis of the scales.
      max_distinct_per_channel: Largest number of distinct int8 values in one output
        channel (<= 2^b - 1 for b-bit narrow-range weights).
      qmin: Smallest int8 value.
      qmax: Largest int8 value.
      values: The distinct int8 values of the whole tensor, ascending.
      index: The weight tensor's index in the model.
      scales: The tensor's float scales (one per output channel, or one).
    """

    op: str
    tensor: str
    shape: tuple[int, ...]
    num_scales: int
    quantized_dimension: int
    max_distinct_per_channel: int
    qmin: int
    qmax: int
    values: tuple[int, ...]
    index: int = -1
    scales: tuple[float, ...] = ()

    @property
    def grid_step(self) -> int:
        """g, the gcd of the values: every value is k·g (1 for a dense int8 tensor)."""
        return int(np.gcd.reduce(np.abs(np.asarray(self.values, dtype=np.int64)))) or 1


def weight_levels(tflite: ModelLike) -> list[WeightLevels]:
    """Reads back the int8 weights of every conv / depthwise / fully-connected op.

    Channels are taken along the tensor's quantized dimension (TFLite: axis 0 for CONV_2D,
    FULLY_CONNECTED and TRANSPOSE_CONV, axis 3 for DEPTHWISE_CONV_2D); a per-tensor weight
    is split along the same output-channel axis.

    Raises:
      TfquantError: missing or corrupt model.
    """
    interpreter = make_interpreter(tflite, runtime=Runtime.BUILTIN, allocate=True)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    out = []
    for op in ops_details(interpreter):
        name = op["op_name"]
        if name not in _WEIGHT_OPS:
            continue
        index = int(op["inputs"][_WEIGHT_INPUT[name]])
        d = details[index]
        if np.dtype(d["dtype"]) != np.int8:
            continue
        w = interpreter.get_tensor(index)
        qp = d["quantization_parameters"]
        axis = 3 if name == "DEPTHWISE_CONV_2D" else 0
        channels = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        out.append(
            WeightLevels(
                op=name,
                tensor=str(d["name"]),
                shape=tuple(int(s) for s in w.shape),
                num_scales=int(np.size(qp["scales"])),
                quantized_dimension=int(qp["quantized_dimension"]),
                max_distinct_per_channel=max(len(np.unique(c)) for c in channels),
                qmin=int(w.min()),
                qmax=int(w.max()),
                values=tuple(int(v) for v in np.unique(w)),
                index=index,
                scales=tuple(float(v) for v in np.ravel(qp["scales"])),
            )
        )
    return out


def stored_weight_types(tflite: ModelLike) -> dict[str, int]:
    """How many conv / depthwise / fully-connected / transpose-conv weight tensors the
    flatbuffer stores as each type (``INT4``, ``INT8``, ``FLOAT32``): the converter packs
    4-bit QAT kernels as INT4, which LiteRT unpacks to int8 at load, so only the flatbuffer
    (:func:`tfquant.tflite.flatbuffer.weight_tensors`) tells."""
    from tfquant.tflite.flatbuffer import model_bytes, weight_tensors

    out: dict[str, int] = {}
    for w in weight_tensors(model_bytes(tflite)):
        out[w.stored_type] = out.get(w.stored_type, 0) + 1
    return out


def grid_levels(tflite: ModelLike, bits: int) -> dict[str, Any]:
    """Whether a .tflite's int8 weights sit on a ``bits``-bit grid: at most 2^b - 1 distinct
    int8 values in every output channel (:func:`weight_levels`).

    Returns record fields: ``weight_levels`` (per int8 weight tensor, in tensor order: its
    name, shape, number of scales and most distinct values in one channel),
    ``max_distinct_per_channel``, ``allowed_levels`` (2^b - 1) and ``on_b_bit_grid``.

    Raises:
      TfquantError: as :func:`weight_levels`.
    """
    levels = [{"tensor": w.tensor, "shape": list(w.shape), "num_scales": w.num_scales,
               "max_distinct_per_channel": w.max_distinct_per_channel}
              for w in sorted(weight_levels(tflite), key=lambda w: w.index)]
    allowed = 2 ** bits - 1
    return {"weight_levels": levels,
            "max_distinct_per_channel": max(w["max_distinct_per_channel"] for w in levels),
            "allowed_levels": allowed,
            "on_b_bit_grid": all(w["max_distinct_per_channel"] <= allowed for w in levels)}
