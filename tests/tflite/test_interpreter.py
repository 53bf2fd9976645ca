"""make_interpreter: the runtime chosen is the one built; thread, delegate and model checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.tflite.conftest import calibration
from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite.interpreter import (
    count_delegated_nodes,
    make_interpreter,
    node_names,
    ops_details,
    tensor_shape,
)


def test_runtime_choice_is_honoured(float_tflite: bytes) -> None:
    """xnnpack: the default resolver, whose XNNPACK delegate takes every op at allocation;
    builtin: no delegate node at all, the model's own ops in the plan."""
    builtin = make_interpreter(float_tflite, runtime=Runtime.BUILTIN, allocate=True)
    own_ops = node_names(builtin)
    assert "DELEGATE" not in own_ops and len(own_ops) >= 4
    assert count_delegated_nodes(builtin) == (0, len(own_ops))

    xnnpack = make_interpreter(float_tflite, runtime="xnnpack", num_threads=1, allocate=True)
    assert node_names(xnnpack)[: len(own_ops)] == own_ops
    assert "DELEGATE" in node_names(xnnpack)[len(own_ops):]
    assert count_delegated_nodes(xnnpack) == (len(own_ops), len(own_ops))


def test_xnnpack_delegate_is_applied_only_at_allocation(float_tflite: bytes) -> None:
    lazy = make_interpreter(float_tflite, runtime=Runtime.XNNPACK)
    assert "DELEGATE" not in node_names(lazy)


@pytest.mark.parametrize("runtime", [Runtime.XNNPACK, Runtime.BUILTIN])
def test_both_runtimes_compute_the_keras_outputs(cnn: Any, float_tflite: bytes, runtime: Runtime) -> None:
    x = calibration(1)
    interpreter = make_interpreter(float_tflite, runtime=runtime, allocate=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, cnn(x).numpy(), rtol=1e-4, atol=1e-5)


def test_ops_details_lists_the_plan_ops_in_order(float_tflite: bytes) -> None:
    interpreter = make_interpreter(float_tflite, runtime=Runtime.BUILTIN)
    assert tuple(op["op_name"] for op in ops_details(interpreter)) == node_names(interpreter)


def test_tensor_shape_follows_a_resize(float_tflite: bytes) -> None:
    interpreter = make_interpreter(float_tflite, runtime=Runtime.BUILTIN, allocate=True)
    out = interpreter.get_output_details()[0]["index"]
    assert tensor_shape(interpreter, out) == (1, 3)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [5, 8, 8, 2])
    interpreter.allocate_tensors()
    assert tensor_shape(interpreter, out) == (5, 3)


def test_preserve_all_tensors_keeps_intermediates(cnn: Any, float_tflite: bytes) -> None:
    x = calibration(1)
    interpreter = make_interpreter(float_tflite, runtime=Runtime.BUILTIN, preserve_all_tensors=True,
                                   allocate=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    first = ops_details(interpreter)[0]
    assert first["op_name"] == "CONV_2D"
    conv_out = interpreter.get_tensor(int(first["outputs"][0]))
    np.testing.assert_allclose(conv_out, cnn.layers[0](x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_bad_thread_count_is_an_error(float_tflite: bytes, threads: Any) -> None:
    with pytest.raises(TfquantError, match="num_threads must be an integer >= 1"):
        make_interpreter(float_tflite, num_threads=threads)


def test_delegate_path_needs_runtime_delegate(float_tflite: bytes) -> None:
    with pytest.raises(TfquantError, match="only used with runtime 'delegate'"):
        make_interpreter(float_tflite, runtime="builtin", delegate_path="lib.so")


def test_missing_delegate_library_is_an_error(float_tflite: bytes) -> None:
    with pytest.raises(TfquantError, match="cannot load delegate library 'libnope_delegate.so'"):
        make_interpreter(float_tflite, runtime="delegate", delegate_path="libnope_delegate.so")


def test_corrupt_model_is_an_error_with_its_label() -> None:
    with pytest.raises(TfquantError, match=r"^'my model' is not a valid \.tflite model"):
        make_interpreter(b"not a flatbuffer at all", label="'my model'")
