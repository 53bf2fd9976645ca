"""The study runner: resume without recomputing or duplicating, markdown from every cell."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

from tfquant.errors import TfquantError
from tfquant.io_utils import read_jsonl
from tfquant.study import RecordSet, Study, run_study
from tfquant.study.runner import RESULTS_JSONL, RESULTS_MD, Pending
from tests.study._toy import ToyCell, ToyRecord


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rec(ToyRecord):
    accuracy: float | None = None


class _Interrupted(Exception):
    pass


class _Toy(Study[ToyCell, _Rec]):
    name = "toy"
    record_type = _Rec

    def __init__(self, *, stop_after: int | None = None, fail: Sequence[str] = (), repeat: bool = False,
                 models: tuple[str, ...] = ("m1", "m2")) -> None:
        self.models, self.stop_after, self.fail, self.repeat = models, stop_after, set(fail), repeat
        self.measured: list[tuple[str, str]] = []

    def fingerprint(self) -> Mapping[str, Any]:
        return {"config": {"models": list(self.models)}}

    def cells(self) -> Sequence[ToyCell]:
        return [ToyCell(model=m, cell=c) for m in self.models for c in ("float", "int8")]

    def measure(self, todo: Sequence[ToyCell], log: Callable[[str], None]) -> Iterator[_Rec]:
        for c in todo:
            if self.stop_after is not None and len(self.measured) == self.stop_after:
                raise _Interrupted  # a crash in the middle of a cell: nothing written for it
            self.measured.append(c.key)
            if c.cell in self.fail:
                yield _Rec(model=c.model, cell=c.cell, error="no kernel")
                continue
            rec = _Rec(model=c.model, cell=c.cell, accuracy=0.5 + 0.1 * len(self.measured))
            yield rec
            if self.repeat:
                yield rec  # e.g. two batches sharing a model: the runner keeps one

    def markdown(self, records: RecordSet) -> str:
        return "".join(f"{c.model} {c.cell} {'done' if records.ok(c.key) else '-'}\n" for c in self.cells())


def test_resume_after_interruption_measures_only_the_rest_and_never_duplicates(tmp_path):
    with pytest.raises(_Interrupted):
        run_study(_Toy(stop_after=3), tmp_path, log=lambda s: None)
    assert len(read_jsonl(tmp_path / RESULTS_JSONL)) == 3
    resumed = _Toy()
    records = run_study(resumed, tmp_path, log=lambda s: None)
    assert resumed.measured == [("m2", "int8")]
    lines = read_jsonl(tmp_path / RESULTS_JSONL)
    assert len(lines) == 4 and len({(d["model"], d["cell"]) for d in lines}) == 4
    assert len(records) == 4
    again = _Toy()
    run_study(again, tmp_path, log=lambda s: None)
    assert again.measured == [] and len(read_jsonl(tmp_path / RESULTS_JSONL)) == 4


def test_a_record_yielded_twice_is_written_once(tmp_path):
    run_study(_Toy(repeat=True), tmp_path, log=lambda s: None)
    assert len(read_jsonl(tmp_path / RESULTS_JSONL)) == 4


def test_failed_cells_are_retried_and_the_success_wins(tmp_path):
    first = run_study(_Toy(fail=("int8",)), tmp_path, log=lambda s: None)
    assert first.ok(("m1", "int8")) is None and first.get(("m1", "int8")).error == "no kernel"
    retry = _Toy()
    records = run_study(retry, tmp_path, log=lambda s: None)
    assert retry.measured == [("m1", "int8"), ("m2", "int8")]
    assert records.ok(("m1", "int8")) is not None


def test_markdown_lists_every_cell_and_config_is_written(tmp_path):
    run_study(_Toy(), tmp_path, log=lambda s: None)
    md = (tmp_path / RESULTS_MD).read_text()
    for c in _Toy().cells():
        assert f"{c.model} {c.cell} done" in md
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"] == {"models": ["m1", "m2"]} and len(config["provenance"]) == 1


def test_a_folder_of_another_config_is_refused(tmp_path):
    run_study(_Toy(), tmp_path, log=lambda s: None)
    with pytest.raises(TfquantError, match="different config"):
        run_study(_Toy(models=("m3",)), tmp_path, log=lambda s: None)


def test_a_folder_can_be_extended_with_more_models_and_only_their_cells_run(tmp_path):
    run_study(_Toy(models=("m1",)), tmp_path, log=lambda s: None)
    before = read_jsonl(tmp_path / RESULTS_JSONL)
    grown = _Toy(models=("m1", "m2", "m3"))
    records = run_study(grown, tmp_path, log=lambda s: None)
    assert grown.measured == [("m2", "float"), ("m2", "int8"), ("m3", "float"), ("m3", "int8")]
    assert read_jsonl(tmp_path / RESULTS_JSONL)[:len(before)] == before and len(records) == 6
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"] == {"models": ["m1", "m2", "m3"]} and len(config["provenance"]) == 2
    # the grown folder is now the m1, m2, m3 run: fewer models or another order are refused
    for models in (("m1", "m2"), ("m2", "m1", "m3")):
        with pytest.raises(TfquantError, match="different config"):
            run_study(_Toy(models=models), tmp_path, log=lambda s: None)


@pytest.mark.parametrize("new, ok", [
    ({"config": {"models": ["a", "b"], "seed": 0}, "weights_sha256": {"a": "x", "b": "y"}}, True),
    ({"config": {"models": ["a"], "seed": 0}, "weights_sha256": {"a": "x"}}, False),  # nothing added
    ({"config": {"models": ["b", "a"], "seed": 0}, "weights_sha256": {"a": "x", "b": "y"}}, False),  # reordered
    ({"config": {"models": ["a", "b"], "seed": 1}, "weights_sha256": {"a": "x", "b": "y"}}, False),  # seed changed
    ({"config": {"models": ["a", "b"], "seed": 0}, "weights_sha256": {"a": "z", "b": "y"}}, False),  # a retrained
    ({"config": {"models": ["a", "b"], "seed": 0}, "weights_sha256": {"a": "x", "b": "y"}, "cells": {}}, False),
])
def test_adds_models_accepts_only_more_models_with_everything_else_equal(new, ok):
    from tfquant.study.provenance import adds_models

    previous = {"config": {"models": ["a"], "seed": 0}, "weights_sha256": {"a": "x"}, "provenance": []}
    assert adds_models(previous, new) is ok


def test_a_record_for_a_cell_not_to_do_is_a_programming_error(tmp_path):
    class Stray(_Toy):
        def measure(self, todo, log):
            yield _Rec(model="other", cell="x", accuracy=1.0)

    with pytest.raises(AssertionError, match="other"):
        run_study(Stray(), tmp_path, log=lambda s: None)


def test_pending_yields_finished_futures_and_maps_errors():
    import concurrent.futures

    ok, bad, waiting = (concurrent.futures.Future() for _ in range(3))
    ok.set_result(0.9)
    bad.set_exception(TfquantError("broken"))
    pending: Pending[_Rec] = Pending()
    for name, fut in (("ok", ok), ("bad", bad), ("waiting", waiting)):
        pending.add(fut, done=lambda acc, n=name: _Rec(model=n, cell="c", accuracy=acc),
                    failed=lambda e, n=name: _Rec(model=n, cell="c", error=str(e)))
    got = list(pending.ready())
    assert [(r.model, r.accuracy, r.error) for r in got] == [("ok", 0.9, None), ("bad", None, "broken")]
    assert len(pending) == 1
    waiting.set_result(0.5)
    assert [r.model for r in pending.ready(block=True)] == ["waiting"] and len(pending) == 0


def test_run_study_tells_the_study_its_folder_and_logged_logs_each_record(tmp_path):
    from tfquant.study import ModelCell, logged

    study = _Toy(models=("m1",))
    run_study(study, tmp_path, log=lambda s: None)
    assert study.out_dir == tmp_path and study.models_dir == tmp_path / "models"
    lines: list[str] = []
    recs = [_Rec(model="m", cell="a"), _Rec(model="m", cell="b")]
    assert list(logged(iter(recs), lines.append, lambda r: r.cell)) == recs and lines == ["a", "b"]
    assert ModelCell("cnn", "float").key == ("cnn", "float") == ModelCell(model="cnn", cell="float").key
