"""The generic resumable study runner: cells in, one typed record per cell out.

A study (one experiment) declares its cells, how to measure the ones not done yet, and how to
render its records; :func:`run_study` does the rest, the same way for every experiment:

0. ``RunLock``: the run holds the folder (``.run.lock``, flock) until it ends; a second run
   into it is refused, a killed run's lock is free (the kernel drops it).
1. ``open_run``: ``config.json`` with the study's fingerprint and the provenance of every run
   into the folder; a folder holding a different config is refused.
2. The done-set: cells whose key has a finished record in ``results.jsonl`` are skipped; failed
   cells are measured again.
3. The cells to do run where :mod:`tfquant.study.cluster` says (Ray actors on a local instance by
   default, or an existing cluster): batches of cells (:meth:`Study.batch_key`) on workers, then
   the records that need an idle node (latency) one at a time per node. Each record gets
   ``executed_on`` (Ray node id, host name); a cell that crashes its worker is a failed record.
4. Each record the study yields is appended to ``results.jsonl`` by this process only (one
   writer per run folder: :class:`~tfquant.study.lock.RunLock`), in one write (fsync'd; a torn
   last line from a power cut is cut off on the next start), once per key: a record for a cell
   that is already done is dropped, so an interrupted run resumed any number of times never
   duplicates a cell.
5. ``results.md`` is rewritten atomically from all records of the run.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Hashable, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.io_utils import write_text_atomic
from tfquant.study import cluster
from tfquant.study.lock import RunLock
from tfquant.study.provenance import open_run
from tfquant.study.records import Record, RecordLog, RecordSet

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"


class CellSpec(Protocol):
    """A frozen cell spec: ``key`` is stable across runs and equals its record's ``key``."""

    @property
    def key(self) -> tuple[Any, ...]: ...


@dataclasses.dataclass(frozen=True)
class ModelCell:
    """A cell keyed by model (row) and cell name (column), the usual study cell."""

    model: str
    cell: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


C = TypeVar("C", bound=CellSpec)
R = TypeVar("R", bound=Record)
T = TypeVar("T")


class Study(abc.ABC, Generic[C, R]):
    """One experiment: its cells, how to measure them, how to show the records.

    Class attributes:
      name: The experiment's one name: ``experiments/NAME.py``, ``tfquant/experiments/NAME.py``
        and the results folder ``<results_dir>/<run_name>/NAME/``.
      record_type: The record kind :meth:`parse_record` reads by default.
    """

    name: ClassVar[str]
    record_type: ClassVar[type[Record]]
    out_dir: Path = Path(".")
    """The run folder; :func:`run_study` sets it before :meth:`measure`."""

    @property
    def models_dir(self) -> Path:
        """Where a study keeps the files it makes (``<out_dir>/models/<model>/...``)."""
        return self.out_dir / "models"

    @abc.abstractmethod
    def fingerprint(self) -> Mapping[str, Any]:
        """What must match for a run folder to be resumed (config, weights' hashes, ...)."""

    @abc.abstractmethod
    def cells(self) -> Sequence[C]:
        """Every cell of the study, in table order."""

    def parse_record(self, d: Mapping[str, Any]) -> R:
        """One results.jsonl line as a typed record (override when a study has several kinds)."""
        return self.record_type.from_json(d)  # type: ignore[return-value]

    @abc.abstractmethod
    def measure(self, todo: Sequence[C], log: Callable[[str], None]) -> Iterator[R]:
        """Measures ``todo`` (the cells not done yet), yielding each record as it finishes.

        A cell that cannot be produced or measured yields a record with ``error`` set.
        """

    @abc.abstractmethod
    def markdown(self, records: RecordSet) -> str:
        """results.md from all records of the run."""

    def batch_key(self, cell: C) -> Hashable:
        """Cells with equal keys are measured together by one worker (default: the model, the
        key's first part, so a worker builds or loads each model once)."""
        return cell.key[0]

    def needs_idle_node(self, record: R) -> bool:
        """Whether ``record`` still needs :meth:`measure_on_idle_node` (e.g. latency); default no."""
        return False

    def measure_on_idle_node(self, record: R) -> R:
        """``record`` finished on a node that runs nothing else of this run (latency)."""
        return record

    def failed_record(self, cell: C, error: str) -> R:
        """The failed record of ``cell`` (a crashed worker); default: the record kind built from the
        cell's fields and ``error``; override when the kind needs more."""
        fields = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)}  # type: ignore[arg-type]
        return self.record_type(**fields, error=error)  # type: ignore[return-value]


def load_records(study: Study[Any, R], out_dir: str | os.PathLike[str]) -> RecordSet:
    """The records in ``out_dir/results.jsonl`` (a torn or corrupt line is skipped)."""
    return RecordLog(Path(out_dir) / RESULTS_JSONL, study.parse_record).read()


def run_study(
    study: Study[Any, Any], out_dir: str | os.PathLike[str], *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) ``study`` into ``out_dir``; returns all records of the run.

    Raises:
      TfquantError: ``out_dir`` holds a run with a different fingerprint, or the study's own
        errors (data, models). A cell's failure is a record with ``error``, not an exception.
    """
    out = Path(out_dir)
    study.out_dir = out
    with RunLock(out) as lock:  # one writer per run folder; a killed run's lock is free
        if lock.took_over:
            log(f"{out}: resuming after an interrupted run (pid {lock.took_over.get('pid')})")
        open_run(out, dict(study.fingerprint()))
        results = RecordLog(out / RESULTS_JSONL, study.parse_record)
        if results.repair():
            log(f"{out / RESULTS_JSONL}: cut off a torn last line (its cell is measured again)")
        done = results.done_keys()
        todo = [c for c in study.cells() if c.key not in done]
        todo_keys = {c.key for c in todo}
        if todo:
            for record in cluster.measure_cells(study, todo, log):
                if record.key in done:
                    continue  # measured twice (e.g. a cell two batches share): keep the first
                if record.key not in todo_keys:
                    raise AssertionError(f"{study.name} yielded a record for {record.key}, which is not a cell to do")
                results.append(record)
                if not record.failed:
                    done.add(record.key)
        records = results.read()
        write_text_atomic(out / RESULTS_MD, study.markdown(records))
        if todo:  # a resumed run with nothing left to do says so itself (the study's own line)
            failed = sum(1 for r in records if r.failed)
            log(f"{study.name}: {len(records)} cell(s) recorded, {failed} failed"
                + (" (see their error fields)" if failed else ""))
    return records


def logged(records: Iterable[R], log: Callable[[str], None], line: Callable[[R], str]) -> Iterator[R]:
    """``records``, each logged as ``line(record)`` as it passes (a study's progress lines)."""
    for record in records:
        log(line(record))
        yield record


class Pending(Generic[R]):
    """Futures (e.g. :meth:`~tfquant.evaluation.Evaluator.submit`) turned into records.

    ``add(future, done=..., failed=...)``: when the future finishes, ``done(result)`` makes its
    record; a :class:`TfquantError` from the future makes ``failed(error)``.
    """

    def __init__(self) -> None:
        self._items: list[tuple[concurrent.futures.Future[Any], Callable[[Any], R], Callable[[Exception], R]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self,
        future: "concurrent.futures.Future[T]",
        *,
        done: Callable[[T], R],
        failed: Callable[[Exception], R],
    ) -> None:
        """Queues ``future``; its record is yielded by :meth:`ready`."""
        self._items.append((future, done, failed))

    def ready(self, *, block: bool = False) -> Iterator[R]:
        """Records of the finished futures, in submission order (all of them when ``block``)."""
        for item in list(self._items):
            future, done, failed = item
            if not block and not future.done():
                continue
            self._items.remove(item)
            try:
                result = future.result()
            except TfquantError as e:
                yield failed(e)
                continue
            yield done(result)
