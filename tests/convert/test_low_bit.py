"""Sub-8-bit per-channel weight grids, ACIQ bit allocation and bias correction in int8 models.

The exported flatbuffer is read back: every output channel's integers must span exactly its
recorded b-bit grid, bias scales must stay input scale x weight scale, and the model must run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, N_CAL, build_cnn, recipe, run_tflite
from tfquant import convert
from tfquant.cli import main
from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer

LOW_BIT = dict(mode="int8", calibrator="max")


def _channels(tflite: bytes) -> dict[str, tuple[np.ndarray, np.ndarray, int, Any]]:
    """weight name -> (integers as (K, C), scales, C, op) for every int8 weighted op."""
    model = flatbuffer.read(tflite)
    out = {}
    for op in flatbuffer.weighted_ops(model):
        name, kind, shape = flatbuffer.tensor_info(model, op.weight)
        if kind != "INT8":
            continue
        q = np.moveaxis(flatbuffer.tensor_data(model, op.weight), op.channel_axis, -1)
        out[name] = (q.reshape(-1, shape[op.channel_axis]), flatbuffer.tensor_quantization(model, op.weight)[0],
                     shape[op.channel_axis], op)
    return out


def _assert_levels_match_bits(tflite: bytes, channel_bits: dict[str, tuple[int, ...]]) -> None:
    channels = _channels(tflite)
    assert set(channels) == set(channel_bits)
    for name, (q, scales, count, _) in channels.items():
        bits = np.array(channel_bits[name])
        assert bits.size == count
        top = 2 ** (bits - 1) - 1
        peak = np.abs(q.astype(np.int64)).max(axis=0)
        if scales.size > 1:  # every channel reaches the top of its own grid (alpha = max|w|)
            np.testing.assert_array_equal(peak, top, err_msg=name)
        else:  # one scale: the tensor reaches the top, no channel goes beyond it
            assert peak.max() == top.max() and np.all(peak <= top), name
        distinct = np.array([len(np.unique(q[:, c])) for c in range(count)])
        assert np.all(distinct <= 2**bits - 1), name


@pytest.mark.parametrize(
    "fields",
    [
        dict(weight_bits=4),
        dict(weight_bits=4, weight_bit_allocation="aciq"),
        dict(weight_bits=3, weight_bit_allocation="aciq", bias_correction="mean_std"),
        dict(weight_bits=4, weight_granularity="per_tensor", bias_correction="mean"),
        dict(weight_bits=3, bias_correction="sequential"),
    ],
)
def test_channel_levels_match_the_recorded_bits(converted: Callable[[Recipe], bytes], fields: dict) -> None:
    tflite = converted(recipe(**LOW_BIT, **fields))
    embedded = convert.read_recipe(tflite)
    assert embedded.channel_bits is not None
    _assert_levels_match_bits(tflite, embedded.channel_bits)
    for bits in embedded.channel_bits.values():  # the mean is met exactly in every tensor
        assert sum(bits) == fields["weight_bits"] * len(bits)
    if fields.get("weight_bit_allocation") is None:
        assert {b for v in embedded.channel_bits.values() for b in v} == {fields["weight_bits"]}


def test_aciq_allocation_gives_channels_different_bits(converted: Callable[[Recipe], bytes]) -> None:
    embedded = convert.read_recipe(converted(recipe(**LOW_BIT, weight_bits=4, weight_bit_allocation="aciq")))
    assert any(len(set(v)) > 1 for v in embedded.channel_bits.values())


def test_bias_scale_stays_input_scale_times_weight_scale(converted: Callable[[Recipe], bytes]) -> None:
    tflite = converted(recipe(**LOW_BIT, weight_bits=3, weight_bit_allocation="aciq", bias_correction="mean_std"))
    model = flatbuffer.read(tflite)
    for name, (_, scales, _, op) in _channels(tflite).items():
        in_scale = flatbuffer.tensor_quantization(model, op.input)[0][0]
        bias_scales = flatbuffer.tensor_quantization(model, op.bias)[0]
        np.testing.assert_allclose(bias_scales, in_scale * scales, rtol=1e-6, err_msg=name)


def test_low_bit_models_run_and_bias_correction_brings_outputs_closer(
    cnn: Any, cal_data: np.ndarray, converted: Callable[[Recipe], bytes]
) -> None:
    x = cal_data[:100]
    reference = cnn.predict(x, verbose=0)
    int8 = np.abs(run_tflite(converted(recipe(**LOW_BIT)), x) - reference).mean()
    errors = {
        bc: np.abs(run_tflite(converted(recipe(**LOW_BIT, weight_bits=3, bias_correction=bc)), x) - reference)
        for bc in ("none", "mean", "sequential")
    }
    assert int8 < errors["none"].mean()  # 3-bit weights cost more than 8-bit ones
    mean_shift = {bc: np.abs(e.mean(axis=0)) for bc, e in errors.items()}
    assert np.all(np.isfinite(errors["mean"]))
    assert mean_shift["mean"].mean() < mean_shift["none"].mean()
    assert mean_shift["sequential"].mean() < mean_shift["none"].mean()


def test_a_recipe_with_channel_bits_reproduces_the_model(
    cnn: Any, cal_data: np.ndarray, converted: Callable[[Recipe], bytes]
) -> None:
    first = converted(recipe(**LOW_BIT, weight_bits=4, weight_bit_allocation="aciq"))
    embedded = convert.read_recipe(first)
    assert Recipe.from_json(embedded.to_json()) == embedded
    again = convert.convert(cnn, embedded, calibration_data=cal_data)
    assert flatbuffer.computation_fingerprint(again) == flatbuffer.computation_fingerprint(first)
    wrong = {k: v[:-1] for k, v in embedded.channel_bits.items()}
    with pytest.raises(TfquantError, match="channel_bits"):
        convert.convert(cnn, embedded.replace(channel_bits=wrong), calibration_data=cal_data)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(mode="int8", weight_bits=4), "add --calibrator max"),
        (dict(mode="dynamic", weight_bits=4), "mode int8"),
        (dict(mode="int8", calibrator="max", weight_bits=9), r"\[2, 8\]"),
        (dict(mode="int8", calibrator="max", weight_bits=4, weight_bit_allocation="greedy"), "allocation"),
        (dict(mode="int8", calibrator="max", bias_correction="median"), "bias correction"),
        (dict(mode="int8", calibrator="max", weight_granularity="per_tensor", weight_bit_allocation="aciq"),
         "per_channel"),
        (dict(mode="int8", calibrator="max", channel_bits={"w": [4, 1]}), r"channel_bits\['w'\]"),
    ],
)
def test_bad_low_bit_recipes_raise(fields: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        Recipe(**fields)


def test_cli_convert_with_allocation_and_bias_correction_then_inspect(tmp_path: Path, capsys) -> None:
    model_path = tmp_path / "small.keras"
    build_cnn(seed=1).save(model_path)
    rng = np.random.default_rng(3)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=rng.random((60, *INPUT_SHAPE), dtype=np.float32),
             y_train=rng.integers(0, 10, 60), x_test=rng.random((20, *INPUT_SHAPE), dtype=np.float32),
             y_test=rng.integers(0, 10, 20))
    out = tmp_path / "w4.tflite"
    rc = main([
        "convert", "--model", str(model_path), "--mode", "int8", "--weight_bits", "4",
        "--weight_bit_allocation", "aciq", "--bias_correction", "mean", "--calibrator", "aciq",
        "--calibration_data", f"npz:{npz}", "--num_calibration_examples", "60", "--out", str(out),
    ])
    assert rc == 0
    assert "4.00 bits per channel on average" in capsys.readouterr().out
    saved = Recipe.from_json(out.with_suffix(".recipe.json").read_text())
    assert saved.channel_bits == convert.read_recipe(out).channel_bits
    _assert_levels_match_bits(out.read_bytes(), saved.channel_bits)
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weight bits per channel: aciq allocation, bias correction mean" in text
    for name, bits in saved.channel_bits.items():
        assert f"{name}: mean 4.00" in text and " ".join(map(str, bits)) in text
    rc = main(["convert", "--model", str(model_path), "--mode", "int8", "--weight_bits", "4",
               "--calibration_data", f"npz:{npz}", "--out", str(tmp_path / "bad.tflite")])
    assert rc == 2
    assert "add --calibrator max" in capsys.readouterr().err
    assert not (tmp_path / "bad.tflite").exists()
