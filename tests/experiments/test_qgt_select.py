"""QGT's λ / finish selection: scored on the held-out training images, never on the test split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfquant import TfquantError, data
from tfquant.experiments import qgt_select as qs
from tfquant.models.train import TRAIN_EXAMPLES, VAL_EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
SMOKE = qs.QgtSelectConfig.of_size("smoke")


@pytest.fixture(scope="module")
def smoke_select(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[str]]:
    """The selection at smoke size, with every split it loads recorded."""
    out = tmp_path_factory.mktemp("qgt_select")
    splits: list[str] = []
    real = data.load_numpy

    def spy(spec, split="test", **kwargs):
        splits.append(split)
        return real(spec, split, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(data, "load_numpy", spy)
    try:
        records = qs.run_qgt_select(SMOKE, out, log=lambda s: None)
    finally:
        mp.undo()
    return out, records, splits


def test_selection_never_reads_the_test_split(smoke_select) -> None:
    _, records, splits = smoke_select
    assert splits and set(splits) == {"train"}
    for r in records:
        assert "error" not in r, r
        assert r["split"] == "validation" and r["data_file"] == "fashion_mnist/train"
        start, stop = r["data_range"]
        t0, t1 = r["train_range"]
        assert (start, stop) == (TRAIN_EXAMPLES, TRAIN_EXAMPLES + SMOKE.validation_examples)
        assert t1 <= start and t0 == 0  # fine-tuned on images before the validation slice
        assert r["n_examples"] == stop - start and r["executed_in"] == "sim"


def test_validation_slice_is_the_training_file_tail_not_the_test_split() -> None:
    x_val, y_val, (start, stop) = qs.validation_split("fashion_mnist", 50)
    x_train, y_train, _ = data.load_numpy("fashion_mnist", "train")
    x_test, _, _ = data.load_numpy("fashion_mnist", "test")
    np.testing.assert_array_equal(x_val, x_train[TRAIN_EXAMPLES:TRAIN_EXAMPLES + 50])
    np.testing.assert_array_equal(y_val, y_train[TRAIN_EXAMPLES:TRAIN_EXAMPLES + 50])
    assert (start, stop) == (TRAIN_EXAMPLES, TRAIN_EXAMPLES + 50)
    test_rows = {row.tobytes() for row in x_test[:2000]}
    assert not any(row.tobytes() in test_rows for row in x_val)


def test_every_candidate_is_recorded_and_the_best_is_chosen(smoke_select) -> None:
    out, records, _ = smoke_select
    keys = [(r["bits"], r["stage"], r["value"]) for r in records]
    assert keys == [(None, "float", 0.0), (2, "lambda", 10.0), (2, "lambda", 30.0), (2, "finish", 0.3)]
    reference = records[0]["accuracy"]
    records = records[1:]
    stage1 = [r for r in records if r["stage"] == "lambda"]
    best_lambda = max(stage1, key=lambda r: r["accuracy"])["qgt_strength"]
    finish = [r for r in records if r["stage"] == "finish"][0]
    assert finish["qgt_strength"] == best_lambda and finish["qgt_finish_fraction"] == 0.3
    assert all(r["qgt_finish_fraction"] == SMOKE.qgt_finish_fraction for r in stage1)
    typed = [qs.QgtSelectRecord.from_json(r) for r in records]
    pick = qs.chosen(typed, SMOKE)[2]
    assert pick.accuracy == max(r["accuracy"] for r in records)
    md = (out / "results.md").read_text()
    assert "validation images 55000..55299 of the training file" in md
    assert md.count("(sim) |") == 2 * len(records) and md.count("**chosen**") == 1
    assert f"on the same validation images: {reference:.4f} (sim)" in md
    assert f"| {100 * (pick.accuracy - reference):+.2f} |" in md
    assert f"chosen in this run: λ = {pick.qgt_strength:g}, finish {pick.qgt_finish_fraction:g}" in md


@pytest.mark.parametrize("fields, message", [
    ({"validation_examples": VAL_EXAMPLES + 1}, "exceeds the 5000 held-out"),
    ({"train_examples": TRAIN_EXAMPLES + 1}, "would reach the validation slice"),
    ({"bits": (2, 4), "lambdas": ((2, 10.0),)}, r"no λ candidate for bit width\(s\) \[4\]"),
    ({"lambdas": ((2, -1.0), (4, 3.0))}, "finite number > 0"),
    ({"finish_fractions": (1.0,)}, r"in \[0, 1\)"),
])
def test_bad_configs_are_refused(fields, message) -> None:
    with pytest.raises(TfquantError, match=message):
        qs.QgtSelectConfig(**fields)


def test_script_bad_flag_is_one_error_line_before_tensorflow(tmp_path: Path) -> None:
    no_tf = ("import runpy, sys\n"
             "for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization'):\n"
             "    sys.modules[m] = None\n"
             "sys.argv = sys.argv[1:]\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", no_tf, "experiments/qgt_select.py", "--lambdas", "2-10",
                           "--results_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --bits must be integers, --lambdas BITS:LAMBDA")
    assert not any(tmp_path.iterdir())


def test_the_study_says_whether_a_run_uses_the_validation_chosen_defaults() -> None:
    from tfquant.experiments.qgt import DEFAULTS_CHOSEN_BY, QgtStudyConfig, results_markdown

    assert QgtStudyConfig().selected_defaults() and QgtStudyConfig.of_size("short").selected_defaults()
    assert QgtStudyConfig(bits=(2,)).selected_defaults()
    for other in (dict(qgt_strength=123.0), dict(qgt_finish_fraction=0.1), dict(grid_scale="max"),
                  dict(qgt_finish_factor=10.0)):
        assert not QgtStudyConfig(**other).selected_defaults(), other
    assert "qgt_select" in DEFAULTS_CHOSEN_BY
    assert DEFAULTS_CHOSEN_BY in results_markdown([], QgtStudyConfig())
    assert "not the defaults chosen on validation images" in results_markdown([], QgtStudyConfig(qgt_strength=123.0))
