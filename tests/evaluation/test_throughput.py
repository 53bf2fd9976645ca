"""The evaluator-vs-raw-loop comparison (experiments/bench_evaluator.py) at smoke size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels
from tfquant.errors import TfquantError
from tfquant.evaluation.throughput import compare_throughput, preload_batches

ROOT = Path(__file__).resolve().parents[2]


def test_compare_throughput_smoke(tiny: TinyModels) -> None:
    cmp = compare_throughput(str(tiny.int8_io), tiny.x, tiny.y, batch_size=64, repeats=2)
    assert cmp.n_examples == 300 and cmp.repeats == 2
    assert len(cmp.evaluator_images_per_s) == len(cmp.raw_images_per_s) == 2
    assert cmp.evaluator_accuracy == cmp.raw_accuracy > 0.5
    assert cmp.ratio > 0 and cmp.paired_ratio > 0


def test_preload_pads_the_last_batch() -> None:
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    batches = preload_batches(x, 4)
    assert [b.shape for b in batches] == [(4, 1)] * 3
    np.testing.assert_array_equal(batches[2][:, 0], [8, 9, 0, 0])


def test_compare_throughput_rejects_zero_repeats(tiny: TinyModels) -> None:
    with pytest.raises(TfquantError, match="repeats must be an integer >= 1"):
        compare_throughput(str(tiny.fp32), tiny.x, tiny.y, repeats=0)


def test_evaluation_does_not_import_tensorflow() -> None:
    code = "import sys, tfquant.evaluation; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False"
