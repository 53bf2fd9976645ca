"""Issue 9 item 4: dynamic-range mode with per-tensor weights fell to chance on the MobileNets.

Minimal reproduction: one DepthwiseConv2D (3x3x128 = 1152 weights, above the converter's
1024-element threshold). LiteRT's hybrid depthwise kernel reads one weight scale per output
channel; with the single scale the converter writes for per-tensor weights it reads past the
array. ``convert()`` stores that scale once per channel (same numbers), which runs correctly.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant import convert
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer
from tfquant.tflite.interpreter import make_interpreter


def _run(tflite: bytes, x: np.ndarray, runtime: str) -> np.ndarray:
    it = make_interpreter(tflite, runtime=runtime)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def depthwise():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 128)), keras.layers.DepthwiseConv2D(3, padding="same")])
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 128)).astype(np.float32)
    return model, x, model(x).numpy()


@pytest.mark.parametrize("runtime", ["builtin", "xnnpack"])
def test_dynamic_per_tensor_depthwise_matches_float(depthwise, runtime: str) -> None:
    model, x, reference = depthwise
    tflite = convert.convert(model, Recipe(mode="dynamic", weight_granularity="per_tensor"))
    (weight,) = flatbuffer.weight_tensors(tflite)
    assert weight.stored_type == "INT8" and len(set(weight.scales)) == 1  # still one scale value
    out = _run(tflite, x, runtime)
    assert np.abs(out - reference).max() / np.abs(reference).max() < 0.02


def test_the_single_scale_form_is_what_breaks_the_hybrid_kernel(depthwise) -> None:
    """The same model with the scale stored once, as the converter writes it, is garbage."""
    model, x, reference = depthwise
    fixed = convert.convert(model, Recipe(mode="dynamic", weight_granularity="per_tensor"))
    m = flatbuffer.read(fixed)
    (op,) = flatbuffer.weighted_ops(m)
    scales, _, _ = flatbuffer.tensor_quantization(m, op.weight)
    # One scale on quantized_dimension 0, as the converter writes per-tensor weights: the
    # kernel's check "scales == dims[quantized_dimension]" passes (a depthwise filter is
    # (1, H, W, C)), then it reads C scales.
    flatbuffer.set_tensor_data(m, op.weight, flatbuffer.tensor_data(m, op.weight), scales=scales[:1],
                               quantized_dimension=0)
    broken = flatbuffer.write(m)
    out = _run(broken, x, "builtin")
    assert not np.isfinite(out).all() or np.abs(out - reference).max() / np.abs(reference).max() > 0.5
    again, changed = flatbuffer.replicate_per_tensor_scales(broken)
    assert changed == 1
    assert flatbuffer.computation_fingerprint(again) == flatbuffer.computation_fingerprint(fixed)
