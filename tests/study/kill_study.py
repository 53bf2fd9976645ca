"""A tiny experiment for the kill / resume / lock tests, run as a script in a child process.

``python tests/study/kill_study.py OUT [--cells N] [--batch B]``: N cells, each a real LiteRT
latency measurement of a one-op model (a volatile number, as in the main job), measured in
batches of B cells that finish together and are then written one by one (like accuracy
computed in a pool, then latency measured alone). Every measured cell is also noted in
``OUT/measured.log`` (pid, key) so the test can tell which cells a run recomputed. Exit status
and error lines as every experiment script (:func:`tfquant.study.script.report_run`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tfquant.study import ModelCell, Record, RecordSet, Study, run_study  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402


@dataclasses.dataclass(frozen=True, kw_only=True)
class KillRecord(Record):
    model: str
    cell: str
    latency_ms_median: float | None = None
    pid: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


class KillStudy(Study[ModelCell, KillRecord]):
    name = "kill_study"
    record_type = KillRecord

    def __init__(self, n_cells: int, batch: int, pause: float) -> None:
        self.n_cells, self.batch, self.pause = n_cells, batch, pause

    def fingerprint(self) -> Mapping[str, Any]:
        return {"config": {"cells": self.n_cells, "batch": self.batch}}

    def cells(self) -> Sequence[ModelCell]:
        return [ModelCell("relu", f"c{i:02d}") for i in range(self.n_cells)]

    def measure(self, todo: Sequence[ModelCell], log: Callable[[str], None]) -> Iterator[KillRecord]:
        from tfquant.evaluation import measure_latency
        from tfquant.tflite.flatbuffer import one_op_model

        model = one_op_model()
        for start in range(0, len(todo), self.batch):
            batch = todo[start:start + self.batch]
            done = []
            for cell in batch:  # the "pool" part: the whole batch finishes before any is written
                lat = measure_latency(model, runtime="builtin", warmup=1, runs=5)
                with open(self.out_dir / "measured.log", "a") as f:
                    f.write(f"{os.getpid()} {cell.cell}\n")
                done.append((cell, lat))
                time.sleep(self.pause)
            for cell, lat in done:
                yield KillRecord(model=cell.model, cell=cell.cell, latency_ms_median=lat.median_ms, pid=os.getpid())

    def markdown(self, records: RecordSet) -> str:
        return "".join(f"{r.cell} {r.latency_ms_median}\n" for r in records)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--pause", type=float, default=0.05)
    args = p.parse_args()
    out = Path(args.out)

    def run() -> Path:
        run_study(KillStudy(args.cells, args.batch, args.pause), out, log=lambda s: None)
        return out

    return report_run("kill study", "results.md", run)


if __name__ == "__main__":
    sys.exit(main())
