"""Initial ranges of a QAT model's fake quantizers.

tfmot starts every range at [-6, 6]. Weights recover at the first training step (their
``LastValueQuantizer`` takes the kernel's min/max), but activation ranges are an EMA with
decay 0.999, so after a short fine-tune they are still close to [-6, 6]: a post-ReLU tensor
that reaches 30 is clipped at 6, one that stays in [0, 0.5] gets ~10 of its 256 levels. And
before any training step, even the weights are quantized with the [-6, 6] range. So:

* :func:`sync_weight_ranges` runs each weight quantizer once in training mode, which stores
  the kernel's own range (exactly what the first training step would store);
* :func:`observe_layer_ranges` runs the float model over calibration data and records each
  layer output's [min, max] ("max" calibration, as the TFLite converter's own) with the
  project's one statistics pass (:func:`tfquant.calibration.keras_outputs.keras_min_max`);
* :func:`set_activation_ranges` writes ranges into the activation / output / input fake
  quantizers -- NVIDIA's schedule (Wu et al. 2020, arXiv 2004.09602, Sec. 5) starts QAT from
  the best calibrated ranges, which any calibrator can supply as ``{layer name: (lo, hi)}``;
* :func:`layer_ranges_from_tensor_ranges` maps ranges of float-.tflite tensors (what
  :mod:`tfquant.calibration` computes) to Keras layer names.

Ranges are widened to contain 0, as tfmot and TFLite require.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tfquant.tflite.tfmot_internals import quantize_layer

from tfquant.calibration.keras_outputs import keras_min_max
from tfquant.errors import TfquantError
from tfquant.tflite import tfmot_internals

_QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapper
_QuantizeLayer = quantize_layer.QuantizeLayer

RangeLike = Any  # (lo, hi) or an object with .lo and .hi (tfquant.calibration.Range)
# tfmot's LastValue / MovingAverage quantizers start at this range (its input
# AllValuesQuantizer at [0, 0]).
TFMOT_INITIAL_RANGE = (-6.0, 6.0)


def _as_pair(value: RangeLike, name: str) -> tuple[float, float]:
    try:
        lo, hi = (value.lo, value.hi) if hasattr(value, "lo") else value
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise TfquantError(
            f"range of {name!r} must be a (lo, hi) pair or a Range, got {value!r}; pass "
            "two numbers"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise TfquantError(
            f"range of {name!r} must be finite with lo <= hi, got ({lo}, {hi}); fix the "
            "calibration ranges"
        )
    return lo, hi


def sync_weight_ranges(qat_model: keras.Model) -> int:
    """Stores every weight quantizer's range from its kernel, as a training step would.

    Returns:
      The number of weight quantizers synced.
    """
    count = 0
    for layer in qat_model.layers:
        if not isinstance(layer, _QuantizeWrapper):
            continue
        for weight, quantizer, quantizer_vars in tfmot_internals.weight_quantizers(layer):
            quantizer(tf.convert_to_tensor(weight), True, weights=quantizer_vars)
            count += 1
    return count


def observe_layer_ranges(
    model: keras.Model, x: np.ndarray, *, batch_size: int = 256
) -> dict[str, tuple[float, float]]:
    """[min, max] of each layer's output (and of the input) of a float model over ``x``.

    Args:
      model: A functional float Keras model with one input.
      x: Calibration inputs ``(N, ...)``, preprocessed as in training.
      batch_size: Examples per forward pass.

    Returns:
      ``{layer name: (min, max)}`` for the input layer and every layer with one output tensor.

    Raises:
      TfquantError: empty or non-finite ``x``, or ``x`` not shaped like the model input.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise TfquantError("calibration_data is empty; pass at least one example")
    if not np.all(np.isfinite(x)):
        raise TfquantError(
            f"calibration_data has {int(np.size(x) - np.isfinite(x).sum())} NaN/Inf values; "
            "clean the data"
        )
    expected = tuple(model.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise TfquantError(
            f"calibration_data examples have shape {tuple(x.shape[1:])} but the model "
            f"takes {expected}; pass data shaped like the model input"
        )
    names, tensors = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out = layer.output
        if isinstance(out, (list, tuple)):
            continue
        names.append(layer.name)
        tensors.append(out)
    observed = keras_min_max(model, tensors, x, batch_size=batch_size, compiled=False)
    ranges = {name: (float(m.lo), float(m.hi)) for name, m in zip(names, observed)}
    input_name = model.inputs[0].node.layer.name
    ranges[input_name] = (float(x.min()), float(x.max()))
    return ranges


def _assign(quantizer_vars: Mapping[str, tf.Variable], lo: float, hi: float) -> None:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    quantizer_vars["min_var"].assign(tf.fill(tf.shape(quantizer_vars["min_var"]), lo))
    quantizer_vars["max_var"].assign(tf.fill(tf.shape(quantizer_vars["max_var"]), hi))


def activation_sites(qat_model: keras.Model) -> dict[str, list[Mapping[str, tf.Variable]]]:
    """The activation fake quantizers of a QAT model, by the float layer whose output they see.

    Keys are float-model layer names: a wrapper's inner layer (its fused activation's
    post-activation quantizer and its output quantizer), and the input layer for tfmot's
    input ``QuantizeLayer``. Pre-activation quantizers (before a softmax / sigmoid) are not
    listed: no float layer outputs that tensor.
    """
    sites: dict[str, list[Mapping[str, tf.Variable]]] = {}
    for layer in qat_model.layers:
        if isinstance(layer, _QuantizeLayer) and layer.quantizer is not None:
            source = layer.inbound_nodes[0].inbound_layers
            source = source[0] if isinstance(source, list) else source
            sites.setdefault(source.name, []).append(layer.quantizer_vars)
        elif isinstance(layer, _QuantizeWrapper):
            name = layer.layer.name
            for activation in tfmot_internals.activation_quantizers(layer):
                post = tfmot_internals.activation_range_vars(activation, "post")
                if post is not None:
                    sites.setdefault(name, []).append(post)
            if tfmot_internals.output_quantizers(layer):
                sites.setdefault(name, []).append(tfmot_internals.output_quantizer_vars(layer))
    return sites


def has_default_activation_ranges(qat_model: keras.Model) -> bool:
    """Whether every activation fake quant still has tfmot's initial range [-6, 6].

    The input's ``AllValuesQuantizer`` (which starts at [0, 0] and only grows) is not looked at.
    """
    sites = [
        v
        for vs in activation_sites(qat_model).values()
        for v in vs
        if np.any(v["min_var"].numpy() != 0) or np.any(v["max_var"].numpy() != 0)
    ]
    return bool(sites) and all(
        np.all(v["min_var"].numpy() == TFMOT_INITIAL_RANGE[0])
        and np.all(v["max_var"].numpy() == TFMOT_INITIAL_RANGE[1])
        for v in sites
    )


def set_activation_ranges(
    qat_model: keras.Model, ranges: Mapping[str, RangeLike]
) -> tuple[str, ...]:
    """Writes ``{float layer name: (lo, hi)}`` into the matching activation fake quantizers.

    Ranges for layers that have no activation quantizer in the QAT model (e.g. a conv whose
    output feeds a BN, or a Reshape) are ignored: TFLite fuses those tensors away.

    Returns:
      The names whose range was written.

    Raises:
      TfquantError: a non-finite or inverted range.
    """
    pairs = {name: _as_pair(value, name) for name, value in ranges.items()}
    written = []
    for name, sites in activation_sites(qat_model).items():
        if name in pairs:
            for quantizer_vars in sites:
                _assign(quantizer_vars, *pairs[name])
            written.append(name)
    return tuple(written)


def layer_ranges_from_tensor_ranges(
    model: keras.Model, tensor_ranges: Mapping[str, RangeLike]
) -> dict[str, tuple[float, float]]:
    """Maps ranges of float-.tflite tensors to the Keras layers that produce them.

    A converted tensor is named after the ops it fuses, ``model/layer/Op;model/layer2/Op2``:
    each layer named at position 1 of a ``;``-part gets the tensor's range. A fused
    conv + BN + ReLU tensor thus gives the same range to all three layers, which is right for
    QAT, whose fake quant sits after the ReLU. When a layer is named by several tensors the
    last (in ``tensor_ranges`` order, i.e. tensor index) wins: a layer's output is produced
    by its last op.

    Args:
      model: The float Keras model that was converted.
      tensor_ranges: ``{tensor name: (lo, hi) or Range}``, e.g.
        ``tfquant.convert.calibrated.activation_ranges(...)``.
    """
    layer_names = {layer.name for layer in model.layers}
    out: dict[str, tuple[float, float]] = {}
    for tensor_name, value in tensor_ranges.items():
        for part in str(tensor_name).split(";"):
            pieces = part.split("/")
            if len(pieces) > 1 and pieces[1] in layer_names:
                out[pieces[1]] = _as_pair(value, tensor_name)
    return out


def unknown_names(model: keras.Model, names: Iterable[str]) -> list[str]:
    """Names in ``names`` that are not layers of ``model``."""
    known = {layer.name for layer in model.layers}
    return [n for n in names if n not in known]
