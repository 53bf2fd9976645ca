"""TF-op lambda layers (``TFOpLambda``) rewritten as a layer tfmot can carry through QAT.

Calling a TF function on a Keras tensor in a functional model (``tf.nn.relu6(x)``,
``x * 0.5``, ``tf.reduce_mean(x, axis=[1, 2])``) makes a ``TFOpLambda`` layer whose
non-tensor arguments live in the *model's* node data, not in the layer. tfmot rebuilds the
model from configs while quantizing and the rebuilt ``TFOpLambda`` loses its static output
shape (the next Dense fails with "The last dimension of the inputs to a Dense layer should be
defined"), so tfmot cannot quantize a model that has one.

:func:`bind_tf_op_layers` rewrites the model config: each ``TFOpLambda`` becomes a
:class:`TFOpCall` with the same name whose config holds the TF function and its constant
arguments, and whose inputs are the op's tensor arguments in order. The function computed is
the same (float outputs are identical); only the bookkeeping moves into the layer.
"""

from __future__ import annotations

import copy
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError

_TF_OP_CLASS = "TFOpLambda"
_CONSTANT_VALUE = "_CONSTANT_VALUE"  # tf_keras's marker for a constant first argument


def _resolve(function: str) -> Any:
    """The TF API symbol ``function`` names, e.g. ``math.multiply`` -> ``tf.math.multiply``."""
    obj: Any = tf
    for part in function.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if not callable(obj):
        raise TfquantError(
            f"TF op {function!r} is not a tf.* function this TensorFlow has; rebuild the "
            "model with the installed TensorFlow"
        )
    return obj


@keras.utils.register_keras_serializable(package="tfquant")
class TFOpCall(keras.layers.Layer):
    """One TF function applied to tensor inputs, its constant arguments bound in the config.

    ``call(inputs)`` computes ``function(first, **constant_kwargs, **{k: t_k})`` where
    ``first`` is ``inputs[0]`` (or the list ``inputs[:num_first]`` when ``first_is_list``)
    and the remaining inputs are the tensor-valued keyword arguments ``tensor_kwargs``, in
    order.

    Args:
      function: The TF API path without ``tf.`` (as ``TFOpLambda`` records it), e.g.
        ``math.multiply``.
      num_first: Number of tensors in the first argument.
      first_is_list: The first argument is a list of tensors (``tf.concat([a, b], ...)``).
      tensor_kwargs: Names of keyword arguments that are tensors.
      constant_kwargs: The other keyword arguments (JSON values).
      **kwargs: Standard layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        *,
        function: str,
        num_first: int = 1,
        first_is_list: bool = False,
        tensor_kwargs: tuple[str, ...] | list[str] = (),
        constant_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.function = str(function)
        self.num_first = int(num_first)
        self.first_is_list = bool(first_is_list)
        self.tensor_kwargs = tuple(str(k) for k in tensor_kwargs)
        self.constant_kwargs = dict(constant_kwargs or {})
        self._fn = _resolve(self.function)

    def call(self, inputs: Any) -> Any:
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        assert len(tensors) == self.num_first + len(self.tensor_kwargs), (self.name, len(tensors))
        first = tensors[: self.num_first] if self.first_is_list else tensors[0]
        kwargs = dict(self.constant_kwargs)
        kwargs.update(zip(self.tensor_kwargs, tensors[self.num_first :]))
        return self._fn(first, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            function=self.function,
            num_first=self.num_first,
            first_is_list=self.first_is_list,
            tensor_kwargs=list(self.tensor_kwargs),
            constant_kwargs=copy.deepcopy(self.constant_kwargs),
        )
        return config


def _is_ref(value: Any, layer_names: set[str]) -> bool:
    """A serialized Keras tensor in node data: ``[layer_name, node_index, tensor_index]``."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and isinstance(value[0], str)
        and value[0] in layer_names
        and all(isinstance(v, int) for v in value[1:])
    )


def _holds_ref(value: Any, layer_names: set[str]) -> bool:
    if _is_ref(value, layer_names):
        return True
    if isinstance(value, dict):
        return any(_holds_ref(v, layer_names) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_ref(v, layer_names) for v in value)
    return False


def _unsupported(name: str, why: str) -> TfquantError:
    return TfquantError(
        f"TF-op layer {name!r} cannot be quantized ({why}); replace it with a Keras layer "
        f"or leave it unquantized with skip_layers=[{name!r}] (qat --skip_layers {name})"
    )


def _bind(layer_config: dict[str, Any], layer_names: set[str]) -> dict[str, Any]:
    """The config of the :class:`TFOpCall` replacing one ``TFOpLambda`` layer config."""
    name = layer_config["config"]["name"]
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise _unsupported(name, f"it is called {len(nodes)} times")
    node = nodes[0]
    # A one-argument call is stored as the entry itself, a list argument as a list of entries.
    entries = [node] if node and isinstance(node[0], str) else list(node)
    kwargs = entries[0][3] if len(entries[0]) > 3 else {}
    if any((e[3] if len(e) > 3 else {}) != kwargs for e in entries):
        raise _unsupported(name, "its list argument has per-element keyword arguments")
    if any(e[0] == _CONSTANT_VALUE for e in entries):
        raise _unsupported(name, "its first argument is a constant")
    tensor_kwargs = {k: v for k, v in kwargs.items() if _is_ref(v, layer_names)}
    constant_kwargs = {k: v for k, v in kwargs.items() if k not in tensor_kwargs and k != "name"}
    if _holds_ref(constant_kwargs, layer_names):
        raise _unsupported(name, "a keyword argument nests tensors in a list or dict")
    new_entries = [list(e[:3]) + [{}] for e in entries]
    new_entries += [list(ref) + [{}] for ref in tensor_kwargs.values()]
    return {
        "class_name": "TFOpCall",
        "name": name,
        "config": {
            "name": name,
            "trainable": layer_config["config"].get("trainable", True),
            "dtype": layer_config["config"].get("dtype", "float32"),
            "function": layer_config["config"]["function"],
            "num_first": len(entries),
            "first_is_list": len(entries) > 1,
            "tensor_kwargs": list(tensor_kwargs),
            "constant_kwargs": constant_kwargs,
        },
        "inbound_nodes": [new_entries],
    }


def has_tf_op_layers(model: keras.Model) -> bool:
    """Whether the model has a ``TFOpLambda`` (or ``SlicingOpLambda``) layer."""
    return any(type(layer).__name__ in (_TF_OP_CLASS, "SlicingOpLambda") for layer in model.layers)


def bind_tf_op_layers(model: keras.Model) -> keras.Model:
    """A copy of a functional model with every ``TFOpLambda`` replaced by a :class:`TFOpCall`.

    Layer names and weights are kept; ``model`` is not modified. Returns ``model`` itself
    when it has no TF-op layer.

    Raises:
      TfquantError: a TF-op layer that cannot be bound (slicing ``x[...]``, a shared op,
        tensors nested in arguments), or a model that cannot be rebuilt from its config.
    """
    if not has_tf_op_layers(model):
        return model
    config = copy.deepcopy(model.get_config())
    layer_names = {layer_config["config"]["name"] for layer_config in config["layers"]}
    for i, layer_config in enumerate(config["layers"]):
        if layer_config["class_name"] == "SlicingOpLambda":
            raise _unsupported(layer_config["config"]["name"], "tensor slicing x[...]")
        if layer_config["class_name"] == _TF_OP_CLASS:
            config["layers"][i] = _bind(layer_config, layer_names)
    try:
        rebuilt = keras.Model.from_config(config, custom_objects={"TFOpCall": TFOpCall})
    except (ValueError, TypeError, KeyError) as e:
        raise TfquantError(
            f"cannot rebuild model {model.name!r} to bind its TF-op layers "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); register custom layers "
            "with keras.utils.register_keras_serializable"
        ) from None
    for layer in rebuilt.layers:
        weights = model.get_layer(layer.name).get_weights()
        if weights:
            layer.set_weights(weights)
    return rebuilt


def is_shape_op(layer: TFOpCall) -> bool:
    """Whether the op only moves values (reshape, transpose, ...): it keeps its input's scale."""
    return layer.function.split(".")[-1] in _SHAPE_OPS


_SHAPE_OPS = frozenset(
    {
        "reshape",
        "transpose",
        "squeeze",
        "expand_dims",
        "identity",
        "space_to_depth",
        "depth_to_space",
    }
)
