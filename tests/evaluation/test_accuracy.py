"""Keras-vs-LiteRT parity of evaluate_accuracy and predict (float, int8, int8/uint8 I/O)."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tests.evaluation.conftest import TinyModels
from tfquant.evaluation import evaluate_accuracy, load_interpreter, predict
from tfquant.qtypes import Runtime


def _keras_accuracy(tiny: TinyModels) -> float:
    return float(np.mean(tiny.keras_logits.argmax(axis=1) == tiny.y))


@pytest.mark.parametrize("runtime", [Runtime.XNNPACK, Runtime.BUILTIN])
@pytest.mark.parametrize("batch_size", [64, 100, 300, 1000])
def test_float_model_matches_keras_top1_exactly(tiny: TinyModels, runtime: Runtime, batch_size: int) -> None:
    result = evaluate_accuracy(tiny.fp32, tiny.x, tiny.y, runtime=runtime, batch_size=batch_size)
    assert result.n_examples == len(tiny.x) == 300
    keras_correct = int(np.sum(tiny.keras_logits.argmax(axis=1) == tiny.y))
    assert result.n_correct == keras_correct
    assert result.accuracy == pytest.approx(_keras_accuracy(tiny), abs=0)
    assert result.batch_size == min(batch_size, 300)
    assert result.batch_fallback is None
    assert result.seconds > 0
    # A trained model: far from chance, so label agreement is a real check.
    assert result.accuracy > 0.5


@pytest.mark.parametrize("runtime", ["xnnpack", "builtin"])
def test_float_predict_matches_keras_logits(tiny: TinyModels, runtime: str) -> None:
    logits = predict(tiny.fp32, tiny.x, batch_size=64, runtime=runtime)
    assert logits.dtype == np.float32 and logits.shape == (300, 10)
    np.testing.assert_allclose(logits, tiny.keras_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(logits.argmax(axis=1), tiny.keras_logits.argmax(axis=1))


@pytest.mark.parametrize("model", ["int8", "int8_io", "uint8_io"])
@pytest.mark.parametrize("runtime", [Runtime.XNNPACK, Runtime.BUILTIN])
@pytest.mark.parametrize("batch_size", [64, 300])
def test_quantized_models_agree_with_keras(
    tiny: TinyModels, model: str, runtime: Runtime, batch_size: int
) -> None:
    path = getattr(tiny, model)
    result = evaluate_accuracy(path, tiny.x, tiny.y, runtime=runtime, batch_size=batch_size)
    assert result.n_examples == 300
    assert abs(result.accuracy - _keras_accuracy(tiny)) <= 0.03
    labels = predict(path, tiny.x, runtime=runtime, batch_size=batch_size).argmax(axis=1)
    agreement = float(np.mean(labels == tiny.keras_logits.argmax(axis=1)))
    assert agreement >= 0.95
    assert result.n_correct == int(np.sum(labels == tiny.y))


@pytest.mark.parametrize("model", ["int8_io", "uint8_io"])
def test_quantized_io_predict_returns_dequantized_logits(tiny: TinyModels, model: str) -> None:
    path = getattr(tiny, model)
    interpreter = Interpreter(model_path=str(path))
    out = interpreter.get_output_details()[0]
    scale = float(out["quantization_parameters"]["scales"][0])
    assert interpreter.get_input_details()[0]["dtype"] == np.dtype(model.split("_")[0])

    logits = predict(path, tiny.x, batch_size=64)
    assert logits.dtype == np.float32 and logits.shape == (300, 10)
    # Error in output quantization steps (seen: mean 0.3, p99 0.8; a rare clipped activation
    # gives a larger max, so the tail is bounded by a percentile).
    steps = np.abs(logits - tiny.keras_logits) / scale
    assert float(steps.mean()) < 1
    assert float(np.percentile(steps, 99)) < 3


def test_int8_io_predict_equals_manual_quantize_invoke_dequantize(tiny: TinyModels) -> None:
    interpreter = Interpreter(model_path=str(tiny.int8_io))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]
    xb = tiny.x[:5]
    interpreter.resize_tensor_input(inp["index"], list(xb.shape))
    interpreter.allocate_tensors()
    q = np.clip(np.round(xb / s_in) + z_in, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    expected = (interpreter.get_tensor(out["index"]).astype(np.float64) - z_out) * s_out
    np.testing.assert_allclose(predict(tiny.int8_io, xb), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model", ["fp32", "int8_io"])
def test_predict_is_batch_size_invariant(tiny: TinyModels, model: str) -> None:
    path = getattr(tiny, model)
    reference = predict(path, tiny.x[:70], batch_size=1)
    for batch_size in (16, 64, 70, 500):
        np.testing.assert_allclose(predict(path, tiny.x[:70], batch_size=batch_size), reference, atol=1e-5)


def test_accepts_an_unallocated_interpreter(tiny: TinyModels) -> None:
    interpreter = Interpreter(model_path=str(tiny.fp32))
    np.testing.assert_allclose(predict(interpreter, tiny.x[:5]), tiny.keras_logits[:5], atol=1e-4)


def test_accepts_a_loaded_interpreter_and_bytes(tiny: TinyModels) -> None:
    interpreter = load_interpreter(tiny.int8_io, runtime="builtin")
    from_interpreter = evaluate_accuracy(interpreter, tiny.x, tiny.y, batch_size=128)
    from_bytes = evaluate_accuracy(tiny.int8_io.read_bytes(), tiny.x, tiny.y, batch_size=128)
    assert from_interpreter.n_correct == from_bytes.n_correct
    # The interpreter stays usable afterwards, at a different batch size.
    np.testing.assert_array_equal(
        predict(interpreter, tiny.x[:10], batch_size=3),
        predict(tiny.int8_io, tiny.x[:10], runtime="builtin"),
    )


def test_fixed_batch_model_falls_back_to_batch_1(tmp_path) -> None:
    import tensorflow as tf

    from tests.evaluation.conftest import convert_keras

    keras = tf.keras
    keras.utils.set_random_seed(1)
    inp = keras.layers.Input((6, 6, 1), batch_size=1)
    flat = keras.layers.Lambda(lambda t: tf.reshape(t, [1, 36]))(inp)  # the batch is baked in
    dense = keras.layers.Dense(4)
    model = keras.Model(inp, dense(flat))
    path = convert_keras(model, tmp_path / "fixed_batch.tflite")

    x = np.random.default_rng(0).random((10, 6, 6, 1), dtype=np.float32)
    w, b = dense.get_weights()
    expected = x.reshape(10, 36) @ w + b
    y = expected.argmax(axis=1)
    result = evaluate_accuracy(path, x, y, batch_size=4)
    assert result.batch_size == 1 and result.requested_batch_size == 4
    assert result.batch_fallback is not None and "batch 4" in result.batch_fallback
    assert result.n_correct == 10
    np.testing.assert_allclose(predict(path, x, batch_size=4), expected, rtol=1e-5, atol=1e-5)


def test_allocates_once_per_distinct_batch_size(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = load_interpreter(tiny.int8_io)
    calls: list[tuple[int, ...]] = []
    allocate = interpreter.allocate_tensors

    def counting_allocate() -> None:
        allocate()
        calls.append(tuple(interpreter.get_input_details()[0]["shape"]))

    monkeypatch.setattr(interpreter, "allocate_tensors", counting_allocate)
    result = evaluate_accuracy(interpreter, tiny.x, tiny.y, batch_size=64)  # 4 x 64 + 44
    # One check of the given interpreter (already allocated at batch 1), then one per size.
    assert calls == [(1, 28, 28, 1), (64, 28, 28, 1), (44, 28, 28, 1)]
    assert result.n_examples == 300 and result.batch_size == 64
