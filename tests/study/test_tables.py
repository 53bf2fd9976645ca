"""Grids of cells and failed-cell footnotes."""

from tfquant.study import FAILED, Footnotes, grid_rows


def test_grid_rows_give_every_row_and_column_a_slot():
    rows = grid_rows(["cnn", "vit"], ["a", "b"], lambda r, c: None if c == "b" else f"{r}-{c}")
    assert rows == [{"model": "cnn", "a": "cnn-a", "b": None}, {"model": "vit", "a": "vit-a", "b": None}]


def test_footnotes_collect_each_reason_once():
    notes = Footnotes()
    assert notes.lines() == []
    assert notes.failed("cnn / int16x8", "no kernel") == FAILED
    notes.failed("cnn / int16x8", "no kernel")
    assert notes.lines()[-1] == "- cnn / int16x8: no kernel" and len(notes.lines()) == 4


def test_cell_table_marks_paper_rows_and_where_ran_lists_cells_by_backend():
    import types

    from tfquant.study import cell_table, where_ran

    lines = cell_table(title="Table A", note="note", rows=["cnn"], columns=["float", "int8"],
                       headers={"model": "model", "float": "float", "int8": "int8"},
                       text=lambda r, c: f"{r}:{c}", paper_rows=[{"model": "paper: X", "int8": "0.7"}])
    assert lines[:4] == ["", "## Table A", "", "note"]
    assert "| cnn | cnn:float | cnn:int8 |" in lines[-1] and "| paper: X |  | 0.7 (paper) |" in lines[-1]
    cells = {"a": types.SimpleNamespace(executed_in="tflite"), "b": types.SimpleNamespace(executed_in="sim")}
    assert where_ran(cells, {"tflite": ("LiteRT", "tail."), "sim": ("TF", "")}) == [
        "- **tflite** (LiteRT): `a`. tail.", "- **sim** (TF): `b`."]


def test_accuracy_text_reads_records_and_their_json_alike():
    import dataclasses

    from tfquant.study import Record, accuracy_text

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Rec(Record):
        accuracy: float | None = None
        executed_in: str | None = None

    notes = Footnotes()
    ok = Rec(accuracy=0.91254, executed_in="sim")
    assert accuracy_text(ok, notes, "x") == accuracy_text(ok.to_json(), notes, "x") == "0.9125 (sim)"
    assert accuracy_text(None, notes, "x") == ""
    bad = Rec(error="no kernel")
    assert accuracy_text(bad, notes, "cnn / a") == accuracy_text(bad.to_json(), notes, "cnn / a") == FAILED
    assert notes.lines()[-1] == "- cnn / a: no kernel" and len(notes.lines()) == 4


def test_test_images_image_pt_header_and_section():
    from tfquant.study import header, image_pt, section, test_images

    assert test_images(None) == "the whole test split" and test_images(2000) == "the first 2000 test images"
    assert image_pt(None) == "0.01" and image_pt(2000) == "0.05"
    assert header("T", "intro") == ["# T", "", "intro"]
    assert section("S") == ["", "## S", ""] and section("S", "a", "b") == ["", "## S", "", "a", "", "b", ""]
