"""Batched calibration gives the same quantization ranges as one example at a time."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import recipe
from tfquant import convert
from tfquant.convert import representative
from tfquant.qtypes import Mode


def _quant_params(tflite: bytes) -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for d in Interpreter(model_content=tflite).get_tensor_details():
        q = d["quantization_parameters"]
        out[d["name"]] = (d["dtype"], q["scales"], q["zero_points"])
    return out


@pytest.mark.parametrize(
    "n,size", [(250, 100), (100, 100), (7, 100), (1, 1), (5, 1), (5, 3)]
)
def test_batch_indices_cover_every_example_in_equal_batches(n: int, size: int) -> None:
    size = min(size, n)
    batches = list(representative.batch_indices(n, size))
    assert all(len(b) == size for b in batches)
    assert len(batches) == -(-n // size)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(flat[:n], np.arange(n))  # in order, each once ...
    assert set(flat[n:]) <= set(range(n))  # ... then padding from the same set


def test_representative_dataset_shapes(cal_data: np.ndarray) -> None:
    dynamic = list(
        representative.representative_dataset(cal_data, batch_dim=None, batch_size=100)()
    )
    assert [b[0].shape[0] for b in dynamic] == [100, 100, 100]
    fixed = list(representative.representative_dataset(cal_data[:3], batch_dim=1)())
    assert [b[0].shape for b in fixed] == [(1, 8, 8, 1)] * 3
    np.testing.assert_array_equal(np.concatenate([b[0] for b in fixed]), cal_data[:3])


@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT16X8])
def test_batched_calibration_matches_single_example_ranges(
    mode: Mode,
    cnn: Any,
    cal_data: np.ndarray,
    converted: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = recipe(mode=mode)
    batched = _quant_params(converted(r))  # batches of 100 (the default), last one padded
    monkeypatch.setattr(representative, "CALIBRATION_BATCH_SIZE", 1)
    single = _quant_params(convert.convert(cnn, r, calibration_data=cal_data))
    assert batched.keys() == single.keys()
    n_quantized = 0
    for name, (dtype, scales, zero_points) in single.items():
        b_dtype, b_scales, b_zero_points = batched[name]
        assert b_dtype == dtype, name
        # equal up to float summation order inside batched kernels
        np.testing.assert_allclose(b_scales, scales, rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(b_zero_points, zero_points, err_msg=name)
        n_quantized += scales.size > 0
    assert n_quantized >= 8
