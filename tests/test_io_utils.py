"""Atomic writes leave either the complete file or nothing."""

from __future__ import annotations

import json

import pytest

from tfquant.io_utils import append_jsonl, atomic_path, read_jsonl, write_json_atomic


def test_failed_write_leaves_no_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_version(tmp_path) -> None:
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("garbage")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_jsonl_skips_a_torn_last_line(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with open(path, "a") as f:
        f.write('{"a": 3')  # a crash mid-write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    append_jsonl(path, {"a": 4})  # the next record after a crash is not glued to the torn one
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
