"""QAT on models that are not single-output classifiers: one ``error:`` line, nothing written.

Found by the default-flags sweep: ``qat`` on a model with two outputs (class scores + a box
head) stopped with "unexpected ValueError ... a bug in tfquant" from inside training.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli, one_line_error


def _two_outputs():
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    return keras.Model(inp, [keras.layers.Dense(3, activation="softmax")(h), keras.layers.Dense(2)(h)])


def _autoencoder():
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(h))


@pytest.mark.parametrize(("build", "match"), [(_two_outputs, "has 2 outputs"),
                                              (_autoencoder, r"outputs shape \(None, 8, 8, 1\)")])
def test_qat_refuses_a_non_classifier_in_one_line(tmp_path: Path, build, match: str) -> None:
    build().save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((37, 8, 8, 1), dtype=np.float32), y=rng.integers(0, 3, 37))
    out = tmp_path / "m_qat.tflite"
    err = one_line_error(cli("qat", "--model", str(tmp_path / "m.keras"), "--train_data", f"npz:{tmp_path / 'd.npz'}",
                             "--calibration_data", f"npz:{tmp_path / 'd.npz'}", "--epochs", "1", "--out", str(out)))
    assert re.search(match, err) and "tfquant convert" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.keras"]
