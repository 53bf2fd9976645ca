"""Small Keras models for the mixed-precision tests (built here, seconds to convert)."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401

import tensorflow as tf


def small_cnn(seed: int = 0) -> tf.keras.Model:
    """conv - conv - add - GAP - dense: every op AEQ quantizes, int8 and int16."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    y = tf.keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = tf.keras.layers.Add(name="add")([x, y])
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = tf.keras.layers.Dense(4, name="fc")(x)
    return tf.keras.Model(inp, out)


@pytest.fixture(scope="module")
def cnn_and_data():
    rng = np.random.default_rng(0)
    x = rng.random((24, 12, 12, 3), dtype=np.float32)
    return small_cnn(), x


def broken_model(seed: int = 0) -> tf.keras.Model:
    """A classifier whose last layer ``broken`` has one output channel stuck at -200.

    That channel is never the argmax, so in float it changes nothing; but a per-tensor int8
    range over ``broken``'s output (max calibrator: [-200, ~2]) has a step of ~0.8 and rounds
    the five useful logits to a few levels: quantizing ``broken`` alone wrecks accuracy,
    quantizing any other layer alone does not, and int16 activations (step ~0.006) repair
    it. (At -1000 the int16x8 bias, -1000 / (s_in · s_w), no longer fits in int32: AEQ
    clamped it to about -300; the export keeps such a layer float, see
    test_bias_overflow.py.)
    """
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((6, 6, 1))
    h = tf.keras.layers.Flatten(name="flat")(inp)
    h = tf.keras.layers.Dense(16, activation="relu", name="d1")(h)
    h = tf.keras.layers.Dense(16, activation="relu", name="d2")(h)
    out = tf.keras.layers.Dense(6, name="broken")(h)
    model = tf.keras.Model(inp, out)
    w, b = model.get_layer("broken").get_weights()
    b[5] = -200.0
    model.get_layer("broken").set_weights([w, b])
    return model


def self_labelled(model: tf.keras.Model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and the float model's own labels (float accuracy 1.0)."""
    x = np.random.default_rng(seed).random((n, *model.input_shape[1:]), dtype=np.float32)
    return x, model(x).numpy().argmax(axis=1)


@pytest.fixture(scope="module")
def broken_npz(tmp_path_factory):
    model = broken_model()
    folder = tmp_path_factory.mktemp("broken")
    path = folder / "broken.keras"
    model.save(path)
    x_tr, y_tr = self_labelled(model, 64, 1)
    x_te, y_te = self_labelled(model, 200, 2)
    np.savez(folder / "data.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return model, str(path), f"npz:{folder / 'data.npz'}"
