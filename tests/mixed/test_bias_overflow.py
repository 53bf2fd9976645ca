"""The int32 bias guard of mixed-precision export: AI Edge Quantizer writes the bias of a
quantized conv / dense as round(b / (s_in · s_w)) without a range check (it wraps past 2^31);
tfquant predicts that from the float model and keeps such an op float, the reason recorded."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401

import tensorflow as tf

from tfquant.convert import mixed
from tfquant.evaluation.accuracy import predict
from tfquant.recipes import Recipe
from tfquant.recipes.layers import Precision
from tfquant.tflite import aeq, flatbuffer

HUGE = np.array([100.0, -50.0, 0.01, 0.0], np.float32)  # "big"'s bias; its kernel is ~1e-4


def _model() -> tf.keras.Model:
    """conv c1 (ordinary) -> conv big (weights ~1e-4, bias up to 100) -> GAP -> dense fc."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((6, 6, 2))
    x = tf.keras.layers.Conv2D(4, 3, bias_initializer="ones", name="c1")(inp)
    x = tf.keras.layers.Conv2D(4, 1, name="big")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3, bias_initializer="ones", name="fc")(x))
    kernel, _ = model.get_layer("big").get_weights()
    model.get_layer("big").set_weights([kernel * 1e-4, HUGE])
    return model


@pytest.fixture(scope="module")
def model_and_data():
    return _model(), np.random.default_rng(0).random((16, 6, 6, 2), dtype=np.float32)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_an_overflowing_bias_keeps_its_op_float_with_the_reason(model_and_data, mode: str) -> None:
    model, x = model_and_data
    recipe = Recipe(mode=mode, calibrator="max", num_calibration_examples=len(x))
    cal = mixed.calibrate_mixed(model, recipe, calibration_data=x)
    tflite, plans = mixed.export_mixed(cal, recipe)
    by_layer = {p.op.name: p for p in plans}
    big = by_layer["big"]
    assert big.requested is Precision(mode) and big.precision is Precision.FLOAT
    assert big.reason.startswith(f"int32 bias overflow at {mode}") and "kept float" in big.reason
    assert by_layer["c1"].precision is Precision(mode) and by_layer["fc"].precision is Precision(mode)
    # the reason is in the embedded per-op plan (what inspect prints)
    embedded = {op["name"]: op for op in mixed.read_precision(tflite)["ops"]}
    assert embedded["big"]["precision"] == "float" and "int32 bias overflow" in embedded["big"]["reason"]
    assert mixed.emitted_precisions(tflite)[big.op.tensor] == "float"
    # the bias survives: the model stays close to float (the wrapped bias was off by ~100)
    ref = model(x).numpy()
    assert np.abs(predict(tflite, x) - ref).max() < 0.05 * np.abs(ref).max()


def test_aeq_wraps_the_bias_silently_and_the_prediction_uses_its_scales(model_and_data) -> None:
    """What the guard protects against, and that its formula is AEQ's own: forcing "big" to
    int8 gives a wrapped (sign-flipped) bias; for the ops that fit, the predicted
    s_in · s_w is the emitted bias scale and the emitted int32 bias is round(b / it)."""
    model, x = model_and_data
    recipe = Recipe(mode="int8", calibrator="max", num_calibration_examples=len(x))
    cal = mixed.calibrate_mixed(model, recipe, calibration_data=x)
    plans = mixed.plan(cal, recipe)
    ranges = mixed.tensor_ranges(cal, recipe, plans)
    forced = aeq.quantize(cal.float_model, {p.op.scope: (p.op.op_type, "int8") for p in plans}, ranges)
    ratios = aeq.bias_ratios(cal.float_model)
    q = flatbuffer.read(forced)
    outputs = {flatbuffer.name(q.subgraphs[0].tensors[q.subgraphs[0].operators[w.position].outputs[0]].name): w
               for w in flatbuffer.weighted_ops(q)}
    checked = set()
    for p in plans:
        if p.op.scope not in ratios:
            continue
        inp, ratio = ratios[p.op.scope]
        w = outputs[p.op.tensor]
        emitted, scale = flatbuffer.tensor_data(q, w.bias), flatbuffer.tensor_quantization(q, w.bias)[0]
        bias = flatbuffer.tensor_data(flatbuffer.read(cal.float_model), _float_bias(cal.float_model, p.op.index))
        overflow = aeq.bias_overflow(ratio, ranges[inp], "int8")
        if p.op.name == "big":
            assert overflow > aeq.BIAS_LIMIT
            assert emitted[0] < 0 < bias[0]  # +100 stored as a negative int32: wrapped, no error
        else:
            assert overflow < aeq.BIAS_LIMIT
            np.testing.assert_allclose(overflow, np.max(np.abs(bias) / scale), rtol=1e-5)
            np.testing.assert_array_equal(emitted, np.rint(bias / scale.astype(np.float32)))
        checked.add(p.op.name)
    assert checked == {"c1", "big", "fc"}


def _float_bias(float_tflite: bytes, position: int) -> int:
    model = flatbuffer.read(float_tflite)
    return next(w.bias for w in flatbuffer.weighted_ops(model) if w.position == position)
