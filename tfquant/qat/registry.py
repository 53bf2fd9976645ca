"""Which layers QAT can quantize, with which config: layer class -> ``QuantizeConfig``.

:class:`QatRegistry` re-expresses tfmot's default 8-bit registry for any
:class:`~tfquant.qat.spec.QatSpec` (bit widths, granularity) and adds the layers
tfmot rejects that real models use:

==========================  ===========================================================
Conv2D                      :class:`WeightLayerConfig` (kernel + fused activation)
DepthwiseConv2D             :class:`WeightLayerConfig`, per-channel over C·M channels
Dense, Conv2DTranspose      :class:`WeightLayerConfig`, per-tensor kernel always
ReLU, LeakyReLU, Add,       :class:`OutputConfig`
Concatenate, UpSampling2D,
average pooling,
Rescaling (no offset),
Normalization
**Multiply** (SE gates)     :class:`OutputConfig` (not in tfmot's registry)
**TF-op layers**            :class:`OutputConfig`, or :class:`PassThroughConfig` for
                            reshape / transpose / squeeze / expand_dims / identity
                            (TFOpLambda, bound to :class:`~tfquant.qat.tfop.TFOpCall`)
Reshape, Flatten, Permute,  :class:`PassThroughConfig`
Dropout, max pooling,
cropping, zero padding,
Softmax
Activation                  :class:`ActivationLayerConfig` (relu/relu6/swish/gelu/linear/
                            softmax/sigmoid/tanh)
==========================  ===========================================================

BatchNormalization has no entry: tfmot's layout transforms handle it after a Conv2D /
DepthwiseConv2D / Dense (no fake quant between them; TFLite folds the BN into the conv).

:func:`register_layer_config` is the hook for layers other modules define (e.g. a BN-folded
training layer): it adds a class -> config factory that every registry then uses.

:class:`QatScheme` pairs tfmot's n-bit layout transforms (the same transforms as the default
8-bit scheme, with the spec's bit widths in the configs they attach) with the registry.
"""

from __future__ import annotations

from typing import Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tfquant.tflite.tfmot_internals import (
    default_n_bit_quantize_layout_transform,
    quantize_registry,
    quantize_scheme,
)

from tfquant.models.kernels import kernel_layout
from tfquant.qat import configs, tfop
from tfquant.qat.spec import QatSpec
from tfquant.errors import TfquantError

L = keras.layers
ConfigFactory = Callable[[QatSpec, keras.layers.Layer], "tfmot.quantization.keras.QuantizeConfig"]

# Exact classes (as tfmot's registry); where the kernel is and its layout come from
# tfquant.models.kernels.
_WEIGHT_LAYERS: dict[type, tuple[str, str]] = {
    cls: (kernel_layout(cls).attr, kernel_layout(cls).kind.value)
    for cls in (L.Conv2D, L.Dense, L.DepthwiseConv2D, L.Conv2DTranspose)
}
_OUTPUT_LAYERS: frozenset[type] = frozenset(
    {
        L.ReLU,
        L.LeakyReLU,
        L.Add,
        L.Multiply,
        L.Concatenate,
        L.UpSampling2D,
        L.AveragePooling1D,
        L.AveragePooling2D,
        L.GlobalAveragePooling1D,
        L.GlobalAveragePooling2D,
        L.GlobalAveragePooling3D,
        L.Rescaling,  # x·scale, no offset (see rescaling_has_offset)
        L.Normalization,  # (x - mean) / sqrt(var) at the input (EfficientNet)
    }
)
PASS_THROUGH_LAYERS: frozenset[type] = frozenset(
    {
        L.Reshape,
        L.Flatten,
        L.Permute,
        L.Dropout,
        L.SpatialDropout1D,
        L.SpatialDropout2D,
        L.SpatialDropout3D,
        L.ActivityRegularization,
        L.MaxPooling1D,
        L.MaxPooling2D,
        L.GlobalMaxPooling1D,
        L.GlobalMaxPooling2D,
        L.GlobalMaxPooling3D,
        L.Cropping1D,
        L.Cropping2D,
        L.Cropping3D,
        L.ZeroPadding1D,
        L.ZeroPadding2D,
        L.Softmax,
    }
)
# Handled by tfmot's layout transforms (not by a registry entry): BN after a conv / dense,
# and separable convs split into depthwise + pointwise.
TRANSFORMED_LAYERS: frozenset[type] = frozenset(
    {L.BatchNormalization, L.SeparableConv1D, L.SeparableConv2D}
)

_EXTRA_FACTORIES: dict[type, ConfigFactory] = {}


def rescaling_has_offset(layer: keras.layers.Layer) -> bool:
    """A ``Rescaling`` with a non-zero offset: it runs as MUL then ADD, and no output fake
    quant reaches the tensor between them, so its int8 export would keep both in float."""
    offset = getattr(layer, "offset", 0.0)
    return type(layer) is L.Rescaling and bool(np.any(np.asarray(offset, np.float64) != 0.0))


def register_layer_config(layer_class: type, factory: ConfigFactory) -> None:
    """Makes QAT quantize layers of ``layer_class`` with ``factory(spec, layer)``'s config.

    The hook for layers defined elsewhere (e.g. a BN-folded conv that fake-quantizes its own
    folded weights and needs only an :class:`~tfquant.qat.configs.OutputConfig`).
    The config class must be Keras-serializable (``register_keras_serializable``). Exact
    class match, like tfmot's registry.

    Raises:
      TfquantError: ``layer_class`` is not a Keras layer class or ``factory`` not callable.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TfquantError(
            f"layer_class must be a tf_keras Layer subclass, got {layer_class!r}; pass the "
            "class itself, e.g. MyLayer"
        )
    if not callable(factory):
        raise TfquantError(
            f"factory must be callable, got {type(factory).__name__}; pass a function "
            "factory(spec, layer) -> QuantizeConfig"
        )
    _EXTRA_FACTORIES[layer_class] = factory


class QatRegistry(quantize_registry.QuantizeRegistry):
    """Layer class -> our ``QuantizeConfig`` for one :class:`QatSpec`.

    Args:
      spec: Bit widths and weight granularity.
    """

    def __init__(self, spec: QatSpec) -> None:
        self.spec = spec

    def supports(self, layer: keras.layers.Layer) -> bool:
        cls = type(layer)
        if cls is L.Activation:
            return configs.supports_activation_layer(layer)
        if rescaling_has_offset(layer):
            return False
        return (
            cls in _EXTRA_FACTORIES
            or cls in _WEIGHT_LAYERS
            or cls in _OUTPUT_LAYERS
            or cls in PASS_THROUGH_LAYERS
            or cls is tfop.TFOpCall
        )

    def get_quantize_config(
        self, layer: keras.layers.Layer
    ) -> "tfmot.quantization.keras.QuantizeConfig":
        cls = type(layer)
        assert self.supports(layer), (layer.name, cls)  # callers check supports() first
        spec = self.spec
        if cls in _EXTRA_FACTORIES:
            return _EXTRA_FACTORIES[cls](spec, layer)
        if cls in _WEIGHT_LAYERS:
            attr, layout = _WEIGHT_LAYERS[cls]
            return configs.WeightLayerConfig(
                weight_attr=attr,
                kernel_layout=layout,
                weight_bits=spec.weight_bits,
                activation_bits=spec.activation_bits,
                per_channel=spec.per_channel,
            )
        if cls is L.Activation:
            return configs.ActivationLayerConfig(activation_bits=spec.activation_bits)
        if cls in PASS_THROUGH_LAYERS or (cls is tfop.TFOpCall and tfop.is_shape_op(layer)):
            return configs.PassThroughConfig()
        return configs.OutputConfig(activation_bits=spec.activation_bits)


class QatScheme(quantize_scheme.QuantizeScheme):
    """tfmot's layout transforms at the spec's bit widths + :class:`QatRegistry`.

    Args:
      spec: Bit widths and weight granularity.
    """

    def __init__(self, spec: QatSpec) -> None:
        self.spec = spec

    def get_layout_transformer(
        self,
    ) -> quantize_scheme.quantize_layout_transform.QuantizeLayoutTransform:
        return default_n_bit_quantize_layout_transform.DefaultNBitQuantizeLayoutTransform(
            num_bits_weight=self.spec.weight_bits,
            num_bits_activation=self.spec.activation_bits,
        )

    def get_quantize_registry(self) -> QatRegistry:
        return QatRegistry(self.spec)
