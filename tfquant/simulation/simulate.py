"""Fake-quantized clones of float Keras models, and their accuracy ("executed_in: sim").

Pipeline: inference BN folding (:func:`tfquant.algorithms.bn_fold.fold_batch_norms`, the
same fold the TFLite converter does) -> activation quantization
points and ranges on the folded float model (:mod:`tfquant.simulation.activations`) ->
a functional clone whose kernels are replaced by their fake-quantized values
(:mod:`tfquant.simulation.weights`, static) and with a :class:`FakeQuant` layer after
every tensor TFLite would quantize.
"""

from __future__ import annotations

from typing import Any, Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.bn_fold import fold_batch_norms
from tfquant.errors import TfquantError
from tfquant.simulation import activations, graph, weights
from tfquant.simulation.activations import FakeQuant, Kind
from tfquant.simulation.spec import SimResult, SimSpec
from tfquant.tflite import keras_internals

EVAL_BATCH_SIZE = 256


def _check_spec(spec: object) -> SimSpec:
    if not isinstance(spec, SimSpec):
        raise TfquantError(
            f"spec must be a tfquant.simulation.SimSpec, got {type(spec).__name__}; build one "
            "with SimSpec(weight_bits=..., activation_bits=...)"
        )
    return spec


def _fq_name(t: Any) -> str:
    slot = keras_internals.producer_slot(t)
    if slot is None:
        raise TypeError(f"{t!r} is not a Keras symbolic tensor")
    layer, node_index, tensor_index = slot
    suffix = "" if (node_index, tensor_index) == (0, 0) else f"_{node_index}_{tensor_index}"
    return f"{layer.name}{suffix}_fq"


def float_weight_layers(model: keras.Model) -> tuple[str, ...]:
    """Names of layers of ``model`` holding weights that :func:`simulate` leaves float."""
    return tuple(
        layer.name for layer in model.layers
        if layer.weights and weights.quantized_kernel_index(layer) is None
    )


KernelEdit = Callable[[keras.layers.Layer, list], list]
"""``(layer of the folded model, its weights) -> weights``: replaces step 2 for that layer."""


def simulate(
    model: keras.Model, spec: SimSpec, *, calibration_data: np.ndarray | None = None,
    activation_calibrator: Any | None = None, kernel_edit: KernelEdit | None = None,
) -> keras.Model:
    """A fake-quantized clone of a float Keras model, as ``spec`` says.

    1. If ``spec.fold_bn``: inference BN folding, W' = γW/σ, b' = β + γ(b - μ)/σ.
    2. Every Conv1D/2D/3D, DepthwiseConv2D and Dense kernel W is replaced, once, by
       Δ(clamp(q_min, q_max, round(W/Δ) + z) - z) with per-channel or per-tensor
       symmetric / affine parameters (:mod:`tfquant.simulation.weights`). Biases and other
       weights stay float.
    3. If ``spec.activation_bits`` is set: ranges are calibrated on the folded float model
       over ``calibration_data`` and a :class:`~tfquant.simulation.activations.FakeQuant`
       layer is inserted after the model input and after every layer output TFLite would
       quantize (rules in :mod:`tfquant.simulation.activations`). Otherwise activations
       stay float.

    Args:
      model: A functional (or Sequential) tf_keras model; not modified.
      spec: What to quantize.
      calibration_data: Float inputs (N, *input_shape), preprocessed as in training;
        required when ``spec.activation_bits`` is set, unused otherwise.

      activation_calibrator: A :class:`tfquant.calibration.base.Calibrator` that chooses
        each activation range from its statistics (e.g. ACIQ) instead of
        ``spec.activation_calibration``.
      kernel_edit: Quantizes the weights of every layer with a quantized kernel instead of
        step 2 (e.g. per-channel bit widths and bias correction,
        :mod:`tfquant.simulation.low_bit`); it sees the layer of the folded model.

    Returns:
      A new functional ``keras.Model`` (float32 computation, fake-quantized values). Its
      FakeQuant layers pass straight-through gradients inside their ranges.

    Raises:
      TfquantError: A spec that is not a SimSpec, a subclassed or nested model, or bad
        calibration data (missing, wrong shape, empty, NaN/Inf).
    """
    spec = _check_spec(spec)
    graph.check_functional(model)
    folded = graph.check_functional(fold_batch_norms(model)) if spec.fold_bn else model
    points: dict[int, activations.Point] = {}
    ranges: dict[int, activations.TensorRange] = {}
    if spec.quantizes_activations:
        x = activations.check_inputs(calibration_data, folded)
        points = activations.quantization_points(folded)
        ranges = activations.calibrate(folded, points, spec, x, calibrator=activation_calibrator)
    params = {k: activations.activation_params(r, spec) for k, r in ranges.items()}

    def replace(layer: keras.layers.Layer) -> Any:
        new_layer, w = graph.copy_layer(layer)
        found = weights.quantized_kernel_index(layer)
        if found is not None and kernel_edit is not None:
            w = kernel_edit(layer, w)
        elif found is not None:
            index, channel_axes = found
            w[index] = weights.fake_quantize_kernel(w[index], spec, channel_axes)
        return new_layer, w

    def wrap(old: Any, new: tf.Tensor) -> tf.Tensor:
        point = points.get(id(old))
        if point is None or point.kind not in (Kind.OWN, Kind.INHERIT):
            return new
        return FakeQuant.from_params(params[point.source], name=_fq_name(old))(new)

    return graph.rebuild(folded, replace_layer=replace, wrap=wrap, name=f"{model.name}_sim")


def predict(sim_model: keras.Model, x: np.ndarray, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Outputs of ``sim_model`` on ``x`` in batches (inference mode), as float32 numpy."""
    run = tf.function(lambda b: sim_model(b, training=False), reduce_retracing=True)
    outs = [
        np.asarray(run(tf.constant(x[i:i + batch_size])))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


def evaluate(
    model: keras.Model,
    spec: SimSpec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    calibration_data: np.ndarray | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> SimResult:
    """Top-1 accuracy of ``simulate(model, spec)`` on ``(x, y)``.

    ``accuracy = Σ_i [argmax_k logits_ik == y_i] / N``.

    Args:
      model, spec, calibration_data: As for :func:`simulate`.
      x: Float examples (N, *input_shape), preprocessed as in training.
      y: Integer labels (N,).
      batch_size: Examples per forward pass.

    Returns:
      A :class:`SimResult` with ``executed_in="sim"``.

    Raises:
      TfquantError: As :func:`simulate`; empty ``x``, ``len(x) != len(y)``, a model that
        does not output (N, num_classes) logits, or labels out of range.
    """
    spec = _check_spec(spec)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TfquantError(f"batch_size must be a positive integer, got {batch_size!r}")
    graph.check_functional(model)
    x_arr = activations.check_inputs(x, model, name="x")
    y_arr = np.asarray(y).reshape(-1)
    if len(y_arr) != len(x_arr):
        raise TfquantError(f"x has {len(x_arr)} examples but y has {len(y_arr)} labels; pass matching x and y")
    sim = simulate(model, spec, calibration_data=calibration_data)
    logits = predict(sim, x_arr, batch_size=batch_size)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise TfquantError(
            f"model {model.name!r} outputs shape {logits.shape[1:]}, not (num_classes,); "
            "evaluate a classifier that outputs one logit per class"
        )
    if not np.issubdtype(y_arr.dtype, np.integer) or y_arr.min() < 0 or y_arr.max() >= logits.shape[1]:
        raise TfquantError(
            f"labels must be integers in [0, {logits.shape[1] - 1}], got dtype {y_arr.dtype} "
            f"spanning [{y_arr.min()}, {y_arr.max()}]"
        )
    n_correct = int(np.count_nonzero(logits.argmax(axis=1) == y_arr))
    return SimResult(
        accuracy=n_correct / len(x_arr),
        n_examples=len(x_arr),
        n_correct=n_correct,
        spec=spec,
        float_weight_layers=float_weight_layers(sim),
    )


def evaluate_fields(
    model: keras.Model,
    spec: SimSpec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    calibration_data: np.ndarray | None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Any]:
    """:func:`evaluate` as the fields of a study record (a sim cell).

    ``calibration_data`` is used only when ``spec`` quantizes activations. Returns ``spec``
    (its dict), ``num_calibration_examples`` (0 for a weight-only spec), ``accuracy``,
    ``n_examples``, ``n_correct`` and ``float_weight_layers`` (a list).

    Raises:
      TfquantError: As :func:`evaluate`.
    """
    cal = calibration_data if spec.quantizes_activations else None
    result = evaluate(model, spec, x, y, calibration_data=cal, batch_size=batch_size)
    return {"spec": spec.to_dict(), "num_calibration_examples": 0 if cal is None else len(cal),
            "accuracy": result.accuracy, "n_examples": result.n_examples, "n_correct": result.n_correct,
            "float_weight_layers": list(result.float_weight_layers)}
