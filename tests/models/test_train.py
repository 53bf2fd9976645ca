"""Training library and the experiments/train_zoo.py smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf

from tfquant.data.fashion_mnist import load_fashion_mnist
from tfquant.errors import TfquantError
from tfquant.models import build, read_manifest
from tfquant.models import train as train_lib

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "experiments" / "train_zoo.py"


def test_augment_is_an_integer_shift_of_the_flipped_or_plain_image() -> None:
    x, y = load_fashion_mnist("test")
    x, y = x[:16], y[:16]
    tf.random.set_seed(3)
    out, labels = train_lib._augment(tf.constant(x), tf.constant(y))
    out = out.numpy()
    np.testing.assert_array_equal(labels.numpy(), y)
    for image, augmented in zip(x, out):
        candidates = []
        for src in (image, image[:, ::-1]):
            padded = np.pad(src, ((2, 2), (2, 2), (0, 0)))
            candidates += [padded[dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(c, augmented) for c in candidates)


def test_train_rejects_bad_arguments() -> None:
    with pytest.raises(TfquantError, match="unknown zoo model 'lenet'"):
        train_lib.train("lenet")
    with pytest.raises(TfquantError, match="epochs must be a positive integer"):
        train_lib.train("cnn", epochs=0)
    with pytest.raises(TfquantError, match="train_examples=60000 exceeds"):
        train_lib.train("cnn", epochs=1, train_examples=60_000)


def test_evaluate_accuracy_rejects_mismatched_sizes() -> None:
    with pytest.raises(TfquantError, match="same non-zero number"):
        train_lib.evaluate_accuracy(
            build("cnn", weights=None), np.zeros((2, 28, 28, 1)), np.zeros(3)
        )


def test_train_zoo_smoke_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(_SCRIPT), "--smoke", "--models", "cnn", "--out_dir", str(tmp_path)],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path)
    assert set(manifest) == {"cnn"}
    entry = manifest["cnn"]
    assert entry["smoke"] is True
    assert (entry["epochs"], entry["train_examples"], entry["test_examples"]) == (1, 512, 512)
    assert 0.0 <= entry["test_accuracy"] <= 1.0
    weights = tmp_path / "cnn.weights.h5"
    assert entry["weights_bytes"] == weights.stat().st_size
    build("cnn", weights=weights)  # the written file loads into the architecture
    # A second run into the same directory keeps the other entries (update, not overwrite).
    manifest["mobilenet_v1"] = {"test_accuracy": 0.5}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    info = train_lib.TrainInfo(**{**_info_fields(entry), "test_accuracy": 0.25})
    train_lib.save_trained(build("cnn", weights=weights), info, out_dir=tmp_path)
    updated = read_manifest(tmp_path)
    assert updated["mobilenet_v1"] == {"test_accuracy": 0.5}
    assert updated["cnn"]["test_accuracy"] == 0.25


def test_parse_model_names() -> None:
    assert train_lib.parse_model_names(["vit", " cnn", "vit"]) == ("vit", "cnn")
    with pytest.raises(TfquantError, match=r"unknown names \['lenet'\]; choose from: cnn,"):
        train_lib.parse_model_names(["cnn", "lenet"])
    with pytest.raises(TfquantError, match="--models is empty"):
        train_lib.parse_model_names([""])


def _info_fields(entry: dict) -> dict:
    fields = {f for f in train_lib.TrainInfo.__dataclass_fields__}
    out = {k: v for k, v in entry.items() if k in fields}
    out["epoch_seconds"] = tuple(out["epoch_seconds"])
    out["val_accuracy_per_epoch"] = tuple(out["val_accuracy_per_epoch"])
    return out
