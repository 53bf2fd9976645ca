"""Where a study's cells run: Ray actors on a local instance or an existing cluster, or inline.

:func:`tfquant.study.run_study` hands the cells not done yet to :func:`measure_cells`, which
yields each record as its cell finishes; the runner (the driver, the run's one writer)
appends it to ``results.jsonl``. Targets (:func:`set_address`, the scripts' ``--ray_address``,
or ``$TFQUANT_RAY_ADDRESS``):

* ``""`` (default): a local Ray instance started by the run, on all cores; no dashboard, no
  usage-stats prompt, worker logs kept in Ray's session folder, not on the console.
* ``auto`` or ``HOST:PORT``: an existing cluster (``ray start --head`` ...); tfquant is shipped
  to its workers (``runtime_env`` ``py_modules``); the run folder must be on a file system every
  node sees (the cells write their .tflite files there).
* ``inline``: no Ray; the cells run in this process, one after another (debugging).

Design (see BUILD_NOTES "Ray (issue 10)"):

* **Actors, not tasks.** One :class:`CellWorker` actor per CPU of every node, pinned to its node
  (``NodeAffinitySchedulingStrategy``) and kept for the whole run, so each worker process
  imports TensorFlow once (~5 s) and unpickles the study once. A *batch* of cells
  (:meth:`Study.batch_key`, e.g. one model's cells: the model is built / loaded once) goes to
  an idle actor; its records stream back (``num_returns="streaming"``) as they finish.
* **Latency alone.** Records that :meth:`Study.needs_idle_node` are held until every batch is
  done, then finished (:meth:`Study.measure_on_idle_node`) one at a time per node: a dedicated
  phase in which the node runs nothing else of this run.
* **Crashes stay in their cell.** A worker whose process dies (abort, segfault) takes only its
  current batch down: the batch's unfinished cells are retried one per fresh worker, and a cell
  that kills a worker on its own becomes a failed record naming the signal and the crash site
  (read from the worker's :mod:`faulthandler` file); the run carries on.
* Every record gets ``executed_on``: the Ray node id and host name of the worker that ran it.
"""

from __future__ import annotations

import collections
import dataclasses
import faulthandler
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tfquant.errors import TfquantError

from tfquant.study.records import Record

Study = Any  # a tfquant.study.runner.Study (not imported: the runner imports this module)

ENV_ADDRESS = "TFQUANT_RAY_ADDRESS"
INLINE = "inline"
FAULTS_DIR = ".worker_faults"

_address: str | None = None
_connected: str | None = None  # the address this process is connected with (None: not yet)

# faulthandler's first line -> the signal that killed the process.
_FATAL_SIGNALS = {
    "Aborted": "SIGABRT",
    "Segmentation fault": "SIGSEGV",
    "Bus error": "SIGBUS",
    "Floating-point exception": "SIGFPE",
    "Floating point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}


def set_address(address: str | None) -> None:
    """Where the next runs go: ``""`` local Ray, ``auto`` / ``HOST:PORT`` a cluster, ``inline``."""
    global _address
    _address = address


def address() -> str:
    """The configured target (:func:`set_address`, else ``$TFQUANT_RAY_ADDRESS``, else local Ray)."""
    if _address is not None:
        return _address
    return os.environ.get(ENV_ADDRESS, "")


def connect() -> None:
    """Connects this process to Ray at :func:`address` (idempotent; reconnects if it changed).

    Raises:
      TfquantError: the cluster cannot be reached.
    """
    global _connected
    import ray

    target = address()
    if ray.is_initialized() and _connected == target:
        return
    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload
    quiet: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    try:
        if target:
            import tfquant

            ray.init(address=target, runtime_env={"py_modules": [str(Path(tfquant.__file__).parent)]}, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TfquantError(
            f"cannot reach the Ray cluster at {target or 'a new local instance'!r} ({first}); start one with "
            "'ray start --head' and pass its address, or leave --ray_address empty for a local instance"
        ) from None
    _connected = target


def where() -> dict[str, str]:
    """A Ray worker's place: ``{"node_id": <its Ray node id>, "host": <host name>}``."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def _placed(record: Record, at: dict[str, str]) -> Record:
    return dataclasses.replace(record, executed_on=dict(at))


def measure_cells(study: Study, todo: Sequence[Any], log: Callable[[str], None]) -> Iterator[Record]:
    """The records of ``todo``, each yielded as it finishes (on Ray unless :func:`address` is inline)."""
    if address() == INLINE:
        yield from _inline(study, todo, log)
    else:
        connect()
        yield from _on_ray(study, todo, log)


def _inline(study: Study, todo: Sequence[Any], log: Callable[[str], None]) -> Iterator[Record]:
    here, held = {"node_id": INLINE, "host": socket.gethostname()}, []
    for record in study.measure(todo, log):
        if study.needs_idle_node(record):
            held.append(record)
        else:
            yield _placed(record, here)
    if held:
        log(f"latency phase: {len(held)} cell(s), one at a time")
    for record in held:
        yield _placed(study.measure_on_idle_node(record), here)


def batches(study: Study, todo: Sequence[Any]) -> list[list[Any]]:
    """``todo`` grouped by :meth:`Study.batch_key`, in first-seen order."""
    groups: dict[Any, list[Any]] = {}
    for cell in todo:
        groups.setdefault(study.batch_key(cell), []).append(cell)
    return list(groups.values())


def crash_reason(fault_text: str) -> str:
    """A one-line reason from a :mod:`faulthandler` dump: the signal and the innermost frame.

    >>> crash_reason('Fatal Python error: Aborted\\n\\nCurrent thread 0x1 (most recent call first):\\n'
    ...              '  File "/m.py", line 3 in boom\\n  File "/m.py", line 9 in <module>\\n')
    'worker process killed by SIGABRT (Fatal Python error: Aborted) in boom (/m.py:3)'
    """
    m = re.search(r"Fatal Python error: ([^\n]+)", fault_text)
    if not m:
        return "worker process died (no fault report: killed by SIGKILL, e.g. out of memory, or the node was lost)"
    what = m.group(1).strip()
    signal = _FATAL_SIGNALS.get(what, "a fatal signal")
    frame = re.search(r'File "([^"]+)", line (\d+) in (\S+)', fault_text)
    at = f" in {frame.group(3)} ({frame.group(1)}:{frame.group(2)})" if frame else ""
    return f"worker process killed by {signal} (Fatal Python error: {what}){at}"


class _Worker:
    """The body of the :class:`CellWorker` actor (a plain class, so it is testable without Ray)."""

    def __init__(self, study: Study, faults: str) -> None:
        from tfquant import _quiet, progress

        Path(faults).mkdir(parents=True, exist_ok=True)
        self._fault_file = open(Path(faults) / f"{os.getpid()}.txt", "w")  # noqa: SIM115 (kept open: faulthandler writes on crash)
        faulthandler.enable(file=self._fault_file, all_threads=False)
        progress.set_enabled(False)  # workers draw no bars; their log lines go to the driver
        _quiet.import_tensorflow()  # once per worker process, not per cell
        self.study = study
        self.at = where()

    def place(self) -> tuple[dict[str, str], int]:
        return self.at, os.getpid()

    def measure(self, cells: list[Any]) -> Iterator[tuple[str, Any]]:
        lines: list[str] = []
        for record in self.study.measure(cells, lines.append):
            yield from (("log", line) for line in lines)
            lines.clear()
            yield ("record", record)
        yield from (("log", line) for line in lines)

    def idle(self, record: Record) -> Record:
        return self.study.measure_on_idle_node(record)


def _ray_actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1)(_Worker)


@dataclasses.dataclass
class _Slot:
    node_id: str
    actor: Any = None
    pid: int = 0
    at: dict[str, str] = dataclasses.field(default_factory=dict)


def _slots() -> list[_Slot]:
    """One slot per CPU of every live node, interleaved across nodes (node 1, node 2, node 1...)."""
    import ray

    per_node = [[_Slot(n["NodeID"]) for _ in range(int(n.get("Resources", {}).get("CPU", 0)))]
                for n in ray.nodes() if n.get("Alive")]
    out = []
    for i in range(max((len(s) for s in per_node), default=0)):
        out += [s[i] for s in per_node if i < len(s)]
    if not out:
        raise TfquantError("the Ray cluster has no CPUs; add a node with 'ray start --address ... --num-cpus N'")
    return out


def _on_ray(study: Study, todo: Sequence[Any], log: Callable[[str], None]) -> Iterator[Record]:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    faults = Path(study.out_dir).resolve() / FAULTS_DIR
    study_ref = ray.put(study)
    actor_class = _ray_actor_class()
    queue: collections.deque[tuple[list[Any], bool]] = collections.deque((b, False) for b in batches(study, todo))
    slots = _slots()[: max(1, len(queue))]

    def start(*todo: _Slot) -> None:
        """(Re)starts the workers of ``todo`` side by side (each imports TensorFlow once)."""
        for slot in todo:
            slot.actor = actor_class.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=False)
            ).remote(study_ref, str(faults))
        try:
            places = ray.get([slot.actor.place.remote() for slot in todo])
        except (RayActorError, RayTaskError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TfquantError(f"the Ray workers could not start ({first}); check that every node has the same "
                               "Python environment as this one (TensorFlow, tfquant's requirements)") from None
        for slot, (at, pid) in zip(todo, places):
            slot.at, slot.pid = at, pid

    def fault_of(slot: _Slot) -> str:
        path = faults / f"{slot.pid}.txt"
        try:
            return crash_reason(path.read_text(errors="replace"))
        except OSError:
            return crash_reason("")

    def task_error(e: Exception) -> Exception:
        cause = getattr(e, "cause", None)  # the study's own exception, raised as if run here
        return cause if isinstance(cause, Exception) else e

    try:
        start(*slots)
        idle = list(slots)
        running: dict[Any, tuple[_Slot, list[Any], bool, set[Any]]] = {}
        held: list[Record] = []
        while queue or running:
            while queue and idle:
                slot = idle.pop(0)
                if slot.actor is None:
                    start(slot)
                cells, alone = queue.popleft()
                running[slot.actor.measure.options(num_returns="streaming").remote(cells)] = (slot, cells, alone, set())
            ready, _ = ray.wait(list(running), num_returns=1)
            gen = ready[0]
            slot, cells, alone, got = running[gen]
            try:
                kind, payload = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                idle.append(slot)
                continue
            except RayActorError:
                del running[gen]
                reason = fault_of(slot)
                missing = [c for c in cells if c.key not in got]
                slot.actor = None  # restarted when next needed
                if alone or len(missing) == 1:
                    log(f"cell {missing[0].key} crashed its worker: {reason}")
                    try:
                        failed = study.failed_record(missing[0], reason)
                    except TypeError as e:  # a study whose record kind needs more than the cell gives
                        log(f"cell {missing[0].key}: no failed record ({e}); it stays to do")
                    else:
                        yield _placed(failed, slot.at)
                else:  # which cell did it? each unfinished one runs alone on a fresh worker
                    log(f"a worker died ({reason}); retrying its {len(missing)} unfinished cell(s) one at a time")
                    queue.extendleft((([c], True) for c in reversed(missing)))
                idle.append(slot)
                continue
            except RayTaskError as e:
                raise task_error(e) from None
            if kind == "log":
                log(payload)
                continue
            got.add(payload.key)
            if study.needs_idle_node(payload):
                held.append(_placed(payload, slot.at))
            else:
                yield _placed(payload, slot.at)
        yield from _idle_phase(study, held, slots, start, fault_of, log)
    finally:
        for slot in slots:
            if slot.actor is not None:
                ray.kill(slot.actor)
        shutil.rmtree(faults, ignore_errors=True)


def _idle_phase(study: Study, held: list[Record], slots: list[_Slot], start: Callable[..., None],
                fault_of: Callable[[_Slot], str], log: Callable[[str], None]) -> Iterator[Record]:
    """Finishes ``held`` one at a time per node (the latency phase; nothing else of the run is busy)."""
    import ray
    from ray.exceptions import RayActorError

    if not held:
        return
    log(f"latency phase: {len(held)} cell(s), one at a time per node, nothing else of this run busy")
    per_node: dict[str, _Slot] = {}
    for slot in slots:
        per_node.setdefault(slot.node_id, slot)
    queue = collections.deque(held)
    free = list(per_node.values())
    running: dict[Any, tuple[_Slot, Record]] = {}
    while queue or running:
        while queue and free:
            slot = free.pop(0)
            if slot.actor is None:
                start(slot)
            record = queue.popleft()
            running[slot.actor.idle.remote(record)] = (slot, record)
        ready, _ = ray.wait(list(running), num_returns=1)
        slot, record = running.pop(ready[0])
        try:
            yield _placed(ray.get(ready[0]), slot.at)
        except RayActorError:
            reason = fault_of(slot)
            log(f"cell {record.key} crashed its worker: {reason}")
            yield _placed(dataclasses.replace(record, error=reason), slot.at)
            slot.actor = None
        free.append(slot)

