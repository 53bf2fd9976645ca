"""Typed records: JSON round trip, unknown keys rejected, versions, one record per key."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from tfquant.errors import TfquantError
from tfquant.study import Record, RecordSet


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rec(Record):
    always_written: ClassVar[frozenset[str]] = frozenset({"seconds"})
    model: str
    cell: str
    accuracy: float | None = None
    seconds: float | None = None
    recipe: dict | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


def test_round_trip_keeps_field_names_and_values():
    r = _Rec(model="cnn", cell="int8", accuracy=0.91, recipe={"mode": "int8"})
    d = r.to_json()
    assert d == {"model": "cnn", "cell": "int8", "accuracy": 0.91, "seconds": None,
                 "recipe": {"mode": "int8"}, "schema_version": 1}
    assert _Rec.from_json(d) == r


def test_none_fields_are_left_out_unless_always_written_by_a_finished_record():
    assert _Rec(model="cnn", cell="int8").to_json()["seconds"] is None
    failed = _Rec(model="cnn", cell="int8", error="boom").to_json()
    assert "accuracy" not in failed and "seconds" not in failed and failed["error"] == "boom"


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(TfquantError, match="accuracyy"):
        _Rec.from_json({"model": "cnn", "cell": "int8", "accuracyy": 0.5})


def test_missing_required_key_is_rejected():
    with pytest.raises(TfquantError, match="cell"):
        _Rec.from_json({"model": "cnn"})


def test_record_without_version_reads_as_version_1_and_newer_is_rejected():
    assert _Rec.from_json({"model": "cnn", "cell": "x"}).key == ("cnn", "x")
    with pytest.raises(TfquantError, match="schema_version 2"):
        _Rec.from_json({"model": "cnn", "cell": "x", "schema_version": 2})


def test_record_set_keeps_the_finished_record_over_a_failure_and_the_last_of_equals():
    failed = _Rec(model="cnn", cell="a", error="e")
    first = _Rec(model="cnn", cell="a", accuracy=0.5)
    second = _Rec(model="cnn", cell="a", accuracy=0.6)
    assert RecordSet([failed, first]).ok(("cnn", "a")) == first
    assert RecordSet([first, failed]).ok(("cnn", "a")) == first
    assert RecordSet([first, second]).ok(("cnn", "a")) == second
    only_failed = RecordSet([failed])
    assert only_failed.ok(("cnn", "a")) is None and only_failed.get(("cnn", "a")) == failed
    assert only_failed.done_keys() == set()


def test_values_are_keyed_by_group_and_cell_and_skip_failures():
    rs = RecordSet([_Rec(model="cnn", cell="a", accuracy=0.5), _Rec(model="cnn", cell="b", error="e")])
    assert rs.values("accuracy") == {("cnn", "a"): 0.5}
