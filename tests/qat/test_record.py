"""QatRecord (the .qat.json of every QAT .tflite) and the named fine-tuning schedules."""

from __future__ import annotations

import json

import pytest

from tfquant import qat
from tfquant.errors import TfquantError
from tfquant.qat.original import OriginalTraining
from tfquant.qat.pipeline import LOW_BIT_LR_FRACTION, make_schedule
from tfquant.qat.record import QAT_RECORD_VERSION, QatRecord

ORIGINAL = OriginalTraining(learning_rate=2e-3, batch_size=64, source="given")


def _record(**changes: object) -> QatRecord:
    schedule = qat.nvidia_schedule(ORIGINAL)
    fields = dict(weight_bits=4, weight_granularity="per_channel", epochs=2, seed=0, train_examples=900,
                  num_calibration_examples=100, finetune_recipe_choice="nvidia",
                  finetune_recipe=schedule.to_dict(), train_seconds=1.5, finetune={"steps": 30},
                  warnings=("warning: far below float",))
    return QatRecord(**{**fields, **changes})


def test_round_trip_through_the_qat_json_text() -> None:
    record = _record(fidelity={"agreement": 0.99}, float_accuracy=0.9, qat_accuracy=0.89)
    data = json.loads(record.to_json())
    assert data["version"] == QAT_RECORD_VERSION and data["finetune_recipe"]["name"] == "nvidia"
    assert data["warnings"] == ["warning: far below float"] and data["bn_fold"] == "tfmot"
    assert QatRecord.from_dict(data) == record


def test_no_fidelity_key_without_a_comparison_but_every_other_field_is_written() -> None:
    data = _record().to_dict()
    assert "fidelity" not in data
    assert data["eval_data"] is None and data["float_accuracy"] is None  # null, not missing
    assert QatRecord.from_dict(data).fidelity is None


@pytest.mark.parametrize("change, match", [
    ({"recipe": {}}, r"unknown .qat.json key\(s\) \['recipe'\]"),
    ({"version": 2}, "version 2 is not supported .*re-run qat"),
])
def test_unknown_keys_and_newer_versions_are_refused(change: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        QatRecord.from_dict({**_record().to_dict(), **change})


def test_missing_required_fields_and_non_objects_are_refused() -> None:
    data = _record().to_dict()
    del data["epochs"]
    with pytest.raises(TfquantError, match=".qat.json has no 'epochs'"):
        QatRecord.from_dict(data)
    with pytest.raises(TfquantError, match="must be an object .*got list"):
        QatRecord.from_dict([])


def test_named_schedules() -> None:
    auto4, reestimate = make_schedule("auto", ORIGINAL, weight_bits=4)
    assert reestimate and auto4.name == "auto"
    assert auto4.learning_rate == pytest.approx(LOW_BIT_LR_FRACTION * ORIGINAL.learning_rate)
    auto8, _ = make_schedule(qat.ScheduleName.AUTO, ORIGINAL, weight_bits=8)
    assert auto8.learning_rate == pytest.approx(0.01 * ORIGINAL.learning_rate)  # NVIDIA's 1%
    nvidia, reestimate = make_schedule("nvidia", ORIGINAL, weight_bits=4)
    assert not reestimate and nvidia == qat.nvidia_schedule(ORIGINAL)
    paper, _ = make_schedule("whitepaper", ORIGINAL, weight_bits=8)
    assert paper.optimizer is qat.Optimizer.SGD and not paper.bn_correction
    assert paper.batch_size == ORIGINAL.batch_size
    with pytest.raises(TfquantError, match="unknown fine-tuning schedule 'fast'; choose one of: auto, nvidia"):
        make_schedule("fast", ORIGINAL, weight_bits=8)
    assert qat.FINETUNE_SCHEDULES == tuple(s.value for s in qat.ScheduleName)


@pytest.mark.parametrize("fold, correction", [("naive", True), ("corrected", False)])
def test_train_qat_refuses_a_fold_its_schedule_contradicts(fold: str, correction: bool) -> None:
    schedule = qat.whitepaper_schedule(ORIGINAL, bn_correction=correction)
    with pytest.raises(TfquantError, match=f"bn_fold '{fold}' needs a schedule with bn_correction={not correction}"):
        qat.train_qat(None, [], [], [], schedule=schedule, epochs=1, bn_fold=fold)
    with pytest.raises(TfquantError, match="unknown BN fold 'folded'"):
        qat.train_qat(None, [], [], [], schedule=schedule, epochs=1, bn_fold="folded")
