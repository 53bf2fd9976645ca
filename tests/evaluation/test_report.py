"""markdown_table / text_table formatting."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.errors import TfquantError
from tfquant.evaluation import markdown_table, text_table

RECORDS = [
    {"model": "cnn", "variant": "int8", "accuracy": 0.91234, "size": 16448, "note": None},
    {"model": "vit|s", "variant": "fp32", "accuracy": np.float32(0.5), "size": np.int64(56332)},
]


def test_markdown_table_exact() -> None:
    text = markdown_table(
        RECORDS,
        ["model", "variant", "accuracy", "size", "note"],
        headers={"accuracy": "top-1", "size": "bytes"},
        floatfmt={"accuracy": ".2%", "size": ",d"},
    )
    assert text == (
        "| model | variant | top-1 | bytes | note |\n"
        "|:---|:---|---:|---:|:---|\n"
        "| cnn | int8 | 91.23% | 16,448 |  |\n"
        "| vit\\|s | fp32 | 50.00% | 56,332 |  |\n"
    )


def test_markdown_defaults() -> None:
    text = markdown_table([{"a": 1.0 / 3, "b": 7, "c": "x\ny"}], ["a", "b", "c"])
    assert text.splitlines()[2] == "| 0.3333 | 7 | x y |"
    assert markdown_table([], ["a"]) == "| a |\n|:---|\n"


def test_bad_arguments() -> None:
    with pytest.raises(TfquantError, match="columns must be a non-empty list"):
        markdown_table(RECORDS, [])
    with pytest.raises(TfquantError, match="columns must be a non-empty list"):
        markdown_table(RECORDS, "model")  # type: ignore[arg-type]
    with pytest.raises(TfquantError, match=r"floatfmt\['accuracy'\] = 'q'"):
        markdown_table(RECORDS, ["accuracy"], floatfmt={"accuracy": "q"})


def test_text_table_aligns_columns() -> None:
    text = text_table(RECORDS, ["model", "size"], headers={"size": "bytes"})
    assert text.splitlines() == [
        "model  bytes",
        "-----  -----",
        "cnn    16448",
        "vit|s  56332",
    ]
