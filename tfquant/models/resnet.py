"""ResNet-style network of basic blocks (He et al., 2016, arXiv:1512.03385, CIFAR variant)."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

# (channels, number of basic blocks, first stride) per stage: 28 -> 14 -> 7 -> 4.
_STAGES: tuple[tuple[int, int, int], ...] = ((16, 1, 2), (32, 1, 2), (64, 1, 2))


def _basic_block(x: tf.Tensor, *, filters: int, stride: int, name: str) -> tf.Tensor:
    shortcut = x
    y = layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1"
    )(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_proj"
        )(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_relu2")(y)


def build_resnet(
    *, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Builds a ResNet-8 (CIFAR-style, He et al. Sec. 4.2) that outputs logits.

    Stem conv3x3(16)-BN-ReLU -> 3 stages of one basic block (conv3x3-BN-ReLU-conv3x3-BN,
    add the shortcut, ReLU after the add) with 16/32/64 channels, each stage starting with
    stride 2 (28 -> 14 -> 7 -> 4); a block that changes shape uses a 1x1 conv + BN
    projection shortcut -> global average pool -> dense(num_classes).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"resnet"``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for s, (filters, blocks, first_stride) in enumerate(_STAGES, start=1):
        for b in range(1, blocks + 1):
            x = _basic_block(
                x,
                filters=filters,
                stride=first_stride if b == 1 else 1,
                name=f"stage{s}_block{b}",
            )
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet")
