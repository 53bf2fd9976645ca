"""Progress of long work, on stderr: a tqdm bar on a terminal, one line per stage otherwise.

Two calls::

    for batch in progress(batches, total=n, desc="statistics pass"):
        ...
    with stage("calibrate: float model"):
        ...

On a terminal (``sys.stderr.isatty()``) both draw tqdm bars; nested ones are transient, the
outermost stays on screen. Anywhere else (a log file, a pipe, pytest) no bar is drawn and
logs stay short: a :func:`stage` prints ``<desc> ... done in X s`` when it ends and a
:func:`progress` loop ``<desc>: N <unit>s in X s``, each only when it is the outermost one
(a sweep over models prints one line at its end, not one per conversion or batch; the sweeps
log their own result line per cell). A stage or loop that raises prints nothing (the error says
what happened). Nothing is written to stdout except by :func:`write`, which callers use for
their result lines: stdout carries results.

When reporting is on:

* ``TFQUANT_PROGRESS=0`` (or ``false``/``off``/``no``) turns it off, whatever else says.
* Otherwise :func:`set_enabled` decides (``True``/``False``; ``None`` restores the default),
  and :func:`reporting` turns it on for a block (the CLI and the experiment scripts run inside
  it, so their logs get stage lines).
* The default, for library use: ``TFQUANT_PROGRESS=1`` (or ``true``/``on``/``yes``) turns it
  on; unset, bars when stderr is a terminal and silent otherwise (a library call in a test or
  a batch job prints nothing).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterable, Iterator, TypeVar

ENV_VAR = "TFQUANT_PROGRESS"
T = TypeVar("T")

_OFF = ("0", "false", "off", "no")
_ON = ("1", "true", "on", "yes")
_setting: bool | None = None
_local = threading.local()  # nesting depth of stages and loops, per thread


def set_enabled(enabled: bool | None) -> bool | None:
    """Turns progress reporting on (``True``), off (``False``) or back to the default (``None``).

    ``TFQUANT_PROGRESS=0`` still wins. Returns the previous setting, so a caller can restore it.
    """
    global _setting
    previous, _setting = _setting, enabled
    return previous


def _env_setting() -> bool | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    return None


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except Exception:  # a replaced stream without isatty, or a closed one
        return False


def _mode() -> str | None:
    """``"bar"``, ``"line"`` or ``None`` (silent) for sys.stderr as it is now."""
    env = _env_setting()
    setting = False if env is False else (_setting if _setting is not None else env)
    tty = _is_tty(sys.stderr)
    if setting is False:
        return None
    if setting is None:  # library default: bars on a terminal, silent elsewhere
        return "bar" if tty else None
    return "bar" if tty else "line"


def is_enabled() -> bool:
    """Whether :func:`progress` and :func:`stage` report anything right now."""
    return _mode() is not None


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    """Progress on for the block (unless ``TFQUANT_PROGRESS=0``); the previous setting after.

    Entry points (the CLI, experiment scripts) run inside it: bars on a terminal, one line per
    stage in a log.
    """
    previous = set_enabled(True)
    try:
        yield
    finally:
        set_enabled(previous)


def _depths() -> threading.local:
    if not hasattr(_local, "stages"):
        _local.stages = 0
        _local.loops = 0
    return _local


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.1f} min"


def _tqdm(**kwargs: object):  # -> tqdm.tqdm
    from tqdm import tqdm

    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):  # a stream without a real descriptor
        columns = -1
    # A pseudo terminal that reports no size (0 columns) would get an empty bar.
    width = {"ncols": 80} if columns == 0 else {"dynamic_ncols": True}
    return tqdm(file=sys.stderr, mininterval=0.2, **width, **kwargs)


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str, unit: str = "batch"
) -> Iterable[T]:
    """Iterates over ``iterable``, reporting progress on stderr (see the module docstring).

    Args:
      iterable: the work items (batches, cells of a sweep, ...).
      total: number of items, for the bar; default ``len(iterable)`` when it has one.
      desc: what the loop does, e.g. ``"evaluate 'm.tflite' (10000 examples)"``.
      unit: what one item is (``"batch"``, ``"cell"``, ...), for the bar and the line.

    Returns:
      ``iterable`` itself when reporting is off (no overhead), else an iterator over it.
    """
    mode = _mode()
    if mode is None:
        return iterable
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return _iterate(iterable, total, desc, unit, mode)


def _iterate(iterable: Iterable[T], total: int | None, desc: str, unit: str, mode: str) -> Iterator[T]:
    depth = _depths()
    outermost = depth.stages == 0 and depth.loops == 0
    depth.loops += 1
    try:
        if mode == "bar":
            with _tqdm(iterable=iterable, total=total, desc=desc, unit=unit, leave=outermost) as bar:
                yield from bar
            return
        start = time.perf_counter()
        n = 0
        for item in iterable:
            yield item
            n += 1
        if outermost:
            noun = unit if n == 1 else unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
            print(f"{desc}: {n} {noun} in {_seconds(time.perf_counter() - start)}", file=sys.stderr, flush=True)
    finally:
        depth.loops -= 1


@contextlib.contextmanager
def stage(desc: str) -> Iterator[None]:
    """Reports one stage of work: ``<desc> ... done in X s`` (see the module docstring)."""
    mode = _mode()
    if mode is None:
        yield
        return
    depth = _depths()
    outermost = depth.stages == 0 and depth.loops == 0
    depth.stages += 1
    start = time.perf_counter()
    bar = _tqdm(total=None, desc=f"{desc} ...", bar_format="{desc}", leave=outermost) if mode == "bar" else None
    ok = False
    try:
        yield
        ok = True
    finally:
        depth.stages -= 1
        line = f"{desc} ... done in {_seconds(time.perf_counter() - start)}"
        if bar is not None:
            if ok:
                bar.set_description_str(line, refresh=False)
            else:
                bar.leave = False
            bar.close()
        elif ok and outermost:
            print(line, file=sys.stderr, flush=True)


def write(line: str) -> None:
    """Prints a result line to **stdout**; while bars are drawn, without breaking them.

    For callers that log results as they go (the sweeps' one line per cell): a plain
    ``print`` would land in the middle of a bar on the same terminal.
    """
    depth = _depths()
    if depth.loops + depth.stages > 0 and _mode() == "bar":
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(line, flush=True)
