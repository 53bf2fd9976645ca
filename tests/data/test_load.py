"""The tf.data pipeline of load(), shared argument checks and preprocessing helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfquant import data
from tfquant.data.preprocess import Normalization, check_finite, check_image_size, to_unit_float
from tfquant.errors import TfquantError

from tests.data.helpers import TEST_SIZE


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_dtypes_and_order_match_load_numpy(idx_dir: Path) -> None:
    ds, info = data.load("fashion_mnist", "test", batch_size=5, data_dir=idx_dir)
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int64
    assert ds.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    assert [int(x.shape[0]) for x, _ in ds] == [5, 5, 2]
    x, y = _collect(ds)
    xn, yn, info_n = data.load_numpy("fashion_mnist", "test", data_dir=idx_dir)
    np.testing.assert_array_equal(x, xn)
    np.testing.assert_array_equal(y, yn)
    assert info == info_n and info.num_examples == TEST_SIZE


def test_shuffle_is_a_seeded_permutation_of_the_limited_split(idx_dir: Path) -> None:
    def run(seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        ds, _ = data.load(
            "fashion_mnist", "test", batch_size=4, data_dir=idx_dir, limit=10, shuffle_seed=seed
        )
        return _collect(ds)

    (xa, ya), (xb, yb), (xc, _), (x0, y0) = run(3), run(3), run(4), run(None)
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xc) and not np.array_equal(xa, x0)
    np.testing.assert_array_equal(np.sort(ya), np.sort(y0))  # same 10 examples, new order
    np.testing.assert_array_equal(y0, np.arange(10))


def test_normalization_in_memory(idx_dir: Path) -> None:
    x, _, _ = data.load_numpy("fashion_mnist", "test", data_dir=idx_dir)
    norm = Normalization((0.5,), (0.25,))
    xn, _, _ = data.load_numpy("fashion_mnist", "test", data_dir=idx_dir, normalization=norm)
    np.testing.assert_allclose(xn, (x - 0.5) / 0.25, rtol=1e-6)
    assert xn.flags.writeable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"image_size": (0, 28)}, "image_size must be \\(height, width\\)"),
        ({"image_size": (28,)}, "image_size must be \\(height, width\\)"),
        ({"image_size": "28,28"}, "image_size must be \\(height, width\\)"),
        ({"shuffle_seed": "1"}, "shuffle_seed must be an integer"),
    ],
)
def test_bad_arguments_raise(idx_dir: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        data.load("fashion_mnist", "test", data_dir=idx_dir, **kwargs)  # type: ignore[arg-type]


def test_bad_split_argument_raises(idx_dir: Path) -> None:
    with pytest.raises(TfquantError, match="split must be a non-empty string"):
        data.load_numpy("fashion_mnist", "", data_dir=idx_dir)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ((0.5,), (0.0,), "std must be positive"),
        ((), (1.0,), "1 or C finite numbers"),
        ((float("nan"),), (1.0,), "1 or C finite numbers"),
        (("a",), (1.0,), "must be numbers"),
    ],
)
def test_bad_normalization_raises(mean: tuple, std: tuple, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        Normalization(mean, std)


def test_normalization_channel_mismatch_in_memory(idx_dir: Path) -> None:
    with pytest.raises(TfquantError, match="mean has 3 values but the images have 1 channels"):
        norm = Normalization((0.1, 0.2, 0.3), 1.0)  # type: ignore[arg-type]
        data.load_numpy("fashion_mnist", "test", data_dir=idx_dir, normalization=norm)


def test_scalar_normalization_values_are_accepted() -> None:
    assert Normalization(0.5, 2) == Normalization((0.5,), (2.0,))  # type: ignore[arg-type]


def test_to_unit_float_scales_by_dtype() -> None:
    np.testing.assert_allclose(to_unit_float(tf.constant([0, 255], tf.uint8)).numpy(), [0.0, 1.0])
    u16 = tf.constant([0, 65535], tf.uint16)
    np.testing.assert_allclose(to_unit_float(u16).numpy(), [0.0, 1.0])
    np.testing.assert_allclose(to_unit_float(tf.constant([0.25], tf.float16)).numpy(), [0.25])
    with pytest.raises(TfquantError, match="cannot scale images of dtype int32"):
        to_unit_float(tf.constant([1], tf.int32))


def test_check_image_size_and_finite() -> None:
    assert check_image_size([224, 192]) == (224, 192)
    assert check_image_size(None) is None
    with pytest.raises(TfquantError, match="image_size"):
        check_image_size((2.5, 3))
    check_finite(np.zeros(3, np.float32), "x")
    with pytest.raises(TfquantError, match="x holds 1 NaN/Inf input value\\(s\\) out of 3"):
        check_finite(np.array([0.0, np.inf, 1.0]), "x")
