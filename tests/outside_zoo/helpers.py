"""Helpers for the outside-the-zoo tests: run the CLI in process and read what it did."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Run:
    """One in-process CLI run: exit status and what it printed."""

    argv: tuple[str, ...]
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.out + "\n" + self.err).splitlines() if line.strip()]

    def explain(self) -> str:
        return f"argv={list(self.argv)} rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def cli(*argv: str) -> Run:
    """Runs ``tfquant.cli.main(argv)`` and captures its stdout / stderr (argparse exits too)."""
    from tfquant.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse: unknown flag -> exit 2
            rc = int(e.code or 0)
    return Run(tuple(argv), rc, out.getvalue(), err.getvalue())


def one_line_error(run: Run) -> str:
    """Asserts the run failed with exit 2 and exactly one ``error: ...`` line on stderr."""
    assert run.rc == 2, run.explain()
    err = [line for line in run.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), run.explain()
    return err[0]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def tflite_of(run: Run) -> Path:
    """The .tflite a successful convert / qat run wrote (asserts it did)."""
    assert run.rc == 0, run.explain()
    path = Path(run.argv[-1])
    assert path.is_file(), run.explain()
    return path
