"""`qat` with the documented command on the SE-CNN (issue 13 items 2 and 3).

``qat --model se_cnn.keras --train_data npz:train.npz --calibration_data npz:calib.npz
--epochs 2 --weight_bits {8,4} --out q.tflite``: no ``--original_learning_rate`` (the LR
comes from the optimizer saved in the .keras), no ``--num_calibration_examples``. The
exported .tflite, measured with ``evaluate`` on test.npz, must be within 2 points of the
float .tflite at 8 bits and within 5 points at 4 bits (SE-CNN and the depthwise block), with
no "far below float" warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.outside_zoo import builders as B
from tests.outside_zoo.helpers import Run, cli, read_json, tflite_of



@pytest.fixture(scope="session")
def qat_once(work: Path, files: dict[str, Path]) -> Callable[[Path, int], Run]:
    cache: dict[tuple[str, int], Run] = {}
    out_dir = work / "qat"
    out_dir.mkdir(exist_ok=True)

    def qat(model: Path, bits: int) -> Run:
        key = (str(model), bits)
        if key not in cache:
            out = out_dir / f"{model.stem}_w{bits}.tflite"
            cache[key] = cli(
                "qat", "--model", str(model), "--train_data", f"npz:{files['train']}",
                "--calibration_data", f"npz:{files['calib']}", "--epochs", "2",
                "--weight_bits", str(bits), "--out", str(out),
            )
        return cache[key]

    return qat


def _float_tflite_accuracy(
    model: Path, convert_once: Callable[..., Run], evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path],
) -> float:
    return evaluate_once(tflite_of(convert_once(model, "fp32")), f"npz:{files['test']}")["accuracy"]


@pytest.mark.parametrize(
    ("name", "bits", "tolerance"),
    [("se_cnn", 8, 0.02), ("se_cnn", 4, 0.05), ("dw_block", 4, 0.05)],
)
def test_qat_documented_command_stays_close_to_float(
    request: pytest.FixtureRequest, qat_once: Callable[[Path, int], Run],
    convert_once: Callable[..., Run], evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path], name: str, bits: int, tolerance: float,
) -> None:
    """dw_block is the sensitive one: its 4-bit .tflite after a single QAT step scored 0.82
    against float 0.98 (measured while writing this test), so an unadapted 4-bit recipe fails."""
    model = request.getfixturevalue(name)
    run = qat_once(model, bits)
    tflite = tflite_of(run)
    assert not any("far below" in line.lower() for line in run.lines), run.explain()
    float_acc = _float_tflite_accuracy(model, convert_once, evaluate_once, files)
    result = evaluate_once(tflite, f"npz:{files['test']}")
    assert result["n_examples"] == B.N_TEST
    assert result["accuracy"] >= float_acc - tolerance, (
        f"{name} {bits}-bit QAT {result['accuracy']:.4f} vs float {float_acc:.4f}\n{run.explain()}"
    )


def test_qat_takes_the_learning_rate_from_the_saved_optimizer(
    se_cnn: Path, qat_once: Callable[[Path, int], Run]
) -> None:
    """The .keras was compiled with Adam(2e-3): the qat record must name that LR."""
    record = read_json(tflite_of(qat_once(se_cnn, 8)).with_suffix(".qat.json"))
    assert record["learning_rate_source"] == "saved_optimizer", record
    assert record["original_learning_rate"] == pytest.approx(B.TRAIN_LR, rel=1e-6), record
    assert record["num_calibration_examples"] == B.N_CALIB, record


def test_qat_on_a_model_saved_without_optimizer_uses_the_default_lr(
    se_cnn_no_opt: Path, qat_once: Callable[[Path, int], Run], convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]], files: dict[str, Path], se_cnn: Path,
) -> None:
    run = qat_once(se_cnn_no_opt, 8)
    tflite = tflite_of(run)
    float_acc = _float_tflite_accuracy(se_cnn, convert_once, evaluate_once, files)
    result = evaluate_once(tflite, f"npz:{files['test']}")
    assert result["accuracy"] >= float_acc - 0.02, (result["accuracy"], float_acc, run.explain())
    record = read_json(tflite.with_suffix(".qat.json"))
    assert record["learning_rate_source"] == "default", record
    from tfquant.qat import DEFAULT_LEARNING_RATE

    assert record["original_learning_rate"] == DEFAULT_LEARNING_RATE, record
