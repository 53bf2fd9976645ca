"""The partial-quantization study's outlier case keeps the float function; promotion groups."""

from __future__ import annotations

import numpy as np

from tfquant import _env  # noqa: F401

import tensorflow as tf

from tfquant.experiments.nvidia_partial import NvidiaPartialConfig, outlier_model
from tfquant.convert import mixed


def test_outlier_channel_keeps_the_float_function():
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, activation="relu", name="a")(inp)
    h = tf.keras.layers.MaxPooling2D(name="p")(h)
    h = tf.keras.layers.Conv2D(3, 3, name="b")(h)
    model = tf.keras.Model(inp, h)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    before = model(x).numpy()
    outlier_model(model, "a", "b", 1, scale=100.0)
    np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-4, atol=1e-4)
    assert np.abs(model.get_layer("a").get_weights()[0][..., 1]).max() > 10 * np.abs(
        model.get_layer("a").get_weights()[0][..., 0]).max()


def test_promotion_group_walks_through_pass_through_ops():
    ops = (
        mixed.OpInfo(index=0, op_type="CONV_2D", tensor="c1", scope="c1;", layer="conv2", inputs=("in",), outputs=("c1",)),
        mixed.OpInfo(index=1, op_type="MAX_POOL_2D", tensor="p", scope="p;", layer="pool2", inputs=("c1",), outputs=("p",)),
        mixed.OpInfo(index=2, op_type="CONV_2D", tensor="c2", scope="c2;", layer="conv3", inputs=("p",), outputs=("c2",)),
        mixed.OpInfo(index=3, op_type="MAX_POOL_2D", tensor="q", scope="q;", layer="pool3", inputs=("c2",), outputs=("q",)),
    )
    assert mixed.promotion_group(ops, "conv3") == ["conv3", "conv2", "pool2", "pool3"]
    assert mixed.promotion_group(ops, "conv2") == ["conv2", "pool2", "conv3"]


def test_columns():
    cols = NvidiaPartialConfig(max_layers=2).columns()
    assert cols == ["float", "int8", "int8+1_float", "int8+2_float", "int8+1_int16", "int8+2_int16", "int16x8"]
