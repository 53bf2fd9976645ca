"""tfmot ``QuantizeConfig``\\ s of our own: which tensors of a layer get which fake quant.

Three shapes of layer, as in tfmot's default 8-bit registry, but parameterised by
:class:`~tfquant.qat.spec.QatSpec` bit widths and granularity:

* :class:`WeightLayerConfig` -- a kernel (weight fake quant) and the layer's fused activation
  (activation fake quant after it): Conv2D, DepthwiseConv2D, Dense, Conv2DTranspose.
* :class:`OutputConfig` -- the layer's output is a new tensor with its own range: ReLU, Add,
  Multiply (e.g. a squeeze-and-excitation gate), Concatenate, UpSampling2D, average pooling,
  arithmetic TF ops. TFLite gives such an op its own output scale.
* :class:`PassThroughConfig` -- nothing to quantize: the op keeps its input's scale in TFLite
  (Reshape, Flatten, MaxPooling, Dropout, shape-only TF ops) or has a fixed one (Softmax).

:class:`ActivationLayerConfig` is ``keras.layers.Activation``'s: like tfmot's, it quantizes
the output of relu / relu6 / swish / gelu and leaves linear / softmax / sigmoid / tanh (whose
TFLite int8 outputs have fixed scales) alone.

Every class is registered with Keras serialization (``tfquant>Name``) and listed in
:func:`custom_objects` for ``quantize_scope``, so QAT models clone, save and load.
"""

from __future__ import annotations

from typing import Any, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from tfquant.qat import quantizers

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

# Activations tfmot's QuantizeAwareActivation and TFLite agree on (see tfmot's
# Default8BitActivationQuantizeConfig): output quantized / fixed-scale or linear.
_QUANTIZED_OUTPUT_ACTIVATIONS = frozenset({"relu", "relu6", "swish", "gelu"})
_UNQUANTIZED_OUTPUT_ACTIVATIONS = frozenset({"linear", "softmax", "sigmoid", "tanh"})


@keras.utils.register_keras_serializable(package="tfquant")
class WeightLayerConfig(_QuantizeConfig):
    """Fake-quantizes a layer's kernel and the output of its fused activation.

    Args:
      weight_attr: Attribute holding the kernel (``kernel``, ``depthwise_kernel``).
      kernel_layout: ``conv``, ``depthwise``, ``dense`` or ``transpose`` (see
        :func:`~tfquant.qat.quantizers.weight_quantizer`).
      weight_bits: b of the symmetric narrow-range weight grid.
      activation_bits: b of the affine activation grid.
      per_channel: One weight range per output channel.
    """

    def __init__(
        self,
        *,
        weight_attr: str,
        kernel_layout: str,
        weight_bits: int,
        activation_bits: int,
        per_channel: bool,
    ) -> None:
        self.weight_attr = weight_attr
        self.kernel_layout = kernel_layout
        self.weight_bits = int(weight_bits)
        self.activation_bits = int(activation_bits)
        self.per_channel = bool(per_channel)
        self.weight_quantizer = quantizers.weight_quantizer(
            kernel_layout, bits=self.weight_bits, per_channel=self.per_channel
        )
        self.activation_quantizer = quantizers.activation_quantizer(bits=self.activation_bits)

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
        return [(getattr(layer, self.weight_attr), self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
        return [(layer.activation, self.activation_quantizer)]

    def set_quantize_weights(
        self, layer: keras.layers.Layer, quantize_weights: Sequence[tf.Tensor]
    ) -> None:
        (weight,) = quantize_weights
        current = getattr(layer, self.weight_attr)
        assert current.shape == weight.shape, (layer.name, current.shape, weight.shape)
        setattr(layer, self.weight_attr, weight)

    def set_quantize_activations(
        self, layer: keras.layers.Layer, quantize_activations: Sequence[Any]
    ) -> None:
        (activation,) = quantize_activations
        layer.activation = activation

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list[Any]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {
            "weight_attr": self.weight_attr,
            "kernel_layout": self.kernel_layout,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "per_channel": self.per_channel,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WeightLayerConfig":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightLayerConfig) and other.get_config() == self.get_config()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class _NoWeightsConfig(_QuantizeConfig):
    """A layer without quantized weights or fused activations."""

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
        return []

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
        return []

    def set_quantize_weights(
        self, layer: keras.layers.Layer, quantize_weights: Sequence[tf.Tensor]
    ) -> None:
        pass

    def set_quantize_activations(
        self, layer: keras.layers.Layer, quantize_activations: Sequence[Any]
    ) -> None:
        pass


@keras.utils.register_keras_serializable(package="tfquant")
class OutputConfig(_NoWeightsConfig):
    """Fake-quantizes a layer's output (affine, per tensor, EMA range).

    Args:
      activation_bits: b of the affine activation grid.
    """

    def __init__(self, *, activation_bits: int) -> None:
        self.activation_bits = int(activation_bits)

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list[Any]:
        return [quantizers.activation_quantizer(bits=self.activation_bits)]

    def get_config(self) -> dict[str, Any]:
        return {"activation_bits": self.activation_bits}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "OutputConfig":
        return cls(**config)


@keras.utils.register_keras_serializable(package="tfquant")
class PassThroughConfig(_NoWeightsConfig):
    """Quantizes nothing: the layer keeps its input's quantization (or TFLite fixes it)."""

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list[Any]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {}


@keras.utils.register_keras_serializable(package="tfquant")
class ActivationLayerConfig(_NoWeightsConfig):
    """``keras.layers.Activation``: output fake quant for relu / relu6 / swish / gelu only.

    Args:
      activation_bits: b of the affine activation grid.
    """

    def __init__(self, *, activation_bits: int) -> None:
        self.activation_bits = int(activation_bits)

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list[Any]:
        name = activation_name(layer)
        if name in _QUANTIZED_OUTPUT_ACTIVATIONS:
            return [quantizers.activation_quantizer(bits=self.activation_bits)]
        assert name in _UNQUANTIZED_OUTPUT_ACTIVATIONS, name  # the registry checked it
        return []

    def get_config(self) -> dict[str, Any]:
        return {"activation_bits": self.activation_bits}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ActivationLayerConfig":
        return cls(**config)


def activation_name(layer: keras.layers.Layer) -> str | None:
    """The ``__name__`` of an ``Activation`` layer's function (None if it has none)."""
    return getattr(getattr(layer, "activation", None), "__name__", None)


def supports_activation_layer(layer: keras.layers.Layer) -> bool:
    """Whether :class:`ActivationLayerConfig` knows this ``Activation`` layer's function."""
    name = activation_name(layer)
    return name in _QUANTIZED_OUTPUT_ACTIVATIONS or name in _UNQUANTIZED_OUTPUT_ACTIVATIONS


def custom_objects() -> dict[str, type]:
    """Config and quantizer classes, for ``tfmot.quantization.keras.quantize_scope``."""
    return {
        "WeightLayerConfig": WeightLayerConfig,
        "OutputConfig": OutputConfig,
        "PassThroughConfig": PassThroughConfig,
        "ActivationLayerConfig": ActivationLayerConfig,
        **quantizers.custom_objects(),
    }
