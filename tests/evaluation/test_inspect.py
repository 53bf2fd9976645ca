"""inspect_model: per-tensor quantization parameters and op counts; format_report text."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from tests.evaluation.conftest import TinyModels
from tfquant.evaluation import format_report, inspect_model


def _conv_weight(report):
    conv_inputs = [t for t in report.tensors if len(t.shape) == 4 and t.shape[1:3] == (3, 3)]
    assert len(conv_inputs) == 1, [t.name for t in report.tensors]
    return conv_inputs[0]


def test_int8_conv_weight_has_per_channel_scales(tiny: TinyModels) -> None:
    report = inspect_model(tiny.int8)
    weight = _conv_weight(report)
    assert weight.dtype == "int8" and weight.shape == (8, 3, 3, 1)
    assert weight.is_per_channel and len(weight.scales) == 8
    assert weight.quantized_dimension == 0
    assert weight.zero_points == (0,) * 8  # symmetric int8 weights
    assert all(s > 0 for s in weight.scales) and len(set(weight.scales)) > 1
    # Activations are per-tensor.
    activation = next(t for t in report.tensors if t.dtype == "int8" and t.shape[:1] == (1,) and len(t.shape) == 4)
    assert len(activation.scales) == 1 and len(activation.zero_points) == 1


def test_op_counts(tiny: TinyModels) -> None:
    int8 = inspect_model(tiny.int8)
    assert int8.op_counts["CONV_2D"] == 1
    assert int8.op_counts["FULLY_CONNECTED"] == 1
    # Float I/O around an int8 graph: a QUANTIZE in, a DEQUANTIZE out.
    assert int8.op_counts["QUANTIZE"] == 1 and int8.op_counts["DEQUANTIZE"] == 1
    assert sum(int8.op_counts.values()) == int8.num_ops == len(int8.ops)
    int8_io = inspect_model(tiny.int8_io)
    assert "QUANTIZE" not in int8_io.op_counts and "DEQUANTIZE" not in int8_io.op_counts
    fp32 = inspect_model(tiny.fp32)
    assert fp32.op_counts["CONV_2D"] == 1
    assert all(not t.is_quantized for t in fp32.tensors)


def test_io_details_and_size(tiny: TinyModels) -> None:
    report = inspect_model(tiny.int8_io)
    assert report.path == str(tiny.int8_io)
    assert report.size_bytes == tiny.int8_io.stat().st_size
    (inp,), (out,) = report.inputs, report.outputs
    assert inp.dtype == "int8" and inp.shape == (1, 28, 28, 1)
    np.testing.assert_allclose(inp.scales, [1 / 255], rtol=1e-5)
    assert inp.zero_points == (-128,)
    assert out.dtype == "int8" and out.shape == (1, 10)
    from_bytes = inspect_model(tiny.int8_io.read_bytes())
    assert from_bytes.path is None and from_bytes.op_counts == report.op_counts
    # JSON-serialisable as the CLI prints it.
    json.loads(json.dumps(dataclasses.asdict(report)))


def test_format_report_lists_tensors_and_ops(tiny: TinyModels) -> None:
    report = inspect_model(tiny.int8)
    text = format_report(report)
    weight = _conv_weight(report)
    line = next(line for line in text.splitlines() if line.lstrip().startswith(f"{weight.index} "))
    assert "int8" in line and "[8,3,3,1]" in line and "8 ch [" in line and "0 (all 8)" in line
    assert "CONV_2D" in text and "QUANTIZE" in text
    assert "scale(s)" in text and "zero point(s)" in text
    assert f"{report.size_bytes:,} bytes" in text
