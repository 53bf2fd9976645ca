"""IDX reader/writer (LeCun's MNIST file format)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tfquant.data.idx import read_idx, write_idx
from tfquant.errors import TfquantError


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_raw_and_gz(tmp_path: Path, name: str, dtype: type) -> None:
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(30, dtype=np.uint8).reshape(2, 3, 5) * 8
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == arr.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_header_is_big_endian_magic_and_dims(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx", np.zeros((3, 4), np.uint8))
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert raw[4:12] == (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    assert len(raw) == 12 + 12


def test_truncated_file_raises(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx", np.ones((4, 4), np.uint8))
    p = tmp_path / "a.idx"
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(TfquantError, match="truncated"):
        read_idx(p)


def test_truncated_header_raises(tmp_path: Path) -> None:
    p = tmp_path / "a.idx"
    p.write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))
    with pytest.raises(TfquantError, match="truncated"):
        read_idx(p)


def test_truncated_gzip_stream_raises(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx.gz", np.arange(1000, dtype=np.int32))
    p = tmp_path / "a.idx.gz"
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(TfquantError, match="cannot read"):
        read_idx(p)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"])
def test_bad_magic_raises(tmp_path: Path, magic: bytes) -> None:
    p = tmp_path / "a.idx"
    p.write_bytes(magic + (2).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(TfquantError, match="bad magic"):
        read_idx(p)


def test_gz_with_bad_magic_raises(tmp_path: Path) -> None:
    p = tmp_path / "a.idx.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(TfquantError, match="bad magic"):
        read_idx(p)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="does not exist"):
        read_idx(tmp_path / "nope.idx")


def test_unsupported_dtype_raises(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="cannot be stored in IDX"):
        write_idx(tmp_path / "a.idx", np.zeros(3, np.complex64))
