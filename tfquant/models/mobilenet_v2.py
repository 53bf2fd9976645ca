"""MobileNet-v2-style inverted residual network (Sandler et al., 2018, arXiv:1801.04381)."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2,
# scaled for 28x28 inputs; with the stride-2 stem the blocks run at 14 -> 7 -> 4.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 1),
    (4, 64, 2, 2),
)
_HEAD_CHANNELS = 192


def _inverted_residual(
    x: tf.Tensor, *, expansion: int, filters: int, stride: int, name: str
) -> tf.Tensor:
    in_channels = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(max_value=6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mobilenet_v2(
    *, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Builds a small MobileNet-v2 that outputs logits.

    Stem conv3x3(16, stride 2)-BN-ReLU6 -> inverted residual blocks (1x1 expand -> BN ->
    ReLU6 -> dw3x3 -> BN -> ReLU6 -> 1x1 linear projection -> BN, plus a residual ``Add``
    when the stride is 1 and channels match; no expand conv when t = 1) with stages
    (t, c, n, s) = (1,16,1,1), (4,24,2,2), (4,32,2,1), (4,64,2,2) (28 -> 14 -> 7 -> 4) ->
    conv1x1(192)-BN-ReLU6 -> global average pool -> dropout(0.2) -> dense(num_classes).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"mobilenet_v2"``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(
        16, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu6")(x)
    block = 0
    for expansion, filters, repeats, first_stride in _STAGES:
        for r in range(repeats):
            block += 1
            x = _inverted_residual(
                x,
                expansion=expansion,
                filters=filters,
                stride=first_stride if r == 0 else 1,
                name=f"block{block}",
            )
    x = layers.Conv2D(_HEAD_CHANNELS, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(max_value=6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")
