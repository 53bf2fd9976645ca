"""Calibrated ranges land in real int8 / int16x8 models (issue 4, item 3).

The flatbuffer round trip: each calibrator's range, read back from the produced model's
scale and zero point, is the range the calibrator chose; ``max`` reproduces the converter's
own model; weight calibrators set the per-channel weight scales; one calibration serves many
exports.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.convert.conftest import N_CAL, recipe, run_tflite
from tfquant import convert
from tfquant.calibration import weight_amax
from tfquant.convert import calibrated
from tfquant.errors import TfquantError
from tfquant.evaluation import inspect_model
from tfquant.evaluation.inspect import representable_range


@pytest.fixture(scope="module")
def cal_int8(cnn, cal_data):
    return calibrated.calibrate(cnn, recipe(mode="int8", calibrator="max"), calibration_data=cal_data)


@pytest.fixture(scope="module")
def cal_int16(cnn, cal_data):
    return calibrated.calibrate(cnn, recipe(mode="int16x8", calibrator="max"), calibration_data=cal_data)


def _activations(tflite: bytes) -> dict:
    return {
        t.name: t for t in inspect_model(tflite).tensors
        if not t.constant and len(t.scales) == 1 and t.dtype in ("int8", "int16")
    }


def test_max_reproduces_the_converters_own_model(converted, cal_int8):
    default = inspect_model(converted(recipe(mode="int8")))
    ours = inspect_model(calibrated.export(cal_int8, recipe(mode="int8", calibrator="max")))
    assert [t.name for t in default.tensors] == [t.name for t in ours.tensors]
    for a, b in zip(default.tensors, ours.tensors):
        assert (a.dtype, a.zero_points) == (b.dtype, b.zero_points), a.name
        np.testing.assert_allclose(a.scales, b.scales, rtol=1e-5, err_msg=a.name)


@pytest.mark.parametrize("calibrator,options", [
    ("percentile", {"percentile": 99.0}), ("entropy", {}), ("mse", {}), ("aciq", {}),
    ("moving_average", {}),
])
def test_int8_affine_scales_read_back_are_the_calibrated_ranges(cal_int8, calibrator, options):
    r = recipe(mode="int8", calibrator=calibrator, **options)
    tflite = calibrated.export(cal_int8, r)
    ranges = convert.read_ranges(tflite)["activations"]
    acts = _activations(tflite)
    checked = 0
    for name, chosen in ranges.items():
        if "Reshape" in name:  # RESHAPE keeps its input's scale: the quantizer overrides it
            continue
        t = acts[name]
        lo, hi = min(chosen["min"], 0.0), max(chosen["max"], 0.0)
        np.testing.assert_allclose(t.scales[0], (hi - lo) / 255.0, rtol=1e-5, err_msg=name)
        model_lo, model_hi = representable_range(t)
        assert abs(model_lo - lo) <= t.scales[0] and abs(model_hi - hi) <= t.scales[0], name
        assert chosen["calibrator"].startswith(calibrator.split("_")[0])
        checked += 1
    assert checked == len(ranges) - 1 >= 4
    # a clipping calibrator really changed something w.r.t. max
    max_ranges = convert.read_ranges(calibrated.export(cal_int8, recipe(mode="int8", calibrator="max")))
    if calibrator == "percentile":
        assert any(ranges[n]["max"] < max_ranges["activations"][n]["max"] for n in ranges)


def test_int8_symmetric_has_zero_point_0_and_scale_amax_over_127(cal_int8):
    tflite = calibrated.export(cal_int8, recipe(mode="int8", calibrator="entropy", activation_scheme="symmetric"))
    acts = _activations(tflite)
    for name, chosen in convert.read_ranges(tflite)["activations"].items():
        if "Reshape" in name:  # keeps its input's scale
            continue
        amax = max(abs(chosen["min"]), abs(chosen["max"]))
        assert acts[name].zero_points == (0,), name
        np.testing.assert_allclose(acts[name].scales[0], amax / 127.0, rtol=1e-5, err_msg=name)


def test_int16x8_scales_read_back_are_the_calibrated_ranges(cal_int16):
    tflite = calibrated.export(cal_int16, recipe(mode="int16x8", calibrator="percentile", percentile=99.0))
    acts = _activations(tflite)
    ranges = convert.read_ranges(tflite)["activations"]
    assert ranges
    for name, chosen in ranges.items():
        if "Reshape" in name:  # keeps its input's scale
            continue
        amax = max(abs(chosen["min"]), abs(chosen["max"]))
        assert acts[name].dtype == "int16" and acts[name].zero_points == (0,), name
        np.testing.assert_allclose(acts[name].scales[0], amax / 32767.0, rtol=1e-5, err_msg=name)


def test_weight_calibrator_sets_per_channel_weight_scales(cnn, cal_int8):
    r = recipe(mode="int8", calibrator="max", weight_calibrator="percentile", weight_percentile=90.0)
    tflite = calibrated.export(cal_int8, r)
    conv = next(t for t in inspect_model(tflite).tensors if t.constant and t.dtype == "int8" and len(t.scales) == 16)
    # the float conv kernel after BN folding, as the converter sees it, is in the annotated model
    from tfquant.tflite import flatbuffer

    m = flatbuffer.read(cal_int8.float_model)
    w = next(
        np.frombuffer(bytes(m.buffers[t.buffer].data), np.float32).reshape(t.shape)
        for t in m.subgraphs[0].tensors
        if m.buffers[t.buffer].data is not None and list(t.shape) == [16, 3, 3, 1]
    )
    amax = weight_amax(w, axis=0, method="percentile", percentile=90.0)
    np.testing.assert_allclose(conv.scales, amax / 127.0, rtol=1e-5)
    assert np.all(amax < np.abs(w).reshape(16, -1).max(axis=1))
    summary = convert.read_ranges(tflite)["weights"]
    assert summary and all(0.0 < s["clipped_fraction"] < 1.0 for s in summary.values())


def test_one_statistics_pass_serves_every_export(cnn, cal_data, monkeypatch):
    calls = []
    real = calibrated.collect_statistics
    monkeypatch.setattr(calibrated, "collect_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    cal = calibrated.calibrate(cnn, recipe(mode="int8", calibrator="max"), calibration_data=cal_data)
    models = [calibrated.export(cal, recipe(mode="int8", calibrator=c)) for c in ("max", "entropy", "mse", "aciq")]
    assert len(calls) == 1 and len(set(models)) == 4


def test_exported_model_runs_and_tracks_float(cnn, cal_int8, cal_data):
    tflite = calibrated.export(cal_int8, recipe(mode="int8", calibrator="mse"))
    x = cal_data[:64]
    y_q, y_f = run_tflite(tflite, x), cnn.predict(x, verbose=0)
    assert np.mean(np.argmax(y_q, 1) == np.argmax(y_f, 1)) >= 0.9


def test_convert_routes_a_recipe_with_a_calibrator(converted):
    tflite = converted(recipe(mode="int8", calibrator="aciq", aciq_prior="gaussian"))
    assert convert.read_recipe(tflite).calibration_label == "aciq_gaussian"
    assert {v["calibrator"] for v in convert.read_ranges(tflite)["activations"].values()} == {"aciq gaussian"}


@pytest.mark.parametrize("bad,message", [
    (lambda x: x * np.nan, "NaN/Inf"),
    (lambda x: x[:0], "empty"),
    (lambda x: x[:, :4], "shape"),
])
def test_bad_calibration_data_is_a_clear_error(cnn, cal_data, bad, message):
    x = bad(cal_data.copy())
    r = recipe(mode="int8", calibrator="entropy").replace(num_calibration_examples=max(len(x), 1))
    with pytest.raises(TfquantError, match=message):
        calibrated.calibrate(cnn, r, calibration_data=x)


def test_export_rejects_a_recipe_that_does_not_match_the_calibration(cal_int8):
    with pytest.raises(TfquantError, match="calibrated with"):
        calibrated.export(cal_int8, recipe(mode="int8", calibrator="max").replace(calibration_seed=7))
    with pytest.raises(TfquantError, match="mode"):
        calibrated.export(cal_int8, recipe(mode="int16x8", calibrator="max"))
    with pytest.raises(TfquantError, match="calibrator is not set"):
        calibrated.export(cal_int8, recipe(mode="int8"))


def test_range_metadata_is_compact(converted, cal_int8):
    default = converted(recipe(mode="int8"))
    ours = calibrated.export(cal_int8, recipe(mode="int8", calibrator="max"))
    n = len(convert.read_ranges(ours)["activations"])
    # 12 bytes a tensor plus a small header and the flatbuffer entry, not the tensors' names
    assert len(ours) - len(default) <= 12 * n + 400


def test_corrupt_range_metadata_is_a_clear_error(cal_int8):
    from tfquant.convert.metadata import RANGES_METADATA_NAME, embed_bytes

    ours = calibrated.export(cal_int8, recipe(mode="int8", calibrator="max"))
    broken = embed_bytes(ours, RANGES_METADATA_NAME, b'{"calibrator":"max"}\0abc')
    with pytest.raises(TfquantError, match="tfquant_ranges metadata is corrupt"):
        convert.read_ranges(broken)
