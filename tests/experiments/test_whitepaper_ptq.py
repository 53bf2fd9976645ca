"""The whitepaper PTQ tables: every cell at smoke size, sim vs tflite, resume, claims logic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfquant import TfquantError
from tfquant.evaluation.weight_spread import weight_range_spread
from tfquant.experiments.whitepaper_ptq import (
    CELLS,
    FLOAT,
    RENAMED_CELLS,
    SPREAD,
    SpreadRecord,
    WhitepaperPtqConfig,
    WhitepaperPtqRecord,
    findings,
    results_markdown,
    run_whitepaper_ptq,
)
from tfquant.io_utils import read_jsonl
from tfquant.study import RecordSet, Verdict

ROOT = Path(__file__).resolve().parents[2]
SIM_VS_TFLITE_TOLERANCE = 0.02  # top-1, on the 300 smoke images


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The flow at smoke size (trained cnn, 300 test images, 100 calibration images)."""
    out = tmp_path_factory.mktemp("whitepaper_ptq")
    records = run_whitepaper_ptq(WhitepaperPtqConfig.of_size("smoke"), out, log=lambda s: None)
    return out, [r.to_json() for r in records]


def test_every_cell_is_present_and_says_where_it_ran(smoke_run) -> None:
    _, records = smoke_run
    cells = [r for r in records if r["cell"] != SPREAD]
    assert sorted(r["cell"] for r in cells) == sorted(CELLS)  # each exactly once
    for r in cells:
        assert "error" not in r, r
        assert r["model"] == "cnn" and r["n_examples"] == 300
        assert r["executed_in"] in {"tflite", "sim"}
        assert r["executed_in"] == CELLS[r["cell"]].executed_in
        assert 0.0 <= r["accuracy"] <= 1.0
        if r["executed_in"] == "tflite":
            assert Path(r["tflite_path"]).is_file() and r["recipe"]["mode"] == CELLS[r["cell"]].mode.value
        else:
            assert r["spec"] == CELLS[r["cell"]].spec.to_dict()
    by = {r["cell"]: r for r in cells}
    assert by["w8a8_per_tensor"]["recipe"]["weight_granularity"] == "per_tensor"
    # what the dynamic-range model kept float is recorded: the cnn's 3x3x1x16 stem (144 < 1024)
    dyn = by["w8_dynamic_range"]
    assert len(dyn["float_weight_tensors"]) == 1 and 0.99 < dyn["int8_weight_fraction"] < 1.0


def test_int8_simulation_agrees_with_the_interpreter(smoke_run) -> None:
    _, records = smoke_run
    acc = {r["cell"]: r["accuracy"] for r in records if r["cell"] != SPREAD}
    for cell in ("w8a8_per_channel", "w8a8_per_tensor"):
        assert abs(acc[cell] - acc[cell + "_sim"]) <= SIM_VS_TFLITE_TOLERANCE, cell


def test_spread_record_and_results_file(smoke_run) -> None:
    out, records = smoke_run
    spread = next(r for r in records if r["cell"] == SPREAD)
    assert spread["layers"] == 5 and spread["channels"] == 16 + 32 + 64 + 128 + 10
    assert 1.0 <= spread["median_ratio"] <= spread["max_ratio"]
    assert "executed_in" not in spread and "accuracy" not in spread
    md = (out / "results.md").read_text()
    for heading in ("## Table A", "## Table B", "## Table C", "## Table D",
                    "## Per-channel weight-range spread", "## What ran where",
                    "## Did the paper's findings hold?"):
        assert heading in md, heading
    assert "(tflite) |" in md and "(sim) |" in md
    config = json.loads((out / "config.json").read_text())
    assert set(config["cells"]) == set(CELLS) and config["config"]["limit"] == 300
    assert config["weights_sha256"]["cnn"] and "versions" in config["provenance"][0]


def test_resume_writes_nothing_new_and_other_configs_are_refused(smoke_run) -> None:
    out, _ = smoke_run
    before = (out / "results.jsonl").read_bytes()
    run_whitepaper_ptq(WhitepaperPtqConfig.of_size("smoke"), out, log=lambda s: None)
    assert (out / "results.jsonl").read_bytes() == before
    # every line reads back as its typed record kind
    lines = read_jsonl(out / "results.jsonl")
    kinds = [(SpreadRecord if d["cell"] == SPREAD else WhitepaperPtqRecord).from_json(d) for d in lines]
    assert [k.to_json() for k in kinds] == lines and sum(isinstance(k, SpreadRecord) for k in kinds) == 1
    assert len(json.loads((out / "config.json").read_text())["provenance"]) == 2
    with pytest.raises(TfquantError, match="different config.*new --run_name"):
        run_whitepaper_ptq(WhitepaperPtqConfig.of_size("smoke", limit=200), out, log=lambda s: None)
    assert (out / "results.jsonl").read_bytes() == before


# ------------------------------------------------------------------ pure logic (no TF run)


def test_weight_range_spread_closed_form() -> None:
    s = weight_range_spread({
        "a": np.array([1.0, 0.5, 0.01]),  # s = 100; 0.01 < 1/14 (zeroed at W4), > 1/254
        "b": np.array([2.0, 2.0]),  # s = 1
        "c": np.array([3.0]),  # one channel: skipped
        "d": np.array([0.0, 1.0, 0.003]),  # dead channel; s = 333.3; 0.003 < 1/254
    })
    assert s["per_layer"] == pytest.approx({"a": 100.0, "b": 1.0, "d": 1.0 / 0.003})
    assert s["layers"] == 3 and s["channels"] == 8 and s["dead_channels"] == 1
    assert s["median_ratio"] == pytest.approx(100.0)
    assert s["max_ratio_layer"] == "d"
    assert (s["zeroed_channels_w8"], s["zeroed_channels_w4"]) == (1, 2)
    with pytest.raises(TfquantError, match="two or more output channels"):
        weight_range_spread({"c": np.array([3.0])})


def _records(acc: dict[str, dict[str, float]], spreads: dict[str, float] | None = None) -> RecordSet:
    out = [WhitepaperPtqRecord(experiment="whitepaper_ptq", model=m, cell=c, table=CELLS[c].table,
                               accuracy=a, executed_in=CELLS[c].executed_in)
           for m, cells in acc.items() for c, a in cells.items()]
    for m, ratio in (spreads or {}).items():
        out.append(SpreadRecord(experiment="whitepaper_ptq", model=m, max_ratio=ratio, max_ratio_layer="x"))
    return RecordSet(out)


def _by_claim(records: RecordSet, models: tuple[str, ...], start: str):
    return next(f for f in findings(records, models) if f.claim.startswith(start))


def test_claims_follow_the_thresholds() -> None:
    models = ("mobilenet_v1", "resnet", "cnn")
    base = {FLOAT: 0.90, "w8_asym_per_tensor": 0.895, "w8_asym_per_channel": 0.899,
            "w4a8_asym_per_tensor": 0.50, "w4a8_asym_per_channel": 0.85}
    acc = {m: dict(base) for m in models}
    acc["mobilenet_v1"]["w8_asym_per_tensor"] = 0.70  # 20 pt: collapses, 8-bit claim fails
    acc["mobilenet_v1"]["w4a8_asym_per_tensor"] = 0.10
    acc["cnn"]["w4a8_asym_per_tensor"] = 0.85  # no collapse on the cnn
    records = _records(acc, {"mobilenet_v1": 300.0, "resnet": 20.0, "cnn": 3.0})

    near = _by_claim(records, models, "8-bit weight-only PTQ, asymmetric per-layer")
    assert near.verdict is Verdict.NOT_HELD and "fails on mobilenet_v1" in near.ours
    assert "mobilenet_v1 -20.00 pt" in near.ours and "resnet -0.50 pt" in near.ours
    assert _by_claim(records, models, "8-bit per-layer (per-tensor) weights collapse").verdict is Verdict.HELD
    assert _by_claim(records, models, "8-bit weight-only PTQ, asymmetric per-channel").verdict is Verdict.HELD
    w4 = _by_claim(records, models, "4-bit weights (8-bit activations) PTQ")
    assert w4.verdict is Verdict.NOT_HELD and "fails on cnn" in w4.ours
    spread = _by_claim(records, models, "per-layer loss follows the spread")
    assert spread.verdict is Verdict.HELD and "= 1.00" in spread.ours  # rank order is identical
    # missing cells: the claim is not tested rather than held
    assert _by_claim(records, models, "low-bit activations").verdict is Verdict.NOT_TESTED
    assert _by_claim(records, models, "(sanity").verdict is Verdict.NOT_TESTED

    acc["cnn"]["w4a8_asym_per_tensor"] = 0.79  # 11 pt: collapses too -> held everywhere
    assert _by_claim(_records(acc), models, "4-bit weights (8-bit activations) PTQ").verdict is Verdict.HELD
    # a tie within TIE_PT counts as "at least as good"; exactly at the threshold too
    acc["cnn"]["w8_asym_per_channel"] = acc["cnn"]["w8_asym_per_tensor"] - 0.001
    assert _by_claim(_records(acc), models, "per-channel >= per-layer (per-tensor) (8-bit").verdict is Verdict.HELD
    acc["cnn"]["w8_asym_per_channel"] = acc["cnn"]["w8_asym_per_tensor"] - 0.002
    assert _by_claim(_records(acc), models, "per-channel >= per-layer (per-tensor) (8-bit").verdict is Verdict.HELD
    acc["cnn"]["w8_asym_per_channel"] = acc["cnn"]["w8_asym_per_tensor"] - 0.003
    assert _by_claim(_records(acc), models, "per-channel >= per-layer (per-tensor) (8-bit").verdict is Verdict.NOT_HELD


def test_results_markdown_lists_every_cell_and_marks_failed_ones_with_their_reason() -> None:
    config = WhitepaperPtqConfig(models=("cnn",))
    records = list(_records({"cnn": {FLOAT: 0.9, "w8a8_per_channel_sim": 0.89}}))
    records.append(WhitepaperPtqRecord(experiment="whitepaper_ptq", model="cnn", cell="w8a8_per_channel",
                                       table="B", executed_in="tflite", error="the converter said no"))
    md = results_markdown(RecordSet(records), config)
    assert "| cnn | 0.9000 (tflite) | failed¹ | 0.8900 (sim) |" in md
    assert "- cnn / w8a8_per_channel: the converter said no" in md
    for name in CELLS:  # every declared cell is listed (in "What ran where")
        assert f"`{name}`" in md, name


def test_renamed_cells_map_the_paper_per_layer_to_per_tensor() -> None:
    assert set(RENAMED_CELLS.values()) <= set(CELLS)
    assert not set(RENAMED_CELLS) & set(CELLS)
    for new in RENAMED_CELLS.values():
        cell = CELLS[new]
        granularity = cell.weight_granularity if cell.spec is None else cell.spec.weight_granularity
        assert granularity.value == "per_tensor", new


@pytest.mark.parametrize("kwargs, match", [
    (dict(models=()), "no models"),
    (dict(models=("lenet",)), "unknown zoo model.*lenet"),
    (dict(models=("cnn",), workers=0), "workers must be a positive integer"),
    (dict(models=("cnn",), limit=0), "limit must be a positive integer"),
    (dict(models=("cnn",), runtime="delegate"), "xnnpack or builtin"),
])
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        WhitepaperPtqConfig(**kwargs)


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(TfquantError, match="unknown size 'tiny'; choose from: smoke, short"):
        WhitepaperPtqConfig.of_size("tiny")


@pytest.mark.parametrize("args, message", [
    (["--smoke", "--short"], "error: --smoke and --short are two sizes"),
    (["--models", "lenet"], "error: unknown zoo model(s) ['lenet']"),
])
def test_script_reports_one_line_and_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "experiments/whitepaper_ptq.py", "--results_dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not any(tmp_path.iterdir())
