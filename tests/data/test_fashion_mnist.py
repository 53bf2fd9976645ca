"""Fashion-MNIST from IDX files: tiny generated folders, and the real Debian files if present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfquant import data
from tfquant.data import fashion_mnist
from tfquant.data.idx import write_idx
from tfquant.errors import TfquantError

from tests.data.helpers import TEST_SIZE, TRAIN_SIZE, make_idx_dir


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_preprocessing(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dir(tmp_path, gz=gz)
    for split, n in (("train", TRAIN_SIZE), ("test", TEST_SIZE)):
        x, y = fashion_mnist.load_fashion_mnist(split, data_dir=tmp_path)
        images, labels = arrays[split]
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)
        assert x.min() == 0.0 and x.max() == 1.0


def test_load_numpy_uses_data_dir_and_reports_info(idx_data: tuple[Path, dict]) -> None:
    directory, arrays = idx_data
    x, y, info = data.load_numpy("fashion_mnist", "test", data_dir=directory)
    assert info == data.DatasetInfo("fashion_mnist", "test", TEST_SIZE, (28, 28, 1), 10)
    np.testing.assert_array_equal(y, arrays["test"][1])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_env_var_selects_the_directory(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(idx_dir))
    _, _, info = data.load_numpy("fashion_mnist", "train")
    assert info.num_examples == TRAIN_SIZE


def test_cached_arrays_are_read_only_and_shared(idx_dir: Path) -> None:
    x1, y1, _ = data.load_numpy("fashion_mnist", "test", data_dir=idx_dir)
    x2, _, _ = data.load_numpy("fashion_mnist", "test", data_dir=idx_dir)
    assert not x1.flags.writeable and not y1.flags.writeable
    with pytest.raises(ValueError):
        x1[0, 0, 0, 0] = 5.0
    assert np.shares_memory(x1, x2)
    # The public uncached loader still returns fresh, writable arrays.
    x3, _ = fashion_mnist.load_fashion_mnist("test", data_dir=idx_dir)
    assert x3.flags.writeable and not np.shares_memory(x3, x1)


def test_limit_and_resize(idx_dir: Path) -> None:
    x, y, info = data.load_numpy(
        "fashion_mnist", "test", data_dir=idx_dir, limit=5, image_size=(32, 40)
    )
    assert x.shape == (5, 32, 40, 1) and info.input_shape == (32, 40, 1) and info.num_examples == 5
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(y, np.arange(5))


def test_missing_dir_raises_with_apt_get_hint(tmp_path: Path, empty_tfds_dir: Path) -> None:
    with pytest.raises(TfquantError, match="apt-get install dataset-fashion-mnist"):
        data.load_numpy("fashion_mnist", "test", data_dir=tmp_path / "missing")
    with pytest.raises(TfquantError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist("test", data_dir=tmp_path / "missing")


def test_missing_idx_files_fall_back_to_prepared_tfds(tmp_path: Path) -> None:
    with tfds.testing.mock_data(num_examples=6):
        x, y, info = data.load_numpy("fashion_mnist", "test", data_dir=tmp_path)
    assert x.shape == (6, 28, 28, 1) and info.num_examples == 6 and info.num_classes == 10
    assert y.dtype == np.int64 and x.dtype == np.float32


def test_unknown_split_raises(idx_dir: Path) -> None:
    with pytest.raises(TfquantError, match="splits 'train' and 'test'"):
        data.load_numpy("fashion_mnist", "validation", data_dir=idx_dir)


def test_mismatched_files_raise(idx_dir: Path) -> None:
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(TfquantError, match="do not match"):
        fashion_mnist.load_fashion_mnist("test", data_dir=idx_dir)


def test_real_test_split() -> None:
    x, y, info = data.load_numpy("fashion_mnist", "test", data_dir=fashion_mnist.DEFAULT_DIR)
    assert info.num_examples == 10000 and info.num_classes == 10 and x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))
    assert x.min() == 0.0 and x.max() == 1.0
