"""Initial fake-quant ranges: weights from the kernels, activations from calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tfquant import qat
from tfquant.qat import ranges
from tfquant.errors import TfquantError


@pytest.fixture(scope="module")
def cnn() -> Any:
    from tfquant import models

    return models.build("cnn")


def _post_activation(qat_model: Any, name: str) -> tuple[float, float]:
    (activation,) = qat_model.get_layer(name)._quantize_activations
    v = activation._post_activation_vars
    return float(v["min_var"].numpy()), float(v["max_var"].numpy())


def test_weight_ranges_are_the_kernels_own(cnn: Any) -> None:
    qat_model = qat.quantize_for_training(cnn)
    ((kernel, _, v),) = qat_model.get_layer("quant_conv2")._weight_vars
    amax = np.abs(kernel.numpy()).max(axis=(0, 1, 2))  # per output channel
    np.testing.assert_allclose(v["max_var"].numpy(), amax, rtol=1e-6)
    np.testing.assert_allclose(v["min_var"].numpy(), -amax, rtol=1e-6)
    # Without calibration, activations keep tfmot's [-6, 6] start.
    assert _post_activation(qat_model, "quant_conv2") == (-6.0, 6.0)


def test_calibration_sets_activation_ranges_to_the_observed_ones(
    cnn: Any, fmnist: dict[str, Any]
) -> None:
    cal = fmnist["cal"]
    observed = qat.observe_layer_ranges(cnn, cal)
    conv1 = cnn.get_layer("conv1")(cal).numpy()
    assert observed["conv1"] == pytest.approx((float(conv1.min()), float(conv1.max())), rel=1e-6)
    assert observed["image"] == pytest.approx((float(cal.min()), float(cal.max())))
    qat_model = qat.quantize_for_training(
        cnn, calibration_data=cal, initial_ranges={"conv2": (0.0, 3.0)}
    )
    lo, hi = _post_activation(qat_model, "quant_conv1")
    assert lo == 0.0 and hi == pytest.approx(observed["conv1"][1], rel=1e-6)  # post-ReLU: [0, max]
    assert _post_activation(qat_model, "quant_conv2") == (0.0, 3.0)  # given ranges win
    quantize_layer = [
        layer for layer in qat_model.layers if layer.name.startswith("quantize_layer")
    ][0]
    assert float(quantize_layer.quantizer_vars["max_var"].numpy()) == pytest.approx(
        observed["image"][1]
    )


def test_calibration_data_is_checked(cnn: Any) -> None:
    with pytest.raises(
        TfquantError,
        match=r"calibration_data examples have shape \(14, 14, 1\) but the model takes \(28, 28, 1\)",
    ):
        qat.quantize_for_training(cnn, calibration_data=np.zeros((4, 14, 14, 1), np.float32))
    bad = np.zeros((4, 28, 28, 1), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(TfquantError, match=r"calibration_data has 1 NaN/Inf values"):
        qat.quantize_for_training(cnn, calibration_data=bad)
    with pytest.raises(TfquantError, match=r"calibration_data is empty"):
        qat.quantize_for_training(cnn, calibration_data=np.zeros((0, 28, 28, 1), np.float32))


def test_layer_ranges_from_tflite_tensor_names(cnn: Any) -> None:
    class Range:  # tfquant.calibration.Range's shape
        def __init__(self, lo: float, hi: float) -> None:
            self.lo, self.hi = lo, hi

    tensor_ranges = {
        "serving_default_image:0": (0.0, 1.0),
        "cnn/conv1/Relu;cnn/conv1/BiasAdd;cnn/conv1/Conv2D": Range(0.0, 4.0),
        "cnn/pool1/MaxPool": (0.0, 4.0),
        "cnn/fc1/MatMul;cnn/fc1/Relu": (0.0, 9.0),
        "cnn/fc1/Relu": (0.0, 8.0),  # a later tensor of fc1 wins
    }
    out = ranges.layer_ranges_from_tensor_ranges(cnn, tensor_ranges)
    assert out == {"conv1": (0.0, 4.0), "pool1": (0.0, 4.0), "fc1": (0.0, 8.0)}
    qat_model = qat.quantize_for_training(cnn, initial_ranges=out)
    assert _post_activation(qat_model, "quant_fc1") == (0.0, 8.0)
