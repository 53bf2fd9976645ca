"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``):
an experiment script sent to it with ``--ray_address`` runs cells on both nodes, and its records
equal those of a local run except where and how long (``executed_on``, ``*_seconds``, paths).

The cluster is stopped by terminating the two ``ray start --block`` processes (their process
groups), not with ``ray stop``, which would stop every Ray instance on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
SCRIPT_ARGS = ["experiments/nvidia_calibration.py", "--smoke", "--modes", "int8", "--columns", "converter"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TFQUANT_RAY_ADDRESS", "RAY_ADDRESS")}
    # A throw-away cluster on the loopback interface: no usage stats, no token set-up.
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), **extra)
    return env


def _stop(procs: list[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is still shutting down
        except ProcessLookupError:
            pass
        p.wait()


def _nodes_alive(address: str) -> int:
    out = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, env=_env(),
                         timeout=60).stdout
    active = out.split("Active:")[-1].split("Pending:")[0] if "Active:" in out else ""
    return sum(1 for line in active.splitlines() if "node_" in line)


@contextlib.contextmanager
def two_nodes() -> Iterator[str]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--block"]
    procs: list[subprocess.Popen[Any]] = []
    log = open(Path(temp) / "ray_start.log", "w")
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false",
             "--disable-usage-stats", *common],
            env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen(
            [RAY, "start", "--address", address, *common],
            env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while _nodes_alive(address) < 2:
            assert all(p.poll() is None for p in procs), (Path(temp) / "ray_start.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the two Ray nodes did not come up in 90 s"
            time.sleep(1)
        yield address
    finally:
        _stop(procs)
        log.close()
        subprocess.run(["rm", "-rf", temp], check=False)


def _records(results_dir: Path) -> list[dict[str, Any]]:
    from tfquant.io_utils import read_jsonl

    return read_jsonl(results_dir / "default" / "nvidia_calibration" / "results.jsonl")


def _comparable(d: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    return {k: (v.replace(str(results_dir), "<out>") if isinstance(v, str) else v)
            for k, v in d.items() if k != "executed_on" and not k.endswith("_seconds")}


def test_a_run_on_a_two_node_cluster_uses_both_nodes_and_matches_a_local_run(tmp_path: Path) -> None:
    local_dir, cluster_dir = tmp_path / "local", tmp_path / "cluster"
    # the local reference run (in-process cells) goes on while the cluster starts
    local = subprocess.Popen([sys.executable, *SCRIPT_ARGS, "--results_dir", str(local_dir), "--ray_address", "inline"],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with two_nodes() as address:
            remote = subprocess.run(
                [sys.executable, *SCRIPT_ARGS, "--results_dir", str(cluster_dir), "--ray_address", address],
                cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        local_out = local.communicate(timeout=300)[0]
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    assert remote.returncode == 0, remote.stderr[-3000:] + remote.stdout[-2000:]
    assert local.returncode == 0, local_out[-3000:]

    on_cluster, here = _records(cluster_dir), _records(local_dir)
    assert len(on_cluster) == len(here) == 2  # cnn float + cnn int8 converter: two batches, two nodes
    nodes = {d["executed_on"]["node_id"] for d in on_cluster}
    assert len(nodes) == 2, on_cluster
    assert all(d["executed_on"]["host"] == socket.gethostname() for d in on_cluster)
    assert {d["executed_on"]["node_id"] for d in here} == {"inline"}
    key = lambda d: (d["model"], d["mode"], d["column"])  # noqa: E731
    assert sorted((_comparable(d, cluster_dir) for d in on_cluster), key=key) == sorted(
        (_comparable(d, local_dir) for d in here), key=key)
    assert all(d.get("error") is None and d["accuracy"] > 0.5 for d in on_cluster)
