"""A recipe as converter settings, and the converter run on a :class:`~.source.Source`.

The mode table is in :mod:`tfquant.convert.converter`'s docstring; the converter itself is
driven only by :mod:`tfquant.tflite.converter`. Shared by :mod:`tfquant.convert.converter`
and :mod:`tfquant.convert.calibrated`.
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf

from tfquant.convert import rewrites
from tfquant.convert.source import Source
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, IODType, Mode
from tfquant.recipes import Recipe
from tfquant.tflite import runtime_check
from tfquant.tflite.converter import ConverterOptions
from tfquant.tflite.converter import run_converter as _run_tflite_converter

IO_TF_DTYPE = {IODType.FLOAT32: tf.float32, IODType.INT8: tf.int8, IODType.INT16: tf.int16}

HINTS = {
    Mode.FP32: "replace the op with TFLite builtin ops in the model",
    Mode.FP16: "replace the op with TFLite builtin ops in the model",
    Mode.DYNAMIC: "replace the op with TFLite builtin ops in the model",
    Mode.INT8: "try mode dynamic or fp16, or replace the op in the model",
    Mode.INT16X8: "try mode int8 (int16x8 has fewer kernels), or replace the op in the model",
}
"""What to try when the converter rejects a model, per mode."""


def converter_options(recipe: Recipe, *, calibrate_only: bool = False) -> ConverterOptions:
    """The converter settings of ``recipe`` (see the mode table in ``converter.py``)."""
    mode = recipe.mode
    if mode is Mode.FP32:
        return ConverterOptions(calibrate_only=calibrate_only)
    if mode is Mode.FP16:
        return ConverterOptions(optimize=True, float16_weights=True, calibrate_only=calibrate_only)
    per_tensor = recipe.weight_granularity is Granularity.PER_TENSOR
    if mode is Mode.DYNAMIC:
        return ConverterOptions(
            optimize=True, per_tensor_weights=per_tensor, calibrate_only=calibrate_only
        )
    io_dtype = IO_TF_DTYPE[recipe.io_dtype] if recipe.io_dtype is not IODType.FLOAT32 else None
    return ConverterOptions(
        optimize=True,
        per_tensor_weights=per_tensor,
        ops_set="int8" if mode is Mode.INT8 else "int16x8",
        io_dtype=io_dtype,
        calibrate_only=calibrate_only,
    )


def run_converter(
    source: Source, recipe: Recipe, dataset: Any, *, calibrate_only: bool = False
) -> bytes:
    """Runs the TFLite converter as ``recipe`` says and returns its flatbuffer.

    With ``calibrate_only`` the converter stops after calibration and returns the float
    model annotated with each tensor's calibrated min/max, the input of
    :mod:`tfquant.convert.calibrated`. ``dataset`` (the representative dataset) is used by
    int8 and int16x8 only.
    """
    model = source.keras_model
    if recipe.mode.needs_calibration and model is not None:
        _refuse_looped_recurrent_layers(model, recipe.mode)
    if recipe.mode.needs_calibration and source.tensorlist_loops:
        loops = source.tensorlist_loops
        shown = ", ".join(repr(n) for n in loops[:3]) + (" ..." if len(loops) > 3 else "")
        raise TfquantError(
            f"mode {recipe.mode} cannot calibrate the SavedModel's WHILE loop(s) over TensorLists "
            f"({shown}: a GRU / SimpleRNN that is not unrolled, or a tf.while_loop over a "
            "TensorArray), on which TensorFlow's calibrator crashes; re-export with unroll=True "
            "(or LSTM), or use --mode dynamic or fp16"
        )
    if recipe.mode is Mode.INT16X8 and model is not None:
        # Exact in float: LayerNormalization (LiteRT has no int16 SQUARED_DIFFERENCE kernel)
        # and hard-swish (the converter cannot quantize the fused HARD_SWISH to 16x8) are
        # rewritten into ops with int16 kernels (see converter.py's docstring).
        model = rewrites.rewrite_for_int16x8(model)
    return _run_tflite_converter(
        keras_model=model if source.savedmodel_dir is None else None,
        saved_model_dir=source.savedmodel_dir,
        options=converter_options(recipe, calibrate_only=calibrate_only),
        representative_dataset=dataset if recipe.mode.needs_calibration else None,
        failure=f"TFLite converter failed for mode {recipe.mode}",
        hint=HINTS[recipe.mode],
    )


def looped_recurrent_layers(model: Any) -> list[str]:
    """Names of ``model``'s recurrent layers that convert to a WHILE loop: every
    ``keras.layers.RNN`` (GRU, SimpleRNN, RNN over any cell, also inside Bidirectional) that
    is not unrolled, except LSTM (the converter fuses it into UNIDIRECTIONAL_SEQUENCE_LSTM)."""
    import tf_keras as keras

    found = []
    for layer in model.submodules:
        if (isinstance(layer, keras.layers.RNN) and not isinstance(layer, keras.layers.LSTM)
                and not getattr(layer, "unroll", False)):
            found.append(layer.name)
    return found


def _refuse_looped_recurrent_layers(model: Any, mode: Mode) -> None:
    """TensorFlow 2.21's calibrator (``tf.lite`` ``_feed_tensors``) crashes the process with a
    segmentation fault on a WHILE loop from a GRU / SimpleRNN layer (measured: GRU, SimpleRNN
    and Bidirectional(GRU) with a fixed batch, int8 and int16x8; LSTM and ``unroll=True``
    convert), so such a model is refused before the converter runs."""
    names = looped_recurrent_layers(model)
    if names:
        shown = ", ".join(repr(n) for n in names[:3]) + (" ..." if len(names) > 3 else "")
        raise TfquantError(
            f"mode {mode} cannot calibrate recurrent layer(s) {shown}: they convert to a WHILE "
            "loop, on which TensorFlow's calibrator crashes; rebuild them with unroll=True "
            "(or use LSTM), or use --mode dynamic or fp16"
        )


def check_int16x8_runs(tflite: bytes) -> None:
    """Raises a TfquantError unless the int16x8 model runs in the installed LiteRT."""
    missing = runtime_check.int16_ops_without_kernel(tflite)
    if missing:
        raise TfquantError(
            f"the int16x8 model uses {', '.join(missing)} with int16 inputs, which LiteRT "
            "cannot run (Keras LayerNormalization lowers to SQUARED_DIFFERENCE); use mode "
            "int8, or replace the op in the model"
        )
    runtime_check.check_runs(tflite, what="the int16x8 model")
