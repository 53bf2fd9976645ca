"""The statistics pass gathers a reshaped or transposed tensor once, through its source.

RESHAPE / SQUEEZE / EXPAND_DIMS outputs and TRANSPOSEs that keep the last axis are not made
model outputs (issue 11, item 5: the pass costs less); their statistics are copied from the
source tensor, their per-channel sums regrouped when the last dimension differs. Every field
must equal what gathering the tensor itself gives (the pass before the change): bit for bit
for a copy in the same flat order with the same last dimension, else up to the order of the
float64 sums.
"""

from __future__ import annotations

import numpy as np

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.calibration import collect
from tfquant.convert import calibrated
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer
from tfquant.tflite.flatbuffer import value_copies
from tfquant.tflite.rearrangements import value_rearrangements

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
            s.histogram.upper, s.histogram.counts.tolist(),
            None if s.channel_sum is None else s.channel_sum.tolist())


def _permute_model():
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input((6, 4, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.Permute((2, 1, 3))(x)  # keeps the last axis: a rearrangement
    x = layers.Dense(6)(x)
    x = layers.Permute((1, 3, 2))(x)  # moves the last axis: channels regrouped
    x = layers.Reshape((4, 36))(x)
    x = layers.Dense(5, activation="relu")(x)
    return tf.keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x)))


def _gathered_and_rearranged(model, x, monkeypatch):
    cal = calibrated.calibrate(
        model, Recipe(mode="int8", calibrator="max", num_calibration_examples=N), calibration_data=x,
        batch_size=32,
    )
    new = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    with monkeypatch.context() as m:
        m.setattr(collect, "value_rearrangements", lambda *a: {})  # every tensor gathered itself
        old = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    assert list(new.tensors) == list(old.tensors)
    return cal, new, old


def test_copied_statistics_equal_the_gathered_ones(monkeypatch) -> None:
    x = np.random.default_rng(0).standard_normal((N, 6, 4)).astype(np.float32)
    cal, new, old = _gathered_and_rearranged(_model(), x, monkeypatch)
    copies = value_copies(cal.float_model, sorted(cal.tensors))
    assert copies, "the model has reshapes of gathered tensors"
    for index, name in cal.tensors.items():
        if index in copies or index not in value_rearrangements(cal.float_model, sorted(cal.tensors)):
            assert _fields(new.tensors[name]) == _fields(old.tensors[name]), name
    for dst, src in copies.items():
        assert new.tensors[cal.tensors[dst]].histogram is not new.tensors[cal.tensors[src]].histogram


def test_rearranged_statistics_equal_the_gathered_ones_up_to_the_order_of_the_sums(monkeypatch) -> None:
    x = np.random.default_rng(2).standard_normal((N, 6, 4, 3)).astype(np.float32)
    cal, new, old = _gathered_and_rearranged(_permute_model(), x, monkeypatch)
    rearranged = value_rearrangements(cal.float_model, sorted(cal.tensors))
    regrouped = [i for i, r in rearranged.items() if r.channel_index is not None]
    assert regrouped and len(rearranged) > len(regrouped), rearranged  # a transpose and a flatten
    for index in rearranged:
        a, b = new.tensors[cal.tensors[index]], old.tensors[cal.tensors[index]]
        assert (a.min, a.max, a.ema_min, a.ema_max, a.count, a.histogram.upper) == (
            b.min, b.max, b.ema_min, b.ema_max, b.count, b.histogram.upper)
        np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts)
        np.testing.assert_allclose([a.mean, a.m2, a.sum_abs_dev], [b.mean, b.m2, b.sum_abs_dev], rtol=1e-9)
        assert a.channel_sum.shape == b.channel_sum.shape
        np.testing.assert_allclose(a.channel_sum, b.channel_sum, rtol=1e-9, atol=1e-9)


def test_a_reshape_that_changes_the_last_dimension_is_not_a_copy() -> None:
    """Per-channel sums (bias correction's expected input) follow the last axis: a Flatten or a
    Reshape to another last dimension regroups the values, so its statistics must be its own."""
    x = np.random.default_rng(1).standard_normal((N, 6, 4)).astype(np.float32)
    cal = calibrated.calibrate(
        _model(), Recipe(mode="int8", calibrator="max", num_calibration_examples=N), calibration_data=x,
        batch_size=32,
    )
    stats = collect.collect_statistics(cal.float_model, x, cal.tensors, batch_size=32)
    widths = {s.channel_sum.size for s in stats.tensors.values() if s.channel_sum is not None}
    assert {8, 12, 5, 20} <= widths, widths  # Dense(8), Reshape(4, 12), Dense(5), Flatten -> 20
    for dst, src in value_copies(cal.float_model, sorted(cal.tensors)).items():
        a, b = stats.tensors[cal.tensors[dst]], stats.tensors[cal.tensors[src]]
        assert a.channel_sum.size == b.channel_sum.size


def _attention_model(tokens: int | None = 6):
    """[B, T, H·D] -> [B, T, H, D] -> [B, H, T, D] -> [B, H, D, T] (the last axis moves) -> back
    -> [B, T, H·D]; a multi-head attention; squeeze / expand_dims."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(5)
    inputs = tf.keras.Input((tokens, 8))
    x = layers.Dense(8)(inputs)
    heads = layers.Reshape((tokens or -1, 2, 4))(x)
    bhtd = layers.Permute((2, 1, 3))(heads)
    bhdt = layers.Permute((1, 3, 2))(bhtd)  # the last axis moves
    back = layers.Permute((3, 1, 2))(bhdt)  # [B, T, H, D]
    merged = layers.Reshape((tokens or -1, 8))(back)
    z = layers.MultiHeadAttention(num_heads=2, key_dim=4)(merged, merged)
    expanded = layers.Lambda(lambda t: tf.expand_dims(t, -1))(layers.Dense(4)(z))
    squeezed = layers.Lambda(lambda t: tf.squeeze(t, -1))(layers.Dense(1)(expanded))
    if tokens:  # reshapes after the transposes; dense layers over their last axes
        ends = [squeezed, layers.Dense(3)(bhdt), layers.Dense(3)(layers.Reshape((8, 6))(bhdt)),
                layers.Dense(3)(layers.Reshape((4, 12))(bhdt))]
        pooled = layers.Concatenate()([layers.Flatten()(e) for e in ends])
    else:
        pooled = layers.GlobalAveragePooling1D()(squeezed)
    outputs = layers.Dense(3)(pooled)
    return tf.keras.Model(inputs, outputs)


def test_attention_like_rearrangements_equal_their_own_statistics(monkeypatch) -> None:
    """Transposes that move the last axis, reshapes after transposes, squeeze / expand_dims:
    every field of every copy equals what gathering the tensor itself gives (float64 sums to
    1e-9), and they are copies indeed."""
    x = np.random.default_rng(5).standard_normal((N, 6, 8)).astype(np.float32)
    cal, new, old = _gathered_and_rearranged(_attention_model(), x, monkeypatch)
    rearranged = value_rearrangements(cal.float_model, sorted(cal.tensors))
    model = flatbuffer.read(cal.float_model)
    kinds = {int(op.outputs[0]): flatbuffer.op_name(model, op) for op in model.subgraphs[0].operators}
    moved = {kinds[i] for i, r in rearranged.items() if r.channel_index is not None}
    assert {"TRANSPOSE", "RESHAPE"} <= moved, rearranged  # the last axis moved; a reshape after it
    assert "EXPAND_DIMS" in {kinds[i] for i in rearranged} or "RESHAPE" in {kinds[i] for i in rearranged}
    for index in rearranged:
        a, b = new.tensors[cal.tensors[index]], old.tensors[cal.tensors[index]]
        assert (a.min, a.max, a.ema_min, a.ema_max, a.count, a.histogram.upper) == (
            b.min, b.max, b.ema_min, b.ema_max, b.count, b.histogram.upper), index
        np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts)
        np.testing.assert_allclose([a.mean, a.m2, a.sum_abs_dev], [b.mean, b.m2, b.sum_abs_dev], rtol=1e-9)
        assert a.channel_sum.shape == b.channel_sum.shape, index
        np.testing.assert_allclose(a.channel_sum, b.channel_sum, rtol=1e-9, atol=1e-9)


def test_a_dynamic_inner_dimension_is_gathered_itself(monkeypatch) -> None:
    """With T unknown before the model runs ([-1, -1, 8]), the transposes' channels cannot be
    derived: those tensors are gathered themselves, and the statistics stay the same."""
    x = np.random.default_rng(6).standard_normal((N, 6, 8)).astype(np.float32)
    cal, new, old = _gathered_and_rearranged(_attention_model(tokens=None), x, monkeypatch)
    rearranged = value_rearrangements(cal.float_model, sorted(cal.tensors))
    model = flatbuffer.read(cal.float_model)
    perms = {int(op.outputs[0]): flatbuffer.tensor_data(model, int(op.inputs[1]))
             for op in model.subgraphs[0].operators if flatbuffer.op_name(model, op) == "TRANSPOSE"}
    moving = [i for i, perm in perms.items() if i in cal.tensors and perm[-1] != perm.size - 1]
    assert moving and not set(moving) & set(rearranged), (moving, rearranged)
    for name in cal.tensors.values():
        a, b = new.tensors[name], old.tensors[name]
        assert (a.min, a.max, a.count) == (b.min, b.max, b.count)
        np.testing.assert_allclose(a.channel_sum, b.channel_sum, rtol=1e-9, atol=1e-9)
