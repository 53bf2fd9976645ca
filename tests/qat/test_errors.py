"""Unsupported layers and other user mistakes: one-line TfquantErrors that say what to do."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tf_keras as keras

from tfquant.evaluation import fidelity
from tfquant import qat
from tfquant.errors import TfquantError


def _raises(match: str, fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TfquantError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert ";" in message, f"no fix in: {message}"  # problem; fix
    return message


def test_unsupported_layer_is_named_with_what_to_do(tiny: Callable[..., Any]) -> None:
    message = _raises(
        r"cannot quantize 1 layer\(s\) of model 'tiny_layer_norm': 'layer_norm' \(LayerNormalization",
        qat.quantize_for_training,
        tiny("layer_norm"),
    )
    assert "register_layer_config" in message
    assert "skip_layers=['layer_norm']" in message


def test_skip_layers_leaves_a_layer_in_float(tiny: Callable[..., Any], tiny_data: Any) -> None:
    qat_model = qat.quantize_for_training(
        tiny("layer_norm"), skip_layers=["layer_norm"], calibration_data=tiny_data.x
    )
    assert type(qat_model.get_layer("layer_norm")).__name__ == "LayerNormalization"
    _raises(
        r"has float ops .*layer_norm.*allow_float_ops=True",
        qat.export_tflite,
        qat_model,
    )
    tflite = qat.export_tflite(qat_model, allow_float_ops=True)
    assert any("layer_norm" in op for op in qat.float_ops(tflite))
    report = fidelity.compare(qat_model, tflite, tiny_data.x, tiny_data.y, diagnose_below=None)
    assert report.agreement >= 0.95, report.summary()


def test_zoo_vit_is_refused_with_the_layers_to_skip() -> None:
    from tfquant import models

    message = _raises(
        r"cannot quantize 14 layer\(s\) of model 'vit'",
        qat.quantize_for_training,
        models.build("vit"),
    )
    for fragment in (
        "'pos_embed' (AddPositionEmbedding",
        "'block1_ln1' (LayerNormalization",
        "'block1_mha' (MultiHeadAttention",
        "and 10 more",
        "skip_layers=['pos_embed', 'block1_ln1', 'block1_mha'",
        "'final_ln']",
    ):
        assert fragment in message, message


def test_unknown_skip_layer_and_bad_skip_type(tiny: Callable[..., Any]) -> None:
    _raises(
        r"skip_layers names \['nope'\] that are not layers",
        qat.quantize_for_training,
        tiny("reshape"),
        skip_layers=["nope"],
    )
    _raises(
        r"got the string 'conv'; pass \['conv'\]",
        qat.quantize_for_training,
        tiny("reshape"),
        skip_layers="conv",
    )


def test_initial_ranges_must_name_layers_and_be_ordered(tiny: Callable[..., Any]) -> None:
    _raises(
        r"initial_ranges names \['nope'\]",
        qat.quantize_for_training,
        tiny("reshape"),
        initial_ranges={"nope": (0, 1)},
    )
    _raises(
        r"range of 'conv' must be finite with lo <= hi",
        qat.quantize_for_training,
        tiny("reshape"),
        initial_ranges={"conv": (1.0, -1.0)},
    )
    _raises(
        r"range of 'conv' must be a \(lo, hi\) pair or a Range, got 'wide'",
        qat.quantize_for_training,
        tiny("reshape"),
        initial_ranges={"conv": "wide"},
    )


def test_models_tfmot_cannot_take() -> None:
    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return self.dense(x)

    sub = Subclassed()
    sub(np.zeros((1, 4), np.float32))
    _raises(r"is a subclassed model; .*rebuild it", qat.quantize_for_training, sub)
    _raises(
        r"must be a tf_keras \(Keras 2\) Model, got str", qat.quantize_for_training, "model.keras"
    )

    inner = keras.Sequential([keras.layers.Dense(4, input_shape=(4,))], name="inner")
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    _raises(r"'inner' \(Sequential: a nested model; flatten it", qat.quantize_for_training, outer)


def test_export_needs_a_qat_model(tiny: Callable[..., Any]) -> None:
    _raises(
        r"has no fake quantizers; make it with .*quantize_for_training",
        qat.export_tflite,
        tiny("reshape"),
    )
    _raises(r"qat_model must be a tf_keras Model", qat.export_tflite, b"bytes")


class _Scale(keras.layers.Layer):
    """A custom layer tfmot knows nothing about: y = 0.5·x."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return 0.5 * x


def _scale_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = _Scale(name="scale")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x)))


def test_register_layer_config_makes_a_custom_layer_quantizable(tiny_data: Any) -> None:
    _raises(r"'scale' \(_Scale: no quantize config\)", qat.quantize_for_training, _scale_model())
    qat.register_layer_config(
        _Scale, lambda spec, layer: qat.configs.OutputConfig(activation_bits=spec.activation_bits)
    )
    try:
        with qat.qat_scope(), keras.utils.custom_object_scope({"_Scale": _Scale}):
            qat_model = qat.quantize_for_training(_scale_model(), calibration_data=tiny_data.x)
        assert isinstance(
            qat_model.get_layer("quant_scale").quantize_config, qat.configs.OutputConfig
        )
        tflite = qat.export_tflite(qat_model)
        assert qat.float_ops(tflite) == []
    finally:
        from tfquant.qat import registry

        registry._EXTRA_FACTORIES.pop(_Scale, None)


def test_register_layer_config_checks_its_arguments() -> None:
    _raises(
        r"layer_class must be a tf_keras Layer subclass",
        qat.register_layer_config,
        int,
        lambda s, l: None,
    )
    _raises(r"factory must be callable", qat.register_layer_config, _Scale, "OutputConfig")


def _fused(activation: str, kind: str, separate: bool = False) -> keras.Model:
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    fused = None if separate else activation
    if kind == "dense":
        h = L.Dense(6, activation=fused, name="k")(L.Flatten()(inp))
    else:
        layer = L.Conv2D(4, 3, activation=fused, name="k") if kind == "conv" else \
            L.DepthwiseConv2D(3, activation=fused, name="k")
        h = L.GlobalAveragePooling2D()(layer(inp))
    if separate:
        h = L.Activation(activation, name="act")(h)
    return keras.Model(inp, L.Dense(3)(h), name=f"fused_{activation}_{kind}")


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
def test_a_fused_swish_is_refused_before_training(kind: str) -> None:
    """tfmot used to accept it, and the export, after the whole fine-tune, found the layer, its
    LOGISTIC and MUL in float (EfficientNet's squeeze-excite convs; measured ~5 min in)."""
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    message = _raises(r"'k' \(\w+: a fused swish activation.*Activation\('swish'\).*skip_layers=\['k'\]",
                      qat.quantize_for_training, _fused("swish", kind), calibration_data=x)
    assert "--skip_layers k" in message
    # the fix it names: a separate Activation('swish') exports in int8 end to end
    separate = qat.quantize_for_training(_fused("swish", kind, separate=True), calibration_data=x)
    assert qat.export_tflite(separate)


def test_a_fused_activation_tfmot_cannot_quantize_is_named() -> None:
    _raises(r"'k' \(Conv2D: a fused activation 'elu', which tfmot cannot quantize",
            qat.quantize_for_training, _fused("elu", "conv"))
