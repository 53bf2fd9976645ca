"""run_qat outside the zoo: learning rate from the saved optimizer, low-bit QAT that holds,
the far-below-float warning, the loss of softmax models, BN re-estimation.

Models and data are built here: scikit-learn's bundled UCI digits (8x8, 1297 train / 500
test), a small SE-CNN with BN and a depthwise model that ends in a softmax, each trained a
few epochs in the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)

import tf_keras as keras

from tfquant import qat
from tfquant.qat.bn_reestimate import reestimate_batch_norm
from tfquant.qat.outputs import outputs_probabilities
from tfquant.qat.original import DEFAULT_LEARNING_RATE
from tfquant.qat.pipeline import FAR_BELOW_FLOAT_POINTS
from tfquant.errors import TfquantError
from tfquant.evaluation import evaluate_accuracy

L = keras.layers
FLOAT_LR = 2e-3
# 500 test images: one standard error of an accuracy near 0.95 is ~1 point; the issue's
# target is 5 points at 4 bits, asserted on the SE-CNN.
TARGET_POINTS = 5.0


def _tiny(compile_with: Any = None) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    if compile_with is not None:
        model.compile(optimizer=compile_with, loss="mse")
    return model


def test_saved_learning_rate_keras_adam(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    _tiny(keras.optimizers.Adam(3e-3)).save(path)
    assert qat.saved_learning_rate(path) == pytest.approx(3e-3)


def test_saved_learning_rate_schedule_gives_initial_lr(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    schedule = keras.optimizers.schedules.CosineDecay(0.02, decay_steps=100)
    _tiny(keras.optimizers.Adam(schedule)).save(path)
    assert qat.saved_learning_rate(path) == pytest.approx(0.02)


def test_saved_learning_rate_optimizer_by_name_is_its_default(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    _tiny("sgd").save(path)
    assert qat.saved_learning_rate(path) == pytest.approx(0.01)


def test_saved_learning_rate_none_without_optimizer(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    _tiny().save(path)
    assert qat.saved_learning_rate(path) is None


def test_saved_learning_rate_h5_and_saved_model(tmp_path: Path) -> None:
    model = _tiny(keras.optimizers.SGD(0.05, momentum=0.9))
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "sm", save_format="tf")
    assert qat.saved_learning_rate(tmp_path / "m.h5") == pytest.approx(0.05)
    assert qat.saved_learning_rate(tmp_path / "sm") == pytest.approx(0.05)
    _tiny().save(tmp_path / "bare.h5")
    assert qat.saved_learning_rate(tmp_path / "bare.h5") is None


def test_saved_learning_rate_errors(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="does not exist"):
        qat.saved_learning_rate(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TfquantError, match="cannot read the training config"):
        qat.saved_learning_rate(bad)


@pytest.mark.parametrize(
    "head",
    [
        lambda h: L.Dense(3, activation="softmax")(h),
        lambda h: L.Softmax()(L.Dense(3)(h)),
        lambda h: L.Activation("softmax")(L.Dense(3)(h)),
    ],
    ids=["dense_softmax", "softmax_layer", "activation_softmax"],
)
def test_outputs_probabilities_detects_softmax_heads(head: Any) -> None:
    inp = keras.Input((4,))
    model = keras.Model(inp, head(L.Dense(8, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert outputs_probabilities(model, x)
    logits = keras.Model(inp, L.Dense(3)(L.Dense(8, activation="relu")(inp)))
    assert not outputs_probabilities(logits, x)


def test_outputs_probabilities_by_value_for_a_tf_op_softmax() -> None:
    import tensorflow as tf

    inp = keras.Input((4,))
    model = keras.Model(inp, tf.nn.softmax(L.Dense(3)(inp) * 2.0))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert outputs_probabilities(model, x)


def test_reestimate_batch_norm_sets_population_statistics() -> None:
    rng = np.random.default_rng(0)
    inp = keras.Input((6, 6, 2))
    conv = L.Conv2D(4, 3, padding="same", use_bias=False)
    h = L.BatchNormalization()(conv(inp))
    h = L.BatchNormalization(name="second")(L.ReLU()(h))
    model = keras.Model(inp, h)
    x = rng.normal(1.0, 2.0, size=(300, 6, 6, 2)).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # stale statistics
            layer.moving_mean.assign(np.full(4, 5.0, np.float32))
            layer.moving_variance.assign(np.full(4, 9.0, np.float32))
    assert reestimate_batch_norm(model, x, batch_size=64) == 2
    pre = conv(x).numpy().reshape(-1, 4)
    first = model.layers[2]
    np.testing.assert_allclose(first.moving_mean.numpy(), pre.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), pre.var(0), rtol=1e-4)
    # The second BN sees the first one normalised with the new statistics: its output in
    # inference mode has zero mean and unit variance per channel (gamma 1, beta 0).
    out = model.predict(x, verbose=0).reshape(-1, 4)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-2)


def test_reestimate_batch_norm_without_bn_is_a_no_op() -> None:
    assert reestimate_batch_norm(_tiny(), np.ones((4, 4), np.float32)) == 0


# ---------------------------------------------------------------- run_qat on digits


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target.astype(np.int64), test_size=500, random_state=0, stratify=d.target
    )
    return {"x": x_tr, "y": y_tr, "x_test": x_te, "y_test": y_te, "cal": x_tr[:256]}


def _se_cnn() -> keras.Model:
    inp = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    r = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(h))
    se = L.Dense(4, activation="relu")(L.GlobalAveragePooling2D()(r))
    se = L.Reshape((1, 1, 16))(L.Dense(16, activation="sigmoid")(se))
    h = L.ReLU()(L.Add()([h, L.Multiply()([r, se])]))
    h = L.GlobalAveragePooling2D()(L.MaxPooling2D()(h))
    return keras.Model(inp, L.Dense(10)(h), name="se_cnn")


def _softmax_ds() -> keras.Model:
    inp = keras.Input((8, 8, 1))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inp)))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(h)))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(10, activation="softmax")(h), name="softmax_ds")


def _train(model: keras.Model, digits: dict[str, np.ndarray], *, logits: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    model.compile(
        optimizer=keras.optimizers.Adam(FLOAT_LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
    )
    model.fit(digits["x"], digits["y"], epochs=6, batch_size=32, verbose=0)
    reestimate_batch_norm(model, digits["x"])  # a converged model's BN statistics
    return model


@pytest.fixture(scope="module")
def se_cnn(digits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = _train(_se_cnn(), digits, logits=True)
    path = tmp_path_factory.mktemp("se_cnn") / "se_cnn.keras"
    model.save(path)  # with its optimizer, as users do
    loaded = keras.models.load_model(path, compile=False)
    acc = float(np.mean(loaded.predict(digits["x_test"], verbose=0).argmax(-1) == digits["y_test"]))
    return {"model": loaded, "path": path, "float_acc": acc}


@pytest.fixture(scope="module")
def se_cnn_runs(se_cnn: dict[str, Any], digits: dict[str, np.ndarray]) -> dict[int, Any]:
    return {
        bits: qat.run_qat(
            se_cnn["model"], digits["x"], digits["y"], digits["cal"], weight_bits=bits,
            epochs=2, x_eval=digits["x_test"], y_eval=digits["y_test"],
            model_path=se_cnn["path"], verbose=False,
        )
        for bits in (8, 4)
    }


@pytest.mark.parametrize("bits", [8, 4])
def test_run_qat_holds_within_target_of_float(
    bits: int, se_cnn: dict[str, Any], se_cnn_runs: dict[int, Any], digits: dict[str, np.ndarray]
) -> None:
    outcome = se_cnn_runs[bits]
    acc = evaluate_accuracy(outcome.tflite, digits["x_test"], digits["y_test"]).accuracy
    assert se_cnn["float_acc"] > 0.85  # a real baseline (0.918 when measured)
    assert 100 * (se_cnn["float_acc"] - acc) <= TARGET_POINTS, (bits, se_cnn["float_acc"], acc)
    assert outcome.qat_accuracy == pytest.approx(acc)
    assert outcome.float_accuracy == pytest.approx(se_cnn["float_acc"])
    assert outcome.warnings == () and outcome.record.warnings == ()
    assert outcome.fidelity is not None and outcome.fidelity.agreement > 0.97


def test_run_qat_record_learning_rate_from_saved_optimizer(se_cnn_runs: dict[int, Any]) -> None:
    record = se_cnn_runs[4].record.to_dict()
    assert record["learning_rate_source"] == "saved_optimizer"
    assert record["original_learning_rate"] == pytest.approx(FLOAT_LR)
    assert record["finetune_recipe"]["learning_rate"] == pytest.approx(0.1 * FLOAT_LR)
    assert se_cnn_runs[8].record.finetune_recipe["learning_rate"] == pytest.approx(0.01 * FLOAT_LR)
    assert record["bn_reestimated"] == 2 and record["from_logits"] is True
    assert record["finetune"]["steps"] == 2 * -(-record["train_examples"] // record["finetune_recipe"]["batch_size"])
    for key in ("fidelity", "weight_bits", "finetune_recipe", "train_seconds", "warnings"):
        assert key in record


def test_run_qat_warns_when_far_below_float(se_cnn: dict[str, Any], digits: dict[str, np.ndarray]) -> None:
    # 2-bit weights fine-tuned at an absurd learning rate: far below float. No eval data:
    # the check runs on held-out training examples.
    outcome = qat.run_qat(
        se_cnn["model"], digits["x"], digits["y"], digits["cal"], weight_bits=2, epochs=1,
        learning_rate=500.0, finetune_schedule="nvidia", verbose=False,
    )
    record = outcome.record.to_dict()
    assert record["learning_rate_source"] == "given"
    assert record["held_out_examples"] == 130 and record["train_examples"] == len(digits["x"]) - 130
    assert outcome.float_accuracy - outcome.qat_accuracy > FAR_BELOW_FLOAT_POINTS / 100
    assert len(outcome.warnings) == 1 and record["warnings"] == list(outcome.warnings)
    assert "points below float" in outcome.warnings[0] and "\n" not in outcome.warnings[0]


def test_run_qat_softmax_model_trains_on_probabilities(
    digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model = _train(_softmax_ds(), digits, logits=False)
    bare = _softmax_ds()
    bare.set_weights(model.get_weights())
    path = tmp_path / "softmax.keras"
    bare.save(path)  # uncompiled: no optimizer recorded
    outcome = qat.run_qat(
        bare, digits["x"], digits["y"], digits["cal"], weight_bits=4, epochs=1,
        x_eval=digits["x_test"][:200], y_eval=digits["y_test"][:200], model_path=path,
        verbose=False,
    )
    assert outcome.record.from_logits is False and outcome.finetune.from_logits is False
    assert outcome.qat_model.loss.get_config()["from_logits"] is False
    assert outcome.record.learning_rate_source == "default"
    assert outcome.record.original_learning_rate == DEFAULT_LEARNING_RATE
    probs = outcome.qat_model.predict(digits["x_test"][:8], verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)


def test_finetune_detects_logits_for_logit_models(se_cnn_runs: dict[int, Any]) -> None:
    assert se_cnn_runs[8].qat_model.loss.get_config()["from_logits"] is True
    assert se_cnn_runs[8].finetune.from_logits is True


def test_run_qat_argument_errors(se_cnn: dict[str, Any], digits: dict[str, np.ndarray]) -> None:
    args = (se_cnn["model"], digits["x"], digits["y"], digits["cal"])
    with pytest.raises(TfquantError, match="unknown fine-tuning schedule"):
        qat.run_qat(*args, epochs=1, finetune_schedule="fast")
    with pytest.raises(TfquantError, match="x_eval and y_eval go together"):
        qat.run_qat(*args, epochs=1, x_eval=digits["x_test"])
    with pytest.raises(TfquantError, match="learning_rate must be a positive number"):
        qat.run_qat(*args, epochs=1, learning_rate=-1.0)
    with pytest.raises(TfquantError, match="epochs must be a positive integer"):
        qat.run_qat(*args, epochs=0)


def test_finetune_detects_a_softmax_qat_model(digits: dict[str, np.ndarray]) -> None:
    qat_model = qat.quantize_for_training(_softmax_ds(), calibration_data=digits["cal"][:64])
    recipe = qat.FinetuneSchedule(name="t", optimizer="adam", learning_rate=1e-3, batch_size=32)
    result = qat.finetune(
        qat_model, recipe, digits["x"][:64], digits["y"][:64], epochs=1, seed=0, verbose=False
    )
    assert result.from_logits is False
    assert qat_model.loss.get_config()["from_logits"] is False
