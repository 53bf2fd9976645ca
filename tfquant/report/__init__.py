"""The run report: one self-contained ``report.html`` per run folder (tables, plots, environment,
recipes) and the Pareto plots as PNG files (see :mod:`tfquant.report.build`)."""

from tfquant.report.build import PARETO_DIR, REPORT_HTML, build_report
from tfquant.report.plots import Point, pareto_front

__all__ = ["PARETO_DIR", "Point", "REPORT_HTML", "build_report", "pareto_front"]
