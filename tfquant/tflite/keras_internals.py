"""tf-keras internals (``tf_keras.src``) that tfquant uses, each behind one function.

tf-keras 2.21 keeps these out of its public ``tf_keras`` namespace:

* :func:`application_layers`: keras.applications' own layers that are not registered as
  serializable (ConvNeXt's ``LayerScale`` / ``StochasticDepth``, InceptionResNetV2's
  ``CustomScaleLayer``), needed to load a saved model that uses them;
* :func:`builtin_layer_names`: the class names Keras's layer deserializer resolves by itself
  (``tf_keras.src.layers.serialization``), to tell a missing custom class from a built-in;
* :func:`load_legacy_h5_weights`: the Keras 2 HDF5 weights loader. tf-keras picks a loader
  by file name and sends every ``*.weights.h5`` to the Keras 3 layout, so files in the
  Keras 2 layout (what the zoo's training writes) need the legacy loader called directly;
* :func:`producer`: the layer whose call produced a symbolic tensor (``_keras_history``,
  how tf-keras itself walks a functional graph), None for a non-Keras value;
* :func:`inbound_layers`: the layers feeding a layer's calls (``_inbound_nodes``).

Imports happen inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any


def application_layers() -> dict[str, type]:
    """``{name: class}`` of keras.applications' unregistered layers (see module docstring)."""
    from tf_keras.src.applications import convnext, inception_resnet_v2

    return {
        "LayerScale": convnext.LayerScale,
        "StochasticDepth": convnext.StochasticDepth,
        "CustomScaleLayer": inception_resnet_v2.CustomScaleLayer,
    }


def builtin_layer_names() -> set[str]:
    """Names the tf-keras layer deserializer knows without custom objects."""
    from tf_keras.src.layers import serialization as layer_serialization

    layer_serialization.populate_deserializable_objects()
    return set(layer_serialization.LOCAL.ALL_OBJECTS)


def load_legacy_h5_weights(model: Any, path: str) -> None:
    """Loads a Keras 2 layout HDF5 weights file into ``model`` (tf-keras's legacy loader)."""
    from tf_keras.src.saving.legacy import save as legacy_save

    legacy_save.load_weights(model, path)


def producer(tensor: Any) -> Any | None:
    """The layer whose call produced symbolic tensor ``tensor``; None for other values."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.layer


def producer_slot(tensor: Any) -> tuple[Any, int, int] | None:
    """``(layer, node_index, tensor_index)`` of a symbolic tensor (which call, which output);
    None for a value that is not a Keras symbolic tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return history.layer, history.node_index, history.tensor_index


def inbound_layers(layer: Any) -> list[Any]:
    """Every layer that feeds one of ``layer``'s calls in its functional graph(s), in order."""
    out: list[Any] = []
    for node in layer._inbound_nodes:  # noqa: SLF001
        inbound = node.inbound_layers
        out.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
    return out
