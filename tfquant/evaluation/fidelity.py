"""Does the .tflite compute what the Keras model it came from computes?

For a QAT model and its export (:func:`tfquant.qat.export_tflite`) the two should agree to a
rounding step per layer; for a float model and any .tflite converted from it (PTQ int8,
int16x8, fp16, dynamic) the difference is the quantization error, and this is where to see
which layer it comes from. A known failure in this field is QAT accuracy that vanishes after
conversion: the fake quants of the Keras model and the integer kernels of the .tflite
disagree somewhere (a range the converter re-derived, a fused op quantized differently, a
layer left in float). Two checks:

* :func:`compare` -- both models on the same inputs: top-1 agreement (fraction of examples
  whose argmax logits match), max |logit difference|, both accuracies. When agreement is
  below ``diagnose_below`` it runs :func:`first_divergence` on disagreeing examples and
  names the first layer where the two part.
* :func:`first_divergence` -- layer by layer. Each Keras layer's output is matched to the
  TFLite tensor that *is* that output. A converted tensor is named after (some of) the ops
  fused into it, ``<model>/<layer>/<op>;...``; of the layers it names, the latest in the
  model is followed forward through layers that have no tensor of their own in TFLite (in a
  QAT model a conv or BN whose fake quant tfmot moved to the ReLU after them; in a float
  model a conv or dense read only by the BatchNormalization or ReLU the converter fuses into
  it) to the layer whose output it is, and the shapes must agree. So a conv + BN + ReLU6 tensor belongs to the ReLU6
  layer, even when the converter names it after the conv alone. The .tflite runs in LiteRT with
  ``experimental_preserve_all_tensors`` (builtin kernels, no delegate, so every intermediate
  is readable; :func:`tfquant.tflite.interpreter.make_interpreter`); int8 tensors are dequantized with their own scale and zero point,
  x = (q - z)·Δ (:func:`tfquant.numerics.dequantize`).

  Two differences per layer. The *end-to-end* one compares the Keras model's output of the
  layer with the .tflite's: it accumulates everything upstream, and a one-step rounding
  difference at a layer's input, multiplied by large (BN-folded) weights, is many steps at
  its output without anything being wrong. The *local* one feeds the Keras layer (and the
  layers fused into it) the .tflite's own dequantized inputs and compares its output with
  the .tflite's: the layer's own error. A layer *diverges* when its local max |difference|
  exceeds ``tolerance_steps`` quantization steps Δ of the TFLite tensor (float tensors:
  ``float_rtol`` of the Keras output's max |value|): integer kernels round once per op, so
  a step is expected, more is not. A layer that quantizes *before* its activation (Dense /
  conv with sigmoid, tanh, softmax or gelu: tfmot's pre-activation fake quant) rounds twice,
  and a one-step difference Δ_pre there reaches the output through the activation's slope,
  so such a layer is allowed ``slope · Δ_pre`` more (slope bounds: sigmoid 1/4, softmax
  1/2, tanh 1, gelu 1.13).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from tfquant.errors import TfquantError
from tfquant.evaluation import inspect_model, predict
from tfquant.evaluation.report import text_table
from tfquant.numerics import QuantParams, dequantize
from tfquant.qtypes import Runtime
from tfquant.tflite.interpreter import make_interpreter
from tfquant.tflite import keras_internals, tfmot_internals

_qk = tfmot.quantization.keras
DEFAULT_TOLERANCE_STEPS = 2.0
DEFAULT_FLOAT_RTOL = 1e-3
DIAGNOSE_EXAMPLES = 16
# max |d activation / d input| (softmax: max row sum of |Jacobian| = 2·y(1-y) <= 1/2).
_SLOPE_BOUND = {"sigmoid": 0.25, "softmax": 0.5, "tanh": 1.0, "gelu": 1.13}


@dataclasses.dataclass(frozen=True)
class LayerDiff:
    """One Keras layer's output against the TFLite tensor that computes it.

    Attributes:
      layer: Keras layer name (in the QAT model, e.g. ``quant_conv1``).
      tensor: TFLite tensor name (its first ``;``-part).
      shape: Output shape compared (batch first).
      dtype: TFLite tensor dtype (``int8`` or ``float32``).
      scale: Quantization step Δ of the TFLite tensor (None if float).
      max_abs_diff: End to end: max |keras - tflite| of the layer's output (dequantized).
      mean_abs_diff: End to end: mean |keras - tflite|.
      max_diff_steps: ``max_abs_diff / scale`` (None if float).
      local_max_abs_diff: The layer's own error: max |keras layer(tflite inputs) - tflite|.
      local_max_diff_steps: ``local_max_abs_diff / scale`` (None if float).
      diverged: The local difference is beyond the tolerance (see the module docstring).
    """

    layer: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    max_abs_diff: float
    mean_abs_diff: float
    max_diff_steps: float | None
    local_max_abs_diff: float
    local_max_diff_steps: float | None
    diverged: bool


@dataclasses.dataclass(frozen=True)
class FidelityReport:
    """A Keras model (QAT or float) against a .tflite made from it, on one labelled set.

    Attributes:
      n_examples: Examples compared.
      agreement: Fraction whose top-1 predictions match.
      max_abs_logit_diff: max over examples and classes of |keras - tflite| logits.
      keras_accuracy: Top-1 accuracy of the Keras model (inference mode).
      tflite_accuracy: Top-1 accuracy of the .tflite.
      first_divergent_layer: First layer beyond tolerance on disagreeing examples (only
        looked for when agreement < ``diagnose_below``; None otherwise or if none found).
      layer_diffs: The layer-by-layer diff behind it (empty when not diagnosed).
    """

    n_examples: int
    agreement: float
    max_abs_logit_diff: float
    keras_accuracy: float
    tflite_accuracy: float
    first_divergent_layer: str | None = None
    layer_diffs: tuple[LayerDiff, ...] = ()

    def summary(self) -> str:
        """One line: agreement, max logit difference, both accuracies."""
        where = (
            f", first divergence at {self.first_divergent_layer}"
            if self.first_divergent_layer
            else ""
        )
        return (
            f"top-1 agreement {self.agreement:.4f} on {self.n_examples} examples, max |logit "
            f"diff| {self.max_abs_logit_diff:.4g}, accuracy keras {self.keras_accuracy:.4f} / "
            f"tflite {self.tflite_accuracy:.4f}{where}"
        )


def _check_inputs(model: object, x: np.ndarray) -> np.ndarray:
    if not isinstance(model, keras.Model):
        raise TfquantError(
            f"model must be a tf_keras Model, got {type(model).__name__}; pass the Keras "
            "model the .tflite was made from (float, or what quantize_for_training returned)"
        )
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise TfquantError(
            f"x must be a non-empty batch (N, ...), got shape {x.shape}; pass at least one "
            "example with its batch axis"
        )
    if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise TfquantError(f"x must hold finite floats, got dtype {x.dtype}; clean the data")
    expected = tuple(model.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise TfquantError(
            f"x examples have shape {tuple(x.shape[1:])} but the model takes {expected}; pass "
            "data shaped like the model input"
        )
    return x.astype(np.float32, copy=False)


def compare(
    model: keras.Model,
    tflite_bytes: bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 256,
    runtime: Runtime | str = Runtime.XNNPACK,
    diagnose_below: float | None = 0.99,
    tolerance_steps: float = DEFAULT_TOLERANCE_STEPS,
) -> FidelityReport:
    """Compares a Keras model with a .tflite made from it on ``(x, y)``.

    ``agreement = mean_i [argmax keras(x_i) == argmax tflite(x_i)]``,
    ``max_abs_logit_diff = max_ik |keras(x)_ik - tflite(x)_ik|``.

    Args:
      model: The Keras model (run in inference mode): a QAT model, or the float model of a
        PTQ conversion.
      tflite_bytes: A .tflite made from it (:func:`~tfquant.qat.export_tflite`,
        :func:`tfquant.convert.convert`).
      x: Float inputs ``(N, ...)``.
      y: Integer labels ``(N,)``.
      batch_size: Examples per forward pass, both sides.
      runtime: LiteRT runtime for the .tflite (``xnnpack`` or ``builtin``).
      diagnose_below: If agreement is below this, diff the layers on up to 16 disagreeing
        examples (the first 16 examples if none disagree) with :func:`first_divergence`;
        None never does.
      tolerance_steps: Divergence threshold for the diagnosis, in quantization steps.

    Raises:
      TfquantError: mismatched or malformed ``x`` / ``y``; a .tflite LiteRT cannot run.
    """
    x = _check_inputs(model, x)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise TfquantError(
            f"y must be {len(x)} integer labels (N,), got dtype {y.dtype} shape {y.shape}; "
            "pass class indices matching x"
        )
    keras_logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    tflite_logits = predict(tflite_bytes, x, batch_size=batch_size, runtime=runtime)
    if keras_logits.shape != tflite_logits.shape:
        raise TfquantError(
            f"the .tflite outputs shape {tflite_logits.shape} but the Keras model "
            f"{keras_logits.shape}; compare a model with a .tflite made from it"
        )
    k_top, t_top = keras_logits.argmax(axis=-1), tflite_logits.argmax(axis=-1)
    agree = k_top == t_top
    agreement = float(np.mean(agree))
    first, diffs = None, ()
    if diagnose_below is not None and agreement < diagnose_below:
        sample = x[~agree][:DIAGNOSE_EXAMPLES] if not agree.all() else x[:DIAGNOSE_EXAMPLES]
        diffs = tuple(
            first_divergence(model, tflite_bytes, sample, tolerance_steps=tolerance_steps)
        )
        first = next((d.layer for d in diffs if d.diverged), None)
    return FidelityReport(
        n_examples=len(x),
        agreement=agreement,
        max_abs_logit_diff=float(np.max(np.abs(keras_logits - tflite_logits))),
        keras_accuracy=float(np.mean(k_top == y)),
        tflite_accuracy=float(np.mean(t_top == y)),
        first_divergent_layer=first,
        layer_diffs=diffs,
    )


def _single_output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not isinstance(layer.output, (list, tuple))
    ]


def _layer_outputs(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Inference-mode output of every single-output, non-input layer."""
    layers = _single_output_layers(model)
    outs = keras.Model(model.inputs, [layer.output for layer in layers])(x, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {layer.name: np.asarray(t) for layer, t in zip(layers, outs)}


class _Replay:
    """Runs Keras layers eagerly on given values of other layers' outputs.

    ``known`` holds values (here: the .tflite's dequantized tensors) of some layers' outputs;
    a layer's inputs are read from ``known`` or computed by replaying its producers, so a
    layer fused into a later TFLite op is recomputed from the .tflite's values upstream.
    """

    def __init__(self, model: keras.Model, x: np.ndarray, known: dict[str, np.ndarray]) -> None:
        self._cache: dict[str, tf.Tensor] = {
            name: tf.constant(v, tf.float32) for name, v in known.items()
        }
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                self._cache[layer.name] = tf.constant(x, tf.float32)

    def _value(self, tensor: Any) -> Any:
        layer = keras_internals.producer(tensor)
        if layer is None:
            return tensor
        if layer.name not in self._cache:
            self._cache[layer.name] = self.run(layer)
        return self._cache[layer.name]

    def run(self, layer: keras.layers.Layer) -> tf.Tensor:
        """The layer's output computed from its inputs' known or replayed values."""
        node = layer.inbound_nodes[0]
        args = tf.nest.map_structure(self._value, node.call_args)
        kwargs = tf.nest.map_structure(self._value, dict(node.call_kwargs))
        kwargs["training"] = False
        return layer(*args, **kwargs)


def _tflite_tensors(tflite_bytes: bytes, x: np.ndarray) -> list[tuple[dict, np.ndarray]]:
    """``(details, value)`` of every non-constant tensor after one invoke on ``x``."""
    constant = {t.index for t in inspect_model(tflite_bytes).tensors if t.constant}
    interpreter = make_interpreter(tflite_bytes, runtime=Runtime.BUILTIN, preserve_all_tensors=True)
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise TfquantError(
            f"the .tflite has {len(inputs)} inputs; first_divergence feeds one, so diff a "
            "single-input model"
        )
    interpreter.resize_tensor_input(inputs[0]["index"], list(x.shape), strict=False)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    if np.dtype(inp["dtype"]) != np.float32:
        raise TfquantError(
            f"the .tflite takes {np.dtype(inp['dtype']).name} input; diff a float-I/O export "
            "(export_tflite makes one)"
        )
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    out = []
    for d in interpreter.get_tensor_details():
        if d["index"] in constant:
            continue
        try:
            value = interpreter.get_tensor(d["index"])
        except ValueError:  # a tensor without data (e.g. an optional operand)
            continue
        out.append((d, value))
    return out


class _Owners:
    """Which Keras layer of the model a TFLite tensor is the output of."""

    def __init__(self, model: keras.Model) -> None:
        self._order = {layer.name: i for i, layer in enumerate(model.layers)}
        self._layers = {layer.name: layer for layer in model.layers}

    @staticmethod
    def _fused(layer: keras.layers.Layer) -> bool:
        """No tensor of its own in TFLite: in a QAT model a computing layer without any fake
        quant; in a float model a layer whose only reader the converter fuses into it."""
        if not isinstance(layer, _qk.QuantizeWrapper):
            consumer = _Owners._single_consumer(layer)
            return consumer is not None and _fuses_into_producer(consumer)
        from tfquant.qat import registry, tfop  # QAT-model specifics; qat imports this module

        inner = type(layer.layer)
        if inner in registry.PASS_THROUGH_LAYERS or (
            inner is tfop.TFOpCall and tfop.is_shape_op(layer.layer)
        ):
            return False  # reshape-like: its output is a tensor with the input's scale
        quantizes = bool(tfmot_internals.output_quantizers(layer)) or any(
            tfmot_internals.activation_range_vars(a, "pre") is not None
            or tfmot_internals.activation_range_vars(a, "post") is not None
            for a in tfmot_internals.activation_quantizers(layer)
        )
        return not quantizes

    @staticmethod
    def _single_consumer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        nodes = layer.outbound_nodes
        return nodes[0].layer if len(nodes) == 1 else None

    def owner(self, tensor_name: str) -> str | None:
        named = []
        for part in tensor_name.split(";"):
            pieces = part.split("/")
            if len(pieces) > 1 and pieces[1] in self._order:
                named.append(pieces[1])
        if not named:
            return None
        layer = self._layers[max(named, key=self._order.__getitem__)]
        while self._fused(layer):
            consumer = self._single_consumer(layer)
            if consumer is None or consumer.name not in self._layers:
                break
            layer = consumer
        return layer.name


_FUSED_ACTIVATIONS = frozenset({"relu", "relu6"})


def _fuses_into_producer(layer: keras.layers.Layer) -> bool:
    """A float-model layer the converter folds into the op before it: BatchNormalization,
    ReLU / ReLU6 (layers or ``Activation``)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    if isinstance(layer, keras.layers.ReLU):
        return layer.negative_slope == 0 and layer.threshold == 0
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(activation, "__name__", "") in _FUSED_ACTIVATIONS


def _dequantized(d: dict, value: np.ndarray) -> tuple[np.ndarray, float | None]:
    """The tensor's float value and its step Δ (None for a float or per-channel tensor)."""
    dtype = np.dtype(d["dtype"])
    qp = d["quantization_parameters"]
    scales = np.asarray(qp["scales"]).reshape(-1)
    if np.issubdtype(dtype, np.integer) and scales.size == 1:
        params = QuantParams(
            scale=np.float64(scales[0]),
            zero_point=np.int64(np.asarray(qp["zero_points"]).reshape(-1)[0]),
            bits=dtype.itemsize * 8,
        )
        return dequantize(value, params), float(scales[0])
    return value.astype(np.float64), None


def _pre_activation_allowance(layer: keras.layers.Layer) -> float:
    """slope · Δ_pre for a wrapper that fake-quantizes before its activation, else 0."""
    allowance = 0.0
    for activation in tfmot_internals.activation_quantizers(layer):
        pre = tfmot_internals.activation_range_vars(activation, "pre")
        if pre is None:
            continue
        name = getattr(activation.activation, "__name__", "")
        bits = int(getattr(activation.quantizer, "num_bits", 8))
        span = float(np.max(pre["max_var"].numpy() - pre["min_var"].numpy()))
        allowance += _SLOPE_BOUND.get(name, 1.0) * span / (2**bits - 1)
    return allowance


def _exceeds(
    delta: float,
    scale: float | None,
    reference: np.ndarray,
    tolerance_steps: float,
    float_rtol: float,
    allowance: float,
) -> bool:
    if scale is not None:
        return delta > tolerance_steps * scale + allowance
    return delta > float_rtol * max(float(np.abs(reference).max()), 1e-12) + allowance


def _max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def first_divergence(
    model: keras.Model,
    tflite_bytes: bytes,
    x_sample: np.ndarray,
    *,
    tolerance_steps: float = DEFAULT_TOLERANCE_STEPS,
    float_rtol: float = DEFAULT_FLOAT_RTOL,
) -> list[LayerDiff]:
    """Layer-by-layer diff of a Keras model and a .tflite made from it, in Keras layer order.

    Only layers whose output is a tensor of the .tflite are listed (layers fused into a
    later op, such as a conv before its BN and ReLU, have none). The first entry with
    ``diverged`` is where the two part (:func:`first_diverged`).

    Args:
      model: The Keras model (QAT, or the float model of a PTQ conversion).
      tflite_bytes: A float-I/O .tflite made from it.
      x_sample: A few float inputs ``(n, ...)``, e.g. examples the two classify differently.
      tolerance_steps: Divergence threshold in quantization steps of the TFLite tensor.
      float_rtol: Threshold for float tensors, relative to the Keras output's max |value|.

    Raises:
      TfquantError: malformed ``x_sample``; a multi-input or integer-I/O .tflite.
    """
    x = _check_inputs(model, x_sample)
    keras_outs = _layer_outputs(model, x)
    owners = _Owners(model)
    owned: dict[str, tuple[dict, np.ndarray]] = {}
    for d, value in _tflite_tensors(tflite_bytes, x):
        layer = owners.owner(str(d["name"]))
        if layer in keras_outs and tuple(value.shape) == keras_outs[layer].shape:
            owned[layer] = (d, value)  # the last (highest-index) tensor of a layer is its output
    tflite_outs = {name: _dequantized(d, v) for name, (d, v) in owned.items()}
    replay = _Replay(model, x, {name: v for name, (v, _) in tflite_outs.items()})
    diffs = []
    for layer in model.layers:
        if layer.name not in owned:
            continue
        d, _ = owned[layer.name]
        tflite_out, scale = tflite_outs[layer.name]
        keras_out = keras_outs[layer.name]
        delta = _max_abs(keras_out, tflite_out)
        local = float(_max_abs(replay.run(layer), tflite_out).max())
        end_to_end = float(delta.max())
        diffs.append(
            LayerDiff(
                layer=layer.name,
                tensor=str(d["name"]).split(";")[0],
                shape=tuple(int(n) for n in tflite_out.shape),
                dtype=np.dtype(d["dtype"]).name,
                scale=scale,
                max_abs_diff=end_to_end,
                mean_abs_diff=float(delta.mean()),
                max_diff_steps=end_to_end / scale if scale else None,
                local_max_abs_diff=local,
                local_max_diff_steps=local / scale if scale else None,
                diverged=_exceeds(
                    local,
                    scale,
                    keras_out,
                    tolerance_steps,
                    float_rtol,
                    _pre_activation_allowance(layer),
                ),
            )
        )
    return diffs


def first_diverged(diffs: list[LayerDiff] | tuple[LayerDiff, ...]) -> LayerDiff | None:
    """The first layer of a :func:`first_divergence` result that diverged, or None."""
    return next((d for d in diffs if d.diverged), None)


def format_layer_diffs(diffs: list[LayerDiff] | tuple[LayerDiff, ...]) -> str:
    """A text table of a layer-by-layer diff (one row per layer)."""
    records = [
        {
            "layer": d.layer,
            "dtype": d.dtype,
            "scale": d.scale if d.scale is not None else float("nan"),
            "max_abs_diff": d.max_abs_diff,
            "steps": d.max_diff_steps if d.max_diff_steps is not None else float("nan"),
            "local_steps": (
                d.local_max_diff_steps if d.local_max_diff_steps is not None else float("nan")
            ),
            "diverged": "yes" if d.diverged else "",
        }
        for d in diffs
    ]
    return text_table(
        records,
        ["layer", "dtype", "scale", "max_abs_diff", "steps", "local_steps", "diverged"],
        headers={"steps": "steps (end to end)", "local_steps": "steps (local)"},
        floatfmt={"scale": ".3g", "max_abs_diff": ".3g", "steps": ".2f", "local_steps": ".2f"},
    )
