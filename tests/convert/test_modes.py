"""Each mode yields the tensor types it claims (read with the LiteRT interpreter).

Tensor details are read *before* ``allocate_tensors()``: LiteRT's hybrid (dynamic-range) conv
kernel expands a per-tensor weight scale to one copy per channel when it allocates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import recipe
from tfquant.qtypes import Granularity, IODType, Mode

WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@dataclasses.dataclass(frozen=True)
class Tensors:
    """Tensor details of a model, split by role."""

    weights: list[dict[str, Any]]  # (op name, details) of weights of conv / FC ops
    weight_ops: list[str]
    biases: list[dict[str, Any]]
    activations: list[dict[str, Any]]  # outputs of every op
    input: dict[str, Any]
    output: dict[str, Any]


def tensors(tflite: bytes) -> Tensors:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)  # no allocate_tensors(), see module doc
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    weights, weight_ops, biases, activations = [], [], [], []
    for op in interpreter._get_ops_details():
        activations += [details[i] for i in op["outputs"]]
        if op["op_name"] in WEIGHTED_OPS:
            weights.append(details[op["inputs"][1]])
            weight_ops.append(op["op_name"])
            if len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
                biases.append(details[op["inputs"][2]])
    return Tensors(
        weights,
        weight_ops,
        biases,
        activations,
        interpreter.get_input_details()[0],
        interpreter.get_output_details()[0],
    )


def dtypes(ds: list[dict[str, Any]]) -> set[type]:
    return {d["dtype"] for d in ds}


def scales(d: dict[str, Any]) -> np.ndarray:
    return d["quantization_parameters"]["scales"]


def test_fp32_is_all_float32(converted: Callable) -> None:
    t = tensors(converted(recipe(mode=Mode.FP32)))
    assert len(t.weights) == 3
    assert dtypes(t.weights + t.biases + t.activations) == {np.float32}
    assert t.input["dtype"] == np.float32 and t.output["dtype"] == np.float32


def test_fp16_stores_float16_weights(converted: Callable) -> None:
    from ai_edge_litert.interpreter import Interpreter

    tflite = converted(recipe(mode=Mode.FP16))
    all_tensors = Interpreter(model_content=tflite).get_tensor_details()
    fp16 = [d for d in all_tensors if d["dtype"] == np.float16]
    # every conv / dense kernel is stored as float16 and dequantized to float32 at load
    assert {tuple(d["shape"]) for d in fp16} >= {(16, 3, 3, 1), (32, 3, 3, 16), (10, 512)}
    t = tensors(tflite)
    assert dtypes(t.activations) == {np.float32}
    assert t.input["dtype"] == np.float32


@pytest.mark.parametrize("granularity", list(Granularity))
def test_dynamic_has_int8_weights_and_float_activations(
    converted: Callable, granularity: Granularity
) -> None:
    t = tensors(converted(recipe(mode=Mode.DYNAMIC, weight_granularity=granularity)))
    big = [w for w in t.weights if np.prod(w["shape"]) >= 1024]
    small = [w for w in t.weights if np.prod(w["shape"]) < 1024]
    assert len(big) == 2 and dtypes(big) == {np.int8}
    assert dtypes(small) == {np.float32}  # below the converter's 1024-element threshold
    assert dtypes(t.activations) == {np.float32}
    assert t.input["dtype"] == np.float32 and t.output["dtype"] == np.float32
    for w in big:
        expected = w["shape"][0] if granularity is Granularity.PER_CHANNEL else 1
        assert len(scales(w)) == expected, w["name"]


@pytest.mark.parametrize("granularity", list(Granularity))
def test_int8_is_full_integer(converted: Callable, granularity: Granularity) -> None:
    t = tensors(converted(recipe(mode=Mode.INT8, weight_granularity=granularity)))
    assert dtypes(t.weights) == {np.int8}
    assert dtypes(t.biases) == {np.int32}
    # float32 only for the DEQUANTIZE at the output edge
    assert [d["index"] for d in t.activations if d["dtype"] != np.int8] == [t.output["index"]]
    assert t.input["dtype"] == np.float32 and t.output["dtype"] == np.float32
    for op, w in zip(t.weight_ops, t.weights):
        out_channels = w["shape"][3] if op == "DEPTHWISE_CONV_2D" else w["shape"][0]
        expected = out_channels if granularity is Granularity.PER_CHANNEL else 1
        assert len(scales(w)) == expected, w["name"]
        np.testing.assert_array_equal(w["quantization_parameters"]["zero_points"], 0)
        assert np.all(scales(w) > 0)


def test_int8_io_has_int8_input_and_output(converted: Callable) -> None:
    t = tensors(converted(recipe(mode=Mode.INT8, io_dtype=IODType.INT8)))
    assert t.input["dtype"] == np.int8 and t.output["dtype"] == np.int8
    assert dtypes(t.activations) == {np.int8}
    assert t.input["quantization"][0] > 0


def test_int16x8_has_int16_activations_and_int8_weights(converted: Callable) -> None:
    t = tensors(converted(recipe(mode=Mode.INT16X8)))
    assert dtypes(t.weights) == {np.int8}
    assert dtypes(t.biases) == {np.int64}
    assert np.int16 in dtypes(t.activations)
    assert [d["index"] for d in t.activations if d["dtype"] != np.int16] == [t.output["index"]]
    assert t.input["dtype"] == np.float32 and t.output["dtype"] == np.float32
    for d in t.activations[:-1]:  # int16 activations are symmetric
        np.testing.assert_array_equal(d["quantization_parameters"]["zero_points"], 0)
    for w in t.weights:
        assert len(scales(w)) == w["shape"][0], w["name"]  # per-channel by default


def test_int16x8_per_tensor_and_int16_io(converted: Callable) -> None:
    t = tensors(
        converted(
            recipe(
                mode=Mode.INT16X8,
                weight_granularity=Granularity.PER_TENSOR,
                io_dtype=IODType.INT16,
            )
        )
    )
    assert t.input["dtype"] == np.int16 and t.output["dtype"] == np.int16
    assert dtypes(t.activations) == {np.int16}
    assert [len(scales(w)) for w in t.weights] == [1] * len(t.weights)


def test_batch_dimension_stays_dynamic_after_batched_calibration(converted: Callable) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converted(recipe(mode=Mode.INT8)))
    inp = interpreter.get_input_details()[0]
    assert list(inp["shape"]) == [1, 8, 8, 1]
    assert list(inp["shape_signature"]) == [-1, 8, 8, 1]
