"""Taps: tensors read inside LiteRT where they are produced (issue 11, item 5).

The statistics pass reads each gathered tensor with a CUSTOM op run by LiteRT's
CompiledModel (:mod:`tfquant.tflite.runtime_statistics`) instead of exposing it as a model
output. The values a tap sees must be exactly the Interpreter's (the same builtin kernels),
so the statistics must equal the output path's; and every way the taps can fail must either
fall back to the output path or name the problem.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.tflite.conftest import calibration
from tfquant.calibration import collect
from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite import flatbuffer
from tfquant.tflite import runtime_statistics as rs
from tfquant.tflite.interpreter import make_interpreter

pytestmark = pytest.mark.skipif(not rs.ENABLED, reason="TFQUANT_TAPS=0: the taps are switched off on purpose")


def test_the_pinned_litert_ships_the_c_api_the_taps_use() -> None:
    """ai-edge-litert 2.3.0 is pinned and carries libLiteRt.so: if the taps cannot load, that is
    a defect to see here (the pass would silently fall back to the slower output path)."""
    assert rs.available() is None, rs.available()


def _activations(tflite: bytes) -> dict[int, str]:
    """Every non-constant float tensor of the main subgraph (the input included)."""
    model = flatbuffer.read(tflite)
    constant = flatbuffer.constant_tensors(tflite)
    return {
        i: flatbuffer.name(t.name)
        for i, t in enumerate(model.subgraphs[0].tensors)
        if i not in constant and flatbuffer.type_name(t.type) == "FLOAT32"
    }


def _fields(s) -> tuple:
    return (s.name, s.min, s.max, s.ema_min, s.ema_max, s.count, s.histogram.upper,
            s.histogram.counts.tolist())


def _sums(s) -> np.ndarray:
    return np.array([s.mean, s.m2, s.sum_abs_dev, *([] if s.channel_sum is None else s.channel_sum)])


def test_taps_follow_their_producers_and_replace_the_outputs(float_tflite: bytes) -> None:
    indices = sorted(_activations(float_tflite))
    tapped = flatbuffer.read(flatbuffer.with_taps(float_tflite, indices, "T_"))
    subgraph = tapped.subgraphs[0]
    assert len(subgraph.outputs) == 0 and all(len(s.outputs) == 0 for s in tapped.signatureDefs)
    inputs = {int(i) for i in subgraph.inputs}
    produced, read = inputs, set()  # outputs of the last builtin op (the graph inputs at first)
    for op in subgraph.operators:
        code = tapped.operatorCodes[op.opcodeIndex].customCode
        if code is None:  # a builtin op: every tapped tensor it reads was tapped before
            assert {int(i) for i in op.inputs} & set(indices) <= read
            produced = {int(o) for o in op.outputs}
            continue
        k = int(code.decode().removeprefix("T_"))
        assert list(op.inputs) == [indices[k]] and len(op.outputs) == 0
        assert indices[k] in produced  # right after its producer
        read.add(indices[k])
    assert read == set(indices)
    assert len(subgraph.operators) == len(flatbuffer.read(float_tflite).subgraphs[0].operators) + len(indices)


def test_taps_see_exactly_the_interpreter_values(float_tflite: bytes) -> None:
    indices = sorted(_activations(float_tflite))
    x = calibration(37)
    interpreter = make_interpreter(
        flatbuffer.with_outputs(float_tflite, indices), runtime=Runtime.BUILTIN, num_threads=1
    )
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape, strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    expected = {i: interpreter.get_tensor(i) for i in indices}
    seen: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    observers = [lambda a, i=i: seen[i].append(a.copy()) for i in indices]
    with rs.TappedModel(float_tflite, indices, observers) as model:
        assert model.num_inputs == 1
        model.run(x[:5])  # another batch size first: the input is resized twice
        model.run(x)
    for i in indices:
        assert len(seen[i]) == 2 and seen[i][0].shape[0] == 5
        np.testing.assert_array_equal(seen[i][1], expected[i])


def test_cached_views_follow_every_run_and_batch_shape(float_tflite: bytes) -> None:
    """Each tap keeps its numpy view while LiteRT's (address, type) stays the same: the view
    must still show each run's own values, and be made again when the batch shape changes."""
    indices = sorted(_activations(float_tflite))
    x = calibration(40)
    interpreter = make_interpreter(
        flatbuffer.with_outputs(float_tflite, indices), runtime=Runtime.BUILTIN, num_threads=1
    )
    input_index = interpreter.get_input_details()[0]["index"]
    batches = [x[:5], x[5:10], x[10:13], x[13:18], x[18:40]]
    expected = []
    for b in batches:
        interpreter.resize_tensor_input(input_index, b.shape, strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, b)
        interpreter.invoke()
        expected.append({i: interpreter.get_tensor(i) for i in indices})
    seen: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {i: [] for i in indices}
    observers = [lambda a, i=i: seen[i].append((a, a.copy())) for i in indices]
    with rs.TappedModel(float_tflite, indices, observers) as model:
        for b in batches:
            model.run(b)
    for i in indices:
        assert len(seen[i]) == len(batches)
        for (view, values), want in zip(seen[i], expected, strict=True):
            assert not view.flags.writeable
            np.testing.assert_array_equal(values, want[i])
        views = [view for view, _ in seen[i]]
        assert views[1] is views[0]  # the same shape at the same address: the cached view
        assert views[2] is not views[1] and views[2].shape[0] == 3  # a new shape: a new view


def test_statistics_equal_the_output_path(cnn, monkeypatch) -> None:
    from tfquant.convert import calibrated
    from tfquant.recipes import Recipe

    x = calibration(70)  # batch 32: the last batch is smaller
    cal = calibrated.calibrate(
        cnn, Recipe(mode="int8", calibrator="max", num_calibration_examples=70), calibration_data=x, batch_size=32
    )
    tapped = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    monkeypatch.setattr(rs, "ENABLED", False)
    assert rs.available() == "TFQUANT_TAPS=0"
    exposed = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    assert (tapped.gathered_in, exposed.gathered_in) == ("taps", "outputs")
    assert list(tapped.tensors) == list(exposed.tensors) and len(tapped.tensors) >= 5
    for name, s in tapped.tensors.items():
        assert _fields(s) == _fields(exposed.tensors[name]), name
        np.testing.assert_allclose(_sums(s), _sums(exposed.tensors[name]), rtol=1e-9, atol=0)


def test_an_observer_error_is_raised_by_run_and_cleared(float_tflite: bytes) -> None:
    indices = sorted(_activations(float_tflite))
    calls = {"n": 0}

    def fail_once(a: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("observer broke")

    later: list[int] = []
    observers = [fail_once] + [lambda a: later.append(1)] * (len(indices) - 1)
    with rs.TappedModel(float_tflite, indices, observers) as model:
        with pytest.raises(KeyError, match="observer broke"):
            model.run(calibration(4))
        assert later == []  # the taps after the failing one were skipped
        model.run(calibration(4))
    assert calls["n"] == 2 and len(later) == len(indices) - 1


def test_nan_inputs_name_the_tensor(float_tflite: bytes) -> None:
    tensors = _activations(float_tflite)
    x = calibration(8)
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(TfquantError, match="NaN/Inf values on the calibration data"):
        collect.collect_statistics(float_tflite, x, tensors)


def test_bad_shapes_and_a_missing_library_fall_back_to_the_output_path(float_tflite: bytes, monkeypatch) -> None:
    tensors = _activations(float_tflite)
    with pytest.raises(TfquantError, match=r"cannot run the float model on calibration inputs of shape \(8, 5, 5, 2\)"):
        collect.collect_statistics(float_tflite, np.zeros((8, 5, 5, 2), np.float32), tensors)
    with pytest.raises(rs.LiteRtError, match="resize the input|run the tapped model"):
        with rs.TappedModel(float_tflite, sorted(tensors), [lambda a: None] * len(tensors)) as model:
            model.run(np.zeros((8, 5, 5, 2), np.float32))
    rs._lib.cache_clear()
    monkeypatch.setattr(rs, "library_path", lambda: rs.Path("/nonexistent/libLiteRt.so"))
    try:
        assert "does not load" in rs.available()
        with pytest.raises(rs.LiteRtError, match="gather statistics from model outputs instead"):
            rs.TappedModel(float_tflite, [], [])
        stats = collect.collect_statistics(float_tflite, calibration(8), tensors)
        assert stats.gathered_in == "outputs" and len(stats.tensors) == len(tensors)
    finally:
        rs._lib.cache_clear()


def test_a_two_input_model_is_refused(monkeypatch) -> None:
    import tensorflow as tf

    from tfquant.tflite.converter import run_converter

    a, b = tf.keras.Input((3,)), tf.keras.Input((3,))
    model = tf.keras.Model([a, b], tf.keras.layers.Dense(2)(tf.keras.layers.Add()([a, b])))
    tflite = run_converter(keras_model=model)
    with pytest.raises(TfquantError, match="the model has 2 inputs"):
        collect.collect_statistics(tflite, np.zeros((4, 3), np.float32), _activations(tflite))


def test_litert_start_up_notices_are_not_printed(float_tflite: bytes, capfd, monkeypatch) -> None:
    monkeypatch.setenv("TFQUANT_QUIET", "1")
    tensors = _activations(float_tflite)
    capfd.readouterr()
    stats = collect.collect_statistics(float_tflite, calibration(8), tensors)
    assert stats.gathered_in == "taps"
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if "INFO:" in line or "WARNING:" in line], err


def _tree(value: object) -> object:
    """An object-API model as plain data (numpy arrays and lists as lists)."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_tree(v) for v in value]
    if hasattr(value, "__dict__"):
        return {k: _tree(v) for k, v in vars(value).items()}
    return value.item() if isinstance(value, np.generic) else value


def test_the_byte_edit_equals_the_object_api_edit(float_tflite: bytes) -> None:
    """The taps added as bytes (old tables reused in place) parse to the object-API edit's
    model: the same operator codes, ops, tensors, buffer data, metadata and signatures."""
    from tfquant.tflite import flatbuffer_edit

    model = flatbuffer.read(float_tflite)
    graph_input, graph_output = int(model.subgraphs[0].inputs[0]), int(model.subgraphs[0].outputs[0])
    indices = sorted(_activations(float_tflite))[::-1] + [graph_input, graph_output]  # any order, repeats
    edited = flatbuffer_edit.add_taps(float_tflite, indices, "T_")
    assert edited is not None and flatbuffer.with_taps(float_tflite, indices, "T_") == edited
    expected = flatbuffer.read(flatbuffer_edit.add_taps_unpacked(float_tflite, indices, "T_"))
    tapped = flatbuffer.read(edited)
    assert len(tapped.operatorCodes) == len(model.operatorCodes) + len(indices)
    assert _tree(tapped) == _tree(expected)
    assert tapped.signatureDefs and not tapped.signatureDefs[0].outputs
    assert [flatbuffer.name(m.name) for m in tapped.metadata] == [flatbuffer.name(m.name) for m in model.metadata]
    assert len(edited) % 16 == 0 and edited[4:8] == flatbuffer.FILE_IDENTIFIER
    make_interpreter(edited, runtime=Runtime.BUILTIN, allocate=False)  # LiteRT's loader accepts it


def test_buffers_outside_the_flatbuffer_take_the_object_api(float_tflite: bytes) -> None:
    """The large-model layout (Buffer.offset, Operator.large_custom_options_offset: absolute
    file positions) is not moved as bytes: the object API edits it."""
    from tfquant.tflite import flatbuffer_edit

    model = flatbuffer.read(float_tflite)
    index = max(range(len(model.buffers)), key=lambda b: 0 if model.buffers[b].data is None else len(model.buffers[b].data))
    data = np.asarray(model.buffers[index].data, np.uint8).tobytes()
    model.buffers[index].data, model.buffers[index].size = None, len(data)
    model.buffers[index].offset = 2**40  # a placeholder of the same width, so the same length
    start = -(-len(flatbuffer.write(model)) // 16) * 16
    model.buffers[index].offset = start
    external = flatbuffer.write(model).ljust(start, b"\0") + data
    assert bytes(flatbuffer.read(external).buffers[index].data) == data  # the reader resolves it
    assert flatbuffer_edit.add_taps(external, [0], "T_") is None
    tapped = flatbuffer.read(flatbuffer.with_taps(external, [0], "T_"))
    assert bytes(tapped.buffers[index].data) == data
    assert len(tapped.subgraphs[0].operators) == len(model.subgraphs[0].operators) + 1
    model = flatbuffer.read(float_tflite)  # custom options stored outside the flatbuffer
    for offset, declined in ((1, False), (2**40, True)):
        model.subgraphs[0].operators[0].largeCustomOptionsOffset = offset
        assert (flatbuffer_edit.add_taps(flatbuffer.write(model), [0], "T_") is None) == declined
