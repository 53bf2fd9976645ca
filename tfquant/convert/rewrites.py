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

The TF 2.21 converter fuses hard-swish, ``x · relu6(x + 3) · (1/6)`` (Howard et al. 2019,
"Searching for MobileNetV3", arXiv:1905.02244, eq. 2), into one ``HARD_SWISH`` op, which it
cannot quantize to 16x8 ("Quantization to 16x8-bit not yet supported for op:
'HARD_SWISH'"). keras.applications MobileNetV3 writes it as ``Multiply([x, g])`` with
``g = ReLU(6)(x + 3) · (1/6)``. :func:`decompose_hard_swish` replaces that Multiply by
:class:`DecomposedHardSwish`, which computes ``(x · (1/6)) · relu6(x + 3)`` -- the same
product, associated differently (equal to rounding), a form the converter does not fuse, so
it lowers to ADD (with a fused RELU6), MUL and MUL, all with int16 kernels.

:func:`rewrite_for_int16x8` applies both; :func:`tfquant.convert.convert` calls it in mode
int16x8 only, on a clone (the caller's model is not modified), and
:func:`int16x8_rewrites` lists what it replaces.
"""

from __future__ import annotations

from typing import Any, Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.tflite import keras_internals


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
    return _clone_replacing(
        model, _new_layer_normalization, rewritable_layer_normalizations, "LayerNormalization"
    )


def _new_layer_normalization(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    if not _is_rewritable(layer):
        return None
    new = DecomposedLayerNormalization(
        epsilon=layer.epsilon, name=layer.name, dtype=layer.dtype_policy,
        trainable=layer.trainable,
    )
    new.build(tf.TensorShape([None, layer.gamma.shape[-1]]))
    new.set_weights(layer.get_weights())
    return new


def _clone_replacing(
    model: keras.Model,
    new_layer: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    rewritable: Callable[[keras.Model], list[str]],
    what: str,
) -> keras.Model:
    """A clone of ``model`` whose layers ``new_layer`` replaces (None: clone unchanged).

    Nested functional / Sequential models in which ``rewritable`` finds something are
    rewritten recursively; every other layer is cloned from its config with its weights.
    """
    if not isinstance(model, keras.Model):
        raise TfquantError(
            f"model must be a tf.keras.Model, got {type(model).__name__}; note tfquant uses "
            "Keras 2 (tf.keras / tf_keras), not Keras 3"
        )
    if not _is_graph_model(model):
        raise TfquantError(
            f"cannot rewrite the {what} layers of subclassed model {model.name!r}; "
            "build it with tf.keras.Model(inputs, outputs), or use mode int8"
        )
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model) and rewritable(layer):
            return _clone_replacing(layer, new_layer, rewritable, what)  # weights copied
        replaced = new_layer(layer)
        if replaced is not None:
            return replaced
        try:
            new = layer.__class__.from_config(layer.get_config())
        except (NotImplementedError, TypeError) as e:  # no get_config, or an incomplete one
            why = " ".join(str(e).split())[:120]
            raise TfquantError(
                f"cannot clone layer {layer.name!r} ({type(layer).__name__}) to rewrite the "
                f"model's {what} ({type(e).__name__}: {why}); give the layer a "
                "get_config() that from_config() accepts, or use mode int8"
            ) from None
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return clone


@keras.utils.register_keras_serializable(package="tfquant")
class DecomposedHardSwish(keras.layers.Layer):
    """Hard-swish of ``x`` as ``(x · (1/6)) · relu6(x + 3)``, which the converter does not fuse.

    Takes the two inputs of the Multiply it replaces, ``[x, g]`` with
    ``g = relu6(x + 3) · (1/6)`` (in either order, ``x_index`` says which is ``x``), and
    recomputes the product from ``x`` alone: ``h(x) = x · relu6(x + 3) / 6`` (Howard et al.
    2019, arXiv:1905.02244, eq. 2), equal to ``x · g`` up to float rounding. ``g`` is not
    used, so the converter drops the ops that computed it.

    Registered for Keras serialization as ``tfquant>DecomposedHardSwish``.

    Args:
      x_index: which input (0 or 1) is ``x``.
      **kwargs: Standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, *, x_index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x_index = int(x_index)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        x = inputs[self.x_index]
        return (x * (1.0 / 6.0)) * tf.nn.relu6(x + 3.0)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape[self.x_index])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["x_index"] = self.x_index
        return config


def _producer(tensor: Any) -> tuple[keras.layers.Layer, Any] | None:
    """The layer that made a Keras tensor and that layer's node."""
    slot = keras_internals.producer_slot(tensor)
    if slot is None:
        return None
    layer, node_index, _ = slot
    return layer, layer.inbound_nodes[node_index]


def _op_constant(layer: keras.layers.Layer, node: Any, symbols: tuple[str, ...]) -> float | None:
    """The scalar constant of a TFOpLambda ``x <op> c`` node with one of ``symbols``."""
    if type(layer).__name__ != "TFOpLambda" or getattr(layer, "symbol", None) not in symbols:
        return None
    args = list(node.call_args[1:]) + [node.call_kwargs.get("y")]
    for value in args:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _is_relu6(layer: keras.layers.Layer) -> bool:
    if type(layer) is keras.layers.ReLU:
        return (
            layer.max_value is not None and float(layer.max_value) == 6.0
            and float(layer.threshold) == 0.0 and float(layer.negative_slope) == 0.0
        )
    return type(layer) is keras.layers.Activation and layer.activation is tf.nn.relu6


def _single_input(node: Any) -> Any:
    tensors = tf.nest.flatten(node.input_tensors)
    return tensors[0] if len(tensors) == 1 else None


def _same_tensor(a: Any, b: Any) -> bool:
    sa, sb = keras_internals.producer_slot(a), keras_internals.producer_slot(b)
    return sa is not None and sb is not None and sa[0] is sb[0] and sa[1:] == sb[1:]


def _hard_swish_x_index(layer: keras.layers.Layer) -> int | None:
    """For ``Multiply([x, relu6(x + 3) · (1/6)])`` (either order): the index of ``x``."""
    if type(layer) is not keras.layers.Multiply or len(layer.inbound_nodes) != 1:
        return None
    inputs = tf.nest.flatten(layer.inbound_nodes[0].input_tensors)
    if len(inputs) != 2:
        return None
    for x_index in (0, 1):
        x, gate = inputs[x_index], inputs[1 - x_index]
        step = _producer(gate)
        if step is None:
            continue
        scale_layer, scale_node = step
        scale = _op_constant(scale_layer, scale_node, ("math.multiply", "__operators__.mul"))
        if scale is None:
            divisor = _op_constant(scale_layer, scale_node, ("math.truediv", "__operators__.truediv"))
            scale = 1.0 / divisor if divisor else None
        if scale is None or abs(scale - 1.0 / 6.0) > 1e-6:
            continue
        step = _producer(_single_input(scale_node))
        if step is None or not _is_relu6(step[0]):
            continue
        step = _producer(_single_input(step[1]))
        if step is None:
            continue
        shift = _op_constant(step[0], step[1], ("__operators__.add", "math.add"))
        if shift == 3.0 and _same_tensor(_single_input(step[1]), x):
            return x_index
    return None


def rewritable_hard_swishes(model: keras.Model) -> list[str]:
    """Names of the hard-swish Multiply layers :func:`decompose_hard_swish` replaces.

    A ``keras.layers.Multiply`` of ``x`` and ``relu6(x + 3) · (1/6)`` (or ``/ 6``), built
    from TFOpLambda ``+`` / ``*`` and a ``ReLU(6.0)`` layer, as keras.applications
    MobileNetV3 does. Nested functional / Sequential models are searched too
    (``"outer/inner"`` names).
    """
    names: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += [f"{layer.name}/{n}" for n in rewritable_hard_swishes(layer)]
        elif _hard_swish_x_index(layer) is not None:
            names.append(layer.name)
    return names


def _new_hard_swish(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    x_index = _hard_swish_x_index(layer)
    if x_index is None:
        return None
    return DecomposedHardSwish(x_index=x_index, name=layer.name, dtype=layer.dtype_policy)


def decompose_hard_swish(model: keras.Model) -> keras.Model:
    """A clone of ``model`` with each hard-swish Multiply replaced, same weights, same outputs.

    Each layer :func:`rewritable_hard_swishes` lists becomes a :class:`DecomposedHardSwish`
    of the same name, ``(x · (1/6)) · relu6(x + 3)`` instead of ``x · (relu6(x + 3) · (1/6))``
    (equal up to float rounding), which the TFLite converter does not fuse into the
    ``HARD_SWISH`` op that it cannot quantize to 16x8. Other layers are cloned with their
    weights.

    Raises:
      TfquantError: as :func:`decompose_layer_normalization`.
    """
    return _clone_replacing(model, _new_hard_swish, rewritable_hard_swishes, "hard-swish")


def int16x8_rewrites(model: keras.Model) -> dict[str, list[str]]:
    """What :func:`rewrite_for_int16x8` replaces: rewrite name -> layer names (non-empty only)."""
    found = {
        "layer_normalization": rewritable_layer_normalizations(model),
        "hard_swish": rewritable_hard_swishes(model),
    }
    return {name: layers for name, layers in found.items() if layers}


def rewrite_for_int16x8(model: keras.Model) -> keras.Model:
    """``model`` with the int16x8 rewrites applied (a clone), or ``model`` itself if none apply.

    LayerNormalization -> :class:`DecomposedLayerNormalization` and hard-swish ->
    :class:`DecomposedHardSwish`; both exact in float (see the module docstring).

    Raises:
      TfquantError: as :func:`decompose_layer_normalization`.
    """
    found = int16x8_rewrites(model)
    if "layer_normalization" in found:
        model = decompose_layer_normalization(model)
    if "hard_swish" in found:
        model = decompose_hard_swish(model)
    return model
