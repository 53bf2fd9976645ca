"""TFDS specs, exercised offline with tfds.testing.mock_data (tensorflow_datasets 4.9.10).

mock_data replaces the stored records by ``num_examples`` random examples drawn from the
builder's feature spec (uint8 images over 0..255, labels in 0..num_classes-1), so the
counts and value ranges below are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfquant import data
from tfquant.data import tfds_source
from tfquant.data.preprocess import Normalization
from tfquant.errors import TfquantError


def test_mnist_shapes_dtypes_ranges_and_count() -> None:
    with tfds.testing.mock_data(num_examples=9):
        x, y, info = data.load_numpy("tfds:mnist", "test")
    assert x.shape == (9, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (9,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # scaled by 1/255, not clipped
    assert np.all((0 <= y) & (y < 10))
    assert info == data.DatasetInfo("tfds:mnist", "test", 9, (28, 28, 1), 10)


def test_cifar10_resized_bilinear() -> None:
    with tfds.testing.mock_data(num_examples=5):
        x, _, info = data.load_numpy("tfds:cifar10", "train", image_size=(20, 24))
        ds, _ = data.load("tfds:cifar10", "train", batch_size=5)
        (raw, _), = ds
    assert x.shape == (5, 20, 24, 3) and info.input_shape == (20, 24, 3) and info.num_examples == 5
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = tf.image.resize(raw, (20, 24), method="bilinear").numpy()
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_load_batches_and_limit() -> None:
    with tfds.testing.mock_data(num_examples=10):
        ds, info = data.load("tfds:cifar10", "test", batch_size=4, limit=7)
        sizes = [int(xb.shape[0]) for xb, _ in ds]
        assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int64
    assert sizes == [4, 3] and info.num_examples == 7


def test_normalization_is_applied_per_channel() -> None:
    norm = Normalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    with tfds.testing.mock_data(num_examples=3):
        x, _, _ = data.load_numpy("tfds:cifar10", "test")
        xn, _, _ = data.load_numpy("tfds:cifar10", "test", normalization=norm)
    expected = (x - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(xn, expected, rtol=1e-5, atol=1e-6)


def test_imagenet_test_split_reads_validation_and_needs_image_size() -> None:
    with tfds.testing.mock_data(num_examples=2):
        x, _, info = data.load_numpy("tfds:imagenet2012", "test", image_size=(16, 16))
        assert info.split == "validation" and info.num_classes == 1000 and x.shape == (2, 16, 16, 3)
        with pytest.raises(TfquantError, match="images vary in size.*image_size"):
            data.load_numpy("tfds:imagenet2012", "test")


def test_config_and_version_forms() -> None:
    with tfds.testing.mock_data(num_examples=2):
        _, _, a = data.load_numpy("tfds:mnist:3.0.1", "test")
        _, _, b = data.load_numpy("tfds:cifar10_corrupted/brightness_1", "test")
        _, _, c = data.load_numpy("tfds:cifar10_corrupted:brightness_1", "test")
    assert a.num_examples == 2 and b.input_shape == c.input_shape == (32, 32, 3)


def test_calibration_from_tfds_matches_rows_of_the_train_split() -> None:
    with tfds.testing.mock_data(num_examples=12):
        full, _, _ = data.load_numpy("tfds:mnist", "train")
        calib = data.calibration_set("tfds:mnist", 4, seed=3)
    idx = np.sort(np.random.default_rng(3).choice(12, size=4, replace=False))
    np.testing.assert_allclose(calib, full[idx], atol=1e-6)


def test_not_prepared_raises_with_how_to_prepare(empty_tfds_dir: Path) -> None:
    with pytest.raises(tfds_source.TfdsNotPreparedError, match="not prepared.*tfds build cifar10"):
        data.load_numpy("tfds:cifar10", "test")
    with pytest.raises(TfquantError, match="not prepared"):
        data.load("tfds:mnist", "test", data_dir=str(empty_tfds_dir))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("tfds:no_such_dataset_xyz", "no dataset 'no_such_dataset_xyz'"),
        ("tfds:cifar10/no_such_config", "cannot open it.*no_such_config"),
        ("tfds:cifar10:9.9.9", "cannot open it.*9.9.9"),
        ("tfds:celeb_a", "no \\(image, label\\) supervised keys"),
        ("tfds:div2k", "not a ClassLabel"),
        ("tfds:imdb_reviews", "expected images"),
    ],
)
def test_unusable_datasets_raise(spec: str, match: str) -> None:
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(TfquantError, match=match):
            data.load_numpy(spec, "test")


def test_non_image_dtype_raises() -> None:
    from tests.data import tiny_tfds  # registers tfquant_tiny_int32

    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(TfquantError, match="images have dtype int32"):
            data.load_numpy(f"tfds:{tiny_tfds.TfquantTinyInt32.name}", "test")


def test_normalization_channel_mismatch_raises() -> None:
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(TfquantError, match="3 values but the images have 1 channels"):
            data.load("tfds:mnist", "test", normalization=Normalization((0.1, 0.2, 0.3), (1.0,)))


# --- A really prepared (unmocked) TFDS dataset, built offline by the tests. ---


def test_prepared_dataset_reads_real_records(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    x, y, info = data.load_numpy(f"tfds:{tiny_tfds.NAME}", "train", data_dir=tiny_tfds_dir)
    n = tiny_tfds.SIZES["train"]
    assert info == data.DatasetInfo(f"tfds:{tiny_tfds.NAME}", "train", n, (8, 8, 3), 3)
    # TFDS stores examples in its own (hashed-key) order: compare as a set, and pair labels.
    index = np.rint(x[:, 0, 0, 0] * 255.0 / 10).astype(int)
    np.testing.assert_array_equal(np.sort(index), np.arange(n))
    np.testing.assert_array_equal(y, index % 3)


def test_prepared_dataset_without_test_split_reads_validation(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    x, _, info = data.load_numpy(f"tfds:{tiny_tfds.NAME}", "test", data_dir=tiny_tfds_dir)
    assert info.split == "validation" and info.num_examples == tiny_tfds.SIZES["validation"]
    np.testing.assert_allclose(np.sort(x[:, 0, 0, 0]) * 255.0, 10 * np.arange(6) + 5, atol=1e-4)


def test_prepared_dataset_limit_takes_the_first_stored_examples(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    spec = f"tfds:{tiny_tfds.NAME}"
    full, _, _ = data.load_numpy(spec, "train", data_dir=tiny_tfds_dir)
    part, _, info = data.load_numpy(spec, "train", data_dir=tiny_tfds_dir, limit=7)
    assert info.num_examples == 7
    np.testing.assert_array_equal(part, full[:7])


def test_prepared_dataset_unknown_split_raises(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    with pytest.raises(TfquantError, match="has no split 'extra'.*'train', 'validation'"):
        data.load_numpy(f"tfds:{tiny_tfds.NAME}", "extra", data_dir=tiny_tfds_dir)


def test_prepared_dataset_calibration_gathers_the_drawn_train_examples(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    spec = f"tfds:{tiny_tfds.NAME}"
    full, _, _ = data.load_numpy(spec, "train", data_dir=tiny_tfds_dir, image_size=(4, 4))
    calib = data.calibration_set(spec, 5, seed=7, data_dir=tiny_tfds_dir, image_size=(4, 4))
    idx = np.sort(np.random.default_rng(7).choice(tiny_tfds.SIZES["train"], size=5, replace=False))
    assert calib.shape == (5, 4, 4, 3)
    np.testing.assert_array_equal(calib, full[idx])
    other = data.calibration_set(spec, 5, seed=8, data_dir=tiny_tfds_dir, image_size=(4, 4))
    assert not np.array_equal(calib, other)


def test_prepared_dataset_shuffle_is_seeded_permutation(tiny_tfds_dir: str) -> None:
    from tests.data import tiny_tfds

    def values(seed: int | None) -> np.ndarray:
        spec = f"tfds:{tiny_tfds.NAME}"
        ds, _ = data.load(spec, "train", batch_size=8, data_dir=tiny_tfds_dir, shuffle_seed=seed)
        return np.concatenate([xb[:, 0, 0, 0].numpy() for xb, _ in ds])

    stored, a, b, c = values(None), values(1), values(1), values(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, stored)
    np.testing.assert_array_equal(np.sort(a), np.sort(stored))
