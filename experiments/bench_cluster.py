"""Benchmark of the Ray runner (issue 10): cells per minute on 1 and 2 local Ray nodes, and a
representative experiment's wall time on Ray vs the two-process pool it replaced.

Every timing is a whole ``experiments/nvidia_calibration.py`` subprocess (start-up, TensorFlow
imports, workers, conversion, accuracy), each into a fresh results folder:

* ``pool``: the same script from a checkout of the tree before Ray (``--base_checkout``, e.g.
  ``git clone /work/main /tmp/base && git -C /tmp/base checkout <commit>``), ``--workers 2``;
* ``ray_local``: this tree's script, default target (a local Ray instance on all cores);
* ``ray_1_node`` / ``ray_2_nodes``: this tree's script with ``--ray_address`` at a throw-away
  cluster of 1 or 2 nodes of 1 CPU each (:func:`tfquant.study.ray_nodes.started_cluster`;
  cluster start-up not timed).

``pool`` and ``ray_local`` alternate (pool, ray, ray, pool, ...) so that a machine shared with
other jobs loads both alike; compare their ratio, not the absolute seconds::

  python experiments/bench_cluster.py --base_checkout /tmp/base
  # -> experiments/results/benchmarks/cluster.json and a table on stdout
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study.ray_nodes import cluster_env, started_cluster  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402  (also defines --ray_address, unused here)

FLAGS = flags.FLAGS
flags.DEFINE_string("base_checkout", None, "Checkout of the pre-Ray tree (the pool); empty: skip that comparison.")
flags.DEFINE_list("models", ["cnn", "mobilenet_v1"], "Zoo models of the benchmark experiment.")
flags.DEFINE_list("columns", ["converter", "max", "percentile_99.99"], "Calibration columns (int8).")
flags.DEFINE_integer("limit", 2000, "Test images per cell.")
flags.DEFINE_integer("repeats", 1, "Pool / local-Ray pairs (each pair alternates the order).")
flags.DEFINE_bool("nodes", True, "Also time 1 and 2 local Ray nodes.")
flags.DEFINE_string("out", str(ROOT / "experiments" / "results" / "benchmarks" / "cluster.json"), "JSON report.")
flags.DEFINE_string("work_dir", "/tmp/tfquant_bench_cluster", "Scratch results folders.")


def _args() -> list[str]:
    return ["--models", ",".join(FLAGS.models), "--modes", "int8", "--columns", ",".join(FLAGS.columns),
            "--limit", str(FLAGS.limit), "--num_calibration_examples", "200"]


def _timed(label: str, root: Path, extra: list[str]) -> dict[str, object]:
    out = Path(FLAGS.work_dir) / f"{label}-{time.time_ns()}"
    cmd = [sys.executable, str(root / "experiments" / "nvidia_calibration.py"), *_args(), "--results_dir", str(out),
           *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=cluster_env(PYTHONPATH=str(root)), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise TfquantError(f"{label} run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = (out / "default" / "nvidia_calibration" / "results.jsonl").read_text().splitlines()
    cells = len(lines)
    row = {"label": label, "seconds": round(seconds, 1), "cells": cells,
           "cells_per_minute": round(cells / seconds * 60, 2)}
    print(f"{label:<12} {seconds:7.1f} s  {cells:3d} cells  {row['cells_per_minute']:6.2f} cells/min", flush=True)
    return row


def _run() -> Path:
    rows: list[dict[str, object]] = []
    if FLAGS.base_checkout:
        base = Path(FLAGS.base_checkout)
        if not (base / "tfquant" / "evaluation" / "pool.py").exists():
            raise TfquantError(f"{base} is not a pre-Ray checkout (no tfquant/evaluation/pool.py); pass one")
        for i in range(FLAGS.repeats):
            pair = [("pool", base, ["--workers", "2"]), ("ray_local", ROOT, [])]
            for label, root, extra in (pair if i % 2 == 0 else pair[::-1]):
                rows.append(_timed(label, root, extra))
    if FLAGS.nodes:
        for n in (1, 2):
            with started_cluster(n) as address:
                rows.append(_timed(f"ray_{n}_node{'s' if n > 1 else ''}", ROOT, ["--ray_address", address]))
    report = {
        "experiment": "nvidia_calibration " + " ".join(_args()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "runs": rows,
    }
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(report, indent=1) + "\n")
    md = Path(FLAGS.work_dir) / "bench.md"
    md.write_text("| run | seconds | cells | cells/min |\n|:---|---:|---:|---:|\n" + "".join(
        f"| {r['label']} | {r['seconds']} | {r['cells']} | {r['cells_per_minute']} |\n" for r in rows))
    return md.parent


def main(argv: list[str]) -> int:
    del argv
    return report_run("cluster benchmark", "bench.md", _run)


if __name__ == "__main__":
    app.run(main)
