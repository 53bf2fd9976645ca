"""Keras-vs-TFLite parity of the converted CNN on random inputs from the calibration distribution.

Errors are relative to the spread of the Keras logits (max - min over the test set). Bounds
are a few times the values observed on this machine (TF 2.21, ai-edge-litert 2.3.0), which
are noted beside them. The max error of int8 and int16x8 (~4e-2) comes from test inputs
beyond the calibrated ranges (clipping), so the mean error is the sharper check.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, recipe, run_tflite
from tfquant.qtypes import Granularity, IODType, Mode
from tfquant.recipes import Recipe

N_TEST = 300

# recipe: (max mean |error|, max |error|, min top-1 agreement)
CASES = {
    # observed: mean 3.8e-8, max 3.0e-7, top-1 1.000
    recipe(mode=Mode.FP32): (1e-6, 1e-5, 1.0),
    # observed: mean 4.8e-5, max 2.2e-4, top-1 1.000
    recipe(mode=Mode.FP16): (5e-4, 2e-3, 0.99),
    # observed: mean 1.0e-3, max 5.0e-3, top-1 0.987
    recipe(mode=Mode.DYNAMIC): (5e-3, 2e-2, 0.95),
    # observed: mean 2.1e-3, max 4.0e-2, top-1 0.987
    recipe(mode=Mode.INT8): (8e-3, 1e-1, 0.95),
    # observed: mean 2.1e-3, max 4.0e-2, top-1 0.997
    recipe(mode=Mode.INT8, weight_granularity=Granularity.PER_TENSOR): (8e-3, 1e-1, 0.95),
    # observed: mean 2.1e-3, max 4.0e-2, top-1 0.987
    recipe(mode=Mode.INT8, io_dtype=IODType.INT8): (8e-3, 1e-1, 0.95),
    # observed: mean 8.0e-4, max 4.1e-2, top-1 0.990
    recipe(mode=Mode.INT16X8): (3e-3, 1e-1, 0.95),
}


def _ids(r: Recipe) -> str:
    return f"{r.mode}-{r.weight_granularity}-io_{r.io_dtype}"


@pytest.fixture(scope="module")
def test_set(cnn: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(123).standard_normal((N_TEST, *INPUT_SHAPE)).astype(np.float32)
    return x, cnn(x).numpy()


def _errors(tflite: bytes, test_set: tuple[np.ndarray, np.ndarray]) -> tuple[float, float, float]:
    x, ref = test_set
    y = run_tflite(tflite, x)
    err = np.abs(y - ref) / float(ref.max() - ref.min())
    return float(err.mean()), float(err.max()), float(np.mean(y.argmax(1) == ref.argmax(1)))


@pytest.mark.parametrize("r", list(CASES), ids=_ids)
def test_tflite_matches_keras(
    converted: Callable, test_set: tuple[np.ndarray, np.ndarray], r: Recipe
) -> None:
    max_mean, max_max, min_agreement = CASES[r]
    mean_err, max_err, agreement = _errors(converted(r), test_set)
    assert mean_err <= max_mean, f"{_ids(r)}: mean rel error {mean_err:.2e}"
    assert max_err <= max_max, f"{_ids(r)}: max rel error {max_err:.2e}"
    assert agreement >= min_agreement, f"{_ids(r)}: top-1 agreement {agreement:.3f}"


def test_int16_activations_are_more_accurate_than_int8(
    converted: Callable, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    int8_mean, _, _ = _errors(converted(recipe(mode=Mode.INT8)), test_set)
    int16_mean, _, _ = _errors(converted(recipe(mode=Mode.INT16X8)), test_set)
    assert int16_mean < int8_mean
