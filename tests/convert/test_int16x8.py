"""int16x8 is strict: transformer layers that LiteRT can run convert; the ones it cannot raise.

Keras LayerNormalization converts thanks to the rewrite in tfquant/convert/rewrites.py;
the runtime check still stops what the rewrite does not reach.

Findings (TF 2.21 converter, ai-edge-litert 2.3.0) are tabled in tfquant/convert/converter.py.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import run_tflite
from tfquant import convert
from tfquant.convert import runtime_check
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode
from tfquant.recipes import Recipe

SEQ, DIM, N = 4, 16, 64


def _model(block: Callable[[Any], Any]) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((SEQ, DIM))
    return tf.keras.Model(inputs, block(inputs))


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, SEQ, DIM)).astype(np.float32)


def _raw_int16x8(model) -> bytes:
    """Strict int16x8 straight through the TF converter, bypassing tfquant's rewrite/checks."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    converter.representative_dataset = lambda: ([x[None]] for x in _data())
    return converter.convert()


R16 = Recipe(mode=Mode.INT16X8, num_calibration_examples=N)


def _op_input_types(tflite: bytes) -> dict[str, set[type]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    details = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
    ops: dict[str, set[type]] = {}
    for op in interpreter._get_ops_details():
        ops.setdefault(op["op_name"], set()).update(details[i] for i in op["inputs"] if i >= 0)
    return ops


def test_attention_gelu_softmax_run_in_int16() -> None:
    import tensorflow as tf

    layers = tf.keras.layers

    def block(x: Any) -> Any:
        h = layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)  # FC, BATCH_MATMUL, SOFTMAX
        h = layers.Add()([x, h])
        h = layers.Dense(32, activation=lambda t: tf.nn.gelu(t, approximate=False))(h)
        return layers.Dense(DIM)(h)

    model = _model(block)
    tflite = convert.convert(model, R16, calibration_data=_data())
    ops = _op_input_types(tflite)
    for name in ("BATCH_MATMUL", "SOFTMAX", "GELU", "FULLY_CONNECTED", "ADD"):
        assert np.int16 in ops[name], name
    assert not any(np.float32 in types for name, types in ops.items() if name != "QUANTIZE")
    x = _data(seed=1)[:16]
    ref = model(x).numpy()
    err = np.abs(run_tflite(tflite, x) - ref).mean() / (ref.max() - ref.min())
    assert err < 5e-3  # observed 6.9e-4 (int8: 3.0e-3)


def test_keras_layer_normalization_now_converts_and_runs() -> None:
    """convert() rewrites it without SQUARED_DIFFERENCE (tests/convert/test_rewrites.py)."""
    import tensorflow as tf

    model = _model(lambda x: tf.keras.layers.LayerNormalization()(x))
    tflite = convert.convert(model, R16, calibration_data=_data())
    assert runtime_check.int16_ops_without_kernel(tflite) == []
    ops = _op_input_types(tflite)
    assert "SQUARED_DIFFERENCE" not in ops and np.int16 in ops["RSQRT"]


def test_layer_normalization_the_rewrite_skips_is_rejected_naming_squared_difference() -> None:
    import tensorflow as tf

    model = _model(lambda x: tf.keras.layers.LayerNormalization(center=False)(x))
    with pytest.raises(TfquantError, match=r"SQUARED_DIFFERENCE with int16 inputs.*use mode int8"):
        convert.convert(model, R16, calibration_data=_data())


def test_non_keras_savedmodel_is_not_rewritten_and_is_rejected(tmp_path: Any) -> None:
    """A SavedModel that Keras did not write converts from its signature, without rewrites."""
    import tensorflow as tf

    class Norm(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SEQ, DIM], tf.float32)])
        def __call__(self, x: Any) -> Any:
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)  # SQUARED_DIFFERENCE
            return (x - mean) * tf.math.rsqrt(var + 1e-3)

    module = Norm()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.__call__})
    with pytest.raises(TfquantError, match=r"SQUARED_DIFFERENCE with int16 inputs.*use mode int8"):
        convert.convert(tmp_path, R16, calibration_data=_data())


def test_op_the_converter_cannot_quantize_to_16x8_is_named() -> None:
    import tensorflow as tf

    model = _model(lambda x: tf.keras.layers.Lambda(lambda t: tf.pow(t, 3.0))(x))
    with pytest.raises(
        TfquantError, match=r"converter failed for mode int16x8: .*'POW'.*try mode int8"
    ):
        convert.convert(model, R16, calibration_data=_data())


def test_runtime_check_turns_a_missing_kernel_into_an_error() -> None:
    """check_runs alone (without the static op list) catches what the runtime rejects."""
    import tensorflow as tf

    model = _model(
        lambda x: tf.keras.layers.Lambda(
            lambda t: tf.math.squared_difference(t, tf.reduce_mean(t, -1, keepdims=True))
        )(x)
    )
    tflite = _raw_int16x8(model)
    assert runtime_check.int16_ops_without_kernel(tflite) == ["SQUARED_DIFFERENCE"]
    with pytest.raises(TfquantError, match=r"does not run in LiteRT: .*SQUARED_DIFFERENCE"):
        runtime_check.check_runs(tflite, what="the test model")
    runtime_check.check_runs(convert.convert(model, Recipe(mode=Mode.FP32)), what="fp32")


def test_runtime_check_survives_an_interpreter_abort() -> None:
    """The full Keras LayerNorm graph aborts LiteRT (SIGABRT); the check reports, not dies."""
    import tensorflow as tf

    model = _model(lambda x: tf.keras.layers.LayerNormalization()(x))
    tflite = _raw_int16x8(model)
    with pytest.raises(
        TfquantError, match=r"does not run in LiteRT: the interpreter crashed \(SIGABRT\)"
    ):
        runtime_check.check_runs(tflite, what="the LayerNorm model")


def test_vanishing_activations_are_reported_with_their_cause() -> None:
    """A conv + ReLU6 whose outputs are ~1e-10 gets an int16 scale so small that LiteRT's
    ReLU6 clamp (6 / scale) overflows int32 at prepare time; convert() reports why."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 1)
    outputs = layers.ReLU(6.0)(conv(inputs))
    model = tf.keras.Model(inputs, outputs)
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 1e-10, bias])
    x = np.random.default_rng(0).random((N, 8, 8, 3)).astype(np.float32)
    with pytest.raises(
        TfquantError,
        match=r"no_integer_overflow_from_quantization.*activation range is nearly zero",
    ):
        convert.convert(model, R16, calibration_data=x)
