"""The statistics pass gathers a reshaped tensor once: its copy's statistics are bit-identical.

RESHAPE / SQUEEZE / EXPAND_DIMS outputs are not made model outputs any more (issue 11, item 5:
the pass costs less); their statistics are copied from the source tensor. Every field must
equal what gathering the tensor itself gives (the pass before the change).
"""

from __future__ import annotations

import numpy as np

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.calibration import collect
from tfquant.convert import calibrated
from tfquant.recipes import Recipe
from tfquant.tflite.flatbuffer import value_copies

N = 70  # not a multiple of the batch size: the last batch is smaller


def _model():
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((6, 4))
    x = layers.Dense(8)(inputs)
    x = layers.Reshape((4, 12))(x)
    x = layers.Dense(5, activation="relu")(x)
    x = layers.Flatten()(x)
    return tf.keras.Model(inputs, layers.Dense(3)(x))


def _fields(s) -> tuple:
    return (s.name, s.min, s.max, s.ema_min, s.ema_max, s.count, s.mean, s.m2, s.sum_abs_dev,
            s.histogram.upper, s.histogram.counts.tolist())


def test_copied_statistics_equal_the_gathered_ones(monkeypatch) -> None:
    x = np.random.default_rng(0).standard_normal((N, 6, 4)).astype(np.float32)
    cal = calibrated.calibrate(
        _model(), Recipe(mode="int8", calibrator="max", num_calibration_examples=N), calibration_data=x,
        batch_size=32,
    )
    copies = value_copies(cal.float_model, sorted(cal.tensors))
    assert copies, "the model has reshapes of gathered tensors"
    new = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    monkeypatch.setattr(collect, "value_copies", lambda *a: {})  # every tensor gathered itself
    old = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    assert list(new.tensors) == list(old.tensors)
    for name in old.tensors:
        assert _fields(new.tensors[name]) == _fields(old.tensors[name]), name
    for dst, src in copies.items():
        assert new.tensors[cal.tensors[dst]].histogram is not new.tensors[cal.tensors[src]].histogram
