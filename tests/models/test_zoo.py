"""Zoo builders, committed trained weights and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant.data.fashion_mnist import load_fashion_mnist
from tfquant.errors import TfquantError
from tfquant.models import ZOO, build, read_manifest, trained_info, weights_path
from tfquant.models import zoo as zoo_lib
from tfquant.models.train import DEFAULT_CONFIGS, evaluate_accuracy

# Accuracy bars of the committed weights (float, all 10,000 test images).
_BARS = {"cnn": 0.90, "mobilenet_v1": 0.90, "mobilenet_v2": 0.90, "resnet": 0.90, "vit": 0.88}
_SUBSET = 1000


@pytest.fixture(scope="module")
def test_subset() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist("test")
    return x[:_SUBSET], y[:_SUBSET]


def test_zoo_names() -> None:
    assert ZOO == ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet", "vit")


@pytest.mark.parametrize("name", ZOO)
def test_random_init_outputs_logits(name: str) -> None:
    model = build(name, weights=None)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    out = model(x, training=False).numpy()
    assert out.shape == (3, 10)
    assert np.all(np.isfinite(out))
    head = model.layers[-1]
    assert isinstance(head, keras.layers.Dense)
    assert head.activation is keras.activations.linear  # logits, no softmax
    # Only standard layers (plus the registered position embedding) so TFLite/tfmot work.
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"Lambda", "TFOpLambda", "SlicingOpLambda"}, kinds
    assert model.count_params() < 300_000


def test_vit_json_round_trip_without_custom_objects() -> None:
    model = build("vit", weights=None)
    clone = keras.models.model_from_json(model.to_json())
    assert [type(layer).__name__ for layer in clone.layers] == [
        type(layer).__name__ for layer in model.layers
    ]


@pytest.mark.parametrize("name", ZOO)
def test_trained_weights_match_manifest(
    name: str, test_subset: tuple[np.ndarray, np.ndarray]
) -> None:
    info = trained_info(name)
    assert info["test_examples"] == 10_000
    assert info["test_accuracy"] >= _BARS[name]
    assert info["params"] == build(name, weights=None).count_params()
    path = weights_path(name)
    assert path.stat().st_size < 2_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["weights_sha256"]
    x, y = test_subset
    accuracy = evaluate_accuracy(build(name), x, y)
    assert abs(accuracy - info["test_accuracy"]) <= 0.03, (accuracy, info["test_accuracy"])


def test_manifest_entries_are_complete() -> None:
    manifest = read_manifest()
    assert set(manifest) == set(ZOO)
    for name, entry in manifest.items():
        for key in ("test_accuracy", "epochs", "params", "train_seconds", "seed", "tf_version"):
            assert key in entry, (name, key)
        assert entry["smoke"] is False
        assert entry["weights_file"] == f"{name}.weights.h5"


@pytest.mark.parametrize("name", ZOO)
def test_default_configs_reproduce_the_manifest(name: str) -> None:
    info, config = trained_info(name), DEFAULT_CONFIGS[name]
    for field in ("epochs", "batch_size", "learning_rate", "warmup_epochs", "weight_decay"):
        assert info[field] == getattr(config, field), field
    assert info["augment"] is config.augment


def test_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(TfquantError, match="unknown model 'lenet'.*cnn.*vit.*keras_resnet50"):
        build("lenet")
    with pytest.raises(TfquantError, match="unknown zoo model"):
        trained_info("lenet")
    with pytest.raises(TfquantError, match="unknown zoo model"):
        weights_path("keras_mobilenet")


def test_missing_trained_weights_says_how_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo_lib, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(TfquantError, match=r"train_zoo\.py --models resnet"):
        build("resnet")
    with pytest.raises(TfquantError, match=r"train_zoo\.py --models resnet"):
        trained_info("resnet")


def test_bad_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TfquantError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(TfquantError, match="JSON object"):
        read_manifest(tmp_path)


def test_weights_path_errors(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="not found"):
        build("cnn", weights=tmp_path / "absent.weights.h5")
    not_hdf5 = tmp_path / "junk.weights.h5"
    not_hdf5.write_bytes(b"not an hdf5 file")
    with pytest.raises(TfquantError, match="not HDF5"):
        build("cnn", weights=not_hdf5)
    other = tmp_path / "resnet.weights.h5"
    build("resnet", weights=None).save_weights(str(other))
    with pytest.raises(TfquantError, match="does not fit model 'cnn'"):
        build("cnn", weights=other)


def test_weights_file_round_trip(tmp_path: Path) -> None:
    model = build("mobilenet_v2", weights=None)
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    again = build("mobilenet_v2", weights=path)
    x = np.random.default_rng(1).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())


def test_trained_weights_need_default_shape() -> None:
    with pytest.raises(TfquantError, match="weights=None"):
        build("cnn", input_shape=(32, 32, 1))
    assert build("cnn", weights=None, num_classes=3).output_shape == (None, 3)


def test_vit_rejects_indivisible_input() -> None:
    with pytest.raises(TfquantError, match="divisible by the patch size"):
        build("vit", weights=None, input_shape=(30, 30, 1))
