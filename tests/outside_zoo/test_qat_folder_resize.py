"""``qat`` on ``folder:`` data whose images differ in size: resized to the model's input, as
``convert``, ``evaluate``, ``sensitivity`` and ``autoquant`` do (found by the sweep: qat alone
stopped with "images differ in size ... pass image_size")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo.helpers import cli


def test_qat_resizes_folder_images_to_the_model_input(tmp_path: Path) -> None:
    import tf_keras as keras
    from PIL import Image

    inp = keras.Input((12, 12, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h)).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(11):  # sizes 15x14 .. 19x14, two classes
            folder = tmp_path / "imgs" / split / ("ab"[k % 2])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (15 + k % 5, 14, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    out = tmp_path / "m_qat.tflite"
    spec = f"folder:{tmp_path / 'imgs'}"
    run = cli("qat", "--model", str(tmp_path / "m.keras"), "--train_data", spec, "--calibration_data", spec,
              "--eval_data", spec, "--epochs", "1", "--out", str(out))
    assert run.rc == 0 and out.is_file(), run.explain()
