"""Batch-norm folding for inference (Krishnamoorthi 2018, arXiv 1806.08342, Sec. 3.2).

A BatchNormalization in inference mode is a per-channel affine map of its input,
``y = γ (x - μ) / σ + β`` with the moving statistics μ, var and σ = sqrt(var + ε). When x is
the output of a Conv2D / DepthwiseConv2D / Dense ``x = W * a + b``, the two fold into one
layer with

    W_inf[..., k] = γ_k W[..., k] / σ_k,     b_inf[k] = β_k + γ_k (b_k - μ_k) / σ_k

per output channel k (a DepthwiseConv2D kernel ``(kh, kw, C, mult)`` has output channel
``k = c * mult + m``). The whitepaper writes the bias without a conv bias,
b_inf = β - γμ/σ. TFLite's converter does the same fold; doing it in Keras lets us look at
the folded weights: γ/σ differs per channel by orders of magnitude in MobileNets, which is
why one per-layer weight scale fails on them (whitepaper Sec. 3.1 / Fig. 2;
:func:`per_channel_weight_ranges`).

The QAT variant, where the fold happens during training with batch statistics, is in
:mod:`tfquant.algorithms.bn_fold_qat`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterator, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.algorithms.weight_grid import reduce_axes
from tfquant.errors import TfquantError
from tfquant.models.kernels import activation_channel_axis, layer_kernel

# Exact classes: subclasses such as Conv2DTranspose store their kernel differently.
FOLDABLE_LAYERS: tuple[type[keras.layers.Layer], ...] = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)


@dataclasses.dataclass(frozen=True)
class FoldPair:
    """A weight layer whose only consumer is a BatchNormalization that can fold into it."""

    layer: str
    batch_norm: str


def fold_kernel_and_bias(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    gamma: np.ndarray,
    beta: np.ndarray,
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    epsilon: float,
    channel_axes: tuple[int, ...] = (-1,),
) -> tuple[np.ndarray, np.ndarray]:
    """W_inf = γW/σ per output channel and b_inf = β + γ(b - μ)/σ, σ = sqrt(var + ε).

    Args:
        kernel: The weight layer's kernel.
        bias: Its bias, or None for ``use_bias=False`` (treated as 0).
        gamma, beta, moving_mean, moving_variance: BN parameters, one per output channel.
        epsilon: BN's ε.
        channel_axes: The kernel's output-channel axes ((-1,) for Conv2D/Dense, (2, 3) for
            DepthwiseConv2D, whose flattened order c * mult + m is the BN channel order).

    Returns:
        ``(W_inf, b_inf)`` in the kernel's dtype, computed in float64.
    """
    w = np.asarray(kernel, dtype=np.float64)
    rank = w.ndim
    axes = [a % rank for a in channel_axes]
    sigma = np.sqrt(np.asarray(moving_variance, np.float64) + epsilon)
    factor = np.asarray(gamma, np.float64) / sigma
    shape = [1] * rank
    for a in axes:
        shape[a] = w.shape[a]
    folded_w = w * factor.reshape(shape)  # channel axes are in kernel order, so c*mult+m matches
    b = np.zeros_like(factor) if bias is None else np.asarray(bias, np.float64)
    folded_b = np.asarray(beta, np.float64) + factor * (b - np.asarray(moving_mean, np.float64))
    dtype = np.asarray(kernel).dtype
    return folded_w.astype(dtype), folded_b.astype(dtype)


def _is_ref(x: Any) -> bool:
    return (
        isinstance(x, list)
        and len(x) in (3, 4)
        and isinstance(x[0], str)
        and isinstance(x[1], int)
        and not isinstance(x[1], bool)
        and isinstance(x[2], int)
        and not isinstance(x[2], bool)
    )


def _refs(data: Any) -> Iterator[list[Any]]:
    """Every ``[layer_name, node_index, tensor_index(, kwargs)]`` in serialized node data."""
    if _is_ref(data):
        yield data
        if len(data) == 4:
            yield from _refs(data[3])
    elif isinstance(data, list):
        for item in data:
            yield from _refs(item)
    elif isinstance(data, dict):
        for item in data.values():
            yield from _refs(item)


def _rename_refs(data: Any, renames: Mapping[str, str]) -> Any:
    if _is_ref(data):
        out = [renames.get(data[0], data[0]), data[1], data[2]]
        if len(data) == 4:
            out.append(_rename_refs(data[3], renames))
        return out
    if isinstance(data, list):
        return [_rename_refs(item, renames) for item in data]
    if isinstance(data, dict):
        return {k: _rename_refs(v, renames) for k, v in data.items()}
    return data


def as_functional(model: keras.Model) -> keras.Model:
    """``model`` itself if functional, a functional view of a Sequential one.

    Raises:
        TfquantError: If ``model`` is subclassed, or Sequential without a defined input.
    """
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise TfquantError(
                f"Sequential model {model.name!r} has no defined input; start it with "
                "keras.Input(shape=...) or call model.build(input_shape) before folding"
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise TfquantError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model; BN folding "
            "needs a functional or Sequential tf-keras model built from keras.Input"
        )
    return model


def _foldable_pairs(model: keras.Model, config: dict[str, Any]) -> list[FoldPair]:
    entries = {entry["name"]: entry for entry in config["layers"]}
    consumers: dict[str, int] = {}
    for entry in config["layers"]:
        for ref in _refs(entry["inbound_nodes"]):
            consumers[ref[0]] = consumers.get(ref[0], 0) + 1
    for ref in _refs(config["output_layers"]):
        consumers[ref[0]] = consumers.get(ref[0], 0) + 1
    live = {layer.name: layer for layer in model.layers}

    pairs = []
    for entry in config["layers"]:
        bn = live.get(entry["name"])
        if type(bn) is not keras.layers.BatchNormalization or len(entry["inbound_nodes"]) != 1:
            continue
        refs = list(_refs(entry["inbound_nodes"]))
        if len(refs) != 1 or refs[0][1:3] != [0, 0]:
            continue
        call_kwargs = refs[0][3] if len(refs[0]) == 4 else {}
        if call_kwargs.get("training"):  # forced training-mode BN is not an affine map
            continue
        prev = live.get(refs[0][0])
        if type(prev) not in FOLDABLE_LAYERS or len(entries[prev.name]["inbound_nodes"]) != 1:
            continue
        if consumers.get(prev.name, 0) != 1:  # the pre-BN tensor is used elsewhere
            continue
        if prev.activation is not keras.activations.linear:
            continue
        if list(bn.axis) != [activation_channel_axis(prev)]:
            continue
        pairs.append(FoldPair(layer=prev.name, batch_norm=bn.name))
    return pairs


def rebuild_without_batch_norms(
    config: dict[str, Any],
    pairs: list[FoldPair],
    edits: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
    *,
    custom_objects: Mapping[str, Any] | None = None,
) -> keras.Model:
    """A new functional model from ``config`` without the pairs' BNs (weights not set).

    Consumers of each BN are rewired to its weight layer; ``edits[name](entry)`` returns
    the replacement config entry of layer ``name`` (it keeps its name and inbound nodes).
    """
    renames = {p.batch_norm: p.layer for p in pairs}
    kept = []
    for entry in config["layers"]:
        if entry["name"] in renames:
            continue
        if entry["name"] in edits:
            inbound = entry["inbound_nodes"]
            entry = edits[entry["name"]](entry)
            entry["inbound_nodes"] = inbound
        entry["inbound_nodes"] = _rename_refs(entry["inbound_nodes"], renames)
        kept.append(entry)
    config = dict(config, layers=kept, output_layers=_rename_refs(config["output_layers"], renames))
    with keras.utils.custom_object_scope(dict(custom_objects or {})):
        return keras.Model.from_config(config)


def foldable_pairs(model: keras.Model) -> list[FoldPair]:
    """The (weight layer, BatchNormalization) pairs :func:`fold_batch_norms` folds.

    A pair qualifies when the layer is exactly a Conv1D/2D/3D, DepthwiseConv2D or Dense with
    a linear activation, is called once, its output feeds only the BN (not another layer, not
    a model output), the BN is called once (not forced to ``training=True``) and normalises
    the layer's channel axis.

    Raises:
        TfquantError: If ``model`` is subclassed, or Sequential without a defined input.
    """
    functional = as_functional(model)
    return _foldable_pairs(functional, functional.get_config())


def fold_batch_norms(
    model: keras.Model, *, custom_objects: Mapping[str, Any] | None = None
) -> keras.Model:
    """A clone of ``model`` with every foldable BatchNormalization folded into its weight layer.

    Each Conv1D/2D/3D / DepthwiseConv2D / Dense immediately followed by a BatchNormalization
    (see :func:`foldable_pairs`) gets W_inf = γW/σ and b_inf = β + γ(b - μ)/σ with the BN's
    moving statistics, σ = sqrt(var + ε) (Krishnamoorthi 2018, Sec. 3.2; the folded layer
    always has a bias), and the BN layer is removed. Everything else, including BNs it
    cannot fold, is cloned with its weights. The result equals ``model(x, training=False)``
    up to float rounding. ``model`` itself is not changed.

    Args:
        model: A functional or Sequential tf-keras model (Sequential comes back functional).
        custom_objects: Classes of unregistered custom layers, as for
            ``keras.Model.from_config``.

    Returns:
        A new functional ``keras.Model`` with the same name, inputs and outputs.

    Raises:
        TfquantError: If ``model`` is subclassed, or Sequential without a defined input.
    """
    functional = as_functional(model)
    config = copy.deepcopy(functional.get_config())
    pairs = _foldable_pairs(functional, config)
    folded = {p.layer: p for p in pairs}

    def use_bias(entry: dict[str, Any]) -> dict[str, Any]:
        entry["config"]["use_bias"] = True
        return entry

    clone = rebuild_without_batch_norms(
        config, pairs, {p.layer: use_bias for p in pairs}, custom_objects=custom_objects
    )

    source = {layer.name: layer for layer in functional.layers}
    for layer in clone.layers:
        old = source[layer.name]
        if layer.name not in folded:
            layer.set_weights(old.get_weights())
            continue
        bn = source[folded[layer.name].batch_norm]
        info = layer_kernel(old)
        kernel_var, channel_axes = info.variable, info.channel_axes
        bias = old.bias.numpy() if old.use_bias else None
        channels = bn.moving_mean.shape[0]
        w, b = fold_kernel_and_bias(
            kernel_var.numpy(),
            bias,
            gamma=bn.gamma.numpy() if bn.scale else np.ones(channels),
            beta=bn.beta.numpy() if bn.center else np.zeros(channels),
            moving_mean=bn.moving_mean.numpy(),
            moving_variance=bn.moving_variance.numpy(),
            epsilon=bn.epsilon,
            channel_axes=channel_axes,
        )
        layer.set_weights([w, b])
    return clone


def per_channel_weight_ranges(
    model: keras.Model, *, fold: bool = True, custom_objects: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """max|w| per output channel of every weight layer's kernel, after BN folding.

    The whitepaper's argument against per-layer weight scales (Krishnamoorthi 2018,
    Sec. 3.1): one scale Δ = max_k r_k / (2^(b-1) - 1) for channels whose ranges r_k span
    orders of magnitude rounds the small channels to zero. ``max(r) / min(r)`` of a layer
    is the number to look at.

    Args:
        model: A functional or Sequential tf-keras model.
        fold: Fold BNs first (:func:`fold_batch_norms`), as the converter does.
        custom_objects: Passed to :func:`fold_batch_norms`.

    Returns:
        Layer name -> float64 array of ranges, one per output channel (for DepthwiseConv2D
        in channel order c * mult + m), for every layer with a kernel (see
        :func:`tfquant.models.kernels.layer_kernel`), in model layer order.
    """
    source = fold_batch_norms(model, custom_objects=custom_objects) if fold else model
    ranges: dict[str, np.ndarray] = {}
    for layer in source.layers:
        info = layer_kernel(layer)
        if info is None:
            continue
        kernel, channel_axes = info.variable, info.channel_axes
        w = np.abs(kernel.numpy().astype(np.float64))
        r = np.max(w, axis=reduce_axes(w.ndim, channel_axes))
        ranges[layer.name] = r.reshape(-1)
    return ranges
