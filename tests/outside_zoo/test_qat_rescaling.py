"""QAT of models that rescale / normalise their input inside (``Rescaling``, ``Normalization``,
as keras.applications MobileNetV3 and EfficientNet do). Found by the default-flags sweep:
``qat`` stopped with "'rescaling' (Rescaling: no quantize config)"."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, read_json


def test_qat_quantizes_rescaling_and_normalization_layers(tmp_path: Path) -> None:
    import tf_keras as keras

    rng = np.random.default_rng(0)
    x = rng.random((37, 8, 8, 3), dtype=np.float32)
    norm = keras.layers.Normalization()
    norm.adapt(x * 255.0)
    inp = keras.Input((8, 8, 3))
    h = norm(keras.layers.Rescaling(255.0)(inp))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(h))
    keras.Model(inp, keras.layers.Dense(3)(h)).save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 37))
    out, spec = tmp_path / "m_qat.tflite", f"npz:{tmp_path / 'd.npz'}"
    run = cli("qat", "--model", str(tmp_path / "m.keras"), "--train_data", spec, "--calibration_data", spec,
              "--eval_data", spec, "--epochs", "1", "--out", str(out))
    assert run.rc == 0 and out.is_file(), run.explain()
    record = read_json(out.with_suffix(".qat.json"))
    assert 0.0 <= record["qat_accuracy"] <= 1.0


def test_qat_refuses_rescaling_with_an_offset_before_training(tmp_path: Path) -> None:
    """Rescaling(scale, offset) exports as MUL + ADD with no range between them: one line
    naming the layer and the fix, nothing written (not a float-ops error after training)."""
    import tf_keras as keras

    from tests.outside_zoo.helpers import one_line_error

    inp = keras.Input((8, 8, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(h))
    keras.Model(inp, keras.layers.Dense(3)(h)).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((37, 8, 8, 3), dtype=np.float32), y=rng.integers(0, 3, 37))
    out, spec = tmp_path / "m_qat.tflite", f"npz:{tmp_path / 'd.npz'}"
    err = one_line_error(cli("qat", "--model", str(tmp_path / "m.keras"), "--train_data", spec,
                             "--calibration_data", spec, "--epochs", "1", "--out", str(out)))
    assert "Rescaling with an offset" in err and "--input_mean" in err, err
    assert not out.exists() and not out.with_suffix(".qat.json").exists()
