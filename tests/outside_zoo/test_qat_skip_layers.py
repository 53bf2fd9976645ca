"""``qat --skip_layers``: layers QAT cannot quantize (LayerNormalization, Conv1D) are left in
float from the command line, as the refusal says (before, the fix it named, ``skip_layers=``,
existed only in the Python API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error, read_json


@pytest.fixture(scope="module")
def ln_conv1d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A conv model with a LayerNormalization and a Conv1D (both refused by QAT), and an npz."""
    import tf_keras as keras

    root = tmp_path_factory.mktemp("skip_layers")
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Conv1D(4, 3, activation="relu", name="c1d")(L.Reshape((36, 4))(h))
    out = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(root / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x=rng.random((41, 8, 8, 3), dtype=np.float32), y=rng.integers(0, 3, 41))
    return root / "m.keras", f"npz:{root / 'd.npz'}"


def _qat(model: Path, spec: str, out: Path, *extra: str):
    return cli("qat", "--model", str(model), "--train_data", spec, "--calibration_data", spec,
               "--eval_data", spec, "--epochs", "1", "--out", str(out), *extra)


def test_refusal_names_the_command_line_fix(ln_conv1d: tuple[Path, str], tmp_path: Path) -> None:
    model, spec = ln_conv1d
    out = tmp_path / "q.tflite"
    err = one_line_error(_qat(model, spec, out))
    assert "'ln'" in err and "'c1d'" in err and "--skip_layers ln,c1d" in err, err
    assert not out.exists() and not out.with_suffix(".qat.json").exists()


def test_skip_layers_exports_the_rest_in_int8(ln_conv1d: tuple[Path, str], tmp_path: Path) -> None:
    from tfquant.qat.export import float_ops
    from tfquant.tflite import flatbuffer

    model, spec = ln_conv1d
    out = tmp_path / "q.tflite"
    run = _qat(model, spec, out, "--skip_layers", "ln,c1d")
    assert run.rc == 0 and out.is_file(), run.explain()
    record = read_json(out.with_suffix(".qat.json"))
    assert record["skip_layers"] == ["ln", "c1d"]
    assert 0.0 <= record["qat_accuracy"] <= 1.0  # the .tflite ran in LiteRT on the eval data
    tflite = out.read_bytes()
    assert float_ops(tflite), "the skipped layers should run in float"
    fb = flatbuffer.read(tflite)
    weight_types = {}
    for op in flatbuffer.weighted_ops(fb):
        name, dtype, _ = flatbuffer.tensor_info(fb, op.weight)
        weight_types.setdefault(dtype, []).append((op.op, name))
    # conv and head quantized (int8 weights), c1d float (its CONV_2D keeps float32 weights)
    assert len(weight_types.get("INT8", [])) == 2 and len(weight_types.get("FLOAT32", [])) == 1, weight_types
    assert any("c1d" in name for _, name in weight_types["FLOAT32"]), weight_types


def test_unknown_skip_layer_is_refused(ln_conv1d: tuple[Path, str], tmp_path: Path) -> None:
    model, spec = ln_conv1d
    out = tmp_path / "q.tflite"
    err = one_line_error(_qat(model, spec, out, "--skip_layers", "ln,nope"))
    assert "nope" in err and "not layers of model" in err, err
    assert not out.exists()


def test_skip_layers_with_bit_budget_is_refused(ln_conv1d: tuple[Path, str], tmp_path: Path) -> None:
    model, spec = ln_conv1d
    out = tmp_path / "q.tflite"
    err = one_line_error(_qat(model, spec, out, "--skip_layers", "ln,c1d", "--bit_budget", "6"))
    assert "--skip_layers and --bit_budget" in err, err
    assert not out.exists()
