"""A tiny CNN, calibration data and a cache of its conversions, shared by the convert tests.

The CNN has a 3x3 conv (16 ch) + BN + ReLU, a strided 3x3 conv (32 ch, 4608 weights) +
ReLU6, then Flatten + Dense(10) (5120 weights): both big layers exceed the 1024-element
threshold below which dynamic-range quantization leaves weights in float32. BN statistics
are set to non-trivial values so folding them changes the weights.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.recipes import Recipe

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
N_CAL = 250  # not a multiple of the calibration batch size, so the padded last batch is used


def build_cnn(seed: int = 0) -> Any:
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(INPUT_SHAPE)
    x = layers.Conv2D(16, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(NUM_CLASSES)(x)
    model = tf.keras.Model(inputs, outputs)
    bn = model.layers[2]
    rng = np.random.default_rng(seed)
    n = bn.get_weights()[0].size
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n)
    mean, variance = rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)
    bn.set_weights([gamma, beta, mean, variance])
    return model


@pytest.fixture(scope="session")
def cnn() -> Any:
    return build_cnn()


@pytest.fixture(scope="session")
def cal_data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_CAL, *INPUT_SHAPE)).astype(np.float32)


def recipe(**fields: Any) -> Recipe:
    """A recipe whose calibration size matches ``cal_data``."""
    return Recipe(num_calibration_examples=N_CAL, **fields)


@pytest.fixture(scope="session")
def converted(cnn: Any, cal_data: np.ndarray) -> Callable[[Recipe], bytes]:
    """Converts the CNN with a recipe, once per distinct recipe per session."""
    from tfquant import convert

    cache: dict[Recipe, bytes] = {}

    def get(r: Recipe) -> bytes:
        if r not in cache:
            cache[r] = convert.convert(cnn, r, calibration_data=cal_data)
        return cache[r]

    return get


def run_tflite(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """Runs a single-input model on a float batch, (de)quantizing integer I/O."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if np.issubdtype(out["dtype"], np.integer):
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y
