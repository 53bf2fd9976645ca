"""The Python API (tfquant.quantize / evaluate / inspect): same behaviour as the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant
from tfquant import _env  # noqa: F401
from tfquant.errors import TfquantError
from tfquant.recipes.inputs import InputContract


def _scale_sensitive_model():
    """A tiny classifier whose decision depends on the input's offset: logits = [x̄, -x̄]·w.

    Mean pixel > 0 -> class 0, < 0 -> class 1, so [0, 1] images are all class 0 while the
    same images under the contract ``tf`` ([-1, 1]) split by brightness.
    """
    import tf_keras as keras

    inp = keras.Input((4, 4, 1))
    m = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(2, use_bias=False, kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]))(m)
    return keras.Model(inp, out, name="offset_probe")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    bright = rng.uniform(0.6, 1.0, size=(20, 4, 4, 1))
    dark = rng.uniform(0.0, 0.4, size=(20, 4, 4, 1))
    x = np.concatenate([bright, dark]).astype(np.float32)
    y = np.array([0] * 20 + [1] * 20, np.int64)
    np.savez(root / "calib.npz", x=x)  # no labels
    np.savez(root / "test.npz", x=x, y=y)
    return {"root": root, "calib": root / "calib.npz", "test": root / "test.npz"}


def test_quantize_uses_every_example_and_says_so(data: dict[str, Path]) -> None:
    notes: list[str] = []
    out = data["root"] / "m.tflite"
    result = tfquant.quantize(_scale_sensitive_model(), mode="int8",
                              calibration_data=f"npz:{data['calib']}", out=out, note=notes.append)
    assert result.path == out and out.is_file() and out.with_suffix(".recipe.json").is_file()
    assert result.recipe.num_calibration_examples == 40
    assert result.recipe.calibration_data == f"npz:{data['calib']}"
    assert any("has 40 examples" in n and "using all of them" in n for n in notes)
    assert tfquant.convert.read_recipe(out) == result.recipe


def test_explicit_count_beyond_the_source_is_an_error(data: dict[str, Path]) -> None:
    out = data["root"] / "too_many.tflite"
    with pytest.raises(TfquantError, match="has 40 examples, cannot draw 5000.*at most 40"):
        tfquant.quantize(_scale_sensitive_model(), mode="int8", calibration_data=f"npz:{data['calib']}",
                         num_calibration_examples=5000, out=out)
    assert not out.exists() and not out.with_suffix(".recipe.json").exists()


def test_recorded_contract_is_applied_by_evaluate(data: dict[str, Path]) -> None:
    """Under [0, 1] every image is class 0 (50%); under the recorded [-1, 1] contract, 100%."""
    plain = data["root"] / "plain.tflite"
    tf_contract = data["root"] / "tf.tflite"
    tfquant.quantize(_scale_sensitive_model(), mode="fp32", out=plain)
    res = tfquant.quantize(_scale_sensitive_model(), mode="fp32", preprocess="tf", out=tf_contract)
    assert res.recipe.input == InputContract(mean=(0.5,), std=(0.5,), preset="tf")
    spec = f"npz:{data['test']}"
    assert tfquant.evaluate(plain, spec)["accuracy"] == pytest.approx(0.5)
    recorded = tfquant.evaluate(tf_contract, spec)
    assert recorded["accuracy"] == pytest.approx(1.0)
    assert recorded["input_source"] == "recorded in the model"
    # Explicit flags win over the recorded contract, and equal flags give the same result.
    assert tfquant.evaluate(tf_contract, spec, preprocess="none")["accuracy"] == pytest.approx(0.5)
    same = tfquant.evaluate(tf_contract, spec, input_mean=0.5, input_std=0.5)
    assert same["accuracy"] == recorded["accuracy"] and same["input_source"] == "flags"
    assert tfquant.inspect(tf_contract, as_dict=True)["input"]["preset"] == "tf"
    assert "input contract: preset tf" in tfquant.inspect(tf_contract)


def test_calibration_sees_the_contract(data: dict[str, Path]) -> None:
    """The quantized input's range is the contract's image of the calibration data.

    Preset tf maps x to 2x - 1, so the int8 input tensor (the QUANTIZE of the float input,
    the only 4-D int8 activation) must cover [2 min - 1, 2 max - 1], not [min, max].
    """
    res = tfquant.quantize(_scale_sensitive_model(), mode="int8", preprocess="tf",
                           calibration_data=f"npz:{data['calib']}", note=None)
    report = tfquant.evaluation.inspect_model(res.tflite)
    quantized_inputs = [t for t in report.tensors
                        if t.dtype == "int8" and not t.constant and len(t.shape) == 4]
    assert len(quantized_inputs) == 1
    t = quantized_inputs[0]
    x = np.load(data["calib"])["x"]
    q_lo = (-128 - t.zero_points[0]) * t.scales[0]
    q_hi = (127 - t.zero_points[0]) * t.scales[0]
    assert q_lo == pytest.approx(2 * x.min() - 1, abs=0.02)
    assert q_hi == pytest.approx(2 * x.max() - 1, abs=0.02)


def test_array_calibration_data_and_bad_arrays() -> None:
    x = np.random.default_rng(1).random((12, 4, 4, 1), dtype=np.float32)
    res = tfquant.quantize(_scale_sensitive_model(), mode="int8", calibration_data=x, note=None)
    assert res.recipe.num_calibration_examples == 12 and res.path is None
    with pytest.raises(TfquantError, match="shape"):
        tfquant.quantize(_scale_sensitive_model(), mode="int8", calibration_data=x[0], note=None)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(TfquantError, match="NaN"):
        tfquant.quantize(_scale_sensitive_model(), mode="int8", calibration_data=bad, note=None)


def test_recipe_and_options_are_exclusive() -> None:
    with pytest.raises(TfquantError, match="either recipe= or recipe options"):
        tfquant.quantize(_scale_sensitive_model(), recipe=tfquant.Recipe(mode="fp32"), calibrator="max")


def test_folder_images_are_resized_to_the_model_input(tmp_path: Path) -> None:
    """Images decoded from files (here 9x7 PNGs) are resized to the model's 4x4 input without
    image_size; npz arrays are used as given (a wrong shape is an error that names the fix)."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    for cls in ("0", "1"):
        for i in range(6):
            value = 230 if cls == "0" else 20
            img = np.clip(rng.normal(value, 5, (9, 7, 1)), 0, 255).astype(np.uint8)
            path = tmp_path / "imgs" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            tf.io.write_file(str(path), tf.io.encode_png(img))
    out = tmp_path / "m.tflite"
    res = tfquant.quantize(_scale_sensitive_model(), mode="int8", preprocess="tf",
                           calibration_data=f"folder:{tmp_path / 'imgs'}", out=out, note=None)
    assert res.recipe.num_calibration_examples == 12
    record = tfquant.evaluate(out, f"folder:{tmp_path / 'imgs'}")
    assert record["n_examples"] == 12 and record["accuracy"] == pytest.approx(1.0)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 9, 7, 1), np.float32))
    with pytest.raises(TfquantError, match="--image_size H,W"):
        tfquant.quantize(_scale_sensitive_model(), mode="int8",
                         calibration_data=f"npz:{tmp_path / 'wrong.npz'}", note=None)
