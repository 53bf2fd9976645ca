"""Does a classifier output logits or probabilities? (the loss QAT must train with)

User models, and ``keras.applications`` models with their default
``classifier_activation="softmax"``, often end in a softmax; the zoo's end in logits.
Cross-entropy on logits applied to probabilities (``from_logits=True`` on a softmax output)
trains a softmax of a softmax: its gradients are squashed and its loss never reaches 0, so QAT
of such a model fine-tunes against the wrong objective without any error.

:func:`outputs_probabilities` decides, first from the graph -- the last layer (looking
inside tfmot wrappers and their ``QuantizeAwareActivation``) is a ``Softmax`` layer or has
activation ``softmax`` (a ``Dense`` / ``Activation`` / TF-op ``tf.nn.softmax`` layer) --
and otherwise from the numbers: on a few inputs every output row is non-negative and sums
to 1 (within ``tolerance``, which allows for an 8-bit fake quant on the output).
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.errors import TfquantError

PROBE_EXAMPLES = 32
DEFAULT_TOLERANCE = 0.02


def _activation_name(layer: Any) -> str | None:
    activation = getattr(layer, "activation", None)
    inner = getattr(activation, "activation", None)  # tfmot's QuantizeAwareActivation
    for candidate in (inner, activation):
        if candidate is None:
            continue
        name = candidate if isinstance(candidate, str) else getattr(candidate, "__name__", None)
        if name:
            return str(name)
    return None


def _ends_in_softmax(model: keras.Model) -> bool:
    if len(model.outputs) != 1:
        return False
    last = model.outputs[0].node.layer
    inner = getattr(last, "layer", last)
    if isinstance(inner, keras.layers.Softmax):
        return True
    if _activation_name(inner) == "softmax":
        return True
    function = getattr(inner, "function", None) or getattr(inner, "symbol", None)
    return isinstance(function, str) and function.rsplit(".", 1)[-1] == "softmax"


def outputs_probabilities(
    model: keras.Model, x: np.ndarray | None = None, *, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True when ``model`` outputs class probabilities (softmax), False for logits.

    Graph first (a final softmax layer or activation); otherwise, when ``x`` is given, the
    outputs on its first 32 examples: ``min(p) >= -tolerance`` and ``|Σ_k p_k - 1| <=
    tolerance`` for every row.

    Args:
      model: A Keras classifier (float or QAT).
      x: Optional inputs ``(N, ...)`` for the numerical check.
      tolerance: Slack of that check.
    """
    if _ends_in_softmax(model):
        return True
    if x is None or len(x) == 0:
        return False
    p = np.asarray(model(np.asarray(x[:PROBE_EXAMPLES], np.float32), training=False))
    if p.ndim != 2 or p.shape[1] < 2:
        return False
    return bool(p.min() >= -tolerance and np.all(np.abs(p.sum(axis=1) - 1.0) <= tolerance))


def check_classifier(model: keras.Model) -> None:
    """Raises TfquantError unless ``model`` has one output of shape (batch, K), K >= 2.

    QAT fine-tunes with cross-entropy on integer class labels, which needs exactly that; a
    second output (e.g. a box head), an image output (an autoencoder) or a single regression
    value would otherwise fail deep inside training or be trained against the wrong loss.
    """
    outs = list(getattr(model, "outputs", None) or [])
    name = getattr(model, "name", "the model")
    fix = ("quantize it without training instead (tfquant convert / sensitivity), or fine-tune a "
           "single-output classifier")
    if len(outs) != 1:
        raise TfquantError(
            f"model {name!r} has {len(outs)} outputs; QAT fine-tunes a classifier with one "
            f"output (class scores, cross-entropy on integer labels): {fix}"
        )
    shape = tuple(outs[0].shape)
    if len(shape) != 2 or shape[1] is None or shape[1] < 2:
        raise TfquantError(
            f"model {name!r} outputs shape {shape}, not (batch, num_classes); QAT fine-tunes a "
            f"classifier with cross-entropy on integer labels: {fix}"
        )
