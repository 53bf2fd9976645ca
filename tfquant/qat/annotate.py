"""Float Keras model -> QAT Keras model (fake quantization in the graph), through tfmot.

:func:`quantize_for_training` annotates the model as tfmot's ``quantize_annotate_model`` does
(a ``QuantizeAnnotate`` around every layer; ours also carries our ``QuantizeConfig`` where the
scheme's registry has none, and skips ``skip_layers``), then runs tfmot's ``quantize_apply``
with the scheme:

* 8-bit weights per channel and 8-bit activations: tfmot's ``Default8BitQuantizeScheme``,
  as ``tfmot.quantization.keras.quantize_model`` does (weights: per-channel for Conv2D, per
  tensor for Dense and -- tfmot's per-axis quantizer runs over the last kernel axis, of
  size 1 -- for DepthwiseConv2D);
* anything else (per-tensor weights, 2..7-bit weights, 2..7-bit activations):
  :class:`~tfquant.qat.registry.QatScheme`, our ``QuantizeConfig``\\ s on tfmot's
  ``LastValueQuantizer`` / ``MovingAverageQuantizer`` (per-channel depthwise included) with
  tfmot's n-bit layout transforms, inside ``quantize_scope``.

In both cases layers tfmot's registry rejects but real models use -- ``Multiply``
(squeeze-and-excitation gates) and TF-op lambda layers (``x * 0.5``, ``tf.nn.relu6(x)``,
bound first by :func:`~tfquant.qat.tfop.bind_tf_op_layers`) -- are annotated with
our configs; ``Reshape``, ``UpSampling2D`` and ``Conv2DTranspose`` are in both registries.
Any other layer is reported, by name and class, before tfmot runs. ``skip_layers`` leaves
layers unannotated: they run in float in the QAT model, and a layer that produces a tensor a
quantized layer consumes gets an output fake quant when the registry knows it.

tfmot's ``LayerReLUQuantize`` transform gives a Conv2D / DepthwiseConv2D / Dense read
directly by a separate ``ReLU`` layer (or ``Activation('relu')``) a no-op config, dropping
its kernel's fake quant along with the output fake quant it means to drop. The scheme's
layout transformer is wrapped so those layers get :class:`KernelOnlyConfig` (kernel fake
quant, no output fake quant: the converter fuses the ReLU into the conv and uses the ReLU's
range). Any kernel still left in float that is not in ``skip_layers`` is an error
(:func:`float_kernels`), never a silently partly quantized model.

Sub-8-bit activations are simulation-only: TFLite has no int4 activation kernels, so such a
QAT model evaluates in Keras but :func:`~tfquant.qat.export_tflite` refuses it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Mapping, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tfquant.tflite.tfmot_internals import (
    default_8bit_quantize_scheme,
    quantize_layout_transform,
    quantize_scheme,
)
from tfquant.tflite.tfmot_internals import quantize_annotate as quantize_annotate_mod

from tfquant.qat import configs, ranges, registry, tfop
from tfquant.qat.spec import QatSpec
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity

_qk = tfmot.quantization.keras
L = keras.layers
_MAX_NAMED = 4  # unsupported layers named in the one-line error; the rest are counted
_BN_PRODUCERS = (L.Conv2D, L.DepthwiseConv2D, L.Dense)
# Layers tfmot's LayerReLUQuantize / LayerReluActivationQuantize transforms match as the
# producer of a ReLU and give a no-op config (no kernel fake quant).
_RELU_PRODUCERS = (L.Conv2D, L.DepthwiseConv2D, L.Dense)


@keras.utils.register_keras_serializable(package="tfquant")
class KernelOnlyConfig(configs.WeightLayerConfig):
    """Fake-quantizes a layer's kernel only, not its output.

    For a Conv2D / DepthwiseConv2D / Dense whose output a ReLU layer (or ``Activation('relu')``)
    reads directly. tfmot's ``LayerReLUQuantize`` transform wants no fake quant between the
    two -- the converter fuses the ReLU into the conv, and the fused op's output scale is the
    ReLU's fake-quant range -- but its no-op config also drops the kernel's fake quant, so
    the QAT model would train float weights. This config keeps the kernel's.
    """

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
        return []

    def set_quantize_activations(
        self, layer: keras.layers.Layer, quantize_activations: Sequence[Any]
    ) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


def custom_objects() -> dict[str, type]:
    """Classes a QAT model from this module needs to load: configs, quantizers, TFOpCall."""
    return {
        **configs.custom_objects(),
        "KernelOnlyConfig": KernelOnlyConfig,
        "TFOpCall": tfop.TFOpCall,
    }


def _is_no_op_config(config: object) -> bool:
    # tfmot's default 8-bit and n-bit schemes each define a NoOpQuantizeConfig.
    return type(config).__name__ == "NoOpQuantizeConfig"


class _KernelKeepingTransform(quantize_layout_transform.QuantizeLayoutTransform):
    """A scheme's layout transforms, then kernel fake quant back on ReLU-fed layers.

    After the wrapped transforms run, every Conv2D / DepthwiseConv2D / Dense they gave a
    no-op config (tfmot's ReLU transforms do, for a layer a ReLU reads directly) gets a
    :class:`KernelOnlyConfig` at the spec's weight bits and granularity instead.
    """

    def __init__(
        self,
        inner: quantize_layout_transform.QuantizeLayoutTransform,
        ours: registry.QatRegistry,
    ) -> None:
        self.inner = inner
        self.ours = ours

    def apply(self, model: keras.Model, layer_quantize_map: dict) -> tuple[keras.Model, dict]:
        model, layer_quantize_map = self.inner.apply(model, layer_quantize_map)
        for layer in model.layers:
            entry = layer_quantize_map.get(layer.name)
            if (
                type(layer) in _RELU_PRODUCERS
                and entry is not None
                and _is_no_op_config(entry.get("quantize_config"))
            ):
                full = self.ours.get_quantize_config(layer)
                entry["quantize_config"] = KernelOnlyConfig(**full.get_config())
        return model, layer_quantize_map


class _KernelKeepingScheme(quantize_scheme.QuantizeScheme):
    """``scheme`` with its layout transformer wrapped in :class:`_KernelKeepingTransform`."""

    def __init__(self, scheme: quantize_scheme.QuantizeScheme, ours: registry.QatRegistry):
        self.scheme = scheme
        self.ours = ours

    def get_layout_transformer(self) -> quantize_layout_transform.QuantizeLayoutTransform:
        return _KernelKeepingTransform(self.scheme.get_layout_transformer(), self.ours)

    def get_quantize_registry(self) -> "_qk.QuantizeRegistry":
        return self.scheme.get_quantize_registry()


def float_kernels(qat_model: Any) -> list[str]:
    """Layers of a QAT model whose kernel no fake quantizer touches.

    tfmot wrappers without a weight quantizer (which :func:`quantize_for_training` no longer
    produces: tfmot's ``LayerReLUQuantize`` transform gives a Conv2D read directly by a ReLU
    layer a no-op config, and we put the kernel fake quant back) and BN-folded layers without
    a ``weight_quantizer``. Names are the QAT model's (``quant_<name>``). Empty for a QAT
    model whose every kernel is quantized.
    """
    from tfquant.algorithms import FoldedConvBN, FoldedDepthwiseConvBN
    from tfquant.qat.export import weight_bits

    quantized = set(weight_bits(qat_model))
    out = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        if isinstance(inner, (FoldedConvBN, FoldedDepthwiseConvBN)):
            if inner.weight_quantizer is None:
                out.append(layer.name)
        elif layer.name not in quantized and any(
            w.name.endswith("kernel:0") for w in layer.weights
        ):
            out.append(layer.name)
    return out


def skip_hint(names: Sequence[str]) -> str:
    """How to leave ``names`` unquantized, in the Python API and on the command line."""
    return f"skip_layers={list(names)!r} (qat --skip_layers {','.join(names)})"


def _float_kernel_error(model: keras.Model, names: list[str]) -> TfquantError:
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMED])
    more = f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
    return TfquantError(
        f"QAT of model {model.name!r} left the kernels of {len(names)} layer(s) without a "
        f"weight fake quant: {shown}{more}; tfmot's layout transforms gave them a no-op "
        "config. Give the layer class a config with tfquant.qat.register_layer_config, "
        "insert the activation into the layer (activation='relu') instead of a separate "
        f"layer, or leave them unquantized on purpose with {skip_hint(names)}"
    )


@contextlib.contextmanager
def qat_scope() -> Iterator[None]:
    """``tfmot.quantization.keras.quantize_scope`` with tfquant's QAT classes.

    Use it to load a saved QAT model: ``with qat_scope(): keras.models.load_model(path)``.
    """
    with _qk.quantize_scope(custom_objects()):
        yield


def _check_model(model: object) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TfquantError(
            f"model must be a tf_keras (Keras 2) Model, got {type(model).__name__}; build it "
            "with tf_keras / tf.keras under TF_USE_LEGACY_KERAS=1, not Keras 3"
        )
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise TfquantError(
            f"model {model.name!r} is a subclassed model; tfmot quantizes functional and "
            "Sequential models only, so rebuild it with keras.Input and layer calls"
        )
    if not model.built:
        raise TfquantError(
            f"model {model.name!r} is not built; build it (keras.Input or model.build(shape)) "
            "before quantizing"
        )
    return model


def _check_skip(model: keras.Model, skip_layers: Sequence[str]) -> frozenset[str]:
    if isinstance(skip_layers, str):
        raise TfquantError(
            f"skip_layers must be a list of layer names, got the string {skip_layers!r}; "
            f"pass [{skip_layers!r}]"
        )
    names = [str(n) for n in skip_layers]
    unknown = ranges.unknown_names(model, names)
    if unknown:
        raise TfquantError(
            f"skip_layers names {unknown} that are not layers of model {model.name!r}; "
            "see [layer.name for layer in model.layers]"
        )
    return frozenset(names)


def _bn_supported(layer: keras.layers.Layer) -> bool:
    """tfmot's transforms quantize a BN only right after a conv / dense with linear activation."""
    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return False
    producers = nodes[0].inbound_layers
    producers = producers if isinstance(producers, list) else [producers]
    return (
        len(producers) == 1
        and type(producers[0]) in _BN_PRODUCERS
        and getattr(producers[0].activation, "__name__", None) == "linear"
    )


def _why_unsupported(
    layer: keras.layers.Layer,
    spec: QatSpec,
    base: "_qk.QuantizeRegistry",
    ours: registry.QatRegistry,
) -> str | None:
    """None if QAT can quantize ``layer``, else a short reason."""
    if isinstance(layer, keras.Model):
        return "a nested model; flatten it into the outer functional model"
    fused = _fused_activation_problem(layer)
    if fused is not None:
        return fused
    cls = type(layer)
    if cls is L.BatchNormalization:
        return None if _bn_supported(layer) else "a BatchNormalization not right after a conv/dense"
    if cls in (L.SeparableConv1D, L.SeparableConv2D):
        if spec.is_tfmot_default:
            return None
        return "tfmot's separable-conv transform ignores bit widths and granularity"
    if registry.rescaling_has_offset(layer):
        return ("Rescaling with an offset runs as MUL + ADD with no range between them; state the "
                "offset as the input contract (--input_mean / --input_std) and keep Rescaling(scale) "
                "only, or quantize without training (tfquant convert)")
    if base.supports(layer) or ours.supports(layer):
        return None
    if cls is L.Activation:
        return f"activation {configs.activation_name(layer)!r} has no TFLite int8 equivalent"
    return "no quantize config"


# What tfmot's QuantizeAwareActivation quantizes inside a conv / dense layer (its
# _PRE_QUANT_ACTIVATIONS, _POST_QUANT_ACTIVATIONS and 'relu6', tfmot 0.8.1); any other fused
# activation stops quantize_apply with "Only some Keras activations ... are supported".
_FUSED_ACTIVATIONS = frozenset({"linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "gelu", "swish"})


def _fused_activation_problem(layer: keras.layers.Layer) -> str | None:
    """Why the activation fused into a conv / dense layer cannot be quantized, or None.

    tfmot accepts a fused swish (``activation='swish'`` / ``'silu'``) but quantizes only its
    output: no fake quant sits between the kernel and the swish, so the converter leaves the
    conv, its LOGISTIC and MUL in float, which ``export_tflite`` refuses -- after the whole
    fine-tune (measured: Conv2D, DepthwiseConv2D and Dense; EfficientNet's squeeze-excite convs
    are such layers). A separate ``Activation('swish')`` layer quantizes (the conv's output gets
    its own range). Other activations outside :data:`_FUSED_ACTIVATIONS` (elu, selu, softplus,
    leaky_relu, mish, ...) stop tfmot with a message that does not name the layer.
    """
    kinds = (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv2DTranspose, L.DepthwiseConv1D, L.DepthwiseConv2D,
             L.SeparableConv1D, L.SeparableConv2D, L.Dense)
    if not isinstance(layer, kinds):
        return None
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", type(activation).__name__)
    if name in ("swish", "silu"):
        return ("a fused swish activation, which the export would leave in float with the layer (no "
                "range between the kernel and the swish); build it with activation=None followed by "
                "a separate Activation('swish') layer")
    if name not in _FUSED_ACTIVATIONS:
        return (f"a fused activation {name!r}, which tfmot cannot quantize (it takes "
                f"{', '.join(sorted(_FUSED_ACTIVATIONS - {'swish'}))})")
    return None


def _unsupported_error(
    model: keras.Model, bad: list[tuple[keras.layers.Layer, str]]
) -> TfquantError:
    named = ", ".join(
        f"{layer.name!r} ({type(layer).__name__}: {why})" for layer, why in bad[:_MAX_NAMED]
    )
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    skip = [layer.name for layer, _ in bad]
    return TfquantError(
        f"cannot quantize {len(bad)} layer(s) of model {model.name!r}: {named}{more}; give "
        "each class a config with tfquant.qat.register_layer_config, replace it with "
        f"supported layers, or leave it unquantized with {skip_hint(skip)}"
    )


def _scheme(spec: QatSpec) -> "_qk.QuantizeScheme":
    if spec.is_tfmot_default:
        return default_8bit_quantize_scheme.Default8BitQuantizeScheme()
    return registry.QatScheme(spec)


def _tfmot_error(e: Exception, model: keras.Model) -> TfquantError:
    text = " ".join(str(e).split())
    m = re.search(r"Layer (\S+?):<class '([\w.]+)'> is not supported", text)
    if m:
        name, cls = m.group(1), m.group(2).rsplit(".", 1)[-1]
        return TfquantError(
            f"tfmot cannot quantize layer {name!r} ({cls}) of model {model.name!r}; give the "
            "class a config with tfquant.qat.register_layer_config or leave it "
            f"unquantized with {skip_hint([name])}"
        )
    return TfquantError(
        f"tfmot could not quantize model {model.name!r} ({type(e).__name__}: {text[:200]}); "
        "tfmot rebuilds the model from its config, so register custom layers "
        "(keras.utils.register_keras_serializable or keras.utils.custom_object_scope), or "
        "leave the layer it names unquantized with skip_layers=[...] (qat --skip_layers NAME)"
    )


def quantize_for_training(
    model: keras.Model,
    *,
    weight_bits: int = 8,
    activation_bits: int = 8,
    weight_granularity: "Granularity | str" = Granularity.PER_CHANNEL,
    skip_layers: Sequence[str] = (),
    calibration_data: np.ndarray | None = None,
    initial_ranges: Mapping[str, ranges.RangeLike] | None = None,
) -> keras.Model:
    """Returns a QAT copy of ``model``: fake quantization of weights and activations.

    Weights: symmetric narrow range, Δ = max|w| / (2^(b-1) - 1), q in [-(2^(b-1)-1),
    2^(b-1)-1]; activations: affine per tensor, q in [0, 2^b - 1] around a zero point
    (Krishnamoorthi 2018, arXiv 1806.08342, Sec. 2; Sec. 3 for simulated quantization with a
    straight-through estimator). Weight ranges are set from the kernels before returning.
    Activation ranges: ``initial_ranges`` if given (NVIDIA's schedule starts QAT from the best
    calibrated ranges), else "max" calibration on ``calibration_data`` if given, else
    tfmot's start -- [-6, 6], which an EMA with decay 0.999 leaves almost unchanged over a
    short fine-tune, and [0, 0] for the input until the first training step. Pass one of
    them unless the model is trained for long.

    Args:
      model: A functional or Sequential tf_keras model (float, trained). Not modified.
      weight_bits: b of the weight grid, 2..8. Sub-8-bit weights export to int8 tensors
        whose values lie on the b-bit grid.
      activation_bits: b of the activation grid, 2..8. Below 8 is simulation-only: TFLite
        cannot run it and :func:`export_tflite` refuses the model.
      weight_granularity: ``per_channel`` (one scale per output channel) or ``per_tensor``.
      skip_layers: Names of layers to leave unquantized (they run in float).
      calibration_data: Float inputs ``(N, ...)`` to calibrate activation ranges with
        (max calibration, ~1000 training images).
      initial_ranges: ``{float layer name: (lo, hi)}`` (or ``Range``) for activation
        ranges; overrides ``calibration_data`` for the layers it names. See
        :func:`~tfquant.qat.ranges.layer_ranges_from_tensor_ranges` for ranges of
        .tflite tensors.

    Returns:
      The QAT ``keras.Model`` (uncompiled). Its quantized layers are
      ``QuantizeWrapperV2('quant_' + name)``; the input gets a ``QuantizeLayer``.

    Raises:
      TfquantError: bad bits / granularity / skip names / ranges; a model that is not
        functional or Sequential; layers QAT cannot quantize (named, with what to do);
        a kernel tfmot's transforms left without a weight fake quant and that is not in
        ``skip_layers`` (named; :func:`float_kernels` finds them).
    """
    spec = QatSpec(
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        weight_granularity=weight_granularity,
    )
    model = _check_model(model)
    skip = _check_skip(model, skip_layers)
    if initial_ranges is not None:
        unknown = ranges.unknown_names(model, list(initial_ranges))
        if unknown:
            raise TfquantError(
                f"initial_ranges names {unknown} that are not layers of model {model.name!r}; "
                "key the ranges by Keras layer name"
            )
    model = tfop.bind_tf_op_layers(model)
    scheme = _scheme(spec)
    base = scheme.get_quantize_registry()
    ours = registry.QatRegistry(spec)
    scheme = _KernelKeepingScheme(scheme, ours)
    bad = []
    for layer in model.layers:
        if isinstance(layer, L.InputLayer) or layer.name in skip:
            continue
        why = _why_unsupported(layer, spec, base, ours)
        if why is not None:
            bad.append((layer, why))
    if bad:
        raise _unsupported_error(model, bad)
    if not spec.per_channel:
        folded = [
            layer.name
            for layer in model.layers
            if type(layer) is L.BatchNormalization and layer.name not in skip
        ]
        if folded:
            raise TfquantError(
                f"per-tensor weights cannot absorb BatchNormalization {folded[0]!r}"
                f"{f' (and {len(folded) - 1} more)' if len(folded) > 1 else ''} of model "
                f"{model.name!r}: the converter folds BN as per-channel scales and leaves the "
                "conv in float otherwise; fold BN into the convs before QAT (BN-folded "
                "layers, tfquant.algorithms.bn_fold) or use weight_granularity='per_channel'"
            )

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in skip:
            return layer
        if type(layer) in registry.TRANSFORMED_LAYERS or base.supports(layer):
            return quantize_annotate_mod.QuantizeAnnotate(layer)
        return quantize_annotate_mod.QuantizeAnnotate(
            layer, quantize_config=ours.get_quantize_config(layer)
        )

    observed = (
        ranges.observe_layer_ranges(model, calibration_data) if calibration_data is not None else {}
    )
    with qat_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        try:
            qat_model = _qk.quantize_apply(annotated, scheme)
        except (RuntimeError, ValueError, TypeError, AttributeError, KeyError) as e:
            raise _tfmot_error(e, model) from None
    # Never return kernels silently left in float (only skip_layers may be).
    unquantized = set(float_kernels(qat_model))
    left = [
        layer.layer.name
        for layer in qat_model.layers
        if layer.name in unquantized and layer.layer.name not in skip
    ]
    if left:
        raise _float_kernel_error(model, left)
    ranges.sync_weight_ranges(qat_model)
    activation_ranges = {**observed, **dict(initial_ranges or {})}
    if activation_ranges:
        ranges.set_activation_ranges(qat_model, activation_ranges)
    return qat_model
