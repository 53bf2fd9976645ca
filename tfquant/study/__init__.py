"""The generic resumable study runner: cells, provenance, typed records, atomic JSONL, claims.

An experiment (``tfquant/experiments/NAME.py``) is a :class:`Study`: its cells, how to measure
them, its claims (:class:`Claim`) and its markdown; :func:`run_study` runs or resumes it into
``<results_dir>/<run_name>/NAME/``.
"""

from tfquant.study.claims import (Aggregate, Claim, ClaimResult, Compare, Verdict, claims_markdown, evaluate_claim,
                                  evaluate_claims, verdict_of)
from tfquant.study.provenance import open_run, provenance
from tfquant.study.records import Record, RecordSet
from tfquant.study.runner import RESULTS_JSONL, RESULTS_MD, Pending, Study, load_records, run_study
from tfquant.study.tables import FAILED, Footnotes, cell_table, grid_rows, where_ran

__all__ = [
    "Aggregate", "Claim", "ClaimResult", "Compare", "FAILED", "Footnotes", "Pending", "RESULTS_JSONL",
    "RESULTS_MD", "Record", "RecordSet", "Study", "Verdict", "claims_markdown", "evaluate_claim",
    "evaluate_claims", "cell_table", "grid_rows", "where_ran", "load_records", "open_run", "provenance", "run_study", "verdict_of",
]
