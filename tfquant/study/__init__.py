"""The generic resumable study runner: cells, provenance, typed records, atomic JSONL, claims.

An experiment (``tfquant/experiments/NAME.py``) is a :class:`Study`: its cells, how to measure
them, its claims (:class:`Claim`) and its markdown; :func:`run_study` runs or resumes it into
``<results_dir>/<run_name>/NAME/``.
"""

from tfquant.study import cluster
from tfquant.study.claims import (Aggregate, Claim, ClaimResult, Compare, Verdict, claims_markdown, claims_section,
                                  evaluate_claim, evaluate_claims, listed_claim, verdict_of, TIE_PT)
from tfquant.study.provenance import open_run, provenance
from tfquant.study.records import Record, RecordSet
from tfquant.study.runner import (RESULTS_JSONL, RESULTS_MD, ModelCell, Pending, Study, load_records, logged,
                                  run_study)
from tfquant.study.tables import (FAILED, Footnotes, accuracy_text, cell_table, grid_rows, header, image_pt,
                                  section,
                                  test_images, where_ran)

__all__ = [
    "Aggregate", "Claim", "ModelCell", "TIE_PT", "ClaimResult", "Compare", "FAILED", "Footnotes", "Pending", "RESULTS_JSONL",
    "RESULTS_MD", "Record", "RecordSet", "Study", "Verdict", "claims_markdown", "claims_section", "listed_claim", "evaluate_claim",
    "evaluate_claims", "accuracy_text", "cell_table", "cluster", "grid_rows", "header", "image_pt", "logged", "section", "test_images",
    "where_ran", "load_records", "open_run", "provenance", "run_study", "verdict_of",
]
