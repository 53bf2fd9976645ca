"""Small Fashion-MNIST slices, a fine-tuned zoo CNN with its QAT export, and tiny models.

Sizes keep the QAT tests to about a minute on two cores: 256 training images (4 steps at
batch 64), 300 calibration images, 1000 test images.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)

N_TRAIN = 256
N_CAL = 300
N_TEST = 1000
BATCH = 64


@dataclasses.dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="session")
def fmnist() -> dict[str, Any]:
    from tfquant import data

    x_train, y_train, _ = data.load_numpy("fashion_mnist", "train", limit=N_TRAIN)
    x_test, y_test, _ = data.load_numpy("fashion_mnist", "test", limit=N_TEST)
    return {
        "train": Split(np.array(x_train), np.array(y_train)),
        "test": Split(np.array(x_test), np.array(y_test)),
        "cal": data.calibration_set("fashion_mnist", N_CAL, seed=1),
    }


def small_recipe(**changes: Any) -> Any:
    """NVIDIA's schedule for the zoo CNN at the tests' batch size."""
    from tfquant import qat
    from tfquant.models.train import DEFAULT_CONFIGS

    return qat.nvidia_schedule(DEFAULT_CONFIGS["cnn"]).replace(batch_size=BATCH, **changes)


@pytest.fixture(scope="session")
def cnn_qat(fmnist: dict[str, Any]) -> dict[str, Any]:
    """The zoo CNN: 8-bit QAT (tfmot default scheme), one epoch of fine-tuning, exported."""
    from tfquant import models
    from tfquant import qat

    qat_model = qat.quantize_for_training(models.build("cnn"), calibration_data=fmnist["cal"])
    result = qat.finetune(
        qat_model,
        small_recipe(),
        fmnist["train"].x,
        fmnist["train"].y,
        epochs=1,
        seed=0,
        verbose=False,
    )
    return {"model": qat_model, "tflite": qat.export_tflite(qat_model), "result": result}


def tiny_model(kind: str, *, seed: int = 0) -> Any:
    """A conv on 8x8x3 inputs, then the layer under test, then Flatten + Dense(10)."""
    import tensorflow as tf
    import tf_keras as keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    if kind == "multiply":  # a squeeze-and-excitation gate
        g = L.GlobalAveragePooling2D(name="squeeze")(x)
        g = L.Dense(4, activation="relu", name="excite1")(g)
        g = L.Dense(8, activation="sigmoid", name="excite2")(g)
        g = L.Reshape((1, 1, 8), name="gate")(g)
        x = L.Multiply(name="multiply")([x, g])
    elif kind == "reshape":
        x = L.Reshape((64, 8), name="reshape")(x)
        x = L.Reshape((8, 8, 8), name="reshape_back")(x)
    elif kind == "upsampling2d":
        x = L.UpSampling2D(2, name="upsampling2d")(x)
    elif kind == "conv2d_transpose":
        x = L.Conv2DTranspose(
            6, 3, strides=2, padding="same", activation="relu", name="conv2d_transpose"
        )(x)
    elif kind == "tf_op":
        x = tf.nn.relu6(x) * 0.5
        x = tf.concat([x, tf.reduce_mean(x, axis=[1, 2], keepdims=True) * x], axis=-1)
    elif kind == "conv_bn":
        x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv_nobias")(x)
        x = L.BatchNormalization(name="bn")(x)
        x = L.ReLU(name="relu")(x)
    elif kind == "depthwise_bn":
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
        x = L.BatchNormalization(name="dw_bn")(x)
        x = L.ReLU(6.0, name="dw_relu6")(x)
    elif kind == "layer_norm":
        x = L.LayerNormalization(name="layer_norm")(x)
    else:
        raise AssertionError(kind)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x), name=f"tiny_{kind}")


@pytest.fixture(scope="session")
def tiny_data() -> Split:
    rng = np.random.default_rng(0)
    return Split(
        rng.uniform(0.0, 1.0, (64, 8, 8, 3)).astype(np.float32),
        rng.integers(0, 10, 64).astype(np.int64),
    )


@pytest.fixture(scope="session")
def tiny() -> Callable[..., Any]:
    return tiny_model
