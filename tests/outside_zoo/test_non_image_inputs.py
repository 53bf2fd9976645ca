"""Models whose input is not an image (tabular features, spectrograms) and data with float
regression targets: ``npz:`` calibration and evaluation take the model's input as it is.

Found by the default-flags sweep: a tabular MLP ((N, 20) input) and a Conv1D audio model
((N, 128, 40)) could not be calibrated at all (``x ... expected 4-D NHWC``), and an npz
holding a regression target ``y`` (float) stopped int8 calibration, which needs no labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error, tflite_of


def _tabular_mlp():
    import tf_keras as keras

    inp = keras.Input((20,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))


def _audio_conv1d():
    import tf_keras as keras

    inp = keras.Input((32, 10))
    h = keras.layers.Conv1D(8, 3, activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("non_image")
    rng = np.random.default_rng(0)
    tab = root / "tab.keras"
    _tabular_mlp().save(tab)
    audio = root / "audio.keras"
    _audio_conv1d().save(audio)
    # 37 examples: no batch size divides them.
    np.savez(root / "tab.npz", x=rng.random((37, 20), dtype=np.float32), y=rng.integers(0, 4, 37))
    np.savez(root / "audio.npz", x=rng.random((37, 32, 10), dtype=np.float32), y=rng.integers(0, 3, 37))
    np.savez(root / "tab_regression.npz", x=rng.random((37, 20), dtype=np.float32),
             y=rng.random(37, dtype=np.float32))
    return {"root": root, "tab": tab, "audio": audio}


@pytest.mark.parametrize(("model", "data", "mode"), [
    ("tab", "tab.npz", "int8"), ("audio", "audio.npz", "int16x8"), ("tab", "tab_regression.npz", "int8"),
])
def test_non_image_model_converts_and_evaluates(files: dict[str, Path], model: str, data: str,
                                                mode: str) -> None:
    out = files["root"] / f"{model}_{mode}_{data}.tflite"
    run = cli("convert", "--model", str(files[model]), "--mode", mode,
              "--calibration_data", f"npz:{files['root'] / data}", "--out", str(out))
    tflite_of(run)
    assert tfquant.convert.read_recipe(out).num_calibration_examples == 37
    if data == "tab_regression.npz":  # one float target per example for 4 class scores: neither
        # top-1 (no labels) nor a regression error (4 outputs, 1 target) -- refused with the reason
        err = one_line_error(cli("evaluate", "--tflite", str(out), "--dataset", f"npz:{files['root'] / data}"))
        assert "outputs 4 value(s) per example" in err and "integer class labels" in err, err
        return
    record = tfquant.evaluate(out, f"npz:{files['root'] / data}")
    assert record["n_examples"] == 37 and 0.0 <= record["accuracy"] <= 1.0


def test_array_calibration_data_of_any_rank(files: dict[str, Path]) -> None:
    x = np.random.default_rng(1).random((9, 20), dtype=np.float32)
    result = tfquant.quantize(str(files["tab"]), mode="int8", calibration_data=x,
                              out=files["root"] / "tab_array.tflite")
    assert result.recipe.num_calibration_examples == 9


def test_image_size_on_non_image_inputs_is_one_line(files: dict[str, Path]) -> None:
    out = files["root"] / "tab_resized.tflite"
    err = one_line_error(cli("convert", "--model", str(files["tab"]), "--mode", "int8", "--calibration_data",
                             f"npz:{files['root'] / 'tab.npz'}", "--image_size", "4,5", "--out", str(out)))
    assert "cannot be resized" in err and not out.exists()
