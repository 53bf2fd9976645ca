"""The int16x8 LayerNormalization rewrite: exact in float, int16-runnable, int16x8 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.convert.conftest import run_tflite
from tfquant import convert
from tfquant.convert import rewrites
from tfquant.errors import TfquantError
from tfquant.evaluation import inspect_model
from tfquant.qtypes import Mode
from tfquant.recipes import Recipe

SEQ, DIM, CLASSES, N = 8, 16, 10, 128
R16 = Recipe(mode=Mode.INT16X8, num_calibration_examples=N)


def _randomize_norms(model: Any, seed: int) -> None:
    """Non-trivial gamma / beta, so a rewrite that drops them changes the outputs."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.LayerNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape)])


def _transformer(seed: int = 0) -> Any:
    """Pre-LN block + LN + token mean + logits: LN, MHA, Dense(gelu) as in the zoo ViT."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((SEQ, DIM))
    y = layers.LayerNormalization(epsilon=1e-6, name="ln1")(inputs)
    x = layers.Add()([inputs, layers.MultiHeadAttention(num_heads=2, key_dim=8)(y, y)])
    y = layers.LayerNormalization(name="ln2")(x)
    x = layers.Add()([x, layers.Dense(DIM)(layers.Dense(32, activation="gelu")(y))])
    x = layers.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    outputs = layers.Dense(CLASSES)(layers.GlobalAveragePooling1D()(x))
    model = tf.keras.Model(inputs, outputs)
    _randomize_norms(model, seed)
    return model


def _data(seed: int, n: int = N) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, SEQ, DIM)).astype(np.float32)
    return x * 3.0 + 1.0  # an offset and a spread, so centring and scaling matter


def _layer_types(model: Any) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.fixture(scope="module")
def transformer() -> Any:
    return _transformer()


def test_rewrite_keeps_outputs_and_removes_layer_normalization(transformer: Any) -> None:
    import tensorflow as tf

    x = _data(seed=1, n=32)
    before = transformer.get_weights()
    clone = rewrites.decompose_layer_normalization(transformer)
    assert rewrites.rewritable_layer_normalizations(transformer) == ["ln1", "ln2", "ln_final"]
    assert "LayerNormalization" not in _layer_types(clone)
    assert _layer_types(clone).count("DecomposedLayerNormalization") == 3
    assert rewrites.rewritable_layer_normalizations(clone) == []
    ref = transformer(x).numpy()
    np.testing.assert_allclose(clone(x).numpy(), ref, rtol=1e-5, atol=1e-5)
    # Per LayerNorm too, not only at the logits.
    for name in ("ln1", "ln2", "ln_final"):
        probe = tf.keras.Model(transformer.inputs, transformer.get_layer(name).output)
        probe_clone = tf.keras.Model(clone.inputs, clone.get_layer(name).output)
        np.testing.assert_allclose(probe_clone(x).numpy(), probe(x).numpy(), rtol=1e-5, atol=1e-5)
    # A clone: the original keeps its layers and shares no weights with it.
    assert _layer_types(transformer).count("LayerNormalization") == 3
    clone.get_layer("ln1").set_weights([np.zeros(DIM), np.zeros(DIM)])
    for a, b in zip(transformer.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_formula_matches_keras_layer_normalization_on_its_own() -> None:
    import tensorflow as tf

    x = _data(seed=2, n=16)
    ln = tf.keras.layers.LayerNormalization(epsilon=1e-3)
    ln.build(x.shape)
    gamma, beta = np.linspace(0.5, 2.0, DIM), np.linspace(-1.0, 1.0, DIM)
    ln.set_weights([gamma, beta])
    layer = rewrites.DecomposedLayerNormalization(epsilon=1e-3)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    d = x - x.mean(-1, keepdims=True)
    expected = d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-3) * gamma + beta
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x).numpy(), ln(x).numpy(), rtol=1e-5, atol=1e-5)


def test_other_layer_normalizations_are_left_untouched() -> None:
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((SEQ, DIM))
    x = layers.LayerNormalization(axis=1, name="ln_tokens")(inputs)
    x = layers.LayerNormalization(center=False, name="ln_no_beta")(x)
    x = layers.LayerNormalization(axis=[1, 2], name="ln_both")(x)
    x = layers.LayerNormalization(name="ln_last")(x)
    model = tf.keras.Model(inputs, x)
    assert rewrites.rewritable_layer_normalizations(model) == ["ln_last"]
    clone = rewrites.decompose_layer_normalization(model)
    kinds = {layer.name: type(layer).__name__ for layer in clone.layers}
    assert kinds["ln_tokens"] == kinds["ln_no_beta"] == kinds["ln_both"] == "LayerNormalization"
    assert kinds["ln_last"] == "DecomposedLayerNormalization"
    x = _data(seed=3, n=8)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_nested_models_are_rewritten() -> None:
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inner = tf.keras.Sequential(
        [tf.keras.Input((SEQ, DIM)), layers.Dense(DIM), layers.LayerNormalization(name="ln")],
        name="inner",
    )
    inputs = tf.keras.Input((SEQ, DIM))
    model = tf.keras.Model(inputs, layers.Dense(4)(inner(inputs)))
    _randomize_norms(inner, seed=1)
    assert rewrites.rewritable_layer_normalizations(model) == ["inner/ln"]
    clone = rewrites.decompose_layer_normalization(model)
    assert _layer_types(clone.get_layer("inner")) == ["Dense", "DecomposedLayerNormalization"]
    x = _data(seed=4, n=8)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_rewritten_model_round_trips_through_keras_saving(transformer: Any, tmp_path: Path) -> None:
    import tensorflow as tf

    clone = rewrites.decompose_layer_normalization(transformer)
    path = tmp_path / "rewritten.keras"
    clone.save(path)
    loaded = tf.keras.models.load_model(path)  # registered: no custom_objects needed
    assert "DecomposedLayerNormalization" in _layer_types(loaded)
    x = _data(seed=5, n=8)
    np.testing.assert_allclose(loaded(x).numpy(), clone(x).numpy(), rtol=1e-6, atol=1e-6)


def test_unrewritable_models_raise() -> None:
    import tensorflow as tf

    class Subclassed(tf.keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.norm = tf.keras.layers.LayerNormalization()

        def call(self, x: Any) -> Any:
            return self.norm(x)

    with pytest.raises(TfquantError, match=r"subclassed model .*tf.keras.Model\(inputs, outputs\)"):
        rewrites.decompose_layer_normalization(Subclassed())
    with pytest.raises(TfquantError, match=r"must be a tf.keras.Model, got str"):
        rewrites.decompose_layer_normalization("model.keras")  # type: ignore[arg-type]

    class Scale(tf.keras.layers.Layer):
        def __init__(self, factor: Any) -> None:
            super().__init__()
            self.factor = factor

        def call(self, x: Any) -> Any:
            return x * self.factor

    class ScaleWithPartialConfig(Scale):
        def get_config(self) -> dict[str, Any]:
            return {"name": self.name}  # no "factor": from_config raises TypeError

    inputs = tf.keras.Input((SEQ, DIM))
    # A numpy argument defeats Keras's automatic get_config (NotImplementedError).
    for layer, error in ((Scale(np.full(DIM, 2.0)), "NotImplementedError"),
                         (ScaleWithPartialConfig(2.0), "TypeError")):
        model = tf.keras.Model(inputs, tf.keras.layers.LayerNormalization()(layer(inputs)))
        with pytest.raises(
            TfquantError,
            match=rf"cannot clone layer .*\({type(layer).__name__}\).*{error}.*use mode int8",
        ):
            rewrites.decompose_layer_normalization(model)


@pytest.fixture(scope="module")
def transformer_int16x8(transformer: Any) -> bytes:
    return convert.convert(transformer, R16, calibration_data=_data(seed=0))


def test_int16x8_converts_runs_and_agrees_with_keras(
    transformer: Any, transformer_int16x8: bytes
) -> None:
    report = inspect_model(transformer_int16x8)
    assert "SQUARED_DIFFERENCE" not in report.op_counts
    assert report.op_counts["RSQRT"] == 3  # the three decomposed LayerNorms
    squares = [t.dtype for t in report.tensors if t.name.endswith("ln1/mul")]
    assert squares == ["int16"], squares  # d * d, quantized to int16
    x = _data(seed=7, n=256)
    ref = transformer(x).numpy()
    out = run_tflite(transformer_int16x8, x)
    agreement = float((out.argmax(1) == ref.argmax(1)).mean())
    assert agreement >= 0.95, agreement  # observed 1.0
    # Mean, not max: fresh random inputs reach per-token variances below the calibration
    # minimum, and the saturated RSQRT output then gives a few ~10% errors (int8 too).
    err = np.abs(out - ref).mean() / np.abs(ref).max()
    assert err < 5e-3, err  # observed 1.7e-3 (int8: 5.4e-3)
    # The caller's model was not rewritten in place.
    assert _layer_types(transformer).count("LayerNormalization") == 3


def test_int16x8_from_a_keras_file_is_rewritten(transformer: Any, tmp_path: Path) -> None:
    path = tmp_path / "transformer.keras"
    transformer.save(path)
    tflite = convert.convert(str(path), R16, calibration_data=_data(seed=0))
    assert "SQUARED_DIFFERENCE" not in inspect_model(tflite).op_counts


def test_int8_is_not_rewritten(transformer: Any) -> None:
    """int8 has a SQUARED_DIFFERENCE kernel, so it keeps Keras's own LayerNorm lowering."""
    recipe = Recipe(mode=Mode.INT8, num_calibration_examples=N)
    tflite = convert.convert(transformer, recipe, calibration_data=_data(seed=0))
    assert inspect_model(tflite).op_counts.get("SQUARED_DIFFERENCE") == 3


# --- hard-swish (MobileNetV3) ---------------------------------------------------------


def _hard_swish_cnn(seed: int = 0) -> Any:
    """Conv + hard-swish, built with keras.applications MobileNetV3's own helpers, plus an SE
    gate ``x * hard_sigmoid(s)`` of another tensor (not a hard-swish: must stay)."""
    import tensorflow as tf
    from tf_keras.src.applications import mobilenet_v3

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((8, 8, 3))
    x = mobilenet_v3.hard_swish(layers.Conv2D(8, 3, padding="same")(inputs))
    gate = mobilenet_v3.hard_sigmoid(layers.Conv2D(8, 1)(layers.GlobalAveragePooling2D(keepdims=True)(x)))
    x = layers.Multiply(name="se_gate")([x, gate])
    x = mobilenet_v3.hard_swish(layers.Conv2D(16, 3, strides=2, padding="same")(x))
    outputs = layers.Dense(CLASSES)(layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inputs, outputs)


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (n, 8, 8, 3)).astype(np.float32)


def test_hard_swish_rewrite_keeps_float_outputs() -> None:
    model = _hard_swish_cnn()
    # Keras numbers auto-named layers per process, so compare against the model's own names.
    swishes = [layer.name for layer in model.layers
               if layer.__class__.__name__ == "Multiply" and layer.name != "se_gate"]
    assert len(swishes) == 2
    assert rewrites.rewritable_hard_swishes(model) == swishes
    assert rewrites.int16x8_rewrites(model) == {"hard_swish": swishes}
    clone = rewrites.rewrite_for_int16x8(model)
    assert _layer_types(clone).count("DecomposedHardSwish") == 2
    assert clone.get_layer("se_gate").__class__.__name__ == "Multiply"
    assert rewrites.int16x8_rewrites(clone) == {}
    x = _images(1, 64)
    ref = model(x).numpy()
    assert np.abs(ref).max() > 0.1  # not a degenerate model
    np.testing.assert_allclose(clone(x).numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_hard_swish_int16x8_runs_and_agrees_with_float() -> None:
    model = _hard_swish_cnn()
    x = _images(2, N)
    r = Recipe(mode=Mode.INT16X8, num_calibration_examples=N)
    tflite = convert.convert(model, r, calibration_data=x)
    ops = {t for t in inspect_model(tflite).op_counts}
    assert "HARD_SWISH" not in ops
    ref = model(x).numpy()
    out = run_tflite(tflite, x)
    assert np.abs(out - ref).max() < 0.01 * np.abs(ref).max()
    assert np.mean(out.argmax(-1) == ref.argmax(-1)) >= 0.95
    # The model records what was rewritten, and inspect shows it.
    assert convert.read_rewrites(tflite) == rewrites.int16x8_rewrites(model)
    assert len(convert.read_rewrites(tflite)["hard_swish"]) == 2
    import tfquant

    assert "int16x8 rewrites (exact in float): hard_swish x2" in tfquant.inspect(tflite)
    # int8 keeps the fused op (it has an int8 kernel): the rewrite is int16x8 only.
    t8 = convert.convert(model, r.replace(mode=Mode.INT8), calibration_data=x)
    assert "HARD_SWISH" in inspect_model(t8).op_counts
    assert convert.read_rewrites(t8) == {}


def test_mobilenet_v3_hard_swishes_are_all_found() -> None:
    import tf_keras as keras

    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    )
    found = rewrites.rewritable_hard_swishes(model)
    # Every Multiply whose second input is hard_sigmoid of its first: 19 in MobileNetV3Small;
    # the 9 squeeze-excite gates multiply another tensor and are not hard-swish.
    multiplies = [l for l in model.layers if type(l) is keras.layers.Multiply]
    assert len(found) == 19 and len(multiplies) == 19 + 9
