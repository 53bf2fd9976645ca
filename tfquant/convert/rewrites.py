"""Keras model rewrites applied before conversion, exact in float.

LiteRT (ai-edge-litert 2.3.0) has no int16 ``SQUARED_DIFFERENCE`` kernel, and Keras
``LayerNormalization`` lowers to one (through ``tf.nn.moments``), so an int16x8 model with
LayerNorm does not run. :func:`decompose_layer_normalization` replaces each such layer by
:class:`DecomposedLayerNormalization`, which computes the same function from ops that do
have int16 kernels (MEAN, SUB, MUL, ADD, RSQRT)::

    d = x - mean(x, axis=-1)
    y = d * rsqrt(mean(d * d, axis=-1) + eps) * gamma + beta

This is Ba et al. (2016), "Layer Normalization", arXiv:1607.06450, eq. 4 with gain
``gamma`` and bias ``beta``; ``mean(d * d)`` is the biased variance that ``tf.nn.moments``
computes, so in float the two layers agree to rounding (~1e-6 relative).
:func:`tfquant.convert.convert` applies the rewrite automatically in mode int16x8 only.
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError


@keras.utils.register_keras_serializable(package="tfquant")
class DecomposedLayerNormalization(keras.layers.Layer):
    """Layer normalization over the last axis, written without ``SquaredDifference``.

    ``d = x - mean(x)``, ``var = mean(d · d)``, ``y = d · rsqrt(var + ε) · γ + β`` with the
    means over the last axis (Ba et al., 2016, arXiv:1607.06450, eq. 4). Numerically the same
    as ``keras.layers.LayerNormalization(axis=-1)``, but it lowers to MEAN, SUB, MUL, RSQRT
    and ADD, which all have int16 kernels in LiteRT. Weights ``gamma`` and ``beta`` have the
    shape ``(dim,)`` and the order of LayerNormalization's, so ``set_weights`` takes its
    weights unchanged.

    Registered for Keras serialization as ``tfquant>DecomposedLayerNormalization``.

    Args:
      epsilon: ε added to the variance.
      **kwargs: Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, *, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape: tf.TensorShape) -> None:
        dim = tf.TensorShape(input_shape)[-1]
        if dim is None:
            # Internal invariant: only layers whose last axis is known are rewritten.
            raise ValueError(f"DecomposedLayerNormalization needs a known last axis: {input_shape}")
        self.gamma = self.add_weight(
            name="gamma", shape=(int(dim),), initializer="ones", trainable=True
        )
        self.beta = self.add_weight(
            name="beta", shape=(int(dim),), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        d = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(d * d, axis=-1, keepdims=True)
        return d * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


def _is_rewritable(layer: keras.layers.Layer) -> bool:
    """A LayerNormalization in a graph, over its last axis only, with gamma and beta.

    ``build`` turns ``axis=-1`` into ``[rank - 1]``, so the rank comes from the input.
    """
    if type(layer) is not keras.layers.LayerNormalization or not layer.built:
        return False
    if not (layer.center and layer.scale):
        return False
    try:
        rank = len(layer.get_input_shape_at(0))
    except (AttributeError, RuntimeError, ValueError):  # never called on a Keras tensor
        return False
    return list(layer.axis) in ([rank - 1], [-1])


def rewritable_layer_normalizations(model: keras.Model) -> list[str]:
    """Names of the LayerNormalization layers :func:`decompose_layer_normalization` replaces.

    Searches nested functional / Sequential models too (``"outer/inner"`` names). Layers
    of subclassed models are never listed: they are not in a graph of Keras layers.

    Args:
      model: a Keras 2 model.

    Returns:
      The names, in ``model.layers`` order; empty for a model without such layers.
    """
    names: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += [f"{layer.name}/{n}" for n in rewritable_layer_normalizations(layer)]
        elif _is_rewritable(layer):
            names.append(layer.name)
    return names


def _is_graph_model(model: keras.Model) -> bool:
    return isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)


def decompose_layer_normalization(model: keras.Model) -> keras.Model:
    """A clone of ``model`` with each LayerNormalization replaced, same weights, same outputs.

    Every ``keras.layers.LayerNormalization`` that normalizes over the last axis only with
    ``center=True`` and ``scale=True`` (the Keras defaults, and what transformers use)
    becomes a :class:`DecomposedLayerNormalization` with the same name, ε and trained
    ``gamma`` / ``beta``; ``y = (x - μ) · rsqrt(σ² + ε) · γ + β`` is unchanged, only its ops
    are (no ``SquaredDifference``). Other LayerNormalizations (several axes, a leading axis,
    no centering or scaling) and all other layers are cloned unchanged, with their weights.
    Nested functional / Sequential models are rewritten recursively. Regularizers and
    constraints of the replaced layers are not carried over: the clone is for inference.

    Args:
      model: a functional or Sequential Keras 2 model (``tf.keras`` / ``tf_keras``).

    Returns:
      A new model; ``model`` itself is not modified and shares no weights with it.

    Raises:
      TfquantError: ``model`` (or a nested model holding a LayerNormalization) is
        subclassed, or one of its layers cannot be cloned from its config.
    """
    if not isinstance(model, keras.Model):
        raise TfquantError(
            f"model must be a tf.keras.Model, got {type(model).__name__}; note tfquant uses "
            "Keras 2 (tf.keras / tf_keras), not Keras 3"
        )
    if not _is_graph_model(model):
        raise TfquantError(
            f"cannot rewrite the LayerNormalization layers of subclassed model {model.name!r}; "
            "build it with tf.keras.Model(inputs, outputs), or use mode int8"
        )
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model) and rewritable_layer_normalizations(layer):
            return decompose_layer_normalization(layer)  # weights already copied
        if _is_rewritable(layer):
            new: keras.layers.Layer = DecomposedLayerNormalization(
                epsilon=layer.epsilon, name=layer.name, dtype=layer.dtype_policy,
                trainable=layer.trainable,
            )
            new.build(tf.TensorShape([None, layer.gamma.shape[-1]]))
            new.set_weights(layer.get_weights())
            return new
        try:
            new = layer.__class__.from_config(layer.get_config())
        except (NotImplementedError, TypeError) as e:  # no get_config, or an incomplete one
            why = " ".join(str(e).split())[:120]
            raise TfquantError(
                f"cannot clone layer {layer.name!r} ({type(layer).__name__}) to rewrite the "
                f"model's LayerNormalization ({type(e).__name__}: {why}); give the layer a "
                "get_config() that from_config() accepts, or use mode int8"
            ) from None
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return clone
