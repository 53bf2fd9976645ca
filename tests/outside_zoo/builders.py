"""Data and models the zoo does not have, built the way a new user builds them.

Data: scikit-learn's bundled UCI hand-written digits (1797 8x8 images, 0..16), not
Fashion-MNIST. They are scaled to [0, 1] and resized bilinearly to 16x16 (grayscale) or
32x32x3 (tiled to RGB, for the keras.applications model and the input-contract model).

Models (float, trained for a few seconds, saved as ``.keras`` with their optimizer):

* ``se_cnn``     residual CNN with BN and a squeeze-and-excitation gate
                 (GlobalAveragePooling -> Dense -> sigmoid -> Multiply); logits out
* ``dw_block``   depthwise-separable block with BN and ReLU6
* ``layernorm``  small conv / dense model with LayerNormalization
* ``softmax``    conv / dense model ending in softmax
* ``mnv2``       keras.applications MobileNetV2(alpha=0.35, 32x32x3, weights=None), untrained
* ``custom``     a model holding ``ChannelScale``, a layer defined in ``my_layers.py``
* ``contract``   a small CNN trained on 32x32x3 digits in [-1, 1] (mobilenet_v2-style input),
                 whose accuracy collapses when it is fed [0, 1] pixels
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import tfquant._env  # noqa: F401  (before TensorFlow)

NUM_CLASSES = 10
GRAY_SIZE = (16, 16)
RGB_SIZE = (32, 32)
N_TEST = 300
N_CALIB = 256
TRAIN_LR = 2e-3  # deliberately not a common default, so "LR from the saved optimizer" is checkable

MY_LAYERS_SOURCE = '''\
"""A user's custom layer (not registered with Keras: loading needs custom_objects)."""

import tensorflow as tf


class ChannelScale(tf.keras.layers.Layer):
    """y = x * s, one trainable scale per channel (ConvNeXt's LayerScale, in small)."""

    def __init__(self, init_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],),
            initializer=tf.keras.initializers.Constant(self.init_value), trainable=True,
        )
        super().build(input_shape)

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}
'''


def digits_splits(seed: int = 0) -> dict[str, np.ndarray]:
    """UCI digits as float32 16x16x1 in [0, 1]: train / test split and labels.

    Returns:
      ``x_train`` (1497, 16, 16, 1), ``y_train``, ``x_test`` (300, ...), ``y_test``.
    """
    import tensorflow as tf
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    x = tf.image.resize(x, GRAY_SIZE, method="bilinear").numpy().clip(0.0, 1.0)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return {
        "x_train": x[N_TEST:], "y_train": y[N_TEST:],
        "x_test": x[:N_TEST], "y_test": y[:N_TEST],
    }


def to_rgb(x: np.ndarray) -> np.ndarray:
    """16x16x1 -> 32x32x3 (bilinear, grey tiled to RGB), still in [0, 1]."""
    import tensorflow as tf

    big = tf.image.resize(x, RGB_SIZE, method="bilinear").numpy().clip(0.0, 1.0)
    return np.repeat(big, 3, axis=-1).astype(np.float32)


def write_pngs(x: np.ndarray, y: np.ndarray | None, root: Path) -> Path:
    """Writes images in [0, 1] as 8-bit PNGs: ``root/<class>/i.png``, or flat when y is None."""
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(x):
        folder = root if y is None else root / f"digit_{int(y[i])}"
        folder.mkdir(exist_ok=True)
        png = tf.io.encode_png(np.round(image * 255.0).astype(np.uint8))
        (folder / f"{i:04d}.png").write_bytes(png.numpy())
    return root


def _compile(model: Any, *, from_logits: bool = True) -> Any:
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.Adam(TRAIN_LR),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    return model


def build_se_cnn() -> Any:
    """Residual CNN with BN and a squeeze-and-excitation gate; logits out."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*GRAY_SIZE, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    shortcut = x
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.Add()([shortcut, x])
    x = L.ReLU()(x)
    # Squeeze-and-excitation (Hu et al. 2018): channel weights from a pooled descriptor.
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(4, activation="relu")(s)
    s = L.Dense(16)(s)
    s = L.Activation("sigmoid")(s)
    s = L.Reshape((1, 1, 16))(s)
    x = L.Multiply()([x, s])
    x = L.Conv2D(32, 3, strides=2, padding="same")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(NUM_CLASSES)(x)
    return _compile(tf.keras.Model(inputs, outputs, name="se_cnn"))


def build_dw_block() -> Any:
    """Depthwise-separable block (MobileNet style) with BN and ReLU6; logits out."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*GRAY_SIZE, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(NUM_CLASSES)(x)
    return _compile(tf.keras.Model(inputs, outputs, name="dw_block"))


def build_layernorm() -> Any:
    """Conv + LayerNormalization, then Dense + LayerNormalization; logits out."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*GRAY_SIZE, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = L.LayerNormalization()(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    x = L.Dense(32)(x)
    x = L.LayerNormalization()(x)
    x = L.ReLU()(x)
    outputs = L.Dense(NUM_CLASSES)(x)
    return _compile(tf.keras.Model(inputs, outputs, name="layernorm"))


def build_softmax() -> Any:
    """Conv / pool / dense model whose last layer is a softmax."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*GRAY_SIZE, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    outputs = L.Dense(NUM_CLASSES, activation="softmax")(x)
    return _compile(tf.keras.Model(inputs, outputs, name="softmax"), from_logits=False)


def build_mnv2() -> Any:
    """keras.applications MobileNetV2, alpha 0.35, 32x32x3, random weights (not trained)."""
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(*RGB_SIZE, 3), weights=None, classes=NUM_CLASSES
    )
    return _compile(model, from_logits=False)


def load_my_layers(path: Path) -> ModuleType:
    """Imports the user's ``my_layers.py`` from its path (as a user's script would)."""
    spec = importlib.util.spec_from_file_location("outside_zoo_my_layers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_custom(my_layers: ModuleType) -> Any:
    """A small CNN holding the user's ``ChannelScale`` layer; logits out."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*GRAY_SIZE, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = my_layers.ChannelScale(0.5)(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    outputs = L.Dense(NUM_CLASSES)(x)
    return _compile(tf.keras.Model(inputs, outputs, name="custom"))


def build_contract() -> Any:
    """Small CNN for 32x32x3 input in [-1, 1] (trained on mobilenet_v2-style inputs)."""
    import tensorflow as tf

    L = tf.keras.layers
    inputs = tf.keras.Input((*RGB_SIZE, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(NUM_CLASSES)(x)
    return _compile(tf.keras.Model(inputs, outputs, name="contract"))


def train(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> Any:
    """A few float epochs (seconds) with the compiled optimizer."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def keras_accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))
