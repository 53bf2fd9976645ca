"""Per-layer precision: recipe round trip, mixed tensor types match the recipe, kernel check."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401

import tensorflow as tf

from tfquant.convert import convert, mixed, read_recipe
from tfquant.errors import TfquantError
from tfquant.evaluation.accuracy import predict
from tfquant.recipes import Recipe
from tfquant.recipes.layers import LayerRule, Precision
from tfquant.tflite import int16_kernels

RULES = [
    {"layers": "c2", "precision": "int16x8", "calibrator": "percentile", "percentile": 99.9},
    {"op_type": "FULLY_CONNECTED", "precision": "float"},
]


def _recipe(**kw) -> Recipe:
    return Recipe(mode="int8", calibrator="max", num_calibration_examples=24, layer_rules=RULES, **kw)


def test_recipe_round_trip_with_layer_rules():
    recipe = _recipe()
    assert isinstance(recipe.layer_rules[0], LayerRule)
    assert recipe.layer_rules[1].op_type == "FULLY_CONNECTED"
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    assert again.to_dict()["layer_rules"][0] == RULES[0]
    assert "layer_rules" not in Recipe(mode="int8").to_dict()  # old recipes unchanged


@pytest.mark.parametrize("bad, message", [
    ({"layers": "(", "precision": "int8"}, "regular expression"),
    ({"precision": "int4"}, "layer precision"),
    ({"precision": "int8", "color": "red"}, "unknown layer rule key"),
])
def test_bad_layer_rules_fail_loudly(bad, message):
    with pytest.raises(TfquantError, match=message):
        Recipe(mode="int8", calibrator="max", layer_rules=[bad])


def test_layer_rules_need_a_calibrator():
    with pytest.raises(TfquantError, match="calibrator"):
        Recipe(mode="int8", layer_rules=RULES)


def test_last_matching_rule_wins():
    rules = (LayerRule(precision="float"), LayerRule(layers="c.*", precision="int16x8"))
    from tfquant.recipes.layers import precision_of

    assert precision_of(rules, Precision.INT8, "c1", "model/c1/Conv2D", "CONV_2D")[0] is Precision.INT16X8
    assert precision_of(rules, Precision.INT8, "fc", "model/fc/MatMul", "FULLY_CONNECTED")[0] is Precision.FLOAT


def test_mixed_model_tensor_types_match_its_recipe(cnn_and_data):
    model, x = cnn_and_data
    recipe = _recipe()
    tflite = convert(model, recipe, calibration_data=x)
    assert read_recipe(tflite) == recipe
    emitted = mixed.emitted_precisions(tflite)
    plan = mixed.read_precision(tflite)["ops"]
    by_layer = {op["name"]: op for op in plan}
    assert by_layer["c2"]["precision"] == "int16x8"
    assert by_layer["fc"]["precision"] == "float"
    assert by_layer["c1"]["precision"] == "int8"
    for op in plan:  # every op's output tensor is stored in the precision the plan says
        assert emitted[op["tensor"]] == op["precision"], op
    # the model runs in the interpreter and stays close to float
    ref = model(x).numpy()
    got = predict(tflite, x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_kernel_check_refuses_an_op_without_int16_kernel():
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8,))
    h = tf.keras.layers.Dense(8, name="d1")(inp)
    h = tf.keras.layers.Lambda(lambda t: tf.math.squared_difference(t, 0.5), name="sqd")(h)
    out = tf.keras.layers.Dense(3, name="d2")(h)
    model = tf.keras.Model(inp, out)
    x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    recipe = Recipe(mode="int16x8", calibrator="max", num_calibration_examples=16,
                    layer_rules=[{"precision": "int16x8"}])
    cal = mixed.calibrate_mixed(model, recipe, calibration_data=x)
    sqd = next(op for op in cal.ops if op.op_type == "SQUARED_DIFFERENCE")
    verdict = int16_kernels.check(cal.float_model, sqd.index, {})
    assert not verdict.ok and "SQUARED_DIFFERENCE" in verdict.reason
    tflite, plans = mixed.export_mixed(cal, recipe)
    by_type = {p.op.op_type: p for p in plans}
    assert by_type["SQUARED_DIFFERENCE"].precision is Precision.FLOAT
    assert "no int16 kernel" in by_type["SQUARED_DIFFERENCE"].reason
    assert by_type["FULLY_CONNECTED"].precision is Precision.INT16X8
    predict(tflite, x)  # and the model runs
