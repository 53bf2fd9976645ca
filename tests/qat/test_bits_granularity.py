"""Weight granularity and bit widths, read back from the exported int8 weights."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from tfquant import qat
from tfquant.evaluation import fidelity
from tfquant.errors import TfquantError


@pytest.fixture(scope="module")
def zoo_cnn() -> Any:
    from tfquant import models

    return models.build("cnn")


def _export(model: Any, cal: np.ndarray, **options: Any) -> bytes:
    return qat.export_tflite(qat.quantize_for_training(model, calibration_data=cal, **options))


def test_per_tensor_weights_have_one_scale(
    zoo_cnn: Any, cnn_qat: dict[str, Any], fmnist: dict[str, Any]
) -> None:
    per_tensor = qat.weight_levels(_export(zoo_cnn, fmnist["cal"], weight_granularity="per_tensor"))
    assert [w.op for w in per_tensor] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"] * 2
    assert all(w.num_scales == 1 for w in per_tensor), per_tensor
    # The default is per channel: one scale per output channel of every conv.
    per_channel = qat.weight_levels(cnn_qat["tflite"])
    convs = [w for w in per_channel if w.op == "CONV_2D"]
    assert [w.num_scales for w in convs] == [w.shape[0] for w in convs] == [16, 32, 64]


@pytest.mark.parametrize("bits", [4, 2, 3, 5])  # 3 and 5: the converter rounds a plain fake quant off-grid
def test_sub_8_bit_weights_export_on_the_b_bit_grid(
    zoo_cnn: Any, fmnist: dict[str, Any], bits: int
) -> None:
    levels = qat.weight_levels(_export(zoo_cnn, fmnist["cal"], weight_bits=bits))
    assert len(levels) == 5
    kmax = 2 ** (bits - 1) - 1  # narrow range: k in [-7, 7] at 4 bits, [-1, 1] at 2 bits
    for w in levels:
        assert w.max_distinct_per_channel <= 2**bits - 1 <= 2**bits, w
        # Evenly spaced: q = k·g, |k| <= kmax (at 2 bits the converter stores {-7, 0, 7}).
        ks = np.asarray(w.values) // w.grid_step
        assert np.array_equal(ks * w.grid_step, w.values), w
        assert np.abs(ks).max() <= kmax, w
        # Symmetric per-channel ranges: some channel's largest weight sits on the grid's end.
        assert np.abs(ks).max() == kmax, w


def test_8_bit_weights_use_more_than_16_levels(cnn_qat: dict[str, Any]) -> None:
    """The contrast for the test above: the grid check can fail on 8-bit weights."""
    levels = qat.weight_levels(cnn_qat["tflite"])
    assert max(w.max_distinct_per_channel for w in levels) > 16


def test_4_bit_depthwise_is_per_channel_and_keeps_its_grid_through_bn(
    tiny: Callable[..., Any], tiny_data: Any
) -> None:
    """Per-channel depthwise ranges (tfmot's default is per tensor) survive BN folding."""
    qat_model = qat.quantize_for_training(
        tiny("depthwise_bn"), weight_bits=4, calibration_data=tiny_data.x
    )
    tflite = qat.export_tflite(qat_model)
    (dw,) = [w for w in qat.weight_levels(tflite) if w.op == "DEPTHWISE_CONV_2D"]
    assert dw.num_scales == 8 and dw.quantized_dimension == 3
    assert dw.max_distinct_per_channel <= 15 and -7 <= dw.qmin and dw.qmax <= 7
    diffs = fidelity.first_divergence(qat_model, tflite, tiny_data.x[:8])
    assert fidelity.first_diverged(diffs) is None, fidelity.format_layer_diffs(diffs)


def test_sub_8_bit_activations_simulate_but_do_not_export(
    zoo_cnn: Any, fmnist: dict[str, Any]
) -> None:
    qat_model = qat.quantize_for_training(
        zoo_cnn, activation_bits=4, calibration_data=fmnist["cal"]
    )
    from tfquant.qat.export import activation_bits

    assert set(activation_bits(qat_model).values()) == {4}
    test = fmnist["test"]
    logits = qat_model.predict(test.x[:200], verbose=0)
    assert np.mean(logits.argmax(1) == test.y[:200]) > 0.5  # a usable 4-bit simulation
    with pytest.raises(
        TfquantError, match=r"4-bit activations, which TFLite cannot run.*activation_bits=8"
    ):
        qat.export_tflite(qat_model)


def test_per_tensor_with_batch_norm_is_refused(tiny: Callable[..., Any]) -> None:
    with pytest.raises(
        TfquantError, match=r"per-tensor weights cannot absorb BatchNormalization 'bn'.*per_channel"
    ):
        qat.quantize_for_training(tiny("conv_bn"), weight_granularity="per_tensor")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"weight_bits": 1}, r"weight_bits must be an integer in \[2, 8\], got 1; "),
        ({"weight_bits": 16}, r"weight_bits must be an integer in \[2, 8\]"),
        ({"activation_bits": 4.0}, r"activation_bits must be an integer"),
        ({"weight_granularity": "per_row"}, r"unknown weight granularity 'per_row'; choose one of"),
    ],
)
def test_bad_bits_and_granularity(
    tiny: Callable[..., Any], options: dict[str, Any], match: str
) -> None:
    with pytest.raises(TfquantError, match=match):
        qat.quantize_for_training(tiny("reshape"), **options)


def test_spec_names_and_defaults() -> None:
    spec = qat.QatSpec()
    assert spec.is_tfmot_default and spec.exportable and spec.name == "w8a8_per_channel"
    low = qat.QatSpec(weight_bits=4, activation_bits=4, weight_granularity="per_tensor")
    assert not low.is_tfmot_default and not low.exportable and low.name == "w4a4_per_tensor"
