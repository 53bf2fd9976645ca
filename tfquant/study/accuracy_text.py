"""The text of an accuracy cell in a study's markdown tables (helper "qatexp"; may move to tables.py)."""

from __future__ import annotations

from typing import Any, Mapping

from tfquant.study.tables import Footnotes


def accuracy_text(r: Mapping[str, Any] | None, notes: Footnotes, what: str) -> str:
    """``0.9125 (tflite)`` for a finished record (JSON form), ``failed¹`` (its reason noted as
    ``what``) for a failed one, "" for none."""
    if r is None:
        return ""
    if "error" in r:
        return notes.failed(what, r["error"])
    return f"{r['accuracy']:.4f} ({r['executed_in']})"
