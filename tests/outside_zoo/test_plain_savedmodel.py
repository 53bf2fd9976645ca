"""A SavedModel that Keras did not write (``tf.saved_model.save``, as TF Hub / serving exports
are), through every documented command. ``convert``, ``sensitivity`` and ``autoquant`` used to
stop at "was not written by Keras; pass the path to tfquant.convert.convert()"; now they convert
it from its serving signature, and the commands that need Keras layers (``qat``,
``autoquant --allow_qat``) say so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import tensorflow as tf
    import tf_keras as keras

    root = tmp_path_factory.mktemp("plain_savedmodel")
    rng = np.random.default_rng(0)
    x = rng.random((40, 12, 12, 3), dtype=np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.int64)
    L = keras.layers
    inp = keras.Input((12, 12, 3))
    h = L.GlobalAveragePooling2D()(L.Conv2D(6, 3, activation="relu")(inp))
    model = keras.Model(inp, L.Dense(2)(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    tf.saved_model.save(model, str(root / "sm"))
    assert not (root / "sm" / "keras_metadata.pb").exists()
    np.savez(root / "d.npz", x=x, y=y)
    return root / "sm", f"npz:{root / 'd.npz'}"


@pytest.mark.parametrize("flags", [("--mode", "int8"), ("--mode", "int8", "--calibrator", "entropy"),
                                   ("--mode", "int16x8")])
def test_convert_and_evaluate(plain: tuple[Path, str], tmp_path: Path, flags: tuple[str, ...]) -> None:
    model, data = plain
    out = tmp_path / "m.tflite"
    run = cli("convert", "--model", str(model), *flags, "--calibration_data", data, "--out", str(out))
    assert run.rc == 0 and out.is_file(), run.explain()
    result = tmp_path / "r.json"
    run = cli("evaluate", "--tflite", str(out), "--dataset", data, "--latency_runs", "0", "--output", str(result))
    assert run.rc == 0, run.explain()
    record = json.loads(result.read_text())
    assert record["n_examples"] == 40 and record["executed_in"] == "tflite" and 0.0 <= record["accuracy"] <= 1.0


def test_sensitivity_names_tensors(plain: tuple[Path, str], tmp_path: Path) -> None:
    model, data = plain
    report = tmp_path / "s.json"
    run = cli("sensitivity", "--model", str(model), "--calibration_data", data, "--eval_data", data,
              "--output", str(report))
    assert run.rc == 0, run.explain()
    layers = json.loads(report.read_text())["layers"]
    assert {layer["op"] for layer in layers} >= {"CONV_2D", "FULLY_CONNECTED"}
    drops = [layer["accuracy_drop"] for layer in layers]
    assert drops == sorted(drops, reverse=True)


def test_autoquant_meets_a_loose_budget(plain: tuple[Path, str], tmp_path: Path) -> None:
    model, data = plain
    out = tmp_path / "a.tflite"
    run = cli("autoquant", "--model", str(model), "--calibration_data", data, "--eval_data", data,
              "--max_drop", "0.99", "--latency_runs", "0", "--out", str(out))
    assert run.rc == 0 and out.is_file() and out.with_suffix(".recipe.json").is_file(), run.explain()


def test_keras_only_commands_say_so(plain: tuple[Path, str], tmp_path: Path) -> None:
    model, data = plain
    err = one_line_error(cli("qat", "--model", str(model), "--train_data", data, "--calibration_data", data,
                             "--epochs", "1", "--out", str(tmp_path / "q.tflite")))
    assert "not written by Keras" in err and "QAT needs the Keras model" in err, err
    err = one_line_error(cli("autoquant", "--model", str(model), "--calibration_data", data, "--eval_data", data,
                             "--allow_qat", "--train_data", data, "--out", str(tmp_path / "a.tflite")))
    assert "--allow_qat" in err and "not written by Keras" in err, err
    assert not list(tmp_path.iterdir())
