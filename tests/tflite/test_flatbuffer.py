"""The flatbuffer reader: weights with their channel axis, metadata, outputs, fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tflite.conftest import calibration, representative
from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite import flatbuffer
from tfquant.tflite.converter import ConverterOptions, run_converter
from tfquant.tflite.interpreter import make_interpreter, ops_details


def _run(tflite: bytes, x: np.ndarray) -> list[np.ndarray]:
    interpreter = make_interpreter(tflite, runtime=Runtime.BUILTIN, allocate=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def test_per_channel_weights_are_scaled_along_their_channel_axis(int8_tflite: bytes) -> None:
    weights = flatbuffer.weight_tensors(int8_tflite)
    assert [w.op for w in weights] == ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    for w in weights:
        assert w.stored_type == "INT8"
        assert w.channel_axis == w.quantized_dimension, w
        assert len(w.scales) == w.shape[w.channel_axis] > 1, w
    assert weights[1].channel_axis == 3 and weights[1].shape == (1, 3, 3, 8)


def test_per_tensor_option_gives_one_scale_per_weight(cnn) -> None:
    options = ConverterOptions(optimize=True, ops_set="int8", per_tensor_weights=True)
    tflite = run_converter(keras_model=cnn, options=options, representative_dataset=representative())
    assert [len(w.scales) for w in flatbuffer.weight_tensors(tflite)] == [1, 1, 1, 1]


def test_float_weights_have_no_scales(float_tflite: bytes) -> None:
    weights = flatbuffer.weight_tensors(float_tflite)
    assert {w.stored_type for w in weights} == {"FLOAT32"} and all(w.scales == () for w in weights)


def test_op_names_match_the_interpreter(int8_tflite: bytes) -> None:
    model = flatbuffer.read(int8_tflite)
    ours = [flatbuffer.op_name(model, op) for op in model.subgraphs[0].operators]
    litert = [op["op_name"] for op in ops_details(make_interpreter(int8_tflite, runtime="builtin"))]
    assert ours == litert and ours[0] == "QUANTIZE"


def test_metadata_round_trips_and_replaces_without_changing_outputs(int8_tflite: bytes) -> None:
    x = calibration(1)
    tagged = flatbuffer.embed_bytes(int8_tflite, "note", b"first")
    tagged = flatbuffer.embed_bytes(tagged, "note", b"second \x00 bytes")
    assert flatbuffer.read_bytes(tagged, "note") == b"second \x00 bytes"
    assert flatbuffer.read_bytes(tagged, "absent") is None
    names = [flatbuffer.name(m.name) for m in flatbuffer.read(tagged).metadata]
    assert names.count("note") == 1
    np.testing.assert_array_equal(_run(tagged, x)[0], _run(int8_tflite, x)[0])
    assert flatbuffer.computation_fingerprint(tagged) == flatbuffer.computation_fingerprint(int8_tflite)


def test_fingerprint_changes_with_the_weights(int8_tflite: bytes, cnn) -> None:
    options = ConverterOptions(optimize=True, ops_set="int8", per_tensor_weights=True)
    other = run_converter(keras_model=cnn, options=options, representative_dataset=representative())
    assert flatbuffer.computation_fingerprint(other) != flatbuffer.computation_fingerprint(int8_tflite)


def test_with_outputs_exposes_inner_tensors(float_tflite: bytes) -> None:
    model = flatbuffer.read(float_tflite)
    first_out = int(model.subgraphs[0].operators[0].outputs[0])
    out_index = int(model.subgraphs[0].outputs[0])
    widened = flatbuffer.with_outputs(float_tflite, [first_out, out_index])
    outputs = _run(widened, calibration(1))
    assert len(outputs) == 2  # the existing output is not listed twice
    np.testing.assert_array_equal(outputs[0], _run(float_tflite, calibration(1))[0])
    assert flatbuffer.tensor_name(widened, first_out) == flatbuffer.name(model.subgraphs[0].tensors[first_out].name)


def test_one_op_model_is_a_relu() -> None:
    np.testing.assert_array_equal(_run(flatbuffer.one_op_model(), np.array([-2.0], np.float32))[0], [0.0])
    np.testing.assert_array_equal(_run(flatbuffer.one_op_model(), np.array([3.0], np.float32))[0], [3.0])


def test_constant_tensors_are_the_weights_and_biases(float_tflite: bytes) -> None:
    constant = flatbuffer.constant_tensors(float_tflite)
    weights = {w.index for w in flatbuffer.weight_tensors(float_tflite)}
    assert weights <= constant
    assert not constant & set(flatbuffer.read(float_tflite).subgraphs[0].inputs)


@pytest.mark.parametrize("value,needle", [("text", "must be the bytes"), (b"12345678", "no 'TFL3'")])
def test_non_tflite_bytes_are_rejected(value: object, needle: str) -> None:
    with pytest.raises(TfquantError, match=needle):
        flatbuffer.check_tflite_bytes(value)


def test_missing_file_is_an_error(tmp_path) -> None:
    with pytest.raises(TfquantError, match="does not exist"):
        flatbuffer.model_bytes(tmp_path / "nope.tflite")


@pytest.mark.parametrize("which", ["float", "int8"])
def test_read_graph_matches_the_object_api(which: str, float_tflite: bytes, int8_tflite: bytes) -> None:
    """read_graph's lazy view gives read()'s ops, operator codes, tensors and buffer data
    (read() drops the converter's unused empty buffers: buffer indices differ, data not)."""
    tflite = float_tflite if which == "float" else int8_tflite
    graph, model = flatbuffer.read_graph(tflite), flatbuffer.read(tflite)

    def same(a: object, b: object) -> bool:
        return (a is None) == (b is None) and (a is None or np.array_equal(np.asarray(a), np.asarray(b)))

    assert [(c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version) for c in graph.operatorCodes] == [
        (c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version) for c in model.operatorCodes]
    g, m = graph.subgraphs[0], model.subgraphs[0]
    assert len(graph.subgraphs) == len(model.subgraphs) and same(g.inputs, m.inputs) and same(g.outputs, m.outputs)
    assert len(g.operators) == len(m.operators) > 3 and len(g.tensors) == len(m.tensors)
    for a, b in zip(g.operators, m.operators):
        assert a.opcodeIndex == b.opcodeIndex and same(a.inputs, b.inputs) and same(a.outputs, b.outputs)
        assert flatbuffer.op_name(graph, a) == flatbuffer.op_name(model, b)
    for i, (a, b) in enumerate(zip(g.tensors, m.tensors)):
        assert (a.name, a.type) == (b.name, b.type)
        assert same(a.shape, b.shape) and same(a.shapeSignature, b.shapeSignature)
        assert same(graph.buffers[a.buffer].data, model.buffers[b.buffer].data)
        if graph.buffers[a.buffer].data is not None and flatbuffer.type_name(a.type) in flatbuffer._NUMPY_TYPES:
            np.testing.assert_array_equal(flatbuffer.tensor_data(graph, i), flatbuffer.tensor_data(model, i))
    indices = list(range(len(m.tensors)))
    from tfquant.tflite.rearrangements import value_rearrangements

    assert value_rearrangements(graph, indices) == value_rearrangements(model, indices)
    assert g.tensors[-1] is g.tensors[len(g.tensors) - 1]
    with pytest.raises(IndexError):
        g.tensors[len(g.tensors)]
