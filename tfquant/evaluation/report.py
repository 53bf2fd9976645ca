"""Result tables: GitHub-flavoured markdown for results files, aligned text for terminals."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

from tfquant.errors import TfquantError

DEFAULT_FLOATFMT = ".4f"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _cell(value: Any, column: str, floatfmt: Mapping[str, str]) -> str:
    if value is None:
        return ""
    if _is_number(value):
        spec = floatfmt.get(column)
        if spec is None:
            if isinstance(value, numbers.Integral):
                return str(int(value))
            spec = DEFAULT_FLOATFMT
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            raise TfquantError(
                f"floatfmt[{column!r}] = {spec!r} cannot format {value!r}; use a format spec "
                "such as '.4f', '.2%' or ',d'"
            ) from None
    return " ".join(str(value).split())


def _check_columns(columns: Sequence[str]) -> None:
    if isinstance(columns, str) or not columns:
        raise TfquantError(f"columns must be a non-empty list of keys, got {columns!r}")


def _rows(
    records: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: Mapping[str, str]
) -> list[list[str]]:
    return [[_cell(r.get(c), c, floatfmt) for c in columns] for r in records]


def _numeric_columns(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> set[str]:
    numeric = set()
    for c in columns:
        values = [r.get(c) for r in records if r.get(c) is not None]
        if values and all(_is_number(v) for v in values):
            numeric.add(c)
    return numeric


def markdown_table(
    records: list[dict[str, Any]],
    columns: list[str],
    *,
    headers: dict[str, str] | None = None,
    floatfmt: dict[str, str] | None = None,
) -> str:
    """Formats ``records`` as a GitHub-flavoured markdown table, one row per record.

    Args:
      records: Rows as dicts; a missing key or ``None`` gives an empty cell.
      columns: Keys to show, in order.
      headers: Header text per key (default: the key itself).
      floatfmt: Format spec per key (e.g. ``{"accuracy": ".2%"}``) for numbers; floats
        default to ``.4f``, ints to ``str``.

    Returns:
      The table, ending with a newline. Numeric columns are right-aligned; ``|`` in text is
      escaped and line breaks become spaces.
    """
    _check_columns(columns)
    headers = headers or {}
    floatfmt = floatfmt or {}
    numeric = _numeric_columns(records, columns)

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| " + " | ".join(esc(" ".join(str(headers.get(c, c)).split())) for c in columns) + " |",
        "|" + "|".join("---:" if c in numeric else ":---" for c in columns) + "|",
    ]
    for row in _rows(records, columns, floatfmt):
        lines.append("| " + " | ".join(esc(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def text_table(
    records: list[dict[str, Any]],
    columns: list[str],
    *,
    headers: dict[str, str] | None = None,
    floatfmt: dict[str, str] | None = None,
) -> str:
    """Formats ``records`` as a plain table with aligned columns (for terminal output).

    Same arguments as :func:`markdown_table`; numeric columns are right-aligned.
    """
    _check_columns(columns)
    headers = headers or {}
    numeric = _numeric_columns(records, columns)
    head = [str(headers.get(c, c)) for c in columns]
    rows = _rows(records, columns, floatfmt or {})
    widths = [max(len(x) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if c in numeric else cell.ljust(w)
            for cell, w, c in zip(cells, widths, columns)
        ).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"
