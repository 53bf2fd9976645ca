"""The input contract: presets equal keras.applications' preprocess_input, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfquant import _env  # noqa: F401
from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.recipes import inputs
from tfquant.recipes.inputs import InputContract


def _keras_preprocess(module: str):
    import tf_keras

    return getattr(tf_keras.applications, module).preprocess_input


# (our preset or alias, keras.applications module whose preprocess_input it must equal)
_KERAS_EQUIVALENTS = [
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet", "mobilenet"),
    ("inception_v3", "inception_v3"),
    ("xception", "xception"),
    ("nasnet", "nasnet"),
    ("resnet_v2", "resnet_v2"),
    ("resnet50", "resnet50"),
    ("vgg16", "vgg16"),
    ("densenet", "densenet"),
    ("efficientnet", "efficientnet"),
    ("mobilenet_v3", "mobilenet_v3"),
    ("convnext", "convnext"),
]


@pytest.mark.parametrize("preset, module", _KERAS_EQUIVALENTS)
def test_preset_equals_keras_preprocess_input(preset: str, module: str) -> None:
    """contract(x / 255) == keras preprocess_input(x) for 0..255 RGB images."""
    rng = np.random.default_rng(0)
    x255 = rng.integers(0, 256, size=(4, 5, 6, 3)).astype(np.float32)
    want = _keras_preprocess(module)(x255.copy())
    got = inputs.from_preset(preset).apply_np(x255 / 255.0)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-4)


def test_identity_and_none_preset() -> None:
    x = np.random.default_rng(1).random((2, 3, 3, 1), dtype=np.float32)
    assert InputContract().is_identity
    assert inputs.from_preset("none").is_identity
    np.testing.assert_array_equal(inputs.from_preset("none").apply_np(x), x)
    assert not inputs.from_preset("tf").is_identity


def test_tf_preset_maps_unit_interval_to_symmetric() -> None:
    c = inputs.from_preset("tf")
    np.testing.assert_allclose(c.apply_np(np.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1)).ravel(),
                               [-1.0, 0.0, 1.0])


def test_bgr_reverses_channels_before_mean() -> None:
    c = InputContract(mean=(0.1, 0.2, 0.3), std=(1.0,), channel_order="bgr")
    x = np.array([0.7, 0.8, 0.9], np.float32).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(c.apply_np(x).ravel(), [0.9 - 0.1, 0.8 - 0.2, 0.7 - 0.3], rtol=1e-6)


def test_apply_tf_equals_apply_np() -> None:
    import tensorflow as tf

    x = np.random.default_rng(2).random((2, 4, 4, 3), dtype=np.float32)
    for name in ("caffe", "torch", "tf", "raw255"):
        c = inputs.from_preset(name)
        np.testing.assert_allclose(c.apply_tf(tf.constant(x)).numpy(), c.apply_np(x), rtol=1e-6)


def test_recipe_round_trips_the_contract() -> None:
    for contract in (None, inputs.from_preset("resnet50"), InputContract(mean=(0.5,), std=(0.25,))):
        recipe = Recipe(mode="int8", input=contract)
        back = Recipe.from_json(recipe.to_json())
        assert back == recipe
        assert back.input == contract
    # An old recipe without the key still parses.
    old = json.loads(Recipe(mode="int8").to_json())
    del old["input"]
    assert Recipe.from_dict(old).input is None


def test_resolve() -> None:
    assert inputs.resolve() is None
    assert inputs.resolve(mean=(0.5,)) == InputContract(mean=(0.5,), std=(1.0,))
    assert inputs.resolve(std=(0.5,)) == InputContract(mean=(0.0,), std=(0.5,))
    assert inputs.resolve(preset="MobileNet_V2").preset == "mobilenet_v2"
    with pytest.raises(TfquantError, match="either --preprocess or --input_mean"):
        inputs.resolve(preset="tf", mean=(0.5,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mean=(0.5,), std=(0.0,)), "std must be positive"),
        (dict(mean=(), std=(1.0,)), "1 or C finite numbers"),
        (dict(mean=(float("nan"),)), "1 or C finite numbers"),
        (dict(channel_order="gbr"), "channel_order must be one of"),
    ],
)
def test_bad_contract_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        InputContract(**kwargs)


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(TfquantError, match="unknown --preprocess 'mobilenet_v9'.*mobilenet_v2"):
        inputs.from_preset("mobilenet_v9")


def test_bgr_needs_three_channels() -> None:
    with pytest.raises(TfquantError, match="bgr needs 3-channel"):
        inputs.from_preset("caffe").apply_np(np.zeros((1, 2, 2, 1), np.float32))


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(TfquantError, match="unknown input contract key"):
        InputContract.from_dict({"mean": [0.5], "scale": 2})


@pytest.mark.parametrize(
    "name, family",
    [("mobilenetv2_0.35_32", "mobilenet_v2"), ("efficientnetb0", "efficientnet"),
     ("resnet50", "resnet"), ("resnet50v2", "resnet_v2"), ("my_model", None)],
)
def test_guess_family(name: str, family: str | None) -> None:
    assert inputs.guess_family(name) == family
    if family is not None:
        inputs.from_preset(family)  # every guessed family is a valid preset name
