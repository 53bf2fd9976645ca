"""fidelity on PTQ models: a float Keras model against .tflite files converted from it."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant import convert
from tfquant.errors import TfquantError
from tfquant.evaluation import fidelity
from tfquant.qtypes import Mode
from tfquant.recipes import Recipe

L = keras.layers


@pytest.fixture(scope="module")
def conv_bn_relu() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """conv -> BN -> ReLU -> conv -> ReLU -> dense, random weights and non-trivial BN statistics."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    outputs = L.Dense(5, name="logits")(L.Flatten(name="flat")(x))
    model = keras.Model(inputs, outputs, name="cbr")
    bn = model.get_layer("bn1")
    bn.set_weights([np.full(4, 1.5), np.full(4, 0.1), np.full(4, 0.2), np.full(4, 2.0)])
    rng = np.random.default_rng(0)
    x_data = rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    y_data = np.asarray(model.predict(x_data, verbose=0)).argmax(axis=1)
    return model, x_data, y_data


def test_fp32_tflite_agrees_and_no_layer_diverges(conv_bn_relu) -> None:
    model, x, y = conv_bn_relu
    tflite = convert.convert(model, Recipe(mode=Mode.FP32))
    report = fidelity.compare(model, tflite, x, y)
    assert report.agreement == 1.0 and report.keras_accuracy == 1.0, report.summary()
    diffs = fidelity.first_divergence(model, tflite, x[:4])
    names = [d.layer for d in diffs]
    # conv1 + bn1 + relu1 are one TFLite op whose output is relu1's; conv2's ReLU is its own.
    assert "relu1" in names and "conv2" in names, names
    assert "conv1" not in names and "bn1" not in names, names
    assert fidelity.first_diverged(diffs) is None, fidelity.format_layer_diffs(diffs)


def test_int8_ptq_is_compared_layer_by_layer_in_quantization_steps(conv_bn_relu) -> None:
    model, x, y = conv_bn_relu
    recipe = Recipe(mode=Mode.INT8, num_calibration_examples=len(x))
    tflite = convert.convert(model, recipe, calibration_data=x)
    report = fidelity.compare(model, tflite, x, y, diagnose_below=None)
    assert 0.0 <= report.agreement <= 1.0 and report.max_abs_logit_diff > 0.0
    diffs = {d.layer: d for d in fidelity.first_divergence(model, tflite, x[:4])}
    assert {"relu1", "conv2"} <= set(diffs), sorted(diffs)
    # int8 activations: a step Δ per tensor, and the PTQ error is a few of them, not hundreds.
    for name in ("relu1", "conv2"):
        assert diffs[name].dtype == "int8" and diffs[name].scale > 0
        assert diffs[name].max_diff_steps is not None and diffs[name].max_diff_steps < 20


def test_a_non_keras_model_is_named_in_the_error(conv_bn_relu) -> None:
    _, x, y = conv_bn_relu
    with pytest.raises(TfquantError, match="model must be a tf_keras Model, got str"):
        fidelity.compare("model.keras", b"", x, y)
