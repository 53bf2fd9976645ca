"""``sensitivity`` / ``autoquant`` on a model whose top-1 cannot be measured (an autoencoder):
one error line naming the model, before the statistics pass, nothing written. Found by the
sweep: the refusal came after the statistics pass and named "<6828 bytes of flatbuffer>"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error


@pytest.mark.parametrize("command", ["sensitivity", "autoquant"])
def test_non_classifier_is_refused_up_front(tmp_path: Path, command: str) -> None:
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(h)).save(tmp_path / "ae.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((37, 8, 8, 1), dtype=np.float32), y=rng.integers(0, 2, 37))
    spec = f"npz:{tmp_path / 'd.npz'}"
    out_flag = ["--output", str(tmp_path / "r.json")] if command == "sensitivity" else ["--out", str(tmp_path / "a.tflite")]
    err = one_line_error(cli(command, "--model", str(tmp_path / "ae.keras"), "--calibration_data", spec,
                             "--eval_data", spec, *out_flag))
    assert "ae.keras" in err and "(None, 8, 8, 1)" in err and "tfquant convert" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.keras", "d.npz"]
