"""Markdown generated from cell lists: grids and titled tables of cells, what ran where, footnotes."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

FAILED = "failed¹"
FULL_TEST_SPLIT = 10_000
"""Test images of the zoo's dataset (Fashion-MNIST), what ``limit=None`` evaluates."""


def test_images(limit: int | None) -> str:
    """``the whole test split`` or ``the first N test images``: what a run evaluated on."""
    return "the whole test split" if limit is None else f"the first {limit} test images"


def image_pt(limit: int | None) -> str:
    """How many accuracy points one test image is (``0.05`` for 2000 images)."""
    return f"{100.0 / (limit or FULL_TEST_SPLIT):.2f}"


def header(title: str, intro: str) -> list[str]:
    """The top of a results.md: ``# title``, a blank line, the ``intro`` paragraph."""
    return [f"# {title}", "", intro]


def section(title: str, *paragraphs: str) -> list[str]:
    """Markdown lines of a ``## title`` section: blank, heading, blank, then each paragraph and a blank."""
    lines = ["", f"## {title}", ""]
    for p in paragraphs:
        lines += [p, ""]
    return lines


class Footnotes:
    """Collects why cells failed; the tables show ``failed¹`` and the reasons follow them."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def failed(self, what: str, error: str) -> str:
        """Notes ``- what: error`` (once) and returns the cell text ``failed¹``."""
        line = f"- {what}: {error}"
        if line not in self._lines:
            self._lines.append(line)
        return FAILED

    def lines(self) -> list[str]:
        """The footnote block (empty when nothing failed)."""
        if not self._lines:
            return []
        return ["", "¹ Not produced or not runnable (the reason, as tfquant reported it):", ""] + self._lines


def accuracy_text(r: Any, notes: Footnotes, what: str) -> str:
    """A cell's text: ``0.9125 (tflite)`` for a finished record, ``failed¹`` (its reason
    noted as ``what``) for a failed one, "" for none.

    ``r`` is a :class:`~tfquant.study.Record` or its JSON form (a mapping).
    """
    if r is None:
        return ""
    if isinstance(r, Mapping):
        error, accuracy, executed_in = r.get("error"), r.get("accuracy"), r.get("executed_in")
    else:
        error, accuracy, executed_in = r.error, r.accuracy, r.executed_in
    if error is not None:
        return notes.failed(what, error)
    return f"{accuracy:.4f} ({executed_in})"


def grid_rows(
    rows: Sequence[str],
    columns: Sequence[str],
    text: Callable[[str, str], str | None],
    *,
    row_field: str = "model",
) -> list[dict[str, Any]]:
    """Rows for :func:`tfquant.evaluation.markdown_table`: one per row name, one key per column.

    ``text(row, column)`` gives a cell's text (None: left empty). Every (row, column) of the
    declared lists gets a slot, so a table built from the cell list shows every cell.
    """
    out = []
    for row in rows:
        d: dict[str, Any] = {row_field: row}
        for col in columns:
            d[col] = text(row, col)
        out.append(d)
    return out


def cell_table(
    *,
    title: str,
    note: str,
    rows: Sequence[str],
    columns: Sequence[str],
    headers: Mapping[str, str],
    text: Callable[[str, str], str | None],
    paper_rows: Sequence[Mapping[str, str]] = (),
    row_field: str = "model",
) -> list[str]:
    """A titled markdown table of cells: one row per group, one column per declared cell.

    Args:
      title, note: The ``## title`` heading and the paragraph under it.
      rows: Row names (usually models); columns: cell (or extra column) names, in order.
      headers: Column name -> heading (``row_field`` included).
      text: ``text(row, column)`` -> the cell's text (None: empty).
      paper_rows: Reference rows (a paper's numbers) appended after ours; each value except
        the row name is marked ``(paper)``.

    Returns:
      Markdown lines (blank line, heading, blank, note, blank, table).
    """
    from tfquant.evaluation.report import markdown_table

    table = grid_rows(rows, columns, text, row_field=row_field)
    for paper in paper_rows:
        table.append({k: v if k == row_field else f"{v} (paper)" for k, v in paper.items()})
    return ["", f"## {title}", "", note, "",
            markdown_table(table, [row_field, *columns], headers=dict(headers)).rstrip("\n")]


def where_ran(cells: Mapping[str, Any], backends: Mapping[str, tuple[str, str]]) -> list[str]:
    """"What ran where" bullets: per ``executed_in``, the cells that ran there.

    Args:
      cells: Cell name -> spec with an ``executed_in`` attribute, in table order.
      backends: ``executed_in`` -> (what it is, what to add after the list of cells).
    """
    lines = []
    for backend, (what, tail) in backends.items():
        names = ", ".join(f"`{n}`" for n, c in cells.items() if c.executed_in == backend)
        lines.append(f"- **{backend}** ({what}): {names}. {tail}".rstrip())
    return lines
