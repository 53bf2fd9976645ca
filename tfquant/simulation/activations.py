"""Activation fake-quantization: where TFLite quantizes, the calibrated ranges, the layer.

Where (on the BN-folded float graph), following what the TFLite int8 converter emits
(checked on the zoo CNN, MobileNet-v1 and ResNet .tflite files):

* every model input (the QUANTIZE op of a float-I/O model) and every model output;
* every float layer output ("own" range) except
  - the output of a Conv / DepthwiseConv2D / Dense / Add / Subtract / Multiply with a
    linear activation whose only reader is a ReLU / ReLU6 layer: TFLite fuses the
    activation into the op, so only the activation's output is quantized;
  - outputs of ops that move quantized values without computing new ones (MaxPooling,
    GlobalMaxPooling, Flatten, Reshape, Permute, ZeroPadding, Cropping, RepeatVector,
    nearest UpSampling, Dropout and the other identity-at-inference layers): they keep
    their input's scale and zero point, so there is nothing to simulate;
  - AveragePooling keeps its input's parameters too (TFLite requires it) but computes new
    values, which are re-rounded on the input's grid ("inherit").

Ranges: the float folded model is run over the calibration set and each quantized
tensor's [min, max] (per tensor, or per channel of the last axis) is recorded, as the
TFLite calibrator does. With percentile calibration (Wu et al. 2020, arXiv 2004.09602,
Sec. 4.2) the same pass (:func:`tfquant.calibration.observe.statistics_pass`) also fills a
2048-bin histogram of |x| (:class:`tfquant.calibration.histogram.AbsHistogram`, the
calibrators' own) and amax is the *upper* edge of the bin where the CDF reaches p/100
(:func:`tfquant.calibration.percentile.percentile_amax` with ``BinEdge.UPPER``); the range
becomes [max(min, -amax), min(max, amax)].

One known difference from the TFLite int8 converter (TF 2.21): its calibrator widens the
range of an ADD's *first* input to include the ADD's output (fused ReLU included), e.g.
ResNet's projection shortcut [-6.85, 7.10] -> [-6.85, 13.20]; swapping the Add's inputs
moves the widening to the other input, which points at the ADD running in place over its
first input's buffer during calibration. The simulation keeps the true [min, max]; on
the zoo ResNet this costs ~0.1% top-1 agreement with the interpreter.

Parameters: :func:`tfquant.numerics.affine_params` (affine) or
:func:`tfquant.numerics.symmetric_params` with ``narrow_range=False`` (symmetric), and the
fake-quant op is ``tf.quantization.fake_quant_with_min_max_vars[_per_channel]`` fed with
the exact grid ends ``[(q_min - z)Δ, (q_max - z)Δ]`` of those parameters, so the op's own
nudging is a no-op and its result is Δ(clamp(q_min, q_max, round(x/Δ) + z) - z), with the
straight-through gradient (pass inside the range, zero outside) of Krishnamoorthi 2018
Sec. 2.1 / 3.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.calibration.keras_outputs import keras_batches
from tfquant.calibration.observe import AbsHistograms, MinMax, fan_out, statistics_pass
from tfquant.calibration.percentile import BinEdge, percentile_amax
from tfquant.errors import TfquantError
from tfquant.numerics import QuantParams, affine_params, symmetric_params
from tfquant.qtypes import ActivationScheme, Calibration, Granularity
from tfquant.simulation import graph
from tfquant.simulation.spec import SimSpec

CALIBRATION_BATCH_SIZE = 256

_PASS_THROUGH = (
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    keras.layers.RepeatVector,
    keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
    keras.layers.AlphaDropout, keras.layers.ActivityRegularization,
)
_INHERIT = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
_FUSING_PRODUCERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D, keras.layers.Dense,
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
)


class Kind(enum.Enum):
    """What happens to one tensor of the folded graph."""

    OWN = "own"  # fake-quantized with its own calibrated range
    INHERIT = "inherit"  # re-rounded on its source tensor's grid (AveragePooling)
    SHARED = "shared"  # already on its source tensor's grid (MaxPool, Reshape, ...)
    FUSED = "fused"  # stays float inside a fused op (conv output read only by a ReLU)
    FLOAT = "float"  # not a float tensor, nothing to quantize


@dataclasses.dataclass(frozen=True)
class Point:
    """The decision for one tensor: its :class:`Kind` and the tensor whose range it uses."""

    kind: Kind
    source: int | None = None  # id of the OWN tensor whose range applies


def _is_fusable_activation(layer: Any) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        c = layer.get_config()
        return (
            float(c.get("negative_slope") or 0.0) == 0.0
            and float(c.get("threshold") or 0.0) == 0.0
            and c.get("max_value") in (None, 6.0, 6)
        )
    if isinstance(layer, keras.layers.Activation):
        return layer.get_config().get("activation") in ("relu", "relu6")
    return False


def _linear(layer: keras.layers.Layer) -> bool:
    return layer.get_config().get("activation", "linear") == "linear"


def _passes_through(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _PASS_THROUGH):
        return True
    return isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"


def quantization_points(model: keras.Model) -> dict[int, Point]:
    """``id(KerasTensor) -> Point`` for the model's inputs and every layer output.

    Args:
      model: A functional model, BN already folded (see the module docstring for the rules).
    """
    readers = graph.consumers(model)
    points: dict[int, Point] = {}

    def own_or_float(t: Any) -> Point:
        return Point(Kind.OWN, id(t)) if t.dtype.is_floating else Point(Kind.FLOAT)

    for t in model.inputs:
        points[id(t)] = own_or_float(t)
    for node in graph.nodes_in_order(model):
        layer = node.layer
        for t in tf.nest.flatten(node.outputs):
            if not t.dtype.is_floating:
                points[id(t)] = Point(Kind.FLOAT)
                continue
            inputs = node.keras_inputs
            src = points.get(id(inputs[0])) if len(inputs) == 1 else None
            users = readers.get(id(t), [])
            if src is not None and (_passes_through(layer) or isinstance(layer, _INHERIT)):
                kind = Kind.SHARED if _passes_through(layer) else Kind.INHERIT
                points[id(t)] = Point(kind, src.source) if src.source is not None else own_or_float(t)
            elif (
                isinstance(layer, _FUSING_PRODUCERS)
                and _linear(layer)
                and len(users) == 1
                and _is_fusable_activation(users[0])
            ):
                points[id(t)] = Point(Kind.FUSED)
            else:
                points[id(t)] = own_or_float(t)
    return points


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """Calibrated [lo, hi] of one tensor: scalars (per tensor) or one per channel."""

    lo: np.ndarray
    hi: np.ndarray


def calibrate(
    model: keras.Model, points: dict[int, Point], spec: SimSpec, x: np.ndarray,
    *, calibrator: Any | None = None,
) -> dict[int, TensorRange]:
    """Ranges of every OWN tensor of ``model`` over calibration inputs ``x``, as ``spec`` says.

    With ``calibrator`` (a :class:`tfquant.calibration.base.Calibrator`, per-tensor
    activations only) each tensor's :class:`~tfquant.calibration.statistics.TensorStatistics`
    are gathered instead and the calibrator chooses the range for ``spec.activation_bits``
    (e.g. ACIQ's clipping at 4 bits), as the converter-side calibrators do.

    Returns:
      ``id(KerasTensor) -> TensorRange``.
    """
    per_channel = spec.activation_granularity is Granularity.PER_CHANNEL
    tensors = [t for t in _all_tensors(model) if points[id(t)].kind is Kind.OWN]
    if calibrator is not None:
        return _calibrator_ranges(model, tensors, spec, x, calibrator)
    extremes = [MinMax(per_channel=per_channel) for _ in tensors]
    observers: list[Any] = list(extremes)
    percentile = spec.activation_calibration is Calibration.PERCENTILE
    if percentile:
        histograms = [AbsHistograms(per_channel=per_channel) for _ in tensors]
        observers = [fan_out(m, h) for m, h in zip(extremes, histograms)]
    batches = keras_batches(model, tensors, x, batch_size=CALIBRATION_BATCH_SIZE, compiled=True)
    statistics_pass(batches, observers)
    ranges = {}
    for i, (t, m) in enumerate(zip(tensors, extremes)):
        lo, hi = m.lo, m.hi
        if percentile:
            amax = np.array(
                [
                    percentile_amax(h.counts, h.edges, spec.percentile, edge=BinEdge.UPPER)
                    for h in histograms[i].histograms
                ]
            ).reshape(np.shape(hi))
            lo, hi = np.maximum(lo, -amax), np.minimum(hi, amax)
        ranges[id(t)] = TensorRange(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    return ranges


def _calibrator_ranges(
    model: keras.Model, tensors: list[Any], spec: SimSpec, x: np.ndarray, calibrator: Any
) -> dict[int, TensorRange]:
    from tfquant.calibration.base import QuantTarget, Range
    from tfquant.calibration.statistics import TensorStatistics

    if spec.activation_granularity is Granularity.PER_CHANNEL:
        raise TfquantError("an activation calibrator chooses per-tensor ranges; use per_tensor activations")
    stats = [TensorStatistics.empty(getattr(t, "name", str(i))) for i, t in enumerate(tensors)]
    batches = keras_batches(model, tensors, x, batch_size=CALIBRATION_BATCH_SIZE, compiled=True)
    statistics_pass(batches, [s.update for s in stats])
    target = QuantTarget(bits=int(spec.activation_bits or 8),
                         symmetric=spec.activation_scheme is ActivationScheme.SYMMETRIC)
    ranges = {}
    for t, st in zip(tensors, stats):
        r = calibrator.compute_range(st, target)
        if not r.hi - r.lo > 0.0:
            r = Range(float(st.min), float(st.max))
        ranges[id(t)] = TensorRange(np.asarray(r.lo, np.float64), np.asarray(r.hi, np.float64))
    return ranges


def _all_tensors(model: keras.Model) -> list[Any]:
    seen: dict[int, Any] = {id(t): t for t in model.inputs}
    for node in graph.nodes_in_order(model):
        for t in tf.nest.flatten(node.outputs):
            seen.setdefault(id(t), t)
    return list(seen.values())


def activation_params(r: TensorRange, spec: SimSpec) -> QuantParams:
    """Scale and zero point of a calibrated range, from :mod:`tfquant.numerics`."""
    assert spec.activation_bits is not None
    if spec.activation_scheme is ActivationScheme.AFFINE:
        return affine_params(r.lo, r.hi, bits=spec.activation_bits)
    amax = np.maximum(np.abs(r.lo), np.abs(r.hi))
    return symmetric_params(amax, bits=spec.activation_bits, narrow_range=False)


@keras.utils.register_keras_serializable(package="tfquant")
class FakeQuant(keras.layers.Layer):
    """Fixed-range fake quantization: Δ(clamp(q_min, q_max, round(x/Δ) + z) - z).

    Args:
      minimum, maximum: grid ends (q_min - z)Δ and (q_max - z)Δ: scalars, or one per
        channel of the last axis.
      bits: b in [2, 16].
      narrow_range: grid [1, 2^b - 1] instead of [0, 2^b - 1] (in the op's unsigned view).
    """

    def __init__(
        self, *, minimum: Any, maximum: Any, bits: int, narrow_range: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(trainable=False, **kwargs)
        self.minimum = np.asarray(minimum, np.float32)
        self.maximum = np.asarray(maximum, np.float32)
        self.bits = int(bits)
        self.narrow_range = bool(narrow_range)

    @classmethod
    def from_params(cls, p: QuantParams, **kwargs: Any) -> "FakeQuant":
        """A layer whose grid is exactly ``p``'s (signed integer grid of :mod:`tfquant.numerics`)."""
        scale = np.asarray(p.scale, np.float64)
        zp = np.asarray(p.zero_point, np.float64)
        return cls(
            minimum=(p.qmin - zp) * scale, maximum=(p.qmax - zp) * scale,
            bits=p.bits, narrow_range=p.narrow_range, **kwargs,
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        if self.minimum.ndim == 0:
            y = tf.quantization.fake_quant_with_min_max_vars(
                x, self.minimum, self.maximum, num_bits=self.bits, narrow_range=self.narrow_range
            )
        else:
            y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                x, self.minimum, self.maximum, num_bits=self.bits, narrow_range=self.narrow_range
            )
        return tf.cast(y, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("trainable", None)
        config.update(
            minimum=self.minimum.tolist(), maximum=self.maximum.tolist(),
            bits=self.bits, narrow_range=self.narrow_range,
        )
        return config


def check_inputs(x: object, model: keras.Model, *, name: str = "calibration_data") -> np.ndarray:
    """``x`` as float32 (N, *input_shape[1:]) for the model's single input.

    Raises:
      TfquantError: None, empty, wrong shape, NaN/Inf, or a multi-input model; the
        message calls the argument ``name``.
    """
    if len(model.inputs) != 1:
        raise TfquantError(
            f"model {model.name!r} has {len(model.inputs)} inputs; the simulation runs "
            "single-input models only"
        )
    if x is None:
        hint = (
            "activation_bits is set, so pass float inputs (N, H, W, C), e.g. "
            "tfquant.data.calibration_set('fashion_mnist', 1000)"
            if name == "calibration_data" else "pass float inputs (N, H, W, C)"
        )
        raise TfquantError(f"{name} is None; {hint}")
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise TfquantError(f"{name} must be a float array, got {type(x).__name__}") from None
    want = tuple(model.inputs[0].shape[1:])
    if arr.ndim != len(want) + 1 or any(w is not None and w != s for w, s in zip(want, arr.shape[1:])):
        raise TfquantError(
            f"{name} has shape {arr.shape}, the model expects (N, {', '.join(map(str, want))}); "
            "preprocess it like the training data"
        )
    if len(arr) == 0:
        raise TfquantError(f"{name} is empty; pass at least one example")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise TfquantError(f"{name} holds {bad} NaN/Inf values; clean the inputs")
    return arr
