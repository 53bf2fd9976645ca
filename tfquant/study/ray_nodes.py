"""A throw-away Ray cluster of N nodes on this machine (tests and ``experiments/bench_cluster.py``).

``ray start --head`` plus ``ray start --address`` per extra node, each ``--block`` in its own
process group, on the loopback interface, with token authentication and usage stats off (a
local, short-lived cluster). Stopping terminates those process groups -- not ``ray stop``, which
stops every Ray instance of the user on the machine, other runs' included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from tfquant.errors import TfquantError

RAY = str(Path(sys.executable).parent / "ray")


def cluster_env(**extra: str) -> dict[str, str]:
    """This process's environment for the cluster's processes and its clients."""
    env = {k: v for k, v in os.environ.items() if k not in ("TFQUANT_RAY_ADDRESS", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodes_alive(address: str) -> int:
    """How many nodes ``ray status`` lists as active."""
    out = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                         env=cluster_env(), timeout=60).stdout
    active = out.split("Active:")[-1].split("Pending:")[0] if "Active:" in out else ""
    return sum(1 for line in active.splitlines() if "node_" in line)


def _stop(procs: list[subprocess.Popen[Any]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is still shutting down
        p.wait()


@contextlib.contextmanager
def started_cluster(nodes: int, *, cpus_per_node: int = 1, timeout_s: float = 120) -> Iterator[str]:
    """Starts ``nodes`` Ray nodes here and yields the head's address; stops them on exit."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    common = ["--num-cpus", str(cpus_per_node), "--node-ip-address", "127.0.0.1", "--block"]
    procs: list[subprocess.Popen[Any]] = []
    log_path = Path(temp) / "ray_start.log"
    log = open(log_path, "w")
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false",
             "--disable-usage-stats", *common],
            env=cluster_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        for _ in range(nodes - 1):
            procs.append(subprocess.Popen(
                [RAY, "start", "--address", address, *common],
                env=cluster_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while nodes_alive(address) < nodes:
            if any(p.poll() is not None for p in procs):
                raise TfquantError(f"a Ray node exited while starting: {log_path.read_text()[-1500:]}")
            if time.monotonic() > deadline:
                raise TfquantError(f"{nodes} Ray node(s) did not come up in {timeout_s:.0f} s")
            time.sleep(1)
        yield address
    finally:
        _stop(procs)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
