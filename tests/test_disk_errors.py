"""Output folder not writable or disk full: one line, nothing half-written (issue 10, item 9).

Simulated failures (always run, also as root, where chmod stops nothing): the write path
raises ENOSPC / EACCES, part-way through a write. Real failures (root with ``mount``, as on
CI): a read-only tmpfs and a tiny full tmpfs; without root or mount these say why they skip,
and the simulated ones still cover the same code.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant import io_utils
from tfquant.io_utils import append_jsonl
from tfquant.study import ModelCell, Record, RecordSet, Study, run_study
from tfquant.study.script import report_run

ROOT = Path(__file__).resolve().parents[1]
KILL_STUDY = ROOT / "tests" / "study" / "kill_study.py"


def _enospc_after(limit: int) -> Callable[[int, Any], int]:
    """An ``os.write`` that writes up to ``limit`` bytes in all, part of a buffer if need be,
    then fails with ENOSPC (what a filling disk does)."""
    real_write = os.write
    left = [limit]

    def write(fd: int, data: Any) -> int:
        data = bytes(data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, data[: left[0]])
        left[0] -= n
        return n

    return write


def test_a_failed_append_leaves_the_log_byte_equal(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"a": 1})
    before = path.read_bytes()
    monkeypatch.setattr(io_utils.os, "write", _enospc_after(7))  # 7 bytes of the line get out
    with pytest.raises(OSError) as e:
        append_jsonl(path, {"a": 2, "pad": "x" * 50})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before  # rolled back: no half line


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rec(Record):
    model: str
    cell: str
    value: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


class _Toy(Study[ModelCell, _Rec]):
    name = "toy"
    record_type = _Rec

    def __init__(self) -> None:
        self.measured: list[str] = []

    def fingerprint(self) -> Mapping[str, Any]:
        return {"config": {"n": 6}}

    def cells(self) -> Sequence[ModelCell]:
        return [ModelCell("m", f"c{i}") for i in range(6)]

    def measure(self, todo: Sequence[ModelCell], log: Callable[[str], None]) -> Iterator[_Rec]:
        for c in todo:
            self.measured.append(c.cell)
            yield _Rec(model=c.model, cell=c.cell, value=float(len(self.measured)))

    def markdown(self, records: RecordSet) -> str:
        return "".join(f"{r.cell}\n" for r in records)


def test_disk_full_mid_run_gives_one_line_complete_records_and_a_clean_resume(tmp_path, monkeypatch, capsys):
    from tfquant.study import records as records_module

    real_append = records_module.append_jsonl
    calls = [0]

    def append(path: Any, record: dict[str, Any]) -> None:
        calls[0] += 1
        if calls[0] == 3:  # the third record meets a full disk half-way
            monkeypatch.setattr(io_utils.os, "write", _enospc_after(10))
            try:
                return real_append(path, record)
            finally:
                monkeypatch.setattr(io_utils.os, "write", os.__dict__["write"])
        return real_append(path, record)

    monkeypatch.setattr(records_module, "append_jsonl", append)
    rc = report_run("toy", "results.md", lambda: (run_study(_Toy(), tmp_path, log=lambda s: None), tmp_path)[1])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: cannot read or write")
    assert "No space left on device" in err[0] and "free some space" in err[0]
    lines = (tmp_path / "results.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith(b"\n") and json.loads(line) for line in lines)
    assert not (tmp_path / "results.md").exists()
    monkeypatch.undo()
    resumed = _Toy()
    records = run_study(resumed, tmp_path, log=lambda s: None)
    assert resumed.measured == ["c2", "c3", "c4", "c5"]  # the two written cells were kept
    assert sorted(r.cell for r in records) == [f"c{i}" for i in range(6)]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny float .tflite and Keras model, and a labelled .npz, made here."""
    import tensorflow as tf

    from tfquant import api

    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    folder = tmp_path_factory.mktemp("disk")
    np.savez(folder / "d.npz", x=np.random.default_rng(0).uniform(0, 1, (8, 4, 4, 1)).astype(np.float32),
             y=np.arange(8) % 3)
    api.quantize(model, mode="fp32", out=folder / "m.tflite", note=None)
    model.save(folder / "m.keras")
    return {"tflite": folder / "m.tflite", "keras": folder / "m.keras", "npz": folder / "d.npz"}


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    from tfquant.cli import main

    rc = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines)
    return rc, [line for line in lines if line.startswith("error")]  # progress lines aside


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("err", [errno.EACCES, errno.ENOSPC])
def test_cli_outputs_into_an_unwritable_or_full_folder_simulated(tiny, tmp_path, monkeypatch, capsys, err):
    out = tmp_path / "out"
    out.mkdir()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err), str(out))

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", refuse)  # where every atomic write starts
    rc, lines = _cli(["evaluate", "--tflite", str(tiny["tflite"]), "--dataset", f"npz:{tiny['npz']}",
                      "--latency_runs", "0", "--output", str(out / "r.json")], capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and os.strerror(err) in lines[0]
    rc, lines = _cli(["convert", "--model", str(tiny["keras"]), "--mode", "fp32", "--out", str(out / "m.tflite")],
                     capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert _no_leftovers(out) == []


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[..., Path]]:
    """Mounts small tmpfs folders (root + mount only; otherwise skips, saying why)."""
    mounted: list[Path] = []
    if os.geteuid() != 0:
        pytest.skip("a real tmpfs needs root; the simulated ENOSPC / EACCES tests above cover the same code")

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the simulated tests cover the same code")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _kill_study(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KILL_STUDY), str(out), "--pause", "0", *extra], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_real_read_only_folder(tiny, mount_tmpfs, capsys):
    ro = mount_tmpfs("ro", "ro,size=64k")
    rc, lines = _cli(["evaluate", "--tflite", str(tiny["tflite"]), "--dataset", f"npz:{tiny['npz']}",
                      "--latency_runs", "0", "--output", str(ro / "r.json")], capsys)
    assert rc == 2 and len(lines) == 1 and "Read-only file system" in lines[0]
    rc, lines = _cli(["convert", "--model", str(tiny["keras"]), "--mode", "fp32", "--out", str(ro / "m.tflite")],
                     capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    proc = _kill_study(ro / "run")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "Read-only file system" in err[0], proc.stderr
    assert _no_leftovers(ro) == []


def test_real_full_disk_mid_run_then_resume_after_freeing_space(mount_tmpfs):
    full = mount_tmpfs("full", "size=16k")  # 4 pages: lock, config, measured.log, one page of records
    proc = _kill_study(full / "run", "--cells", "80")  # 80 records need 2 pages
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "No space left on device" in err[0], proc.stderr
    data = (full / "run" / "results.jsonl").read_bytes()
    assert data.endswith(b"\n")
    cells = [json.loads(line)["cell"] for line in data.splitlines()]
    assert len(cells) == len(set(cells)) > 0
    assert not [p for p in (full / "run").iterdir() if p.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=1m", str(full)], check=True)
    proc = _kill_study(full / "run", "--cells", "80")
    assert proc.returncode == 0, proc.stderr
    final = (full / "run" / "results.jsonl").read_bytes()
    assert final.startswith(data)  # what was written before the disk filled is kept as it was
    cells = [json.loads(line)["cell"] for line in final.splitlines()]
    assert sorted(cells) == [f"c{i:02d}" for i in range(80)]
