"""Tiny random-weight Keras models converted through the boundary itself (seconds, no data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)


def small_cnn() -> Any:
    """Conv -> depthwise conv -> dense -> dense: every weighted op kind but transpose conv."""
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(6, activation="relu"),
        keras.layers.Dense(3),
    ])


def calibration(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, 8, 8, 2)).astype(np.float32)


def representative() -> Any:
    x = calibration()
    return lambda: ([x[i:i + 1]] for i in range(len(x)))


@pytest.fixture(scope="module")
def cnn() -> Any:
    return small_cnn()


@pytest.fixture(scope="module")
def float_tflite(cnn: Any) -> bytes:
    from tfquant.tflite.converter import run_converter

    return run_converter(keras_model=cnn)


@pytest.fixture(scope="module")
def int8_tflite(cnn: Any) -> bytes:
    from tfquant.tflite.converter import ConverterOptions, run_converter

    options = ConverterOptions(optimize=True, ops_set="int8")
    return run_converter(keras_model=cnn, options=options, representative_dataset=representative())
