"""Cells on a local Ray instance: where each ran, crashes kept in their cell, the latency phase
after every batch, data-parallel accuracy equal to the single-process one."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pytest

from tfquant.errors import TfquantError
from tfquant.io_utils import read_jsonl
from tfquant.study import RecordSet, Study, cluster, run_study
from tfquant.study.runner import RESULTS_JSONL
from tests.study._toy import ToyCell, ToyRecord

ray = pytest.importorskip("ray")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rec(ToyRecord):
    value: int | None = None
    measured_before_idle: int | None = None


class _Toy(Study[ToyCell, _Rec]):
    """m1/boom aborts its worker; m2/late needs the idle phase; m3/raise raises (when asked)."""

    name = "toy"
    record_type = _Rec

    def __init__(self, cells: Sequence[tuple[str, str]]) -> None:
        self._cells = [ToyCell(model=m, cell=c) for m, c in cells]

    def fingerprint(self) -> Mapping[str, Any]:
        return {"cells": [list(c.key) for c in self._cells]}

    def cells(self) -> Sequence[ToyCell]:
        return self._cells

    def measure(self, todo: Sequence[ToyCell], log: Callable[[str], None]) -> Iterator[_Rec]:
        marks = self.out_dir / "measured"
        marks.mkdir(exist_ok=True)
        for c in todo:
            if c.cell == "boom":
                os.abort()  # a native crash in the middle of a cell
            if c.cell == "raise":
                raise TfquantError("the study's own error")
            log(f"measured {c.key}")
            (marks / f"{c.model}-{c.cell}").touch()
            yield _Rec(model=c.model, cell=c.cell, value=len(c.cell))

    def needs_idle_node(self, record: _Rec) -> bool:
        return record.cell == "late" and record.measured_before_idle is None

    def measure_on_idle_node(self, record: _Rec) -> _Rec:
        return dataclasses.replace(record, measured_before_idle=len(list((self.out_dir / "measured").iterdir())))

    def markdown(self, records: RecordSet) -> str:
        return "".join(f"{r.key} {'failed' if r.failed else r.value}\n" for r in records)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    cluster.set_address("")  # the default: a local instance started by the run
    try:
        cluster.connect()
        yield
    finally:
        ray.shutdown()
        cluster.set_address(None)


def test_crash_is_a_failed_record_and_the_rest_runs_on_ray(local_ray: None, tmp_path: Path) -> None:
    cells = [("m1", "a"), ("m1", "boom"), ("m1", "b"), ("m2", "a"), ("m2", "late")]
    lines: list[str] = []
    records = run_study(_Toy(cells), tmp_path, log=lines.append)

    boom = records.get(("m1", "boom"))
    assert boom is not None and boom.failed
    assert "SIGABRT" in boom.error and "Fatal Python error: Aborted" in boom.error
    assert "test_cluster.py" in boom.error  # the crash site: the frame that aborted
    assert all(records.ok(k) is not None for k in [("m1", "a"), ("m1", "b"), ("m2", "a"), ("m2", "late")])
    # the latency-like phase ran after every other cell had been measured (4 finish; boom never does)
    assert records.ok(("m2", "late")).measured_before_idle == 4
    node = ray.get_runtime_context().get_node_id()
    for r in records:
        assert r.executed_on == {"node_id": node, "host": socket.gethostname()}
    jsonl = read_jsonl(tmp_path / RESULTS_JSONL)
    assert len(jsonl) == 5 and len({(d["model"], d["cell"]) for d in jsonl}) == 5
    assert all(d["executed_on"]["node_id"] == node for d in jsonl)
    assert any("measured ('m2', 'a')" in line for line in lines)  # workers' log lines reach the driver
    assert lines[-1] == "toy: 5 cell(s) recorded, 1 failed (see their error fields)"
    assert not (tmp_path / cluster.FAULTS_DIR).exists()


def test_a_study_error_in_a_worker_is_raised_as_itself(local_ray: None, tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="the study's own error"):
        run_study(_Toy([("m3", "raise")]), tmp_path, log=lambda s: None)


def test_crash_reason_without_a_fault_report_says_so() -> None:
    assert "SIGKILL" in cluster.crash_reason("")
    assert cluster.crash_reason("Fatal Python error: Segmentation fault\n").startswith(
        "worker process killed by SIGSEGV")


def test_inline_runs_in_this_process(tmp_path: Path) -> None:
    cluster.set_address(cluster.INLINE)
    try:
        records = run_study(_Toy([("m1", "a"), ("m2", "late")]), tmp_path, log=lambda s: None)
    finally:
        cluster.set_address(None)
    assert {r.executed_on["node_id"] for r in records} == {"inline"}
    assert records.ok(("m2", "late")).measured_before_idle == 2


def _tiny_tflite(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    import tfquant._env  # noqa: F401
    import tensorflow as tf

    from tfquant import convert
    from tfquant.qtypes import Mode
    from tfquant.recipes import Recipe

    rng = np.random.default_rng(0)
    x = rng.random((1003, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 4, size=1003)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(4, 3, activation="relu"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
    path = tmp_path / "tiny.tflite"
    path.write_bytes(convert.convert(model, Recipe(mode=Mode.INT8, num_calibration_examples=64), calibration_data=x[:64]))
    return path, x, y


def test_sharded_accuracy_is_exactly_the_single_process_one(local_ray: None, tmp_path: Path) -> None:
    from tfquant.evaluation import Evaluator, evaluate_accuracy, evaluate_accuracy_sharded

    path, x, y = _tiny_tflite(tmp_path)
    whole = evaluate_accuracy(str(path), x, y, batch_size=64)
    sharded = evaluate_accuracy_sharded(str(path), x, y, shards=3, batch_size=64)
    assert (sharded.n_correct, sharded.n_examples) == (whole.n_correct, whole.n_examples) == (whole.n_correct, 1003)
    assert sharded.accuracy == whole.accuracy
    assert 0 < whole.n_correct < 1003  # a real count, not all or nothing
    evaluator = Evaluator(x, y, batch_size=64, shard_examples=250)
    assert evaluator.shards == 5
    assert evaluator.accuracy(str(path)).accuracy == whole.accuracy
