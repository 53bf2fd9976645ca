"""Tiny Keras models and their .tflite conversions, shared by the evaluation tests.

Built once per session: a small CNN trained for one epoch on 2,000 Fashion-MNIST test images
(images 300+), evaluated on the first 300, converted to float32, int8 (float I/O), int8 I/O
and uint8 I/O .tflite files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)

N_EVAL = 300


@dataclasses.dataclass(frozen=True)
class TinyModels:
    """Paths of converted models, the evaluation data and the Keras reference outputs."""

    keras_model: Any
    x: np.ndarray
    y: np.ndarray
    keras_logits: np.ndarray
    fp32: Path
    int8: Path
    int8_io: Path
    uint8_io: Path


def _convert(model: Any, calibration: np.ndarray | None, io_dtype: Any = None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        def representative():
            for i in range(0, len(calibration), 10):
                yield [calibration[i:i + 10]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype is not None:
            converter.inference_input_type = io_dtype
            converter.inference_output_type = io_dtype
    return converter.convert()


def convert_keras(model: Any, path: Path) -> Path:
    """Float32 .tflite of ``model`` written to ``path``."""
    path.write_bytes(_convert(model, None))
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    import tensorflow as tf

    from tfquant.data.fashion_mnist import load_fashion_mnist

    keras = tf.keras
    x_all, y_all = load_fashion_mnist("test")
    x, y = x_all[:N_EVAL], y_all[:N_EVAL]
    x_train, y_train = x_all[N_EVAL:N_EVAL + 2000], y_all[N_EVAL:N_EVAL + 2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPool2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    logits = model.predict(x, batch_size=100, verbose=0)
    out = tmp_path_factory.mktemp("tiny_models")
    calibration = x_train[:100]
    paths = {}
    for name, calib, io in [
        ("fp32", None, None),
        ("int8", calibration, None),
        ("int8_io", calibration, tf.int8),
        ("uint8_io", calibration, tf.uint8),
    ]:
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(_convert(model, calib, io))
    return TinyModels(keras_model=model, x=x, y=y, keras_logits=logits, **paths)
