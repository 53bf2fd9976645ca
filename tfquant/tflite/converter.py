"""The one place the TFLite converter runs: options -> ``TFLiteConverter`` -> bytes.

:func:`run_converter` builds ``tf.lite.TFLiteConverter`` from a Keras model or a SavedModel
directory, sets it from a :class:`ConverterOptions`, and converts with the converter's own
output captured (:func:`captured_output`); a failure becomes one :class:`TfquantError` line
built from the key line of the converter's message (:func:`key_message`).
:func:`quantize_annotated` runs only the converter's quantization step on a model annotated
with min/max ranges (the calibrate-then-quantize path of :mod:`tfquant.convert.calibrated`).

Private TensorFlow API used here, and why (TF 2.21 has no public alternative):

* ``converter._experimental_disable_per_channel``: per-tensor weights for conv and dense
  (the public converter only makes per-channel int8 weights);
* ``converter._experimental_calibrate_only``: stop after calibration and return the float
  model annotated with each tensor's min/max, so tfquant calibrators can replace them;
* ``lite._mlir_quantize`` (int8) and the calibration wrapper's ``QuantizeModel`` (int16x8):
  the quantizer the converter itself calls after calibration, run on an annotated model
  with nothing fed; then ``lite._modify_model_io_type`` and
  ``lite._deduplicate_readonly_buffers``, the converter's own last two steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Any, Callable, Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import lite as _lite
from tensorflow.lite.python.optimize import calibrator as _calibrator

from tfquant.errors import TfquantError

_OPS_SETS = {
    "int8": tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
    "int16x8": tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
}


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Captures fd 1/2 output, Python warnings and TF logging; yields a list filled on exit.

    The converter and calibrator write from C++ straight to the file descriptors, so
    redirecting ``sys.stderr`` is not enough.
    """
    captured: list[str] = []
    tf_logger = logging.getLogger("tensorflow")
    old_level = tf_logger.level
    saved: dict[int, int] = {}
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf_logger.setLevel(logging.ERROR)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a replaced stream may lack flush()
                stream.flush()  # so the caller's pending output is not captured
        for fd in (1, 2):
            saved[fd] = os.dup(fd)
            os.dup2(sink.fileno(), fd)
        try:
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            tf_logger.setLevel(old_level)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


_KEY_PATTERNS = (
    r"error: ([^\n]+)",
    r"(Quantization to [^\n]+)",
    r"(Failed to quantize[^\n]*)",
    r"([^\n]*not supported[^\n]*)",
    r"([^\n]*unsupported[^\n]*)",
)


def key_message(error: BaseException, log: str) -> str:
    """The one line of a converter failure that says what went wrong.

    The exception text is searched first: the captured log also holds unrelated lines
    (e.g. "CUDA error: Failed call to cuInit" on a machine without a GPU).
    """
    for text in (str(error), log):
        for pattern in _KEY_PATTERNS:
            m = re.search(pattern, text, flags=re.IGNORECASE)
            if m:
                return " ".join(m.group(1).split())[:300]
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return " ".join(first.split())[:300]


_KNOWN_FIXES = (
    (
        re.compile(r"TensorList\w*'? op requires element_shape to be static"),
        "the model has a recurrent layer (GRU / LSTM / SimpleRNN) over an input whose batch "
        "size is unknown: rebuild it with a fixed batch, e.g. i = keras.Input(shape, "
        "batch_size=1, dtype=...); keras.Model(i, model(i)).save(...), and convert that",
    ),
    (
        re.compile(r"Got value of type FLOAT\d* but expected type U?INT\d+ for input"),
        "the model's input is integer (e.g. token ids) and calibration feeds float inputs, so "
        "int8 / int16x8 cannot calibrate it; use --mode dynamic (int8 weights) or fp16",
    ),
)
"""Converter failures with a known cause: (pattern of the key line, the fix to print)."""


def _fix_for(key: str, hint: str) -> str:
    """The fix for a known converter failure, else the caller's generic ``hint``."""
    return next((fix for pattern, fix in _KNOWN_FIXES if pattern.search(key)), hint)


def run_captured(call: Callable[[], Any], *, failure: str, hint: str) -> Any:
    """Runs ``call()`` with the converter's output captured; a failure is one TfquantError.

    Args:
      call: the converter step to run.
      failure: what failed, the start of the message (``"TFLite converter failed for mode
        int8"``).
      hint: what to try, the end of the message.

    Raises:
      TfquantError: ``"{failure}: {key line of the converter's message}; {hint}"``.
    """
    with captured_output() as log:
        try:
            result = call()
            error: BaseException | None = None
        except Exception as e:  # ConverterError, RuntimeError, ValueError ...
            error = e
    if error is not None:
        key = key_message(error, "".join(log))
        raise TfquantError(f"{failure}: {key}; {_fix_for(key, hint)}") from None
    return result


@dataclasses.dataclass(frozen=True)
class ConverterOptions:
    """How to set up ``TFLiteConverter`` (the converter's own knobs, no tfquant recipe).

    Attributes:
      optimize: ``optimizations=[tf.lite.Optimize.DEFAULT]`` (weights quantized, or fp16).
      float16_weights: ``target_spec.supported_types=[tf.float16]``.
      per_tensor_weights: ``_experimental_disable_per_channel`` (one scale per weight).
      ops_set: ``"int8"`` (``TFLITE_BUILTINS_INT8``), ``"int16x8"``
        (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``) or ``None``
        (converter default).
      io_dtype: ``inference_input_type`` / ``inference_output_type`` (e.g. ``tf.int8``), or
        ``None`` for float I/O.
      calibrate_only: ``_experimental_calibrate_only``: return the float model annotated with
        calibrated min/max instead of the quantized one.
    """

    optimize: bool = False
    float16_weights: bool = False
    per_tensor_weights: bool = False
    ops_set: str | None = None
    io_dtype: Any = None
    calibrate_only: bool = False


def _configure(converter: tf.lite.TFLiteConverter, options: ConverterOptions, dataset: Any) -> None:
    if options.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.float16_weights:
        converter.target_spec.supported_types = [tf.float16]
    if options.per_tensor_weights:
        converter._experimental_disable_per_channel = True  # noqa: SLF001  (no public switch)
    if dataset is not None:
        converter.representative_dataset = dataset
    if options.ops_set is not None:
        converter.target_spec.supported_ops = [_OPS_SETS[options.ops_set]]
    if options.io_dtype is not None:
        converter.inference_input_type = options.io_dtype
        converter.inference_output_type = options.io_dtype
    converter._experimental_calibrate_only = options.calibrate_only  # noqa: SLF001


def run_converter(
    *,
    keras_model: Any = None,
    saved_model_dir: "str | os.PathLike[str] | None" = None,
    options: ConverterOptions = ConverterOptions(),
    representative_dataset: Any = None,
    failure: str = "TFLite converter failed",
    hint: str = "replace the op with TFLite builtin ops in the model",
) -> bytes:
    """Converts a Keras model (or a SavedModel directory) to .tflite bytes.

    Args:
      keras_model: the model to convert (``TFLiteConverter.from_keras_model``), or
      saved_model_dir: a SavedModel directory (``TFLiteConverter.from_saved_model``).
      options: the converter's settings.
      representative_dataset: calibration generator, for full-integer conversions.
      failure, hint: start and end of the error message (see :func:`run_captured`).

    Raises:
      TfquantError: the converter rejected the model (the message names the op).
    """
    if (keras_model is None) == (saved_model_dir is None):
        raise ValueError("pass exactly one of keras_model and saved_model_dir")

    def call() -> bytes:
        if saved_model_dir is not None:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        else:
            converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        _configure(converter, options, representative_dataset)
        return converter.convert()

    return run_captured(call, failure=failure, hint=hint)


def quantize_annotated(
    annotated: bytes, *, int16x8: bool, io_dtype: Any, per_tensor: bool, failure: str, hint: str
) -> bytes:
    """The converter's quantization step on a model annotated with min/max ranges.

    Args:
      annotated: a calibrate-only flatbuffer (see :class:`ConverterOptions`), its ranges
        possibly rewritten.
      int16x8: int16 activations / int8 weights / int64 bias (strict, no float fallback),
        else int8.
      io_dtype: the model's input and output type (``tf.float32``, ``tf.int8``, ``tf.int16``).
      per_tensor: one scale per weight tensor instead of per channel.
      failure, hint: start and end of the error message (see :func:`run_captured`).

    Returns:
      The quantized flatbuffer, I/O types set and read-only buffers deduplicated, as the
      converter leaves it.
    """

    def call() -> bytes:
        if not int16x8:
            out = _lite._mlir_quantize(  # noqa: SLF001
                annotated,
                per_tensor,
                input_data_type=io_dtype,
                output_data_type=io_dtype,
                enable_variable_quantization=False,
                disable_per_channel_for_dense_layers=False,
            )
        else:
            wrapper = _calibrator.Calibrator(annotated)._calibrator  # noqa: SLF001
            io_num = np.dtype(io_dtype.as_numpy_dtype).num
            out = wrapper.QuantizeModel(
                io_num,
                io_num,
                False,  # allow_float: int16x8 is strict (see tfquant/convert/converter.py)
                np.dtype(np.int16).num,
                np.dtype(np.int64).num,
                per_tensor,
                False,
            )
            out = _lite._modify_model_io_type(out, io_dtype, io_dtype)  # noqa: SLF001
        return bytes(_lite._deduplicate_readonly_buffers(out))  # noqa: SLF001

    return run_captured(call, failure=failure, hint=hint)
