"""Batch-norm folding during quantization-aware training (Krishnamoorthi 2018, Sec. 3.2.2).

At inference the BN folds into the conv (:mod:`tfquant.algorithms.bn_fold`), so QAT must
fake-quantize the *folded* weights. During training the BN normalises with batch statistics
μ_B, σ_B, and folding those into the weights makes the quantized weights jitter from batch
to batch. The whitepaper's fix (its Fig. C.8, and TF's ``contrib.quantize``), which
:class:`FoldedConvBN` implements, with y = conv(x, W) computed once in float for the
batch statistics:

* weights: w = c · γW/σ_B = γW/σ with the correction c = σ_B/σ (σ the moving σ), so the
  quantized weights always use the long-term σ;
* before the freeze: out = conv(x, Q(w)) · (1/c) + β - γμ_B/σ_B, which equals the ordinary
  BN training output when Q is the identity; the moving statistics are updated;
* from step ``freeze_bn_delay`` on: the 1/c is dropped, the moving statistics stop
  updating and the bias gains γ(μ_B/σ_B - μ/σ), i.e. out = conv(x, Q(w)) + β - γμ/σ, the
  inference graph exactly;
* inference: out = conv(x, Q(γW/σ)) + β - γμ/σ.

``bn_correction=False`` gives the naive fold of the whitepaper's ablation: w = γW/σ_B,
bias β - γμ_B/σ_B in training (so Q sees batch-dependent weights), moving statistics
always updated, no freeze; inference as above.

Moving statistics follow Keras: m <- momentum · m + (1 - momentum) · batch value, with the
biased batch variance, as Keras' non-fused BatchNormalization (its default fused kernel
stores the unbiased variance, larger by n/(n-1), n = batch · height · width).
``weight_quantizer(w) -> w_q`` is any callable on the folded kernel; by default the layer
trains through it with a straight-through gradient (w + stop_gradient(Q(w) - w)).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.bn_fold import as_functional, foldable_pairs, rebuild_without_batch_norms
from tfquant.algorithms.weight_grid import SymmetricWeightQuantizer, check_bits, straight_through
from tfquant.errors import TfquantError
from tfquant.models.kernels import layer_kernel

WeightQuantizer = Callable[[tf.Tensor], tf.Tensor]


def _pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 2:
        raise TfquantError(f"{what} must be an int or a pair of ints, got {value!r}")
    return out  # type: ignore[return-value]


class _FoldedBNBase(keras.layers.Layer):
    """Shared BN-fold logic; subclasses supply the kernel shape and the convolution."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        *,
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        dilation_rate: int | tuple[int, int] = 1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        freeze_bn_delay: int | None = None,
        bn_correction: bool = True,
        weight_quantizer: WeightQuantizer | None = None,
        straight_through_gradient: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if str(padding).lower() not in ("valid", "same"):
            raise TfquantError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = str(padding).lower()
        if not 0.0 <= float(momentum) < 1.0:
            raise TfquantError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        if not float(epsilon) > 0.0:
            raise TfquantError(f"epsilon must be > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        if freeze_bn_delay is not None and (
            isinstance(freeze_bn_delay, bool) or not isinstance(freeze_bn_delay, int)
            or freeze_bn_delay < 0
        ):
            raise TfquantError(
                f"freeze_bn_delay must be None or an integer >= 0 (training steps), "
                f"got {freeze_bn_delay!r}"
            )
        if not bn_correction and freeze_bn_delay is not None:
            raise TfquantError(
                "the naive fold (bn_correction=False) never freezes; pass "
                f"freeze_bn_delay=None instead of {freeze_bn_delay!r}, or bn_correction=True"
            )
        self.freeze_bn_delay = freeze_bn_delay
        self.bn_correction = bool(bn_correction)
        if weight_quantizer is not None and not callable(weight_quantizer):
            raise TfquantError(
                f"weight_quantizer must be a callable w -> w_q, got {weight_quantizer!r}"
            )
        self.weight_quantizer = weight_quantizer
        self.straight_through_gradient = bool(straight_through_gradient)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    # --- subclass hooks -------------------------------------------------------------
    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _out_channels(self, in_channels: int) -> int:
        raise NotImplementedError

    def _conv(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _per_channel(self, v: tf.Tensor) -> tf.Tensor:
        """Reshape a per-output-channel vector to broadcast against the kernel."""
        raise NotImplementedError

    # --- Keras ----------------------------------------------------------------------
    def build(self, input_shape: tf.TensorShape) -> None:
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4 or shape[-1] is None:
            raise TfquantError(
                f"{type(self).__name__} {self.name!r} expects (batch, height, width, channels) "
                f"input with a known channel count, got {shape}"
            )
        cin = int(shape[-1])
        cout = self._out_channels(cin)
        self.kernel = self.add_weight(
            name="kernel", shape=self._kernel_shape(cin), initializer=self.kernel_initializer
        )
        self.gamma = self.add_weight(name="gamma", shape=(cout,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(cout,), initializer="zeros")
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(cout,), initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(cout,), initializer="ones", trainable=False
        )
        self.step = self.add_weight(
            name="step", shape=(), dtype=tf.int64, initializer="zeros", trainable=False
        )
        super().build(input_shape)

    def _quantize(self, w: tf.Tensor) -> tf.Tensor:
        if self.weight_quantizer is None:
            return w
        w_q = self.weight_quantizer(w)
        return straight_through(w, w_q) if self.straight_through_gradient else w_q

    def folded_kernel(self, *, quantized: bool = True) -> tf.Tensor:
        """The inference kernel Q(γW/σ) (or γW/σ), σ from the moving variance."""
        sigma = tf.sqrt(self.moving_variance + self.epsilon)
        w = self.kernel * self._per_channel(self.gamma / sigma)
        return self._quantize(w) if quantized else w

    def folded_bias(self) -> tf.Tensor:
        """The inference bias β - γμ/σ."""
        sigma = tf.sqrt(self.moving_variance + self.epsilon)
        return self.beta - self.gamma * self.moving_mean / sigma

    def _inference(self, x: tf.Tensor) -> tf.Tensor:
        return self._conv(x, self.folded_kernel()) + self.folded_bias()

    def _training(self, x: tf.Tensor) -> tf.Tensor:
        y = self._conv(x, self.kernel)
        batch_mean, batch_var = tf.nn.moments(y, axes=[0, 1, 2])
        sigma_b = tf.sqrt(batch_var + self.epsilon)
        # Read the moving statistics before this step updates them.
        moving_mean = tf.identity(self.moving_mean)
        moving_var = tf.identity(self.moving_variance)
        sigma = tf.sqrt(moving_var + self.epsilon)
        if self.bn_correction and self.freeze_bn_delay is not None:
            frozen = self.step >= self.freeze_bn_delay
        else:
            frozen = tf.constant(False)

        decay = 1.0 - self.momentum
        new_mean = moving_mean - decay * (moving_mean - tf.stop_gradient(batch_mean))
        new_var = moving_var - decay * (moving_var - tf.stop_gradient(batch_var))
        self.moving_mean.assign(tf.where(frozen, moving_mean, new_mean))
        self.moving_variance.assign(tf.where(frozen, moving_var, new_var))
        self.step.assign_add(1)

        if not self.bn_correction:
            w = self.kernel * self._per_channel(self.gamma / sigma_b)
            bias = self.beta - self.gamma * batch_mean / sigma_b
            return self._conv(x, self._quantize(w)) + bias

        # w = c·γW/σ_B with c = σ_B/σ, i.e. γW/σ: the quantized weights never see σ_B.
        y_q = self._conv(x, self._quantize(self.kernel * self._per_channel(self.gamma / sigma)))
        before = y_q * (sigma / sigma_b) + (self.beta - self.gamma * batch_mean / sigma_b)
        after = y_q + (self.beta - self.gamma * moving_mean / sigma)
        return tf.where(frozen, after, before)

    def call(self, inputs: tf.Tensor, training: bool | tf.Tensor | None = None) -> tf.Tensor:
        if training is None:
            training = keras.backend.learning_phase()
        return tf.__internal__.smart_cond.smart_cond(
            training, lambda: self._training(inputs), lambda: self._inference(inputs)
        )

    def get_config(self) -> dict[str, Any]:
        quantizer = self.weight_quantizer
        if quantizer is not None and not hasattr(quantizer, "get_config"):
            raise TfquantError(
                f"{self.name!r}: weight_quantizer {quantizer!r} has no get_config, so the "
                "layer cannot be serialised or cloned; use "
                "tfquant.algorithms.SymmetricWeightQuantizer or a class registered with "
                "keras.utils.register_keras_serializable"
            )
        config = super().get_config()
        config.update(
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding,
            dilation_rate=list(self.dilation_rate),
            momentum=self.momentum,
            epsilon=self.epsilon,
            freeze_bn_delay=self.freeze_bn_delay,
            bn_correction=self.bn_correction,
            weight_quantizer=(
                None if quantizer is None else keras.utils.serialize_keras_object(quantizer)
            ),
            straight_through_gradient=self.straight_through_gradient,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "_FoldedBNBase":
        config = dict(config)
        if config.get("weight_quantizer") is not None:
            config["weight_quantizer"] = keras.utils.deserialize_keras_object(
                config["weight_quantizer"]
            )
        return cls(**config)

    @classmethod
    def from_layers(
        cls, conv: keras.layers.Layer, batch_norm: keras.layers.BatchNormalization, **kwargs: Any
    ) -> "_FoldedBNBase":
        """A built layer carrying the weights of a trained conv + BatchNormalization pair.

        A conv bias b is absorbed into the moving mean (μ <- μ - b): the BN subtracts the
        batch mean, so b only matters through μ. BN without scale/center gets γ = 1 / β = 0
        as trainable weights.

        Args:
            conv: A built layer of this class's conv type, linear activation, channels_last.
            batch_norm: The BatchNormalization that follows it, on the last axis.
            **kwargs: Other constructor arguments (``freeze_bn_delay``, ``weight_quantizer``,
                ``bn_correction``, ``name``, ...); the name defaults to the conv's.

        Raises:
            TfquantError: If the layers do not match this class or cannot fold.
        """
        cls._check_source(conv)
        if type(batch_norm) is not keras.layers.BatchNormalization or not batch_norm.built:
            raise TfquantError(
                f"expected a built BatchNormalization after {conv.name!r}, got "
                f"{type(batch_norm).__name__} {getattr(batch_norm, 'name', '')!r}"
            )
        if list(batch_norm.axis) != [3]:
            raise TfquantError(
                f"BatchNormalization {batch_norm.name!r} normalises axis {batch_norm.axis}, "
                f"not the channel axis 3 of {conv.name!r}; it cannot fold"
            )
        kwargs.setdefault("name", conv.name)
        kwargs.setdefault("momentum", float(batch_norm.momentum))
        kwargs.setdefault("epsilon", float(batch_norm.epsilon))
        layer = cls._from_source(conv, **kwargs)
        cin = cls._source_in_channels(conv)
        layer.build(tf.TensorShape([None, None, None, cin]))
        cout = batch_norm.moving_mean.shape[0]
        mean = batch_norm.moving_mean.numpy()
        if conv.use_bias:
            mean = mean - conv.bias.numpy()
        layer.set_weights([
            cls._source_kernel(conv).numpy(),
            batch_norm.gamma.numpy() if batch_norm.scale else np.ones(cout, np.float32),
            batch_norm.beta.numpy() if batch_norm.center else np.zeros(cout, np.float32),
            mean,
            batch_norm.moving_variance.numpy(),
            np.int64(0),
        ])
        return layer

    @classmethod
    def _check_source(cls, conv: keras.layers.Layer) -> None:
        raise NotImplementedError

    @classmethod
    def _from_source(cls, conv: keras.layers.Layer, **kwargs: Any) -> "_FoldedBNBase":
        raise NotImplementedError

    @classmethod
    def _source_in_channels(cls, conv: keras.layers.Layer) -> int:
        return int(cls._source_kernel(conv).shape[2])

    @staticmethod
    def _source_kernel(conv: keras.layers.Layer) -> tf.Variable:
        return layer_kernel(conv).variable


def _check_conv_source(conv: keras.layers.Layer, kind: type[keras.layers.Layer]) -> None:
    if type(conv) is not kind or not conv.built:
        raise TfquantError(
            f"expected a built {kind.__name__}, got {type(conv).__name__} "
            f"{getattr(conv, 'name', '')!r}"
        )
    if conv.activation is not keras.activations.linear:
        raise TfquantError(
            f"{conv.name!r} has activation {conv.activation.__name__!r}; a BN after a "
            "non-linear activation cannot fold into the conv"
        )
    if conv.data_format != "channels_last":
        raise TfquantError(f"{conv.name!r} is channels_first; only channels_last folds here")


@keras.utils.register_keras_serializable(package="tfquant")
class FoldedConvBN(_FoldedBNBase):
    """Conv2D + BatchNormalization folded for QAT, with the whitepaper's correction and freeze.

    See the module docstring for the maths (Krishnamoorthi 2018, Sec. 3.2.2, Fig. C.8).
    Kernel (kh, kw, in, filters), no conv bias (the BN's β is the bias).

    Args:
        filters: Output channels.
        kernel_size, strides, padding, dilation_rate: As ``keras.layers.Conv2D``
            (channels_last only).
        momentum, epsilon: As ``keras.layers.BatchNormalization``.
        freeze_bn_delay: Training steps (calls with ``training=True``) after which the moving
            statistics freeze and the 1/c correction is dropped; None never freezes.
        bn_correction: False gives the naive fold (batch statistics in the weights, no
            correction, no freeze).
        weight_quantizer: ``w -> w_q`` applied to the folded kernel, e.g.
            :class:`tfquant.algorithms.SymmetricWeightQuantizer`; None keeps float weights.
        straight_through_gradient: Train through ``weight_quantizer`` with the identity
            gradient (w + stop_gradient(Q(w) - w)); False uses the quantizer's own gradient.
        kernel_initializer: Initializer of W.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Raises:
        TfquantError: On an invalid argument, naming it.
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__(kernel_size, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise TfquantError(f"filters must be a positive integer, got {filters!r}")
        self.filters = filters

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (*self.kernel_size, in_channels, self.filters)

    def _out_channels(self, in_channels: int) -> int:
        return self.filters

    def _conv(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.nn.convolution(
            x, kernel, strides=self.strides, padding=self.padding.upper(),
            dilations=self.dilation_rate,
        )

    def _per_channel(self, v: tf.Tensor) -> tf.Tensor:
        return v  # the output channel is the kernel's last axis

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["filters"] = self.filters
        return config

    @classmethod
    def _check_source(cls, conv: keras.layers.Layer) -> None:
        _check_conv_source(conv, keras.layers.Conv2D)
        if conv.groups != 1:
            raise TfquantError(f"{conv.name!r} is a grouped conv (groups={conv.groups})")

    @classmethod
    def _from_source(cls, conv: keras.layers.Layer, **kwargs: Any) -> "FoldedConvBN":
        return cls(
            conv.filters, conv.kernel_size, strides=conv.strides, padding=conv.padding,
            dilation_rate=conv.dilation_rate, **kwargs,
        )


@keras.utils.register_keras_serializable(package="tfquant")
class FoldedDepthwiseConvBN(_FoldedBNBase):
    """DepthwiseConv2D + BatchNormalization folded for QAT (as :class:`FoldedConvBN`).

    Kernel (kh, kw, C, depth_multiplier); output channel c * depth_multiplier + m, so the
    per-channel BN factors are reshaped to (C, depth_multiplier) against the kernel.

    Args:
        kernel_size: As ``keras.layers.DepthwiseConv2D``.
        depth_multiplier: Output channels per input channel.
        **kwargs: As :class:`FoldedConvBN` (without ``filters``). ``dilation_rate`` needs
            ``strides == 1``, as in ``tf.nn.depthwise_conv2d``.
    """

    def __init__(
        self, kernel_size: int | tuple[int, int], *, depth_multiplier: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(kernel_size, **kwargs)
        if (
            isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int)
            or depth_multiplier < 1
        ):
            raise TfquantError(
                f"depth_multiplier must be a positive integer, got {depth_multiplier!r}"
            )
        self.depth_multiplier = depth_multiplier

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (*self.kernel_size, in_channels, self.depth_multiplier)

    def _out_channels(self, in_channels: int) -> int:
        return in_channels * self.depth_multiplier

    def _conv(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.nn.depthwise_conv2d(
            x, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper(),
            dilations=self.dilation_rate,
        )

    def _per_channel(self, v: tf.Tensor) -> tf.Tensor:
        return tf.reshape(v, (-1, self.depth_multiplier))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["depth_multiplier"] = self.depth_multiplier
        return config

    @classmethod
    def _check_source(cls, conv: keras.layers.Layer) -> None:
        _check_conv_source(conv, keras.layers.DepthwiseConv2D)

    @classmethod
    def _from_source(cls, conv: keras.layers.Layer, **kwargs: Any) -> "FoldedDepthwiseConvBN":
        return cls(
            conv.kernel_size, depth_multiplier=conv.depth_multiplier, strides=conv.strides,
            padding=conv.padding, dilation_rate=conv.dilation_rate, **kwargs,
        )


def fold_batch_norms_for_qat(
    model: keras.Model,
    *,
    freeze_bn_delay: int | None = None,
    bn_correction: bool = True,
    weight_bits: int | None = None,
    per_channel: bool = True,
    custom_objects: Mapping[str, Any] | None = None,
) -> keras.Model:
    """A clone of ``model`` whose Conv2D+BN / DepthwiseConv2D+BN pairs are folded QAT layers.

    Every pair that :func:`tfquant.algorithms.foldable_pairs` finds with a Conv2D (not
    grouped) or DepthwiseConv2D, channels_last, becomes one :class:`FoldedConvBN` /
    :class:`FoldedDepthwiseConvBN` with the layer's name and the pair's trained weights
    (via ``from_layers``); everything else, including Dense+BN pairs, is cloned unchanged.
    In inference the clone equals ``model``; in training before the freeze it reproduces
    BN with batch statistics (Krishnamoorthi 2018, Sec. 3.2.2).

    Args:
        model: A functional or Sequential tf-keras model.
        freeze_bn_delay: Steps after which BN statistics freeze (None: never).
        bn_correction: False builds the naive fold (then ``freeze_bn_delay`` must be None).
        weight_bits: Fake-quantize the folded weights to this many bits with
            :class:`tfquant.algorithms.SymmetricWeightQuantizer`; None keeps them float.
        per_channel: Per-output-channel weight scales, or per-tensor.
        custom_objects: Classes of unregistered custom layers, for ``from_config``.

    Returns:
        An uncompiled functional model; ``model`` is not changed.

    Raises:
        TfquantError: For a subclassed model or an invalid argument (named).
    """
    if weight_bits is not None:
        check_bits(weight_bits)
    functional = as_functional(model)
    config = copy.deepcopy(functional.get_config())
    source = {layer.name: layer for layer in functional.layers}

    replacements: dict[str, _FoldedBNBase] = {}
    pairs = []
    for pair in foldable_pairs(functional):
        conv, bn = source[pair.layer], source[pair.batch_norm]
        if type(conv) is keras.layers.Conv2D and conv.groups == 1:
            cls = FoldedConvBN
        elif type(conv) is keras.layers.DepthwiseConv2D:
            cls = FoldedDepthwiseConvBN
        else:
            continue
        axes = layer_kernel(conv).channel_axes
        if conv.data_format != "channels_last":
            continue
        quantizer = (
            None if weight_bits is None
            else SymmetricWeightQuantizer(weight_bits, per_channel=per_channel, channel_axes=axes)
        )
        replacements[conv.name] = cls.from_layers(
            conv, bn, freeze_bn_delay=freeze_bn_delay, bn_correction=bn_correction,
            weight_quantizer=quantizer,
        )
        pairs.append(pair)

    def replace(entry: dict[str, Any]) -> dict[str, Any]:
        layer = replacements[entry["name"]]
        return dict(keras.utils.serialize_keras_object(layer), name=entry["name"])

    clone = rebuild_without_batch_norms(
        config, pairs, {name: replace for name in replacements}, custom_objects=custom_objects
    )
    for layer in clone.layers:
        if layer.name in replacements:
            layer.set_weights(replacements[layer.name].get_weights())
        else:
            layer.set_weights(source[layer.name].get_weights())
    return clone
