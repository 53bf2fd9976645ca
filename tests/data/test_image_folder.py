"""folder:PATH datasets built from tiny PNG files written with tf.io.encode_png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfquant import data
from tfquant.errors import TfquantError


def _write_png(path: Path, value: int, shape: tuple[int, int, int] = (6, 4, 1)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.full(shape, value, np.uint8)))


def _two_class_tree(root: Path, shape: tuple[int, int, int] = (6, 4, 1)) -> None:
    """train: cat x2 (values 10, 20), dog x1 (30); test: dog x1 (40), cat x1 (50)."""
    _write_png(root / "train" / "cat" / "a.png", 10, shape)
    _write_png(root / "train" / "cat" / "b.png", 20, shape)
    _write_png(root / "train" / "dog" / "a.png", 30, shape)
    _write_png(root / "test" / "dog" / "x.png", 40, shape)
    _write_png(root / "test" / "cat" / "y.png", 50, shape)


def test_split_layout_grayscale_kept_one_channel(tmp_path: Path) -> None:
    _two_class_tree(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    x, y, info = data.load_numpy(f"folder:{tmp_path}", "train")
    assert x.shape == (3, 6, 4, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0, 0, 0], np.array([10, 20, 30]) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, [0, 0, 1])  # sorted class names: cat=0, dog=1
    assert info.num_classes == 2 and info.input_shape == (6, 4, 1)
    xt, yt, _ = data.load_numpy(f"folder:{tmp_path}", "test")
    np.testing.assert_array_equal(yt, [0, 1])
    np.testing.assert_allclose(xt[:, 0, 0, 0], np.array([50, 40]) / 255.0, rtol=1e-6)


def test_class_layout_serves_every_split_and_resizes(tmp_path: Path) -> None:
    _write_png(tmp_path / "b_class" / "1.png", 200, (5, 5, 3))
    _write_png(tmp_path / "a_class" / "1.png", 100, (9, 7, 3))
    for split in ("train", "test"):
        x, y, info = data.load_numpy(f"folder:{tmp_path}", split, image_size=(8, 8))
        assert x.shape == (2, 8, 8, 3) and info.num_classes == 2
        np.testing.assert_array_equal(y, [0, 1])
        np.testing.assert_allclose(x[:, 3, 3, 0], np.array([100, 200]) / 255.0, rtol=1e-5)


def test_mixed_channels_become_rgb(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "gray.png", 60, (4, 4, 1))
    _write_png(tmp_path / "b" / "rgba.png", 90, (4, 4, 4))
    x, _, info = data.load_numpy(f"folder:{tmp_path}", "test")
    assert x.shape == (2, 4, 4, 3) and info.input_shape == (4, 4, 3)
    np.testing.assert_allclose(x[0], np.full((4, 4, 3), 60 / 255.0), rtol=1e-6)


def test_sizes_differ_without_image_size_raises(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "1.png", 1, (4, 4, 1))
    _write_png(tmp_path / "a" / "2.png", 1, (5, 4, 1))
    with pytest.raises(TfquantError, match="images differ in size.*--image_size"):
        data.load_numpy(f"folder:{tmp_path}", "test")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="folder does not exist"):
        data.load_numpy(f"folder:{tmp_path / 'missing'}", "test")
    with pytest.raises(TfquantError, match="no class folders"):
        data.load_numpy(f"folder:{tmp_path}", "test")
    (tmp_path / "cls").mkdir()
    with pytest.raises(TfquantError, match="no images"):
        data.load_numpy(f"folder:{tmp_path}", "test")
    (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TfquantError, match="cannot decode image.*broken.png"):
        data.load_numpy(f"folder:{tmp_path}", "test")


def test_missing_split_folder_raises(tmp_path: Path) -> None:
    _write_png(tmp_path / "train" / "cat" / "a.png", 1)
    with pytest.raises(TfquantError, match="split folders \\['train'\\] but no 'test'"):
        data.load_numpy(f"folder:{tmp_path}", "test")


def test_class_indices_are_sorted_names_over_all_splits(tmp_path: Path) -> None:
    names = ["zebra", "apple", "mango", "kiwi", "banana"]  # created out of order
    for i, name in enumerate(names):
        _write_png(tmp_path / "train" / name / "1.png", 10 * i)
    for name in ("zebra", "kiwi"):  # the test split lacks three classes
        _write_png(tmp_path / "test" / name / "1.png", 0)
    _, y_train, info = data.load_numpy(f"folder:{tmp_path}", "train")
    _, y_test, info_test = data.load_numpy(f"folder:{tmp_path}", "test")
    assert info.num_classes == info_test.num_classes == 5
    np.testing.assert_array_equal(y_train, np.arange(5))  # apple, banana, kiwi, mango, zebra
    np.testing.assert_array_equal(y_test, [2, 4])  # kiwi, zebra keep their train indices


def test_unlabelled_flat_folder_serves_calibration_not_evaluation(tmp_path: Path) -> None:
    for i, value in enumerate((10, 20, 30)):
        _write_png(tmp_path / f"img{i}.png", value)
    x = data.calibration_set(f"folder:{tmp_path}")
    assert x.shape == (3, 6, 4, 1)
    np.testing.assert_allclose(sorted(x[:, 0, 0, 0]), np.array([10, 20, 30]) / 255.0, rtol=1e-6)
    with pytest.raises(TfquantError, match="3 images but no class folders.*need labels"):
        data.load_numpy(f"folder:{tmp_path}", "test")


def test_unlabelled_split_folder_serves_calibration(tmp_path: Path) -> None:
    _write_png(tmp_path / "train" / "a.png", 5)
    _write_png(tmp_path / "train" / "b.png", 6)
    _write_png(tmp_path / "test" / "dog" / "c.png", 7)
    assert data.calibration_set(f"folder:{tmp_path}").shape == (2, 6, 4, 1)
    x, y, _ = data.load_numpy(f"folder:{tmp_path}", "test")
    assert x.shape == (1, 6, 4, 1) and y.tolist() == [0]
