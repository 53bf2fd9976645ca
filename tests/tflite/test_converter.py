"""The converter call: options applied, output captured, failures as one line."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.tflite.conftest import representative
from tfquant.errors import TfquantError
from tfquant.tflite import flatbuffer
from tfquant.tflite.converter import ConverterOptions, key_message, run_captured, run_converter


def test_converter_output_is_captured_and_failure_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    def noisy_failure() -> None:
        os.write(2, b"some C++ log line\nerror: 'tf.Foo' op is neither a custom op nor a flex op\n")
        raise RuntimeError("conversion failed, see log")

    with pytest.raises(TfquantError) as info:
        run_captured(noisy_failure, failure="TFLite converter failed for mode int8", hint="try fp16")
    assert str(info.value) == (
        "TFLite converter failed for mode int8: 'tf.Foo' op is neither a custom op nor a flex "
        "op; try fp16"
    )
    out, err = capfd.readouterr()
    assert "C++ log line" not in out + err


def test_key_message_prefers_the_exception_over_the_log() -> None:
    error = ValueError("Quantization to 16x8-bit not yet supported for op: 'POW'.")
    assert key_message(error, "CUDA error: Failed call to cuInit") == (
        "Quantization to 16x8-bit not yet supported for op: 'POW'."
    )
    assert key_message(RuntimeError("\n  first line\nsecond"), "") == "first line"


def test_run_captured_returns_the_result() -> None:
    assert run_captured(lambda: 42, failure="x", hint="y") == 42


def test_calibrate_only_returns_a_float_model_with_ranges(cnn) -> None:
    options = ConverterOptions(optimize=True, ops_set="int8", calibrate_only=True)
    annotated = run_converter(keras_model=cnn, options=options, representative_dataset=representative())
    model = flatbuffer.read(annotated)
    ranged = [t for t in model.subgraphs[0].tensors
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)]
    assert ranged and {flatbuffer.type_name(t.type) for t in ranged} == {"FLOAT32"}


def test_int16x8_io_dtype_sets_the_model_io(cnn) -> None:
    import tensorflow as tf

    options = ConverterOptions(optimize=True, ops_set="int16x8", io_dtype=tf.int16)
    tflite = run_converter(keras_model=cnn, options=options, representative_dataset=representative())
    model = flatbuffer.read(tflite)
    graph = model.subgraphs[0]
    assert flatbuffer.type_name(graph.tensors[graph.inputs[0]].type) == "INT16"
    assert flatbuffer.type_name(graph.tensors[graph.outputs[0]].type) == "INT16"


def test_exactly_one_source_is_required(cnn) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        run_converter()
    with pytest.raises(ValueError, match="exactly one"):
        run_converter(keras_model=cnn, saved_model_dir="somewhere")


def test_float_conversion_keeps_keras_outputs(cnn, float_tflite: bytes) -> None:
    from tfquant.tflite.interpreter import make_interpreter

    x = np.random.default_rng(1).uniform(0, 1, (1, 8, 8, 2)).astype(np.float32)
    interpreter = make_interpreter(float_tflite, runtime="builtin", allocate=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, cnn(x).numpy(), rtol=1e-4, atol=1e-5)
