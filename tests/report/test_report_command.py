"""``tfquant report`` on a folder with nothing measured in the interpreter: no Pareto plots,
and the printed line does not point at a folder that was never written (found by the sweep)."""

from __future__ import annotations

from pathlib import Path

from tests.outside_zoo.helpers import cli


def test_report_without_measured_variants_does_not_claim_plots(tmp_path: Path) -> None:
    (tmp_path / "auto.steps.md").write_text("# autoquant\n\n| step | top-1 |\n|---|---|\n| 1 | 0.5 |\n")
    run = cli("report", str(tmp_path))
    assert run.rc == 0, run.explain()
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "pareto").exists()
    assert "Pareto plots" not in run.out and str(tmp_path / "report.html") in run.out
