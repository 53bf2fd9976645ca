"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``):
an experiment script sent to it with ``--ray_address`` runs cells on both nodes, and its records
equal those of a local run except where and how long (``executed_on``, ``*_seconds``, paths).

The cluster (:func:`tfquant.study.ray_nodes.started_cluster`) is stopped by terminating the two
``ray start --block`` process groups, even on failure -- not with ``ray stop``, which would stop
every Ray instance on a shared machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from tfquant.study.ray_nodes import cluster_env, started_cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_ARGS = ["experiments/nvidia_calibration.py", "--smoke", "--modes", "int8", "--columns", "converter"]


def _env() -> dict[str, str]:
    return cluster_env(PYTHONPATH=str(ROOT))


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
        with started_cluster(2) as address:
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
