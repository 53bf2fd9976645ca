"""npz:PATH datasets: round trip and every validation error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import data
from tfquant.errors import TfquantError


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6, 5, 2)).astype(np.float32)


def test_round_trip_single_pair_serves_every_split(tmp_path: Path) -> None:
    x, y = _x(7), np.array([0, 1, 2, 3, 0, 1, 4], np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for split in ("train", "test"):
        xs, ys, info = data.load_numpy(f"npz:{tmp_path / 'd.npz'}", split)
        np.testing.assert_array_equal(xs, x)  # preprocessed inputs are kept as they are
        assert ys.dtype == np.int64 and xs.dtype == np.float32
        np.testing.assert_array_equal(ys, y)
        assert info == data.DatasetInfo(f"npz:{tmp_path / 'd.npz'}", split, 7, (6, 5, 2), 5)


def test_split_arrays_take_precedence_and_classes_span_all_splits(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=_x(4, 1),
        y_train=np.array([0, 1, 2, 8]),
        x_test=_x(3, 2),
        y_test=np.array([1, 1, 0]),
    )
    xtr, ytr, itr = data.load_numpy(f"npz:{path}", "train")
    xte, _, ite = data.load_numpy(f"npz:{path}", "test")
    np.testing.assert_array_equal(xtr, _x(4, 1))
    np.testing.assert_array_equal(xte, _x(3, 2))
    assert itr.num_classes == ite.num_classes == 9


def test_float64_inputs_become_float32(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=_x(2).astype(np.float64), y=np.array([0, 1], np.uint8))
    x, y, _ = data.load_numpy(f"npz:{tmp_path / 'd.npz'}", "test")
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_load_pipeline_from_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=_x(5), y=np.arange(5))
    ds, info = data.load(f"npz:{tmp_path / 'd.npz'}", "test", batch_size=2)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [2, 2, 1] and info.num_examples == 5
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), _x(5))
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), np.arange(5))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"inputs": _x(2), "labels": np.arange(2)}, "needs 'x_test' and 'y_test' or 'x' and 'y'"),
        ({"x": _x(2)}, "has 'x' but no labels 'y'"),
        ({"x_test": _x(2), "x": _x(2), "y": np.arange(2)}, "has 'x_test' but no labels 'y_test'"),
        ({"x": np.zeros(2, np.float32), "y": np.arange(2)}, "expected one model input per row"),
        ({"x": (_x(2) * 255).astype(np.uint8), "y": np.arange(2)}, "expected preprocessed float32"),
        ({"x": (_x(2) * 255).astype(np.int32), "y": np.arange(2)}, "expected preprocessed float32"),  # int pixels
        ({"x": _x(3), "y": np.arange(2)}, "x has 3 examples but y has 2"),
        ({"x": _x(2), "y": np.array([0.0, 1.0])}, "expected integer class labels"),
        ({"x": _x(2), "y": np.eye(2, dtype=np.int64)}, "expected 1-D labels"),
        ({"x": _x(2), "y": np.array([0, -1])}, "negative labels"),
    ],
)
def test_validation_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(TfquantError, match=match):
        data.load_numpy(f"npz:{tmp_path / 'd.npz'}", "test")


def test_nan_and_inf_are_counted(tmp_path: Path) -> None:
    x = _x(4)
    x[0, 0, 0, 0], x[2, 1, 1, 1], x[3, 0, 0, 1] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4))
    with pytest.raises(TfquantError, match="holds 3 NaN/Inf input value"):
        data.load_numpy(f"npz:{tmp_path / 'd.npz'}", "test")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="file does not exist.*np.savez"):
        data.load_numpy(f"npz:{tmp_path / 'missing.npz'}", "test")
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(TfquantError, match="cannot read the file"):
        data.load_numpy(f"npz:{tmp_path / 'bad.npz'}", "test")


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([None, 1], dtype=object), y=np.arange(2))
    with pytest.raises(TfquantError, match="cannot read the file"):
        data.load_numpy(f"npz:{tmp_path / 'd.npz'}", "test")


def test_empty_split_raises(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((0, 4, 4, 1), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(TfquantError, match="has 0 examples"):
        data.load_numpy(f"npz:{tmp_path / 'd.npz'}", "test")
