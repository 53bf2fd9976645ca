"""calibration_set: a seeded draw without replacement from the train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import data
from tfquant.errors import TfquantError

from tests.data.helpers import TRAIN_SIZE

N_TRAIN = 40


@pytest.fixture
def npz_spec(tmp_path: Path) -> str:
    """Train inputs are all > 0 and test inputs all < 0, so the split of a row is visible."""
    rng = np.random.default_rng(0)
    x_train = rng.uniform(0.1, 1.0, size=(N_TRAIN, 3, 3, 1)).astype(np.float32)
    x_test = -rng.uniform(0.1, 1.0, size=(10, 3, 3, 1)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(N_TRAIN) % 4,
        x_test=x_test,
        y_test=np.arange(10) % 4,
    )
    return f"npz:{path}"


def test_same_seed_same_subset_and_exact_indices(npz_spec: str) -> None:
    a = data.calibration_set(npz_spec, 8, seed=5)
    b = data.calibration_set(npz_spec, 8, seed=5)
    np.testing.assert_array_equal(a, b)
    x_train, _, _ = data.load_numpy(npz_spec, "train")
    idx = np.sort(np.random.default_rng(5).choice(N_TRAIN, size=8, replace=False))
    np.testing.assert_array_equal(a, x_train[idx])


def test_different_seeds_give_different_subsets(npz_spec: str) -> None:
    subsets = {data.calibration_set(npz_spec, 8, seed=s).tobytes() for s in range(5)}
    assert len(subsets) == 5


def test_draw_is_without_replacement_and_from_train(npz_spec: str) -> None:
    x = data.calibration_set(npz_spec, N_TRAIN, seed=1)
    assert (x > 0).all()  # every row comes from the train split
    x_train, _, _ = data.load_numpy(npz_spec, "train")
    np.testing.assert_array_equal(x, x_train)  # all N without replacement, in sorted order


def test_fashion_mnist_draw_is_a_fresh_writable_copy(idx_dir: Path) -> None:
    x_train, _, _ = data.load_numpy("fashion_mnist", "train", data_dir=idx_dir)
    x = data.calibration_set("fashion_mnist", 10, seed=0, data_dir=idx_dir)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32
    assert x.flags.writeable and not np.shares_memory(x, x_train)
    idx = np.sort(np.random.default_rng(0).choice(TRAIN_SIZE, size=10, replace=False))
    np.testing.assert_array_equal(x, x_train[idx])


def test_resize_applies_to_the_drawn_examples(idx_dir: Path) -> None:
    x = data.calibration_set("fashion_mnist", 4, seed=0, data_dir=idx_dir, image_size=(14, 14))
    assert x.shape == (4, 14, 14, 1) and 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_sizes_raise(npz_spec: str, n: object) -> None:
    with pytest.raises(TfquantError, match="must be a positive integer"):
        data.calibration_set(npz_spec, n)  # type: ignore[arg-type]


def test_more_than_the_split_raises(npz_spec: str) -> None:
    match = f"train split has {N_TRAIN} examples, cannot draw {N_TRAIN + 1}"
    with pytest.raises(TfquantError, match=match):
        data.calibration_set(npz_spec, N_TRAIN + 1)


def test_non_integer_seed_raises(npz_spec: str) -> None:
    with pytest.raises(TfquantError, match="seed must be an integer"):
        data.calibration_set(npz_spec, 2, seed=None)  # type: ignore[arg-type]


def test_nan_raises_with_count(tmp_path: Path) -> None:
    x = np.zeros((6, 2, 2, 1), np.float32)
    x[1, 0, 0, 0] = x[4, 1, 1, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(6, np.int64))
    with pytest.raises(TfquantError, match="holds 2 NaN/Inf input value.*fix or drop"):
        data.calibration_set(f"npz:{tmp_path / 'd.npz'}", 6)


def test_default_size_takes_every_example_of_a_small_source(npz_spec: str) -> None:
    """None = min(DEFAULT, N): all 40 train rows, in order (a sorted full permutation)."""
    assert data.DEFAULT_NUM_CALIBRATION_EXAMPLES > N_TRAIN
    x = data.calibration_set(npz_spec)
    x_train, _, _ = data.load_numpy(npz_spec, "train")
    np.testing.assert_array_equal(x, x_train)


def test_default_size_is_capped_at_the_default(tmp_path: Path) -> None:
    n = data.DEFAULT_NUM_CALIBRATION_EXAMPLES + 7
    path = tmp_path / "big.npz"
    np.savez(path, x=np.random.default_rng(0).random((n, 2, 2, 1), dtype=np.float32))
    x = data.calibration_set(f"npz:{path}")
    assert len(x) == data.DEFAULT_NUM_CALIBRATION_EXAMPLES
    assert len(np.unique(x.reshape(len(x), -1), axis=0)) == len(x)  # without replacement


def test_npz_without_labels_is_calibration_data(tmp_path: Path) -> None:
    path = tmp_path / "x_only.npz"
    xs = np.random.default_rng(3).random((12, 4, 4, 3), dtype=np.float32)
    np.savez(path, x=xs)
    np.testing.assert_array_equal(data.calibration_set(f"npz:{path}"), xs)
    with pytest.raises(TfquantError, match="no labels 'y'.*evaluation and training need"):
        data.load_numpy(f"npz:{path}", "test")
