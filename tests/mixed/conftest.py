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
