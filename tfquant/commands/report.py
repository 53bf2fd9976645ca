"""``python -m tfquant report RUN_DIR``: writes RUN_DIR/report.html (see :mod:`tfquant.report`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``report`` subcommand."""
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a run folder: tables, Pareto plots, environment, recipes",
    )
    p.add_argument("run_dir", help="a run folder, e.g. results/default")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from tfquant.report import PARETO_DIR, build_report

    out = build_report(args.run_dir)
    pareto = out.parent / PARETO_DIR
    # A folder with no interpreter-measured variants gets no plots: do not point at them.
    where = f" (Pareto plots in {pareto}/)" if pareto.is_dir() and any(pareto.glob("*.png")) else ""
    print(f"report: {out}{where}")
    return 0
