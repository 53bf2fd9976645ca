"""The experiment scripts' wrapper: one-line error and exit 2, else the table and the time."""

from __future__ import annotations

from pathlib import Path

from tfquant.errors import TfquantError
from tfquant.study.script import report_run


def test_error_is_one_line_and_exit_2(capsys) -> None:
    def run() -> Path:
        raise TfquantError("unknown zoo model 'lenet'; choose from: cnn")

    assert report_run("study", "results.md", run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown zoo model 'lenet'; choose from: cnn"]


def test_success_prints_the_table_and_the_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "results.md").write_text("| a | b |\n")

    assert report_run("study", "results.md", lambda: tmp_path) == 0
    out = capsys.readouterr().out
    assert "| a | b |" in out and "study finished in" in out and str(tmp_path) in out
