"""MobileNet-v1-style depthwise-separable network (Howard et al., 2017, arXiv:1704.04861)."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

# (pointwise filters, depthwise stride) per depthwise-separable block; the stem has
# stride 2 as in the paper, so the blocks run at 14 -> 7 -> 4.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (32, 1),
    (64, 2),
    (64, 1),
    (128, 2),
    (128, 1),
)


def _conv_bn_relu6(x: tf.Tensor, layer: layers.Layer, name: str) -> tf.Tensor:
    x = layer(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)


def build_mobilenet_v1(
    *, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Builds a small MobileNet-v1 that outputs logits.

    Stem conv3x3(16, stride 2) -> 5 depthwise-separable blocks (dw3x3 -> BN -> ReLU6 ->
    pw1x1 -> BN -> ReLU6) with widths 32-64-64-128-128 and stride 2 in blocks 2 and 4
    (28 -> 14 -> 7 -> 4) -> global average pool -> dropout(0.2) -> dense(num_classes).
    Every conv (stem, depthwise, pointwise) is followed by BatchNorm and ReLU6, as in the
    paper, so BN folding and ReLU6 clamping behave as in the full-size model.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"mobilenet_v1"``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    stem = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")
    x = _conv_bn_relu6(inputs, stem, "stem")
    for i, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = _conv_bn_relu6(
            x,
            layers.DepthwiseConv2D(
                3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw"
            ),
            f"block{i}_dw",
        )
        x = _conv_bn_relu6(
            x, layers.Conv2D(filters, 1, use_bias=False, name=f"block{i}_pw"), f"block{i}_pw"
        )
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")
