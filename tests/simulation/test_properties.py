"""Properties of the simulation backend on small constructed models (no LiteRT)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from tfquant import simulation
from tfquant.calibration.histogram import AbsHistogram
from tfquant.calibration.percentile import BinEdge, percentile_amax
from tfquant.algorithms.bn_fold import fold_batch_norms, per_channel_weight_ranges
from tfquant.errors import TfquantError
from tfquant.numerics import affine_params, fake_quantize, symmetric_params
from tfquant.simulation import SimSpec, activations, weights

INPUT_SHAPE = (8, 8, 3)


def _bn_model(seed: int = 0) -> keras.Model:
    """Conv-BN-ReLU -> DepthwiseConv-BN-ReLU6 -> GAP -> Dense-BN -> Dense, with BN statistics
    chosen so the folded per-channel weight ranges span about four decades."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE, name="x")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.ReLU(name="conv_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(12, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    outputs = layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs, name="bn_model")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, c),  # gamma
                rng.normal(0.0, 0.1, c),  # beta
                rng.normal(0.0, 0.1, c),  # moving mean
                10.0 ** rng.uniform(-4, 4, c),  # moving variance: γ/σ spans ~4 decades
            ])
    return model


@pytest.fixture(scope="module")
def bn_model() -> keras.Model:
    return _bn_model()


@pytest.fixture(scope="module")
def x_cal() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 1.0, (64, *INPUT_SHAPE)).astype(np.float32)


def _kernels(model: keras.Model) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
    out = {}
    for layer in model.layers:
        found = weights.quantized_kernel_index(layer)
        if found is not None:
            index, axes = found
            out[layer.name] = (layer.get_weights()[index], axes)
    return out


def _by_channel(w: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The kernel as (elements, channels), channels in TFLite order."""
    chan = [a % w.ndim for a in axes]
    moved = np.moveaxis(w, chan, list(range(w.ndim - len(chan), w.ndim)))
    return moved.reshape(-1, int(np.prod([w.shape[a] for a in chan])))


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- weights ---------------------------------------------------------------------------


def test_per_channel_asymmetric_8bit_is_closer_to_float_than_per_tensor(bn_model, x_cal) -> None:
    ranges = per_channel_weight_ranges(bn_model)
    assert max(r.max() / r.min() for r in ranges.values()) > 100  # the premise holds

    reference = bn_model.predict(x_cal, verbose=0)
    errors = {}
    for granularity in ("per_channel", "per_tensor"):
        spec = SimSpec(weight_scheme="asymmetric", weight_granularity=granularity, activation_bits=None)
        sim = simulation.simulate(bn_model, spec)
        errors[granularity] = _relative_error(simulation.predict(sim, x_cal), reference)
        # Kernel-level: the small channels are what per-tensor loses.
        folded = _kernels(fold_batch_norms(bn_model))
        for name, (w, axes) in _kernels(sim).items():
            flat_q, flat_f = _by_channel(w, axes), _by_channel(folded[name][0], axes)
            per_channel_err = np.linalg.norm(flat_q - flat_f, axis=0) / np.linalg.norm(flat_f, axis=0)
            errors[f"{granularity}/{name}"] = float(per_channel_err.max())
    # Output: closer to float. Kernels: per-tensor rounds whole small channels to zero
    # (relative error 1), per-channel keeps every channel within 1%.
    assert errors["per_channel"] < errors["per_tensor"] / 1.5, errors
    for name in ("conv", "dw", "fc"):
        assert errors[f"per_channel/{name}"] < 0.01 and errors[f"per_tensor/{name}"] > 0.5, errors


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_4bit_per_channel_weights_take_at_most_16_values_per_channel(bn_model, scheme) -> None:
    sim = simulation.simulate(bn_model, SimSpec(weight_bits=4, weight_scheme=scheme, activation_bits=None))
    folded = _kernels(fold_batch_norms(bn_model))
    kernels = _kernels(sim)
    assert set(kernels) == {"conv", "dw", "fc", "logits"}
    most = 0
    for name, (w, axes) in kernels.items():
        flat = _by_channel(w, axes)
        counts = [len(np.unique(flat[:, c])) for c in range(flat.shape[1])]
        assert max(counts) <= (15 if scheme == "symmetric" else 16), (name, counts)
        most = max(most, max(counts))
        assert not np.allclose(w, folded[name][0])  # the kernel really was quantized
    assert most > 8  # really 4 bits, not fewer


def test_4bit_per_tensor_weights_take_at_most_16_values_per_kernel(bn_model) -> None:
    spec = SimSpec(weight_bits=4, weight_scheme="asymmetric", weight_granularity="per_tensor", activation_bits=None)
    for name, (w, _) in _kernels(simulation.simulate(bn_model, spec)).items():
        assert len(np.unique(w)) <= 16, name


def test_weight_only_model_equals_float_model_with_numerics_quantized_kernels(bn_model, x_cal) -> None:
    sim = simulation.simulate(bn_model, SimSpec(activation_bits=None))
    assert not any(isinstance(l, simulation.FakeQuant) for l in sim.layers)

    reference = fold_batch_norms(bn_model)  # independent: numerics maths written out here
    for layer in reference.layers:
        found = weights.quantized_kernel_index(layer)
        if found is None:
            continue
        w_all = layer.get_weights()
        w = w_all[0].astype(np.float64)
        axes = (2, 3) if isinstance(layer, layers.DepthwiseConv2D) else (w.ndim - 1,)
        amax = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a not in axes), keepdims=True)
        p = symmetric_params(amax, bits=8, narrow_range=True)
        w_all[0] = fake_quantize(w, p).astype(np.float32)
        layer.set_weights(w_all)
    expected = reference.predict(x_cal, verbose=0)
    np.testing.assert_allclose(simulation.predict(sim, x_cal), expected, rtol=1e-5, atol=1e-6)

    with_activations = simulation.simulate(bn_model, SimSpec(), calibration_data=x_cal)
    assert np.max(np.abs(simulation.predict(with_activations, x_cal) - expected)) > 1e-4


# --- activations -----------------------------------------------------------------------


def _assert_same_grid_values(actual: np.ndarray, desired: np.ndarray, step: np.ndarray) -> None:
    """Equal, except that float32 rounding may move a value sitting on a rounding boundary
    (x/Δ within ~1e-3 of k + 1/2 at 16 bits) to the neighbouring level on a few elements."""
    diff = np.abs(actual - desired)
    np.testing.assert_array_less(diff, np.broadcast_to(np.asarray(step) * 1.001 + 1e-6, diff.shape))
    assert np.mean(diff > 1e-5) <= 0.005


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_fake_quant_layer_equals_numerics_fake_quantize(bits: int, scheme: str) -> None:
    x = np.random.default_rng(bits).normal(0.5, 2.0, (400, 5)).astype(np.float32)
    if scheme == "affine":
        p = affine_params(np.array([-3.0, -1, 0, -0.5, -2]), np.array([5.0, 1, 2, 0.0, 7]), bits=bits)
        p0 = affine_params(-3.0, 5.0, bits=bits)
    else:
        p = symmetric_params(np.array([3.0, 1, 2, 0.5, 7]), bits=bits, narrow_range=False)
        p0 = symmetric_params(3.0, bits=bits, narrow_range=False)
    p = dataclasses.replace(p, axis=1)
    _assert_same_grid_values(simulation.FakeQuant.from_params(p)(x).numpy(), fake_quantize(x, p), p.scale)
    _assert_same_grid_values(simulation.FakeQuant.from_params(p0)(x).numpy(), fake_quantize(x, p0), p0.scale)
    if bits <= 8:  # far from float32's resolution: identical
        np.testing.assert_allclose(simulation.FakeQuant.from_params(p)(x).numpy(), fake_quantize(x, p), atol=1e-5)


def test_fake_quant_gradient_is_straight_through_inside_the_range() -> None:
    layer = simulation.FakeQuant.from_params(affine_params(-1.0, 1.0, bits=8))
    x = tf.constant([-2.0, -0.5, 0.3, 0.99, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])


def test_quantization_points_follow_tflite_fusion_rules(x_cal) -> None:
    inputs = keras.Input(INPUT_SHAPE, name="x")
    a = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    a = layers.ReLU(name="relu")(a)  # fused into conv: only relu's output quantized
    b = layers.Conv2D(4, 1, name="proj")(inputs)  # read by Add: quantized
    s = layers.Add(name="add")([a, b])
    s = layers.ReLU(name="add_relu")(s)  # fused into add
    p = layers.MaxPooling2D(name="maxpool")(s)  # keeps its input's grid
    q = layers.AveragePooling2D(name="avgpool")(p)  # re-rounded on its input's grid
    f = layers.Flatten(name="flat")(q)
    outputs = layers.Dense(3, name="logits")(f)
    sim = simulation.simulate(keras.Model(inputs, outputs), SimSpec(), calibration_data=x_cal)
    fq = {l.name: l for l in sim.layers if isinstance(l, simulation.FakeQuant)}
    assert set(fq) == {"x_fq", "relu_fq", "proj_fq", "add_relu_fq", "avgpool_fq", "logits_fq"}
    np.testing.assert_array_equal(fq["avgpool_fq"].maximum, fq["add_relu_fq"].maximum)
    np.testing.assert_array_equal(fq["avgpool_fq"].minimum, fq["add_relu_fq"].minimum)


def test_per_channel_activations_have_one_range_per_channel(bn_model, x_cal) -> None:
    sim = simulation.simulate(
        bn_model, SimSpec(activation_bits=4, activation_granularity="per_channel"), calibration_data=x_cal
    )
    fq = {l.name: l for l in sim.layers if isinstance(l, simulation.FakeQuant)}
    assert fq["dw_relu6_fq"].minimum.shape == (16,) and fq["x_fq"].minimum.shape == (3,)
    assert fq["dw_relu6_fq"].bits == 4
    assert len(np.unique(fq["dw_relu6_fq"].maximum)) > 1


def test_percentile_calibration_clips_an_outlier_that_max_keeps() -> None:
    inputs = keras.Input((4,), name="v")
    outputs = layers.Dense(4, kernel_initializer="identity", name="id")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(0.0, 1.0, (5000, 4)).astype(np.float32)
    x[0, 0] = 1000.0
    by_max = simulation.simulate(model, SimSpec(), calibration_data=x).get_layer("v_fq")
    by_pct = simulation.simulate(
        model, SimSpec(activation_calibration="percentile", percentile=99.9), calibration_data=x
    ).get_layer("v_fq")
    assert float(by_max.maximum) >= 1000.0
    assert 2.5 < float(by_pct.maximum) < 10.0


def test_percentile_range_is_the_upper_bin_edge_of_the_calibrators_histogram() -> None:
    """The simulation's percentile amax: the calibrators' |x| histogram, upper edge of the
    bin where the CDF reaches p (so at least p% of |x| lies within it)."""
    inputs = keras.Input((4,), name="v")
    model = keras.Model(inputs, layers.Dense(4, kernel_initializer="identity", name="id")(inputs))
    x = np.random.default_rng(0).normal(0.0, 1.0, (1001, 4)).astype(np.float32)  # 99.9% of 4004: no whole count
    x[0, 0] = 50.0
    spec = SimSpec(activation_calibration="percentile", percentile=99.9)
    points = activations.quantization_points(model)
    r = activations.calibrate(model, points, spec, x)[id(model.inputs[0])]
    hist = AbsHistogram.empty()
    for start in range(0, len(x), activations.CALIBRATION_BATCH_SIZE):
        hist.update(np.abs(x[start : start + activations.CALIBRATION_BATCH_SIZE]))
    amax = percentile_amax(hist.counts, hist.edges, 99.9, edge=BinEdge.UPPER)
    assert float(r.hi) == amax and float(r.lo) == -amax
    assert np.mean(np.abs(x) <= amax) > 0.999 > np.mean(np.abs(x) < amax - hist.width)


def test_sequential_models_are_simulated(x_cal) -> None:
    model = keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(3)])
    sim = simulation.simulate(model, SimSpec(), calibration_data=x_cal)
    assert simulation.predict(sim, x_cal).shape == (len(x_cal), 3)


# --- spec ------------------------------------------------------------------------------


def test_spec_round_trips_through_json() -> None:
    spec = SimSpec(
        weight_bits=4, weight_scheme="asymmetric", activation_bits=6,
        activation_granularity="per_channel", activation_calibration="percentile", fold_bn=False,
    )
    assert SimSpec.from_json(spec.to_json()) == spec
    assert spec.percentile == 99.99
    assert SimSpec() == simulation.TFLITE_INT8
    assert spec.label == "w4_asym_pc_a6_aff_pc_p99.99_nofold"


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"weight_bits": 1}, "weight_bits must be an integer in [2, 8], got 1"),
        ({"weight_bits": 9}, "got 9"),
        ({"weight_bits": True}, "got True"),
        ({"weight_bits": 8.0}, "got 8.0"),
        ({"activation_bits": 1}, "activation_bits must be an integer in [2, 16], got 1"),
        ({"activation_bits": 17}, "got 17"),
        ({"weight_scheme": "affine"}, "unknown weight_scheme 'affine'; choose one of: symmetric, asymmetric"),
        ({"weight_granularity": "per_row"}, "unknown weight_granularity 'per_row'"),
        ({"activation_granularity": "per_pixel"}, "unknown activation_granularity 'per_pixel'"),
        ({"activation_scheme": "log"}, "unknown activation_scheme 'log'"),
        ({"activation_calibration": "bogus"}, "unknown activation_calibration 'bogus'"),
        ({"activation_calibration": "entropy"}, "'entropy' is not simulated; choose one of: max, percentile"),
        ({"percentile": 99.9}, "percentile=99.9 is set but activation_calibration is max"),
        ({"activation_calibration": "percentile", "percentile": 0}, "(0, 100], got 0"),
        ({"activation_calibration": "percentile", "percentile": 101}, "got 101"),
        ({"fold_bn": "yes"}, "fold_bn must be True or False, got 'yes'"),
    ],
)
def test_bad_spec_raises_one_line_naming_value_and_allowed(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(TfquantError) as e:
        SimSpec(**kwargs)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_spec_dicts_and_json_raise() -> None:
    with pytest.raises(TfquantError, match=r"unknown SimSpec key\(s\) \['wbits'\]"):
        SimSpec.from_dict({"wbits": 4})
    with pytest.raises(TfquantError, match="spec_version 2 is not supported"):
        SimSpec.from_dict({"spec_version": 2})
    with pytest.raises(TfquantError, match="not valid JSON"):
        SimSpec.from_json("{")
    with pytest.raises(TfquantError, match="must be an object"):
        SimSpec.from_json(json.dumps([1]))


# --- bad inputs ------------------------------------------------------------------------


class _Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = layers.Dense(2)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.dense(x)


def test_bad_models_and_specs_raise(bn_model, x_cal) -> None:
    with pytest.raises(TfquantError, match="spec must be a tfquant.simulation.SimSpec, got str"):
        simulation.simulate(bn_model, "int8", calibration_data=x_cal)
    with pytest.raises(TfquantError, match="must be a tf_keras"):
        simulation.simulate(object(), SimSpec(activation_bits=None))
    sub = _Subclassed()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(TfquantError, match="is subclassed"):
        simulation.simulate(sub, SimSpec(activation_bits=None))
    inner = keras.Sequential([keras.Input((3,)), layers.Dense(2)], name="inner")
    outer_in = keras.Input((3,))
    with pytest.raises(TfquantError, match="nests model 'inner'"):
        simulation.simulate(keras.Model(outer_in, inner(outer_in)), SimSpec(activation_bits=None))
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], layers.Add()([a, b]))
    with pytest.raises(TfquantError, match="has 2 inputs"):
        simulation.simulate(two, SimSpec(), calibration_data=np.zeros((1, 3)))


@pytest.mark.parametrize(
    "data, needle",
    [
        (None, "calibration_data is None; activation_bits is set"),
        (np.zeros((4, 8, 8)), "calibration_data has shape (4, 8, 8), the model expects (N, 8, 8, 3)"),
        (np.zeros((0, *INPUT_SHAPE)), "calibration_data is empty"),
        (np.full((2, *INPUT_SHAPE), np.nan), "calibration_data holds 384 NaN/Inf values"),
        ("images", "calibration_data must be a float array, got str"),
    ],
)
def test_bad_calibration_data_raises(bn_model, data: Any, needle: str) -> None:
    with pytest.raises(TfquantError) as e:
        simulation.simulate(bn_model, SimSpec(), calibration_data=data)
    assert needle in str(e.value)


def test_evaluate_reports_sim_and_rejects_bad_labels(bn_model, x_cal) -> None:
    y = np.arange(len(x_cal)) % 4
    result = simulation.evaluate(bn_model, SimSpec(weight_bits=4, activation_bits=None), x_cal, y)
    assert (result.executed_in, result.n_examples, result.float_weight_layers) == ("sim", len(x_cal), ())
    assert result.accuracy == result.n_correct / len(x_cal)
    with pytest.raises(TfquantError, match="x has 64 examples but y has 3 labels"):
        simulation.evaluate(bn_model, SimSpec(activation_bits=None), x_cal, y[:3])
    with pytest.raises(TfquantError, match=r"labels must be integers in \[0, 3\]"):
        simulation.evaluate(bn_model, SimSpec(activation_bits=None), x_cal, y + 1)
    with pytest.raises(TfquantError, match="batch_size must be a positive integer, got 0"):
        simulation.evaluate(bn_model, SimSpec(activation_bits=None), x_cal, y, batch_size=0)
    with pytest.raises(TfquantError, match="x is None"):
        simulation.evaluate(bn_model, SimSpec(activation_bits=None), None, y)
    inputs = keras.Input(INPUT_SHAPE)
    regressor = keras.Model(inputs, layers.Dense(1)(layers.Flatten()(inputs)))
    with pytest.raises(TfquantError, match="not \\(num_classes,\\)"):
        simulation.evaluate(regressor, SimSpec(activation_bits=None), x_cal, y)


def test_evaluate_fields_are_evaluate_as_record_fields(bn_model, x_cal) -> None:
    y = np.arange(len(x_cal)) % 4
    weight_only = SimSpec(weight_bits=4, activation_bits=None)
    fields = simulation.evaluate_fields(bn_model, weight_only, x_cal, y, calibration_data=x_cal)
    result = simulation.evaluate(bn_model, weight_only, x_cal, y)
    assert fields == {"spec": weight_only.to_dict(), "num_calibration_examples": 0, "accuracy": result.accuracy,
                      "n_examples": len(x_cal), "n_correct": result.n_correct, "float_weight_layers": []}
    w8a8 = simulation.evaluate_fields(bn_model, SimSpec(), x_cal, y, calibration_data=x_cal[:16])
    assert w8a8["num_calibration_examples"] == 16
    assert w8a8["accuracy"] == simulation.evaluate(bn_model, SimSpec(), x_cal, y, calibration_data=x_cal[:16]).accuracy
