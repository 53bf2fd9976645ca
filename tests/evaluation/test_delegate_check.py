"""tfquant check: predicted delegation from the flatbuffer vs what XNNPACK really takes.

The XNNPACK prediction is compared op by op with the ops inside XNNPACK's partitions at run
time (``delegated_nodes``) on int8 (per-channel and per-tensor), int16x8, fp16, dynamic-range,
float and mixed (int8 with a float fallback op) models built here. The GPU, Hexagon and
NNAPI rules are tested one by one on synthetic ops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.evaluation.delegates import check, check_ops
from tfquant.tflite.op_graph import OpNode, Operand

CAL = np.random.default_rng(0).uniform(-1, 1, (8, 12, 12, 4)).astype(np.float32)


def _model(hard_swish: bool = True, fallback: bool = False) -> Any:
    """Many op kinds: conv, depthwise, pools, add/sub/mul, concat, pad, transpose conv with
    a run-time output shape, mean, dense, softmax; optionally CUMSUM (no XNNPACK kernel)."""
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 4))
    x = layers.Conv2D(32, 3, padding="same", activation="relu6")(i)
    y = layers.DepthwiseConv2D(3, padding="same")(x)
    if hard_swish:
        y = layers.Activation(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(y)
    x = layers.Add()([x, y])
    x = layers.Multiply()([x, layers.Activation("sigmoid")(x)])
    x = layers.Subtract()([x, layers.ReLU()(layers.MaxPool2D(1)(x))])
    x = layers.MaxPool2D()(x)
    a = layers.AveragePooling2D()(x)
    x = layers.Concatenate()([a, layers.Conv2D(4, 1)(a)])
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2DTranspose(32, 3, strides=2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(48, activation="tanh")(x)
    if fallback:
        x = layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(x)
    x = layers.Dense(10)(x)
    return keras.Model(i, layers.Softmax()(x))


def _convert(model: Any, **options: Any) -> bytes:
    from tfquant.tflite.converter import ConverterOptions, run_converter

    calibrate = options.pop("calibrate", False)
    dataset = (lambda: ([CAL[k:k + 1]] for k in range(len(CAL)))) if calibrate else None
    return run_converter(keras_model=model, options=ConverterOptions(**options), representative_dataset=dataset)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    base, plain, mixed = _model(), _model(hard_swish=False), _model(fallback=True)
    return {
        "fp32": _convert(base),
        "int8": _convert(base, optimize=True, ops_set="int8", calibrate=True),
        "int8_per_tensor": _convert(base, optimize=True, ops_set="int8", per_tensor_weights=True, calibrate=True),
        "int16x8": _convert(plain, optimize=True, ops_set="int16x8", calibrate=True),
        "fp16": _convert(base, optimize=True, float16_weights=True),
        "dynamic": _convert(base, optimize=True),
        "mixed": _convert(mixed, optimize=True, calibrate=True),
    }


def _actual(tflite: bytes) -> set[int]:
    from tfquant.tflite.interpreter import delegated_nodes, make_interpreter

    taken, _ = delegated_nodes(make_interpreter(tflite, allocate=True))
    return set(taken)


@pytest.mark.parametrize("name", ["fp32", "int8", "int8_per_tensor", "int16x8", "fp16", "dynamic", "mixed"])
def test_xnnpack_prediction_equals_what_the_interpreter_delegates(models: dict[str, bytes], name: str) -> None:
    report = check(models[name], "xnnpack")
    predicted = {v.index for v in report.ops if v.delegated}
    assert predicted == _actual(models[name]), [(v.op, v.reason) for v in report.ops]
    if name == "int16x8":
        assert report.delegated_ops == 0 and all("INT16" in v.reason or v.op in ("SHAPE", "PACK", "STRIDED_SLICE", "TRANSPOSE_CONV") for v in report.ops)
    else:
        assert 0 < report.delegated_ops < report.total_ops  # the run-time TRANSPOSE_CONV shape stays on the CPU


def test_model_kinds_reach_the_rules(models: dict[str, bytes]) -> None:
    """The models really are what their names say (so the equality above covers each rule)."""
    from tfquant.tflite.op_graph import read_ops

    def types(name: str) -> set[str]:
        return {t.dtype for op in read_ops(models[name]) for t in (*op.inputs, *op.outputs)}

    assert "INT16" in types("int16x8") and "FLOAT16" in types("fp16")
    dyn = [op for op in read_ops(models["dynamic"]) if op.op == "FULLY_CONNECTED"]
    assert any(op.inputs[1].dtype == "INT8" and op.inputs[0].dtype == "FLOAT32" for op in dyn)
    mixed = read_ops(models["mixed"])
    assert "CUMSUM" in {op.op for op in mixed} and any(op.op == "CONV_2D" and op.inputs[0].dtype == "INT8" for op in mixed)
    int8 = check(models["int8"], "xnnpack")
    reasons = {v.op: v.reason for v in int8.ops if not v.delegated}
    assert "no 8-bit kernel" in reasons["SOFTMAX"] and "computed at run time" in reasons["TRANSPOSE_CONV"]
    per_tensor = [op for op in read_ops(models["int8_per_tensor"]) if op.op == "CONV_2D"]
    assert all(op.inputs[1].n_scales == 1 for op in per_tensor)


def _t(dtype: str = "INT8", shape: tuple[int, ...] = (1, 8, 8, 4), constant: bool = False,
       n_scales: int = 1, values: tuple[int, ...] = (), index: int = 0) -> Operand:
    return Operand(index, dtype, shape, constant, n_scales if dtype in ("INT8", "UINT8", "INT16") else 0, values)


def _op(op: str, inputs: tuple[Operand, ...] = (), outputs: tuple[Operand, ...] = (), version: int = 1, **options: Any) -> OpNode:
    return OpNode(0, op, version, inputs or (_t(),), outputs or (_t(),), options)


def _verdict(delegate: str, op: OpNode) -> str:
    v = check_ops([op], delegate).ops[0]
    return "ok" if v.delegated else v.reason


W = _t(constant=True, shape=(4, 3, 3, 4), n_scales=4)
DW3 = _t(constant=True, shape=(1, 3, 3, 4), n_scales=4)


@pytest.mark.parametrize("delegate, op, expect", [
    # XNNPACK
    ("xnnpack", _op("CUMSUM"), "no XNNPACK kernel"),
    ("xnnpack", _op("SOFTMAX"), "no 8-bit kernel"),
    ("xnnpack", _op("SOFTMAX", (_t("FLOAT32"),), (_t("FLOAT32"),)), "ok"),
    ("xnnpack", _op("CONV_2D", (_t(), W), (_t(),)), "ok"),
    ("xnnpack", _op("ADD", (_t(), _t(n_scales=4)), (_t(),)), "per-channel"),
    ("xnnpack", _op("ADD", (_t("INT16"), _t("INT16")), (_t("INT16"),)), "INT16"),
    ("xnnpack", _op("QUANTIZE", (_t("UINT8"),), (_t(),)), "uint8"),
    ("xnnpack", _op("RESHAPE", (_t(), _t("INT32", (4,))), (_t(),)), "computed at run time"),
    ("xnnpack", _op("DEPTHWISE_CONV_2D", (_t("FLOAT32"), DW3), (_t("FLOAT32"),)), "dynamic range"),
    # GPU
    ("gpu", _op("CONV_2D", (_t("FLOAT32"), _t("FLOAT32", constant=True)), (_t("FLOAT32"),)), "ok"),
    ("gpu", _op("CONV_2D", (_t("FLOAT32"), _t("FLOAT32", constant=True)), (_t("FLOAT32"),), version=2), "version 2"),
    ("gpu", _op("CONV_2D", (_t(), W), (_t(),), version=3), "ok"),
    ("gpu", _op("HARD_SWISH", (_t("FLOAT32"),), (_t("FLOAT32"),)), "not in the GPU delegate"),
    ("gpu", _op("ADD", (_t("INT16"), _t("INT16")), (_t("INT16"),)), "INT16"),
    ("gpu", _op("ADD", (_t("FLOAT32", (1, 2, 2, 2, 2)),), (_t("FLOAT32", (1, 2, 2, 2, 2)),)), "rank > 4"),
    ("gpu", _op("DEQUANTIZE", (_t("FLOAT16", constant=True),), (_t("FLOAT32"),)), "ok"),
    # Hexagon
    ("hexagon", _op("CONV_2D", (_t(), W), (_t(),), strideW=2, strideH=2), "ok"),
    ("hexagon", _op("CONV_2D", (_t("FLOAT32"), W), (_t("FLOAT32"),)), "8-bit"),
    ("hexagon", _op("CONV_2D", (_t("INT16"), W), (_t("INT16"),)), "INT16"),
    ("hexagon", _op("CONV_2D", (_t(), W), (_t(),), strideW=4, strideH=4), "stride 4"),
    ("hexagon", _op("DEPTHWISE_CONV_2D", (_t(), _t(constant=True, shape=(1, 5, 5, 4))), (_t(),)), "filter width 5"),
    ("hexagon", _op("DEPTHWISE_CONV_2D", (_t(), DW3), (_t(),), depthMultiplier=2), "depth_multiplier"),
    ("hexagon", _op("DEPTHWISE_CONV_2D", (_t(), DW3), (_t(),), strideW=2, dilationWFactor=2), "dilation"),
    ("hexagon", _op("MAX_POOL_2D", fusedActivationFunction="RELU"), "fused activation"),
    ("hexagon", _op("ADD", (_t(), _t()), (_t(),), fusedActivationFunction="TANH"), "only relu"),
    ("hexagon", _op("RESIZE_BILINEAR", (_t(), _t("INT32", (2,), True, values=(80, 80))), (_t(),)), "> 65"),
    ("hexagon", _op("TRANSPOSE_CONV", (_t("INT32", (4,), True), W, _t()), (_t(),), strideW=4), "stride 4"),
    ("hexagon", _op("EXP"), "not in the Hexagon"),
    ("hexagon", _op("ADD", (_t(shape=(1, 1, 2, 2, 2)),), (_t(shape=(1, 1, 2, 2, 2)),)), "rank > 4"),
    # NNAPI (target API 30)
    ("nnapi", _op("CONV_2D", (_t(), W), (_t(),)), "ok"),
    ("nnapi", _op("CONV_2D", (_t("INT16"), W), (_t("INT16"),)), "int16"),
    ("nnapi", _op("FULLY_CONNECTED", (_t("FLOAT32"), _t(constant=True, shape=(4, 4))), (_t("FLOAT32"),)), "hybrid"),
    ("nnapi", _op("CUMSUM"), "no NNAPI operation"),
    ("nnapi", _op("GELU", (_t("FLOAT32"),), (_t("FLOAT32"),)), "no NNAPI operation"),
])
def test_delegate_rules(delegate: str, op: OpNode, expect: str) -> None:
    assert expect in _verdict(delegate, op)


def test_nnapi_api_levels() -> None:
    from tfquant.evaluation.delegates import nnapi

    int8_conv = _op("CONV_2D", (_t(), W), (_t(),))
    assert nnapi.rule(int8_conv, [], api_level=30) is None
    assert "API 30" in nnapi.rule(int8_conv, [], api_level=29)
    uint8_conv = _op("CONV_2D", (_t("UINT8"), W), (_t("UINT8"),))
    assert nnapi.rule(uint8_conv, [], api_level=29) is None
    assert "per-channel weights need Android API 29" in nnapi.rule(uint8_conv, [], api_level=28)
    assert "needs Android API 30" in nnapi.rule(_op("HARD_SWISH", (_t("UINT8"),), (_t("UINT8"),)), [], api_level=29)


def test_check_command(models: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfquant.cli import main

    path = tmp_path / "int8.tflite"
    path.write_bytes(models["int8"])
    assert main(["check", "--delegate", "xnnpack", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n = len(_actual(models["int8"]))
    assert lines[-1] == f"xnnpack: {n} of {len(lines) - 1} ops delegated"
    assert any("SOFTMAX" in line and "CPU:" in line for line in lines)
    assert main(["check", "--delegate", "hexagon", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["total_ops"] == len(lines) - 1 and 0 < record["delegated_ops"] < record["total_ops"]
    assert main(["check", "--delegate", "gpu", str(tmp_path / "missing.tflite")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
