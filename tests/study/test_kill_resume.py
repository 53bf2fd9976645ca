"""Kills lose nothing and add nothing; one run folder, one writer (issue 10, items 5 and 7).

A real child process runs a small experiment (tests/study/kill_study.py: LiteRT latency of a
one-op model per cell, a volatile number like the main job's) and is SIGKILLed at several
points; the rerun to the end must leave each cell exactly once, no torn line, and the records
written before each kill byte-equal (not recomputed: same latency, same pid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.study.lock import LOCK_NAME, RunLock

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("kill_study.py")
N_CELLS = 10


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--cells", str(N_CELLS), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run did not reach the kill point"
        time.sleep(0.005)


def _holds_lock(out: Path, pid: int) -> bool:
    try:
        return json.loads((out / LOCK_NAME).read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def _measured(out: Path) -> list[tuple[int, str]]:
    text = (out / "measured.log").read_text() if (out / "measured.log").exists() else ""
    return [(int(p), c) for p, c in (line.split() for line in text.splitlines())]


def test_sigkill_at_several_points_then_resume_keeps_each_cell_once_and_recomputes_nothing(tmp_path):
    out = tmp_path / "run"
    jsonl = out / "results.jsonl"
    snapshots: list[tuple[bytes, int]] = []  # (results.jsonl at the kill, pid killed)
    # Kill points: during start-up (lock taken, nothing written), then after 1, 3 and 6 records
    # (mid-batch: cells measured but not yet written die with the process).
    for k in (0, 1, 3, 6):
        proc = _start(out)
        if k == 0:
            _wait_for(lambda: _holds_lock(out, proc.pid), proc)
        else:
            _wait_for(lambda: _lines(jsonl) >= k, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        snapshots.append((jsonl.read_bytes() if jsonl.exists() else b"", proc.pid))
    final = _start(out)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr

    data = jsonl.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]  # no torn or garbled line
    cells = [r["cell"] for r in records]
    assert sorted(cells) == [f"c{i:02d}" for i in range(N_CELLS)]  # each cell exactly once
    assert len(set(cells)) == len(cells)
    measured = _measured(out)
    for i, (snapshot, pid) in enumerate(snapshots):
        assert data.startswith(snapshot)  # the records of finished cells are byte-equal
        done = {json.loads(line)["cell"] for line in snapshot.splitlines()}
        later_pids = {p for _, p in snapshots[i + 1:]} | {final.pid}
        recomputed = {c for p, c in measured if p in later_pids and c in done}
        assert not recomputed, f"cells finished before kill {i} were measured again: {recomputed}"
    # Every record was written by the process that measured it, before it was killed.
    assert {r["pid"] for r in records} <= {pid for _, pid in snapshots} | {final.pid}
    assert len(snapshots[-1][0].splitlines()) >= 6


def test_a_second_run_into_a_live_runs_folder_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    live = _start(out, "--pause", "0.5")
    try:
        _wait_for(lambda: _holds_lock(out, live.pid), live)
        second = _start(out)
        stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: run folder"), stderr
        assert f"pid {live.pid}" in lines[0] and "--run_name" in lines[0]
        assert live.poll() is None  # the refused run did not disturb the live one
        with pytest.raises(TfquantError, match="in use by another run"):
            RunLock(out).acquire()  # in-process too
    finally:
        live.send_signal(signal.SIGKILL)
        live.communicate()
    # The kernel dropped the dead run's flock: the next run takes over and finishes.
    rerun = _start(out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    lock = json.loads((out / LOCK_NAME).read_text())
    assert lock["pid"] == rerun.pid and lock["released"] is True
    cells = [json.loads(line)["cell"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(cells) == [f"c{i:02d}" for i in range(N_CELLS)]


def test_stale_lock_file_of_a_dead_run_is_taken_over_and_reported(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "elsewhere"}))
    with RunLock(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == 2 ** 22 + 12345
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    with RunLock(tmp_path) as lock:  # released cleanly: nothing to take over
        assert lock.took_over is None


def test_without_flock_a_live_pid_keeps_the_folder_and_a_dead_one_does_not(tmp_path, monkeypatch):
    import errno
    import socket

    from tfquant.study import lock as lock_module

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(TfquantError, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path) as lock:  # the holder is dead now
        assert lock.took_over["pid"] == sleeper.pid


def test_a_run_folder_with_broken_files_gives_one_line_or_resumes(tmp_path):
    """Hostile run-folder files into an experiment script: a corrupt config.json is a one-line
    error (exit 2); a garbled results line and a torn last line are dropped and their cells
    measured again; a garbage lock file is taken over."""
    out = tmp_path / "run"
    first = _start(out)
    assert first.wait(timeout=300) == 0
    jsonl = out / "results.jsonl"
    lines = jsonl.read_bytes().splitlines(keepends=True)
    garbled = bytearray(lines[2])
    garbled[5] ^= 0xFF  # a flipped bit inside record c02
    jsonl.write_bytes(b"".join(lines[:2]) + bytes(garbled) + b"".join(lines[3:-1]) + lines[-1][:20])
    (out / LOCK_NAME).write_bytes(b"\x00\xffnot json")
    config = (out / "config.json").read_bytes()
    (out / "config.json").write_bytes(config[: len(config) // 2])
    broken = _start(out)
    _, stderr = broken.communicate(timeout=300)
    assert broken.returncode == 2 and stderr.strip().count("\n") == 0 and "config.json" in stderr
    (out / "config.json").write_bytes(config)
    rerun = _start(out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    records, unreadable = [], 0
    for line in jsonl.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            unreadable += 1
    assert unreadable == 1  # the garbled line stays (the log is append-only), read as nothing
    assert sorted(r["cell"] for r in records) == [f"c{i:02d}" for i in range(N_CELLS)]
    assert jsonl.read_bytes().endswith(b"\n")
    assert {c for p, c in _measured(out) if p == rerun.pid} == {"c02", f"c{N_CELLS - 1:02d}"}
