"""Loading .keras / .h5 / SavedModel files, and converting a non-Keras SavedModel."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, N_CAL, build_cnn, recipe, run_tflite
from tfquant import convert
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CNN saved in each Keras format."""
    model = build_cnn(seed=1)
    d = tmp_path_factory.mktemp("saved")
    paths = {"keras": d / "m.keras", "h5": d / "m.h5", "savedmodel": d / "m_savedmodel"}
    model.save(paths["keras"])
    with warnings.catch_warnings():  # "HDF5 is legacy": saving it is the point here
        warnings.simplefilter("ignore", UserWarning)
        model.save(paths["h5"])
    model.save(paths["savedmodel"], save_format="tf")
    return paths


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel"])
def test_load_model_restores_the_weights(saved: dict[str, Path], fmt: str) -> None:
    import tensorflow as tf

    model = convert.load_model(str(saved[fmt]))
    assert isinstance(model, tf.keras.Model)
    x = np.random.default_rng(2).standard_normal((4, *INPUT_SHAPE)).astype(np.float32)
    np.testing.assert_allclose(
        model(x).numpy(), build_cnn(seed=1)(x).numpy(), rtol=1e-5, atol=1e-6
    )


def test_convert_accepts_a_path(saved: dict[str, Path]) -> None:
    r = recipe(mode=Mode.FP32)
    tflite = convert.convert(str(saved["keras"]), r)
    x = np.random.default_rng(3).standard_normal((4, *INPUT_SHAPE)).astype(np.float32)
    np.testing.assert_allclose(
        run_tflite(tflite, x), build_cnn(seed=1)(x).numpy(), rtol=1e-4, atol=1e-5
    )
    assert convert.read_recipe(tflite) == r


@pytest.fixture(scope="module")
def plain_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel written by tf.saved_model.save from a tf.Module (not Keras): y = relu(xW)."""
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(4)
            self.w = tf.Variable(rng.standard_normal((64, 32)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return tf.nn.relu(tf.matmul(x, self.w))

    module = Affine()
    path = tmp_path_factory.mktemp("plain") / "affine"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def test_non_keras_savedmodel_converts_via_from_saved_model(plain_savedmodel: Path) -> None:
    with pytest.raises(TfquantError, match=r"was not written by Keras.*tfquant\.convert\.convert"):
        convert.load_model(str(plain_savedmodel))
    x = np.random.default_rng(5).standard_normal((N_CAL, 64)).astype(np.float32)
    r = recipe(mode=Mode.INT8)
    tflite = convert.convert(str(plain_savedmodel), r, calibration_data=x)
    assert convert.read_recipe(tflite) == r
    w = np.random.default_rng(4).standard_normal((64, 32)).astype(np.float32)
    ref = np.maximum(x[:50] @ w, 0)
    err = np.abs(run_tflite(tflite, x[:50]) - ref).mean() / (ref.max() - ref.min())
    assert err < 1e-2
    images = np.zeros((N_CAL, 8, 8, 1), np.float32)
    with pytest.raises(
        TfquantError,
        match=r"calibration_data has shape \(250, 8, 8, 1\) but the model input is \(None, 64\)",
    ):
        convert.convert(str(plain_savedmodel), r, calibration_data=images)
