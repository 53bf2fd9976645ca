"""Custom layers: --custom_objects specs (file, module, dict), the missing-class error, and
keras.applications layers (ConvNeXt's LayerScale) loading with no flag."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tfquant import convert
from tfquant.convert.custom_objects import load_custom_objects, unresolved_class_names
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode
from tfquant.recipes import Recipe

# A user's layers module: a squeeze-and-excitation gate and a per-channel scale.
LAYERS_SOURCE = textwrap.dedent('''
    import tensorflow as tf

    class ChannelScale(tf.keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(
                name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.scale

    class SqueezeExcite(tf.keras.layers.Layer):
        def __init__(self, ratio=4, **kwargs):
            super().__init__(**kwargs)
            self.ratio = ratio

        def build(self, input_shape):
            c = int(input_shape[-1])
            self.reduce = tf.keras.layers.Dense(max(1, c // self.ratio), activation="relu")
            self.expand = tf.keras.layers.Dense(c, activation="sigmoid")

        def call(self, x):
            s = tf.reduce_mean(x, axis=[1, 2])
            return x * self.expand(self.reduce(s))[:, None, None, :]

        def get_config(self):
            return {**super().get_config(), "ratio": self.ratio}
''')
SHAPE = (8, 8, 3)


def _module(tmp: Path, name: str) -> Any:
    """Imports LAYERS_SOURCE as module ``name`` (written to tmp), as the model's author did."""
    path = tmp / f"{name}.py"
    path.write_text(LAYERS_SOURCE)
    sys.path.insert(0, str(tmp))
    try:
        import importlib

        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp))


def _build(layers_module: Any) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(SHAPE)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers_module.SqueezeExcite()(x)
    x = layers_module.ChannelScale()(x)
    outputs = tf.keras.layers.Dense(4)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, outputs)
    scale = model.layers[3]
    scale.set_weights([np.linspace(0.5, 2.0, 8).astype(np.float32)])  # not the initial ones
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The model saved as .keras and .h5, its outputs, and its layers file (then forgotten)."""
    src = tmp_path_factory.mktemp("authoring")
    module = _module(src, "user_layers_a")
    model = _build(module)
    x = np.random.default_rng(1).standard_normal((4, *SHAPE)).astype(np.float32)
    out = tmp_path_factory.mktemp("saved")
    paths = {"keras": out / "m.keras", "h5": out / "m.h5", "savedmodel": out / "m_savedmodel"}
    model.save(paths["keras"])
    model.save(paths["savedmodel"], save_format="tf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.save(paths["h5"])
    del sys.modules["user_layers_a"]  # the loading process has never seen the module
    return {"paths": paths, "x": x, "y": model(x).numpy(), "file": src / "user_layers_a.py"}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_missing_class_is_named_with_the_fix(saved: dict[str, Any], fmt: str) -> None:
    path = saved["paths"][fmt]
    with pytest.raises(
        TfquantError,
        match=r"uses ChannelScale, SqueezeExcite, which Keras does not know.*--custom_objects my_layers\.py",
    ):
        convert.load_model(path)
    assert unresolved_class_names(path) == ["ChannelScale", "SqueezeExcite"]
    with pytest.raises(TfquantError, match=r"uses ChannelScale, SqueezeExcite"):
        convert.convert(str(path), Recipe(mode=Mode.FP32))


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_loads_from_a_file_spec(saved: dict[str, Any], fmt: str) -> None:
    model = convert.load_model(saved["paths"][fmt], custom_objects=str(saved["file"]))
    np.testing.assert_allclose(model(saved["x"]).numpy(), saved["y"], rtol=1e-5, atol=1e-6)


def test_loads_from_a_module_spec_and_a_dict(
    saved: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module in the working directory, not on sys.path: found as `python -m` would.
    (tmp_path / "user_layers_b.py").write_text(LAYERS_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    objects = load_custom_objects("user_layers_b")
    assert {"ChannelScale", "SqueezeExcite"} <= set(objects)
    model = convert.load_model(saved["paths"]["keras"], custom_objects="user_layers_b")
    np.testing.assert_allclose(model(saved["x"]).numpy(), saved["y"], rtol=1e-5, atol=1e-6)
    model = convert.load_model(saved["paths"]["h5"], custom_objects=dict(objects))
    np.testing.assert_allclose(model(saved["x"]).numpy(), saved["y"], rtol=1e-5, atol=1e-6)


def test_keras_savedmodel_revives_unknown_classes(saved: dict[str, Any]) -> None:
    # A Keras SavedModel holds the layers' traced functions, so Keras revives classes it does
    # not know and the model loads with no flag; its metadata still names them.
    path = saved["paths"]["savedmodel"]
    assert unresolved_class_names(path) == ["ChannelScale", "SqueezeExcite"]
    model = convert.load_model(path)
    np.testing.assert_allclose(model(saved["x"]).numpy(), saved["y"], rtol=1e-5, atol=1e-6)
    model = convert.load_model(path, custom_objects=str(saved["file"]))
    assert type(model.layers[3]).__module__.startswith("tfquant_custom_objects")
    np.testing.assert_allclose(model(saved["x"]).numpy(), saved["y"], rtol=1e-5, atol=1e-6)


def test_convert_from_a_path_takes_custom_objects(saved: dict[str, Any]) -> None:
    from tests.convert.conftest import run_tflite

    r = Recipe(mode=Mode.FP32)
    tflite = convert.convert(str(saved["paths"]["keras"]), r, custom_objects=str(saved["file"]))
    np.testing.assert_allclose(run_tflite(tflite, saved["x"]), saved["y"], rtol=1e-4, atol=1e-5)
    assert convert.read_recipe(tflite) == r


def test_registered_classes_and_custom_objects_dict_are_taken(tmp_path: Path) -> None:
    (tmp_path / "registered.py").write_text(textwrap.dedent('''
        import tensorflow as tf
        from other_place import Imported  # noqa

        @tf.keras.utils.register_keras_serializable(package="mine")
        class Gate(tf.keras.layers.Layer):
            pass

        def _private(x):
            return x

        CUSTOM_OBJECTS = {"Alias": Gate}
    ''').replace("from other_place import Imported  # noqa\n", ""))
    objects = load_custom_objects(tmp_path / "registered.py")
    assert objects["Gate"] is objects["mine>Gate"] is objects["Alias"]
    assert "_private" not in objects and "tf" not in objects


def test_bad_specs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match=r"file '.*nope\.py' does not exist; pass the \.py file"):
        load_custom_objects(str(tmp_path / "nope.py"))
    with pytest.raises(
        TfquantError,
        match=r"could not import custom objects module 'no_such_pkg_x\.mod' \(ModuleNotFoundError: No module named 'no_such_pkg_x'\)",
    ):
        load_custom_objects("no_such_pkg_x.mod")
    broken = tmp_path / "broken.py"
    broken.write_text("import tensorflow as tf\nraise RuntimeError('boom in user code')\n")
    with pytest.raises(TfquantError, match=r"broken\.py' \(RuntimeError: boom in user code\); fix"):
        load_custom_objects(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("import math\nVALUE = 3\n")
    with pytest.raises(TfquantError, match=r"define no Keras layer, model or function"):
        load_custom_objects(str(empty))
    with pytest.raises(TfquantError, match=r"maps 'X' to int; map each class name"):
        load_custom_objects({"X": 3})


def test_convnext_block_loads_with_no_flag(tmp_path: Path) -> None:
    """keras.applications ConvNeXt's own block (LayerScale, StochasticDepth), on a small
    input: the same layers as ConvNeXtTiny, which fails to load without them registered."""
    import tf_keras as keras
    from tf_keras.src.applications import convnext

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 2, strides=2)(inputs)
    x = convnext.ConvNeXtBlock(16, drop_path_rate=0.1, layer_scale_init_value=1.0, name="b0")(x)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    names = {type(layer).__name__ for layer in model.layers}
    assert {"LayerScale", "StochasticDepth"} <= names
    scale = next(layer for layer in model.layers if type(layer).__name__ == "LayerScale")
    scale.set_weights([np.linspace(0.5, 2.0, 16).astype(np.float32)])  # not the init value
    path = tmp_path / "convnext_block.keras"
    model.save(path)
    loaded = convert.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
