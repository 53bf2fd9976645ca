"""The main job's flow: records, resume after interruption, failed cells, the table."""

from __future__ import annotations

import json

import pytest

from tfquant import TfquantError, models
from tfquant.experiments.ptq_zoo import PtqZooConfig, PtqZooRecord, run_ptq_zoo
from tfquant.io_utils import read_jsonl

REQUIRED = {
    "model", "variant", "runtime", "threads", "accuracy", "n_examples", "size_bytes",
    "latency_ms_median", "latency_ms_p90", "tflite_path",
}


@pytest.fixture
def untrained_zoo(monkeypatch):
    """Random-init cnn instead of the trained weights (flow mechanics only)."""
    real_build = models.build
    monkeypatch.setattr(models, "build", lambda name, **kw: real_build(name, weights=None))


def _config(**kw) -> PtqZooConfig:
    base = dict(
        models=("cnn",), variants=("fp32", "int8_per_channel"), num_calibration_examples=20,
        latency_warmup=1, latency_runs=3, limit=200,
    )
    base.update(kw)
    return PtqZooConfig(**base)


def test_records_resume_and_table(tmp_path, untrained_zoo) -> None:
    config = _config()
    records = [r.to_json() for r in run_ptq_zoo(config, tmp_path, log=lambda s: None)]
    tflite_records = [r for r in records if r["executed_in"] == "tflite"]
    # one record per model x variant x runtime, plus the Keras reference
    assert len(tflite_records) == 4
    assert {(r["variant"], r["runtime"]) for r in tflite_records} == {
        ("fp32", "xnnpack"), ("fp32", "builtin"), ("int8_per_channel", "xnnpack"), ("int8_per_channel", "builtin")
    }
    for r in tflite_records:
        assert REQUIRED <= set(r)
        assert r["n_examples"] == 200 and 0.0 <= r["accuracy"] <= 1.0
        assert r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_p90"]
    keras = [r for r in records if r["executed_in"] == "keras"]
    fp32_xnn = next(r for r in tflite_records if r["variant"] == "fp32" and r["runtime"] == "xnnpack")
    assert keras[0]["accuracy"] == pytest.approx(fp32_xnn["accuracy"], abs=0.005)
    assert fp32_xnn["delegated_ops"] == fp32_xnn["total_ops"] > 0
    builtin = next(r for r in tflite_records if r["runtime"] == "builtin")
    assert builtin["delegated_ops"] == 0
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["config"]["models"] == ["cnn"] and "versions" in config_json["provenance"][0]
    assert config_json["weights_sha256"]["cnn"] == models.trained_info("cnn")["weights_sha256"]
    table = (tmp_path / "results.md").read_text()
    assert "| cnn | int8_per_channel |" in table and "executed_in: tflite" in table

    # A second run resumes: nothing is measured again.
    lines_before = (tmp_path / "results.jsonl").read_text()
    run_ptq_zoo(config, tmp_path, log=lambda s: None)
    assert (tmp_path / "results.jsonl").read_text() == lines_before
    # Every line reads back as a typed record, equal to what the run returned.
    assert sorted(map(str, (PtqZooRecord.from_json(d) for d in read_jsonl(tmp_path / "results.jsonl")))) == sorted(
        map(str, (PtqZooRecord.from_json(d) for d in records)))

    # Lose one record (as if interrupted before it was written): only that cell re-runs.
    kept = [l for l in lines_before.splitlines() if not ('"int8_per_channel"' in l and '"builtin"' in l)]
    (tmp_path / "results.jsonl").write_text("\n".join(kept) + "\n")
    run_ptq_zoo(config, tmp_path, log=lambda s: None)
    after = read_jsonl(tmp_path / "results.jsonl")
    assert len(after) == len(kept) + 1
    assert after[-1]["variant"] == "int8_per_channel" and after[-1]["runtime"] == "builtin"
    assert after[-1]["convert_seconds"] is None  # the .tflite on disk was reused
    assert len(json.loads((tmp_path / "config.json").read_text())["provenance"]) == 3

    # A different configuration does not resume into the same folder.
    with pytest.raises(TfquantError, match="different config.*new --run_name"):
        run_ptq_zoo(_config(limit=100), tmp_path, log=lambda s: None)
    assert len(read_jsonl(tmp_path / "results.jsonl")) == len(after)


def test_a_variant_that_cannot_be_made_is_recorded_not_fatal(tmp_path, untrained_zoo, monkeypatch) -> None:
    from tfquant import convert

    real_convert = convert.convert

    def flaky(model, recipe, **kw):
        if recipe.mode.value == "int8":
            raise TfquantError("op FOO has no int8 kernel; leave it in float")
        return real_convert(model, recipe, **kw)

    monkeypatch.setattr(convert, "convert", flaky)
    records = [r.to_json() for r in run_ptq_zoo(_config(), tmp_path, log=lambda s: None)]
    failed = [r for r in records if "error" in r]
    assert {r["runtime"] for r in failed} == {"xnnpack", "builtin"}
    assert all("FOO" in r["error"] for r in failed)
    assert not (tmp_path / "models" / "cnn" / "int8_per_channel.tflite").exists()
    table = (tmp_path / "results.md").read_text()
    assert "failed¹" in table and "op FOO has no int8 kernel" in table
    assert all("convert_seconds" not in r for r in failed)  # as before: error records carry no timing
    # the fp32 cells still ran
    assert sum(1 for r in records if r.get("variant") == "fp32" and "accuracy" in r) == 2


def test_config_rejects_unknown_variant_and_empty_models() -> None:
    with pytest.raises(TfquantError, match="unknown variant 'int3'"):
        _config(variants=("int3",))
    with pytest.raises(TfquantError, match="no models"):
        _config(models=())
    with pytest.raises(TfquantError, match="unknown runtime"):
        _config(runtimes=("gpu",))
