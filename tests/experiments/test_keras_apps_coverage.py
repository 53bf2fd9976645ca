"""keras_apps_coverage on the study runner: smoke run, resume, failed cells, committed records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.experiments import keras_apps_coverage as kac
from tfquant.io_utils import read_jsonl
from tfquant.study import RESULTS_JSONL, RESULTS_MD, RecordSet

COMMITTED = Path(__file__).resolve().parents[2] / "experiments" / "results" / "keras_apps_coverage"


def _quiet(_: str) -> None:
    pass


def test_smoke_run_resumes_and_lists_every_cell(tmp_path: Path) -> None:
    config = kac.KerasAppsCoverageConfig.of_size("smoke")
    records = kac.run_keras_apps_coverage(config, tmp_path, log=_quiet)
    cells = kac.KerasAppsCoverage(config, tmp_path).cells()
    assert {c.key for c in cells} == {r.key for r in records} == {("MobileNet", "fp32"), ("MobileNet", "int8")}
    for r in records:
        assert r.status == kac.OK and not r.failed and r.size == 32
        assert r.size_kib > 0 and 0.0 <= r.top1_agreement <= 1.0 and r.rel_max_error >= 0.0
    fp32 = records.get(("MobileNet", "fp32"))
    assert fp32.top1_agreement == 1.0 and fp32.rel_max_error < 1e-3
    md = (tmp_path / RESULTS_MD).read_text()
    assert md.splitlines()[0] == "| family | size | fp32 | int8 |"
    assert md.splitlines()[2].startswith("| MobileNet | 32 | ok ") and md.count(", agree ") == 2

    lines = (tmp_path / RESULTS_JSONL).read_text()
    kac.run_keras_apps_coverage(config, tmp_path, log=_quiet)  # resumed: nothing measured again
    assert (tmp_path / RESULTS_JSONL).read_text() == lines
    for d in read_jsonl(tmp_path / RESULTS_JSONL):
        assert kac.KerasAppsCoverageRecord.from_json(d).to_json() == d


def test_failed_cells_are_retried_only_with_retry_errors(tmp_path: Path, monkeypatch) -> None:
    def no_load(config, family):
        raise TfquantError(f"could not load {family}")

    monkeypatch.setattr(kac, "load_application", no_load)
    config = kac.KerasAppsCoverageConfig(families=("MobileNetV3Small",), modes=("fp16", "dynamic"))
    records = kac.run_keras_apps_coverage(config, tmp_path, log=_quiet)
    assert [(r.status, r.error, r.convert_seconds) for r in records] == [
        (kac.ERROR, "could not load MobileNetV3Small", 0.0)] * 2
    md = (tmp_path / RESULTS_MD).read_text()
    assert "| MobileNetV3Small | 32 | **error** (0 s): could not load MobileNetV3Small |" in md

    kac.run_keras_apps_coverage(config, tmp_path, log=_quiet)
    assert len(read_jsonl(tmp_path / RESULTS_JSONL)) == 2
    retry = kac.KerasAppsCoverageConfig(families=("MobileNetV3Small",), modes=("fp16", "dynamic"), retry_errors=True)
    kac.run_keras_apps_coverage(retry, tmp_path, log=_quiet)
    assert len(read_jsonl(tmp_path / RESULTS_JSONL)) == 4


@pytest.mark.parametrize("kw, match", [
    ({"families": ("LeNet",)}, "unknown family 'LeNet'; choose from: "),
    ({"modes": ("int4",)}, "unknown mode 'int4'; choose from: fp32, fp16"),
])
def test_unknown_family_or_mode_is_refused(kw, match) -> None:
    with pytest.raises(TfquantError, match=match):
        kac.KerasAppsCoverageConfig(**kw)


def test_an_interpreter_failure_is_a_one_line_error(monkeypatch) -> None:
    import numpy as np

    from tfquant import convert
    from tfquant.evaluation import accuracy

    def crash(*args, **kwargs):
        raise RuntimeError("Node number 3 (CONV_2D) failed\n  to prepare.")

    monkeypatch.setattr(convert, "convert", lambda model, recipe, calibration_data: b"tflite")
    monkeypatch.setattr(accuracy, "predict", crash)
    x = np.zeros((2, 4), np.float32)
    one_line = r"^LiteRT could not run the int8 model: Node number 3 \(CONV_2D\) failed to prepare\.$"
    with pytest.raises(TfquantError, match=one_line):
        kac.convert_and_compare(None, "int8", x, x, x)


def test_unknown_size_is_refused() -> None:
    with pytest.raises(TfquantError, match="unknown size 'tiny'; choose from: full, smoke"):
        kac.KerasAppsCoverageConfig.of_size("tiny")


def test_committed_records_round_trip_and_make_the_committed_table() -> None:
    lines = read_jsonl(COMMITTED / RESULTS_JSONL)
    assert lines
    records = [kac.KerasAppsCoverageRecord.from_json(d) for d in lines]
    for d, r in zip(lines, records):
        back = r.to_json()
        assert back.pop("schema_version") == 1
        assert back == d
    md = kac.results_markdown(RecordSet(records), kac.KerasAppsCoverageConfig())
    assert md == (COMMITTED / RESULTS_MD).read_text()
