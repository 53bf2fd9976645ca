"""Batch-norm re-estimation: a QAT model's BN statistics measured on its own quantized graph.

After QAT the batch-norm layers still hold (almost) the float model's moving statistics:
with Keras's momentum 0.99 a short fine-tune moves them by ``1 - 0.99^steps`` of the way
(~20% after 22 steps). In training mode every BN normalises with the batch statistics of the
*quantized* network, so the training accuracy looks fine, while inference uses the stale
moving ones. At 8 bits the two are close; at 4 bits the quantized kernels shift every
channel's mean and variance and the inference model can lose tens of points (issue 13: float
0.94, training-mode 0.93, inference / .tflite 0.51).

:func:`reestimate_batch_norm` replaces each BN's moving statistics by the population
statistics of its input in the QAT model run in inference mode (fake quants on, earlier BNs
already re-estimated), ``μ = E[x]``, ``σ² = E[(x - μ)²]`` over all examples and spatial
positions -- "precise BN" (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", arXiv
2105.07576, Sec. 3), computed exactly for the inference graph. BNs are processed in
dependency levels: a BN whose input depends on no pending BN is measured in the same pass as
its peers, so a chain of k BNs costs k partial forward passes, parallel branches share them.
Nothing else changes (no gradient step, no quantizer range update), and the TFLite converter
folds the new statistics into the weights as it folds the old ones.
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.tflite import keras_internals

DEFAULT_REESTIMATION_EXAMPLES = 1024


def _inner(layer: keras.layers.Layer) -> keras.layers.Layer:
    return getattr(layer, "layer", layer)


def batch_norm_sites(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers (tfmot wrappers included) that hold a plain BatchNormalization."""
    return [
        layer
        for layer in model.layers
        if type(_inner(layer)) is keras.layers.BatchNormalization
    ]


def _inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return keras_internals.inbound_layers(layer)


def _upstream_sites(
    sites: list[keras.layers.Layer],
) -> dict[str, set[str]]:
    """For each BN site, the names of the BN sites its input depends on."""
    site_names = {s.name for s in sites}
    memo: dict[str, set[str]] = {}

    def upstream(layer: keras.layers.Layer) -> set[str]:
        if layer.name in memo:
            return memo[layer.name]
        memo[layer.name] = set()  # guards against cycles in odd graphs
        found: set[str] = set()
        for parent in _inbound_layers(layer):
            if parent.name in site_names:
                found.add(parent.name)
            found |= upstream(parent)
        memo[layer.name] = found
        return found

    return {s.name: upstream(s) for s in sites}


def reestimate_batch_norm(
    model: keras.Model,
    x: np.ndarray,
    *,
    batch_size: int = 256,
    max_examples: int = DEFAULT_REESTIMATION_EXAMPLES,
) -> int:
    """Sets every BN's moving mean / variance to its input's statistics in ``model`` over ``x``.

    ``μ_c = mean over examples and positions of x_c``, ``σ²_c = mean of (x_c - μ_c)²`` (the
    biased estimate, the one BN normalises with in training), each BN's input computed by
    ``model`` in inference mode with the BNs before it already re-estimated (precise BN; Wu &
    Johnson 2021, arXiv 2105.07576). Works on float models and on QAT models (BN inside a
    tfmot wrapper).

    Args:
      model: A functional Keras model; its BN layers are updated in place.
      x: Inputs ``(N, ...)`` preprocessed as in training (training data, not test data).
      batch_size: Examples per forward pass.
      max_examples: Use at most the first this many examples.

    Returns:
      The number of BN layers re-estimated (0 for a model without BN).

    Raises:
      TfquantError: empty or non-finite ``x``.
    """
    x = np.asarray(x, dtype=np.float32)[:max_examples]
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise TfquantError(
            "BN re-estimation needs a non-empty batch of finite inputs; pass training examples"
        )
    sites = batch_norm_sites(model)
    if not sites:
        return 0
    upstream = _upstream_sites(sites)
    pending = {s.name: s for s in sites}
    while pending:
        ready = [s for name, s in pending.items() if not (upstream[name] & set(pending))]
        if not ready:  # an unexpected graph: fall back to one BN at a time, in layer order
            ready = [next(iter(pending.values()))]
        probe = keras.Model(model.inputs, [s.input for s in ready])
        sums: list[Any] = [None] * len(ready)
        squares: list[Any] = [None] * len(ready)
        count = [0] * len(ready)
        for begin in range(0, len(x), batch_size):
            outs = probe(x[begin : begin + batch_size], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for i, t in enumerate(outs):
                v = np.asarray(t, dtype=np.float64)
                axis = _inner(ready[i]).axis
                axis = list(axis) if isinstance(axis, (list, tuple)) else [axis]
                axis = [a % v.ndim for a in axis]
                reduce = tuple(a for a in range(v.ndim) if a not in axis)
                s, q = v.sum(axis=reduce), np.square(v).sum(axis=reduce)
                sums[i] = s if sums[i] is None else sums[i] + s
                squares[i] = q if squares[i] is None else squares[i] + q
                count[i] += int(np.prod([v.shape[a] for a in reduce]))
        for i, site in enumerate(ready):
            bn = _inner(site)
            mean = sums[i] / count[i]
            var = np.maximum(squares[i] / count[i] - np.square(mean), 0.0)
            bn.moving_mean.assign(mean.reshape(bn.moving_mean.shape).astype(np.float32))
            bn.moving_variance.assign(var.reshape(bn.moving_variance.shape).astype(np.float32))
            del pending[site.name]
    return len(sites)
