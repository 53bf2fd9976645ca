"""qat_outside_zoo on the study runner: smoke run, resume, failed cells, claims, committed records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant.errors import TfquantError
from tfquant.experiments import qat_outside_zoo as qoz
from tfquant.io_utils import read_jsonl
from tfquant.study import RESULTS_JSONL, RESULTS_MD, RecordSet, Verdict

COMMITTED = Path(__file__).resolve().parents[2] / "experiments" / "results" / "qat_outside_zoo"


def _quiet(_: str) -> None:
    pass


def test_smoke_run_resumes_and_lists_every_cell(tmp_path: Path) -> None:
    config = qoz.QatOutsideZooConfig.of_size("smoke", epochs=1, float_epochs=1)
    records = qoz.run_qat_outside_zoo(config, tmp_path, log=_quiet)
    assert {r.key for r in records} == {("digits", "se_resnet", 4, "nvidia"), ("digits", "se_resnet", 4, "auto")}
    for r in records:
        assert not r.failed and 0.0 <= r.qat_tflite_acc <= 1.0 and r.steps > 0
        assert r.delta_points == pytest.approx(100 * (r.qat_tflite_acc - r.float_acc), abs=0.06)
    assert len({r.float_acc for r in records}) == 1  # one float model per (dataset, model)
    assert (tmp_path / "data" / "digits" / "se_resnet.keras").exists()
    md = (tmp_path / RESULTS_MD).read_text()
    assert md.startswith("QAT outside the zoo, --epochs 1, seed 0;")
    assert "| digits | se_resnet | 4 | auto |" in md and "| digits | se_resnet | 4 | nvidia |" in md
    assert "## Claims" in md and "4-bit QAT with `auto`" in md

    lines = (tmp_path / RESULTS_JSONL).read_text()
    qoz.run_qat_outside_zoo(config, tmp_path, log=_quiet)  # resumed: nothing measured again
    assert (tmp_path / RESULTS_JSONL).read_text() == lines
    for d in read_jsonl(tmp_path / RESULTS_JSONL):
        assert qoz.QatOutsideZooRecord.from_json(d).to_json() == d


def test_a_failed_cell_is_a_footnote_and_runs_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qoz, "prepare", lambda *a, **kw: {})

    def fails(files, *, bits, recipe, epochs, seed):
        raise TfquantError(f"{recipe} diverged")

    monkeypatch.setattr(qoz, "qat_cell", fails)
    config = qoz.QatOutsideZooConfig.of_size("smoke", recipes=("auto",))
    records = qoz.run_qat_outside_zoo(config, tmp_path, log=_quiet)
    assert [r.error for r in records] == ["auto diverged"]
    md = (tmp_path / RESULTS_MD).read_text()
    assert "| digits | se_resnet | 4 | auto |  | failed¹ |" in md
    assert "- digits / se_resnet / 4 bits / auto: auto diverged" in md
    assert "**not tested**" in md
    qoz.run_qat_outside_zoo(config, tmp_path, log=_quiet)
    assert len(read_jsonl(tmp_path / RESULTS_JSONL)) == 2


def _record(model: str, bits: int, recipe: str, acc: float, float_acc: float = 0.9) -> qoz.QatOutsideZooRecord:
    return qoz.QatOutsideZooRecord(dataset="digits", model=model, bits=bits, recipe=recipe,
                                   float_acc=float_acc, qat_tflite_acc=acc)


def test_claims_compare_schedules_and_float_per_model() -> None:
    records = RecordSet([
        _record("plain", 4, "auto", 0.896), _record("plain", 4, "nvidia", 0.88),
        _record("plain", 8, "auto", 0.90), _record("plain", 8, "nvidia", 0.90),
        _record("ds_block", 4, "auto", 0.88), _record("ds_block", 4, "nvidia", 0.89),
    ])
    verdicts = [r.verdict for r in qoz.claim_results(records)]
    assert verdicts == [Verdict.NOT_HELD, Verdict.NOT_HELD, Verdict.HELD]


@pytest.mark.parametrize("kw, match", [
    ({"datasets": ("cifar",)}, "unknown dataset 'cifar'; choose from"),
    ({"models": ("vgg",)}, "unknown model 'vgg'; choose from"),
    ({"recipes": ("adam",)}, "unknown schedule 'adam'; choose one of: auto, nvidia"),
])
def test_unknown_names_are_refused(kw, match) -> None:
    with pytest.raises(TfquantError, match=match):
        qoz.QatOutsideZooConfig(**kw)


def test_unknown_size_is_refused() -> None:
    with pytest.raises(TfquantError, match="unknown size 'tiny'; choose from: full, smoke"):
        qoz.QatOutsideZooConfig.of_size("tiny")


def test_shapes_dataset_has_six_balanced_classes_in_range() -> None:
    x_tr, y_tr, x_te, y_te = qoz.shapes(seed=0, size=24, n_train=12, n_test=6)
    assert x_tr.shape == (12, 24, 24, 3) and x_te.shape == (6, 24, 24, 3)
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == sorted(list(range(6)) * 3)
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_committed_records_round_trip_and_make_the_committed_table(seed: int) -> None:
    lines = read_jsonl(COMMITTED / f"seed{seed}" / RESULTS_JSONL)
    assert len(lines) == 24
    records = [qoz.QatOutsideZooRecord.from_json(d) for d in lines]
    for d, r in zip(lines, records):
        back = r.to_json()
        assert back.pop("schema_version") == 1
        assert back == d
    config = qoz.QatOutsideZooConfig(seed=seed)
    md = qoz.results_markdown(RecordSet(records), config, qoz.QatOutsideZoo(config, Path(".")).cells())
    table, claims = md.split("## Claims")
    assert table == (COMMITTED / f"seed{seed}" / RESULTS_MD).read_text()
    assert claims.count("- **held**") == 3
