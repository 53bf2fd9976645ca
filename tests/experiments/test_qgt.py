"""The QGT study at smoke size: records, exact sizes, resume, repeatability, STE, findings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfquant import TfquantError
from tfquant.experiments import qgt as qs
from tfquant.experiments.qgt import (
    FLOAT,
    PTQ,
    QAT,
    QGT,
    QGT_TFLITE,
    SIZE,
    QgtStudyConfig,
    findings,
    results_markdown,
    run_qgt_study,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = QgtStudyConfig.of_size("smoke")
ACCURACY_CELLS = (FLOAT, PTQ, QAT, QGT, qs.QGT_A8_SIM, QGT_TFLITE)

# The zoo cnn (tfquant/models/cnn.py): Conv/Dense kernel shapes; each layer has a bias of
# the kernel's last dimension and no other weights.
CNN_KERNELS = {
    "conv1": (3, 3, 1, 16),
    "conv2": (3, 3, 16, 32),
    "conv3": (3, 3, 32, 64),
    "fc1": (3 * 3 * 64, 128),
    "logits": (128, 10),
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The study at smoke size (trained cnn, 2 bits, 384 training and 300 test images)."""
    out = tmp_path_factory.mktemp("qgt")
    records = run_qgt_study(SMOKE, out, log=lambda s: None)
    return out, records


def _by_key(records: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r.get("bits"), r["cell"]): r for r in records}


def test_every_cell_has_one_record_and_says_where_it_ran(smoke_run) -> None:
    _, records = smoke_run
    expected = [("cnn", None, FLOAT)] + [("cnn", b, c) for b in SMOKE.bits for c in SMOKE.cells()]
    assert sorted(map(str, expected)) == sorted(str((r["model"], r.get("bits"), r["cell"])) for r in records)
    for r in records:
        assert "error" not in r, r
        assert r["experiment"] == "qgt" and r["n_examples"] == 300
        if r["cell"] in ACCURACY_CELLS:
            assert 0.0 <= r["accuracy"] <= 1.0
            assert r["executed_in"] == ("tflite" if r["cell"] == QGT_TFLITE else "sim")
    by = _by_key(records)
    for method in (QAT, QGT):
        r = by[("cnn", 2, method)]
        assert r["steps"] == 3 and r["train_examples"] == 384  # round(384 / 128)
        assert Path(r["weights_path"]).is_file()
        assert 0.0 <= r["float_accuracy"] <= 1.0 and 0.0 <= r["residual_sum"] <= 5 * 0.25
        assert r["spec"]["weight_bits"] == 2 and r["spec"]["activation_bits"] is None
    assert by[("cnn", 2, QGT)]["qgt_strength"] == SMOKE.strength(2) == 30.0  # the 2-bit default (issue 9)


def test_packed_size_equals_a_hand_computation(smoke_run) -> None:
    _, records = smoke_run
    for b in SMOKE.bits:
        size = _by_key(records)[("cnn", b, SIZE)]
        packed = float32 = 0
        for shape in CNN_KERNELS.values():
            n, out = int(np.prod(shape)), shape[-1]
            packed += -(-n * b // 8) + 4 * out + 4 * out  # b-bit kernel + scales + float32 bias
            float32 += 4 * (n + out)
        assert size["packed_bytes"] == packed
        if b == 2:  # 24548 B of 2-bit kernels + 250 scales + 250 biases, 4 B each
            assert packed == 26548
        assert size["float32_bytes"] == float32 == 4 * 98442  # the manifest's params
        assert size["ratio"] == pytest.approx(float32 / packed)


def test_bottleneck_reports_cover_every_layer(smoke_run) -> None:
    _, records = smoke_run
    by = _by_key(records)
    baselines = {qs.BOTTLENECK_FLOAT: by[("cnn", None, FLOAT)]["accuracy"],
                 qs.BOTTLENECK_QGT: by[("cnn", 2, QGT)]["float_accuracy"]}
    for cell, baseline in baselines.items():
        report = by[("cnn", 2, cell)]
        assert report["baseline_accuracy"] == pytest.approx(baseline)
        rows = report["layers"]
        assert [r["layer"] for r in rows] == list(CNN_KERNELS)
        assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4, 5]
        assert [r["params"] for r in rows] == [int(np.prod(s)) for s in CNN_KERNELS.values()]
        for r in rows:
            assert 0.0 <= r["residual"] <= 0.25 and 0.0 <= r["accuracy"] <= 1.0
            assert r["loss_pt"] == pytest.approx(100 * (baseline - r["accuracy"]))


def test_tflite_weights_are_on_the_b_bit_grid(smoke_run) -> None:
    _, records = smoke_run
    r = _by_key(records)[("cnn", 2, QGT_TFLITE)]
    assert Path(r["tflite_path"]).is_file() and r["recipe"]["mode"] == "int8"
    assert len(r["weight_levels"]) == len(CNN_KERNELS)
    assert all(w["num_scales"] == w["shape"][0] for w in r["weight_levels"])  # per channel
    assert r["on_b_bit_grid"] and r["max_distinct_per_channel"] <= 2 ** 2 - 1


def test_results_file_has_the_tables_and_statements(smoke_run) -> None:
    out, _ = smoke_run
    md = (out / "results.md").read_text()
    for heading in ("## Accuracy and size", "## Compression bottlenecks per layer",
                    "### cnn, 2-bit weights", "## The QGT model as an int8 .tflite",
                    "## What ran where", "## Did QGT >= plain QAT >= PTQ hold?"):
        assert heading in md, heading
    assert "| cnn | 2 | " in md and "26548 | 393768 | 14.83x |" in md
    assert "- **2-bit weights: " in md and "Trained: the bottleneck is " in md
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["limit"] == 300 and config["weights_sha256"]["cnn"]


def test_resume_writes_nothing_new_and_other_configs_are_refused(smoke_run) -> None:
    out, _ = smoke_run
    before = (out / "results.jsonl").read_bytes()
    logs: list[str] = []
    run_qgt_study(SMOKE, out, log=logs.append)
    assert (out / "results.jsonl").read_bytes() == before
    assert logs == [f"{out}: every record is present; nothing to run"]
    with pytest.raises(TfquantError, match="different config.*new --run_name"):
        run_qgt_study(QgtStudyConfig.of_size("smoke", seed=1), out, log=lambda s: None)
    assert (out / "results.jsonl").read_bytes() == before


def test_same_seed_repeats_and_saved_weights_are_reused(smoke_run, tmp_path: Path) -> None:
    """A fresh run (with TensorBoard and checkpoints on) gives the same numbers; so does a
    run resumed after the fine-tuned cells were lost, from the saved weights."""
    out, records = smoke_run
    again = run_qgt_study(SMOKE, tmp_path / "again", log=lambda s: None,
                          tensorboard_dir=tmp_path / "tb", checkpoint_dir=tmp_path / "ckpt")
    first, second = _by_key(records), _by_key(again)
    assert first.keys() == second.keys()
    for key, r in first.items():
        if "accuracy" in r:
            assert second[key]["accuracy"] == r["accuracy"], key
        if "layers" in r:
            assert second[key]["layers"] == r["layers"], key
    for method in (QAT, QGT):
        assert list((tmp_path / "ckpt" / "cnn" / f"w2_{method}").glob("epoch001.h5"))
        assert list((tmp_path / "tb" / "cnn" / f"w2_{method}").rglob("events.out.tfevents.*"))

    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    kept = [r for r in records if r["cell"] in (FLOAT, SIZE, PTQ, qs.BOTTLENECK_FLOAT)]
    (resumed / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    logs: list[str] = []
    third = _by_key(run_qgt_study(SMOKE, resumed, log=logs.append))
    assert not any("epoch" in line for line in logs)  # nothing was fine-tuned again
    assert sum("fine-tuned weights loaded" in line for line in logs) == 2
    for key, r in first.items():
        if "accuracy" in r:
            assert third[key]["accuracy"] == r["accuracy"], key


# ------------------------------------------------------------------ pure logic (no TF run)


def _records(acc: dict[tuple[str, int], dict[str, float]]) -> list[dict]:
    return [{"model": m, "bits": b, "cell": c, "accuracy": a, "executed_in": "sim"}
            for (m, b), cells in acc.items() for c, a in cells.items()]


def test_findings_follow_the_tie_threshold() -> None:
    acc = {
        ("cnn", 4): {PTQ: 0.90, QAT: 0.91, QGT: 0.9085},  # QGT 0.15 pt below QAT: a tie
        ("mobilenet_v1", 4): {PTQ: 0.80, QAT: 0.90, QGT: 0.92},
        ("cnn", 2): {PTQ: 0.20, QAT: 0.85, QGT: 0.30},  # QGT < QAT, QAT > PTQ
        ("mobilenet_v1", 2): {PTQ: 0.10, QAT: 0.70, QGT: 0.50},
    }
    by_bits = dict(zip((2, 4, 8), findings(_records(acc), ("cnn", "mobilenet_v1"), (2, 4, 8))))
    assert by_bits[4].verdict == qs.HELD
    assert "cnn QGT - plain QAT 0.9085 vs 0.9100 (-0.15 pt)" in by_bits[4].ours
    assert by_bits[2].verdict == qs.PARTLY and "QGT - plain QAT 0.3000 vs 0.8500 (-55.00 pt)" in by_bits[2].ours
    assert by_bits[8].verdict == qs.NOT_TESTED
    acc[("cnn", 2)] = {PTQ: 0.5, QAT: 0.4, QGT: 0.3}
    acc[("mobilenet_v1", 2)] = {PTQ: 0.5, QAT: 0.4, QGT: 0.3}
    assert findings(_records(acc), ("cnn", "mobilenet_v1"), (2,))[0].verdict == qs.NOT_HELD


def test_results_markdown_marks_failed_cells_with_their_reason() -> None:
    config = QgtStudyConfig(models=("cnn",), bits=(4,))
    records = _records({("cnn", 4): {PTQ: 0.9, QAT: 0.91, QGT: 0.92}})
    records.append({"model": "cnn", "bits": None, "cell": FLOAT, "accuracy": 0.93, "executed_in": "sim"})
    records.append({"model": "cnn", "bits": 4, "cell": QGT_TFLITE, "executed_in": "tflite",
                    "error": "the converter said no"})
    md = results_markdown(records, config)
    assert "| cnn | 4 | 0.9300 (sim) | 0.9000 (sim) | 0.9100 (sim) | 0.9200 (sim) |" in md
    assert "failed¹" in md and "- cnn / w4 / qgt_tflite: the converter said no" in md
    assert "- **4-bit weights: held**" in md


@pytest.mark.parametrize("kwargs, match", [
    (dict(models=()), "no models"),
    (dict(models=("lenet",)), r"unknown zoo model\(s\) \['lenet'\]"),
    (dict(bits=()), "bits must be a non-empty list"),
    (dict(bits=(1, 4)), r"bits \[1\] are not simulated"),
    (dict(bits=(16,)), r"bits \[16\] are not simulated"),
    (dict(epochs=0), "epochs must be a number > 0"),
    (dict(learning_rate_scale=-1.0), "learning_rate_scale must be a finite number > 0"),
    (dict(qgt_strength=float("inf")), "qgt_strength for 2-bit weights must be a finite number > 0"),
    (dict(qgt_strength={2: 1.0}), r"qgt_strength has no λ for bit width\(s\) \[4\]"),
    (dict(qgt_strength="strong"), "qgt_strength must map bit widths to λ"),
    (dict(qgt_ramp_fraction=1.5), r"qgt_ramp_fraction must be a number in \[0, 1\]"),
    (dict(num_calibration_examples=0), "num_calibration_examples must be a positive integer"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(limit=0), "limit must be a positive integer or None"),
    (dict(train_examples=60_000), "exceeds the zoo's 55000 training images"),
    (dict(export_tflite="yes"), "export_tflite must be True or False"),
    (dict(runtime="delegate"), "xnnpack or builtin"),
])
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        QgtStudyConfig(**kwargs)


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(TfquantError, match="unknown size 'tiny'; choose from: smoke, short"):
        QgtStudyConfig.of_size("tiny")


def test_qgt_strength_forms() -> None:
    assert QgtStudyConfig(bits=(4, 2), qgt_strength=5).qgt_strength == ((2, 5.0), (4, 5.0))
    config = QgtStudyConfig(bits=(4,), qgt_strength={4: 20, 2: 1})  # extra widths are dropped
    assert config.qgt_strength == ((4, 20.0),) and config.strength(4) == 20.0
    assert config.to_dict()["qgt_strength"] == {"4": 20.0}
    assert QgtStudyConfig(qgt_strength=[(2, 3.0), (4, 7.0)]).strength(2) == 3.0


def test_sizes_and_schedule() -> None:
    short = QgtStudyConfig.of_size("short")
    assert short.models == ("cnn",) and short.bits == (2, 4) and short.epochs < 1 and short.limit == 2000
    plan = qs.schedule(short, "cnn", qs.TRAIN_EXAMPLES)
    assert (plan.passes, plan.steps, plan.batch_size) == (1, round(0.5 * 55_000 / 128), 128)
    assert plan.learning_rate == pytest.approx(0.5 * 2e-3)  # half the cnn's training peak LR
    plan = qs.schedule(QgtStudyConfig(epochs=2.5), "mobilenet_v1", 1280)
    assert (plan.passes, plan.steps_per_pass) == (3, round(2.5 * 10 / 3))


@pytest.mark.parametrize("args, message", [
    (["--smoke", "--short"], "error: --smoke and --short are two sizes"),
    (["--models", "lenet"], "error: unknown zoo model(s) ['lenet']"),
    (["--bits", "2,x"], "error: --bits must be integers in [2, 8]"),
    (["--qgt_strength", "2=5"], "error: --qgt_strength must be BITS:LAMBDA entries"),
    (["--bits", "3"], "error: qgt_strength has no λ for bit width(s) [3]"),
])
def test_script_reports_one_line_and_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "experiments/qgt.py", "--results_dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not any(tmp_path.iterdir())


def test_script_flag_defaults_are_the_config_defaults() -> None:
    """The script defines its defaults without TensorFlow (so bad flags fail fast); they must
    stay QgtStudyConfig's."""
    proc = subprocess.run([sys.executable, "experiments/qgt.py", "--helpshort"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    defaults = dict(re.findall(r"--(\w+):(?:(?!\n  --).)*?\(default: '([^']*)'\)", proc.stdout, re.S))
    config = QgtStudyConfig()
    assert defaults["models"] == ",".join(config.models)
    assert defaults["bits"] == ",".join(str(b) for b in config.bits)
    assert float(defaults["epochs"]) == config.epochs and int(defaults["seed"]) == config.seed
    assert defaults["qgt_strength"] == ",".join(f"{b}:{lam:g}" for b, lam in config.qgt_strength)
    assert defaults["grid_scale"] == config.grid_scale
    assert float(defaults["qgt_finish_fraction"]) == config.qgt_finish_fraction
    assert float(defaults["qgt_finish_factor"]) == config.qgt_finish_factor


def test_qgt_uses_the_mse_grid_and_its_finish_and_exports_that_grid(smoke_run) -> None:
    """The default config's grid (mse) and finish reach the fine-tune, and the .tflite stores
    exactly the grid the QGT model was rounded on (issue 9)."""
    out, records = smoke_run
    by = _by_key(records)
    stats = json.loads((out / "models" / "cnn" / "w2_qgt.train.json").read_text())
    assert SMOKE.grid_scale == "mse" and SMOKE.qgt_finish_fraction > 0
    assert set(stats["grid"]) == set(CNN_KERNELS)  # the frozen grid of every kernel
    assert by[("cnn", 2, QGT)]["grid_scale"] == "mse"
    assert by[("cnn", 2, QGT_TFLITE)]["grid_scale_max_rel_error"] < 1e-5
