"""measure_latency: consistent statistics (no timing assertions beyond ordering)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels
from tfquant.errors import TfquantError
from tfquant.evaluation import LatencyResult, measure_latency


@pytest.mark.parametrize("runtime", ["xnnpack", "builtin"])
def test_latency_fields_are_consistent(tiny: TinyModels, runtime: str) -> None:
    result = measure_latency(tiny.int8_io, runtime=runtime, warmup=3, runs=25)
    assert isinstance(result, LatencyResult)
    assert result.runs == 25 and result.warmup == 3
    assert result.runtime == runtime and result.num_threads == 1 and result.batch_size == 1
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.min_ms <= result.mean_ms


@pytest.mark.parametrize("shape", [(1, 28, 28, 1), (28, 28, 1)])
def test_latency_accepts_one_sample_with_or_without_batch_axis(tiny: TinyModels, shape: tuple) -> None:
    sample = tiny.x[0].reshape(shape)
    result = measure_latency(tiny.fp32, warmup=0, runs=1, sample=sample, num_threads=2)
    assert result.runs == 1 and result.num_threads == 2
    assert result.min_ms == result.median_ms == result.p90_ms == result.mean_ms


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"sample": np.zeros((2, 28, 28, 1), np.float32)}, "one example"),
        ({"sample": np.zeros((1, 32, 32, 1), np.float32)}, r"\(32, 32, 1\)"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1"),
        ({"runtime": "gpu"}, "unknown runtime 'gpu'"),
    ],
)
def test_latency_rejects_bad_arguments(tiny: TinyModels, kwargs: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        measure_latency(tiny.fp32, **kwargs)
