"""Functional-graph plumbing: walk a Keras 2 functional model and rebuild it with edits.

:func:`rebuild` replays every layer call of a functional model in topological order on new
inputs, letting the caller replace layers (BN folding, fake-quantized kernels) and wrap
any tensor (fake-quant after a layer output). :func:`consumers` maps each tensor to the
layers that read it, which the quantization-point rules need.
"""

from __future__ import annotations

from typing import Any, Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.tflite import keras_internals

IDENTITY = object()
"""Returned by a ``replace_layer`` callback: drop the layer, its output is its first input."""

MODEL_OUTPUT = "<model output>"


def check_functional(model: object) -> keras.Model:
    """Returns ``model`` if it is a functional Keras 2 model without nested models.

    Raises:
      TfquantError: For a non-tf_keras object, a subclassed model, or a model that holds
        another model as a layer.
    """
    if not isinstance(model, keras.Model):
        raise TfquantError(
            f"model must be a tf_keras (Keras 2) Model, got {type(model).__name__}; load it "
            "with tfquant.convert.load_model or build it with tf_keras"
        )
    if not getattr(model, "_is_graph_network", False):
        raise TfquantError(
            f"model {model.name!r} is subclassed; simulation needs a functional or Sequential "
            "model (rebuild it with keras.Input and layer calls)"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise TfquantError(
                f"model {model.name!r} nests model {layer.name!r} as a layer; flatten it "
                "into one functional model before simulating"
            )
    return model


def nodes_in_order(model: keras.Model) -> list[Any]:
    """The model's layer calls (Keras ``Node`` objects), inputs first, in a valid order."""
    nodes: list[Any] = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes.extend(n for n in model._nodes_by_depth[depth] if not n.is_input)
    return nodes


def consumers(model: keras.Model) -> dict[int, list[Any]]:
    """``id(tensor) -> layers that read it``; a model output also lists :data:`MODEL_OUTPUT`."""
    out: dict[int, list[Any]] = {}
    for node in nodes_in_order(model):
        for t in node.keras_inputs:
            out.setdefault(id(t), []).append(node.layer)
    for t in model.outputs:
        out.setdefault(id(t), []).append(MODEL_OUTPUT)
    return out


def producer(tensor: Any) -> keras.layers.Layer:
    """The layer whose call produced KerasTensor ``tensor``."""
    layer = keras_internals.producer(tensor)
    if layer is None:
        raise TypeError(f"{tensor!r} is not a Keras symbolic tensor")
    return layer


def rebuild(
    model: keras.Model,
    *,
    replace_layer: Callable[[keras.layers.Layer], Any] | None = None,
    wrap: Callable[[Any, tf.Tensor], tf.Tensor] | None = None,
    name: str | None = None,
) -> keras.Model:
    """A new functional model that replays ``model``'s graph with edits.

    Args:
      model: A functional model (see :func:`check_functional`).
      replace_layer: ``layer -> (new unbuilt layer, its weights)`` or :data:`IDENTITY` to
        drop the layer. Called once per layer (a shared layer's replacement is shared); the
        weights are set after the new layer's first call builds it. Default
        :func:`copy_layer`.
      wrap: ``(original KerasTensor, new tensor) -> new tensor``, applied to every model
        input and every layer output (e.g. to insert a fake-quant layer); identity if None.
      name: Name of the new model (default: the original's).

    Returns:
      The new model; ``model`` is not modified.
    """
    replace_layer = replace_layer or copy_layer
    wrap = wrap or (lambda _old, new: new)
    new_of: dict[int, Any] = {}
    new_inputs = []
    for t in model.inputs:
        fresh = keras.Input(
            shape=t.shape[1:], batch_size=t.shape[0], dtype=t.dtype,
            name=producer(t).name,
        )
        new_inputs.append(fresh)
        new_of[id(t)] = wrap(t, fresh)
    replaced: dict[int, Any] = {}
    for node in nodes_in_order(model):
        layer = node.layer
        args, kwargs = tf.nest.map_structure(
            lambda v: new_of.get(id(v), v), (node.call_args, node.call_kwargs)
        )
        first_call = id(layer) not in replaced
        if first_call:
            replaced[id(layer)] = replace_layer(layer)
        replacement = replaced[id(layer)]
        if replacement is IDENTITY:
            outputs = tf.nest.flatten(args)[0]
        else:
            new_layer, weights = replacement
            outputs = new_layer(*args, **kwargs)
            if first_call and weights is not None:
                new_layer.set_weights(weights)
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            new_of[id(old)] = wrap(old, new)
    outputs = tf.nest.map_structure(lambda t: new_of[id(t)], model._nested_outputs)
    return keras.Model(new_inputs, outputs, name=name or model.name)


def copy_layer(layer: keras.layers.Layer) -> tuple[keras.layers.Layer, list[Any]]:
    """An unchanged copy of ``layer``: a clone from its config and its current weights."""
    return clone_layer(layer), layer.get_weights()


def clone_layer(layer: keras.layers.Layer, **config_changes: Any) -> keras.layers.Layer:
    """A fresh, unbuilt copy of ``layer`` from its config, with ``config_changes`` applied."""
    config = layer.get_config()
    config.update(config_changes)
    return layer.__class__.from_config(config)
