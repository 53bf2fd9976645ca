"""``evaluate`` on models whose output is not class scores (regressors): MAE, RMSE and the
largest error against float targets, instead of the refusal "not (batch, num_classes)"; and
one-hot or float-coded labels on a classifier, measured as top-1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error, tflite_of
from tfquant.evaluation.regression import as_class_labels


@pytest.fixture(scope="module")
def regressors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained MLP regressors (2 targets; 1 target) saved as .keras, their int8 .tflite,
    and npz files of float targets."""
    import tf_keras as keras

    root = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    x = rng.random((45, 6), dtype=np.float32)
    y = (x @ rng.normal(size=(6, 2)) + 0.5).astype(np.float32)
    files: dict[str, Path] = {"root": root}
    for name, targets in (("two", y), ("one", y[:, :1])):
        inp = keras.Input((6,))
        out = keras.layers.Dense(targets.shape[1])(keras.layers.Dense(16, activation="relu")(inp))
        model = keras.Model(inp, out)
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(x, targets, epochs=60, verbose=0)
        model.save(root / f"{name}.keras")
        np.savez(root / f"{name}.npz", x=x, y=targets if name == "two" else targets[:, 0])
        run = cli("convert", "--model", str(root / f"{name}.keras"), "--mode", "int8",
                  "--calibration_data", f"npz:{root / f'{name}.npz'}", "--out", str(root / f"{name}.tflite"))
        files[name] = tflite_of(run)
    return files


@pytest.mark.parametrize("name", ["two", "one"])
def test_regression_error_is_the_outputs_error(regressors: dict[str, Path], name: str) -> None:
    root = regressors["root"]
    report = root / f"{name}.json"
    run = cli("evaluate", "--tflite", str(regressors[name]), "--dataset", f"npz:{root / f'{name}.npz'}",
              "--output", str(report))
    assert run.rc == 0 and "MAE" in run.out, run.explain()
    record = json.loads(report.read_text())
    assert record["task"] == "regression" and record["accuracy"] is None and record["n_examples"] == 45
    data = np.load(root / f"{name}.npz")
    diff = tfquant.evaluation.predict(regressors[name], data["x"]).reshape(45, -1) - data["y"].reshape(45, -1)
    assert record["mae"] == pytest.approx(np.abs(diff).mean(), rel=1e-6)
    assert record["rmse"] == pytest.approx(np.sqrt(np.square(diff).mean()), rel=1e-6)
    assert record["max_abs_error"] == pytest.approx(np.abs(diff).max(), rel=1e-6)
    assert record["mae"] <= record["rmse"] <= record["max_abs_error"]
    assert record["rmse"] < 0.5 * float(np.std(data["y"]))  # it learned something, and int8 kept it


def test_targets_of_another_size_are_refused(regressors: dict[str, Path]) -> None:
    root = regressors["root"]
    err = one_line_error(cli("evaluate", "--tflite", str(regressors["two"]), "--dataset", f"npz:{root / 'one.npz'}"))
    assert "outputs 2 value(s) per example" in err and "targets have 1" in err, err


def test_one_hot_and_float_coded_labels_measure_top1(tmp_path: Path) -> None:
    import tf_keras as keras

    rng = np.random.default_rng(1)
    x = rng.random((30, 5), dtype=np.float32)
    labels = rng.integers(0, 3, 30)
    inp = keras.Input((5,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save(tmp_path / "c.keras")
    out = tflite_of(cli("convert", "--model", str(tmp_path / "c.keras"), "--mode", "fp32", "--out",
                        str(tmp_path / "c.tflite")))
    accuracies = []
    for name, y in (("int", labels), ("onehot", np.eye(3, dtype=np.float32)[labels]),
                    ("float", labels.astype(np.float32))):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
        record = tfquant.evaluate(out, f"npz:{tmp_path / f'{name}.npz'}")
        assert record["task"] == "classification"
        accuracies.append(record["accuracy"])
    assert accuracies[0] == accuracies[1] == accuracies[2]


def test_which_targets_are_class_labels() -> None:
    assert as_class_labels((None, 3), np.array([0, 2, 1])).tolist() == [0, 2, 1]
    assert as_class_labels((None, 3), np.eye(3, dtype=np.float32)[[2, 0]]).tolist() == [2, 0]
    assert as_class_labels((None, 3), np.array([1.0, 2.0])).tolist() == [1, 2]
    assert as_class_labels((None, 3), np.array([0.5, 2.0])) is None  # float targets
    assert as_class_labels((None, 3), np.full((2, 3), 0.5, np.float32)) is None  # 3 targets, not one-hot
    assert as_class_labels((None, 1), np.array([0, 1])) is None  # one unit: not class scores
    assert as_class_labels((None, 8, 8, 1), np.zeros((2, 8, 8, 1), np.float32)) is None  # an image out
