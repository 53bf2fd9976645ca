"""What every experiment script does around its flow: one-line errors, the table, the time.

Also the flags every experiment script shares (defined here, so each script that imports this
module has them): ``--ray_address`` (where the cells run; :mod:`tfquant.study.cluster`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from absl import flags

from tfquant import progress
from tfquant.errors import TfquantError, error_line, show_traceback
from tfquant.study import cluster

flags.DEFINE_string(
    "ray_address", None,
    "Where the cells run: empty (default) starts a local Ray instance on all cores; 'auto' or "
    "HOST:PORT sends the run to an existing Ray cluster; 'inline' runs them in this process. "
    f"Default from ${cluster.ENV_ADDRESS}.")


def report_run(label: str, results_md: str, run: Callable[[], Path]) -> int:
    """Runs ``run`` (build the config from the flags, run the flow, return the run folder).

    ``run`` reports progress on stderr (:func:`tfquant.progress.reporting`). On a
    :class:`TfquantError` prints ``error: <message>`` on one line to stderr and returns 2 (any
    other exception too: a full disk, a read-only folder, a file broken in an unforeseen way;
    see :func:`tfquant.errors.error_line`);
    otherwise prints the run's ``results_md`` table and the wall time, and returns 0.
    """
    start = time.perf_counter()
    if flags.FLAGS.is_parsed() and "ray_address" in flags.FLAGS and flags.FLAGS.ray_address is not None:
        cluster.set_address(flags.FLAGS.ray_address)
    try:
        with progress.reporting():  # stderr: bars on a terminal, one line per stage in a log
            out = run()
    except Exception as e:  # TfquantError, a full disk, a file broken in an unforeseen way: one line
        if show_traceback() and not isinstance(e, TfquantError):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    print()
    print((out / results_md).read_text())
    print(f"{label} finished in {time.perf_counter() - start:.0f} s; results in {out}/")
    return 0
