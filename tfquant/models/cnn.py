"""Plain CNN: Conv-ReLU stacks, max pooling, one hidden Dense layer (no BatchNorm)."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras
from tf_keras import layers

_FILTERS: tuple[int, ...] = (16, 32, 64)


def build_cnn(
    *, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Builds a plain CNN (no BatchNorm) that outputs logits.

    conv3x3(16)-ReLU -> maxpool2 -> conv3x3(32)-ReLU -> maxpool2 -> conv3x3(64)-ReLU ->
    maxpool2 -> flatten -> dense(128)-ReLU -> dropout(0.2) -> dense(num_classes).
    On 28x28 inputs the feature maps are 28 -> 14 -> 7 -> 3 (~1.9M multiply-adds).

    Args:
        input_shape: ``(height, width, channels)``; height and width >= 8.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"cnn"``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, filters in enumerate(_FILTERS, start=1):
        x = layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"conv{stage}"
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")
