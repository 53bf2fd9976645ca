"""BN-folded QAT layers inside tfmot QAT models: configs, correction, freeze, fine-tuning."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
import tf_keras as keras

from tfquant import qat
from tfquant.qat import bn_correction
from tfquant.qat.bn_correction import (
    FreezableFoldedConvBN,
    FreezableFoldedDepthwiseConvBN,
    folded_layers,
    quantize_folded_for_training,
)
from tfquant.qat.spec import QatSpec
from tfquant.qat.export import activation_bits
from tfquant.errors import TfquantError
from tfquant.models.train import DEFAULT_CONFIGS

L = keras.layers


def _schedule(*, correction: bool = True, freeze: int | None = 2) -> qat.FinetuneSchedule:
    base = qat.whitepaper_schedule(DEFAULT_CONFIGS["cnn"], bn_correction=correction)
    return base.replace(batch_size=32, freeze_bn_after_steps=freeze)


def _conv_bn_add(seed: int = 0) -> keras.Model:
    """conv -> BN -> Add (no ReLU after the folded conv) -> ReLU -> Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    y = L.Conv2D(4, 3, padding="same", use_bias=False, name="conv_b")(x)
    y = L.BatchNormalization(name="bn_b")(y)
    x = L.ReLU(name="relu_out")(L.Add(name="add")([x, y]))
    return keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten()(x)), name="conv_bn_add")


def _randomize_bn(model: keras.Model, seed: int = 0) -> None:
    """Give every BN statistics far from (0, 1) so that folding them matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)])


@pytest.mark.parametrize("kind, cls", [("conv_bn", FreezableFoldedConvBN),
                                       ("depthwise_bn", FreezableFoldedDepthwiseConvBN)])
def test_pairs_become_freezable_folded_layers_whose_relu_carries_the_quant(
    tiny: Callable[..., Any], tiny_data: Any, kind: str, cls: type
) -> None:
    model = tiny(kind)
    _randomize_bn(model)
    qat_model = quantize_folded_for_training(
        model, _schedule(), calibration_data=tiny_data.x)
    (folded,) = folded_layers(qat_model)
    assert type(folded) is cls and folded.bn_correction and folded.freeze_bn_delay == 2
    assert folded.weight_quantizer.bits == 8 and folded.weight_quantizer.per_channel
    assert not any(isinstance(getattr(layer, "layer", layer), L.BatchNormalization)
                   for layer in qat_model.layers)
    # TFLite fuses the ReLU into the conv: only the ReLU's output is fake-quantized.
    quantized = activation_bits(qat_model)
    relu = "quant_relu" if kind == "conv_bn" else "quant_dw_relu6"
    assert relu in quantized and f"quant_{folded.name}" not in quantized
    # 8-bit fake quant of the folded model stays close to the float model (inference).
    float_out = model.predict(tiny_data.x, verbose=0)
    qat_out = qat_model.predict(tiny_data.x, verbose=0)
    np.testing.assert_allclose(qat_out, float_out, atol=0.05 * np.abs(float_out).max())


def test_a_folded_layer_read_by_an_add_gets_its_own_output_quant(tiny_data: Any) -> None:
    qat_model = quantize_folded_for_training(
        _conv_bn_add(), _schedule(), spec=QatSpec(weight_bits=4, activation_bits=4),
        calibration_data=tiny_data.x)
    bits = activation_bits(qat_model)
    # The folded conv's output is an ADD input (its own tensor in TFLite); the ADD fuses the
    # ReLU after it, so the ReLU's output is quantized instead of the ADD's.
    assert bits["quant_conv_b"] == 4 and bits["quant_relu_out"] == 4 and "quant_add" not in bits
    (folded,) = folded_layers(qat_model)
    assert folded.weight_quantizer.bits == 4


def test_freeze_fixes_the_moving_statistics_and_naive_layers_refuse_it(
    tiny: Callable[..., Any], tiny_data: Any
) -> None:
    x = tiny_data.x[:16]
    qat_model = quantize_folded_for_training(
        tiny("conv_bn"), _schedule(freeze=None), calibration_data=tiny_data.x)
    (folded,) = folded_layers(qat_model)
    before = folded.moving_mean.numpy().copy()
    qat_model(x, training=True)
    moved = folded.moving_mean.numpy().copy()
    assert np.max(np.abs(moved - before)) > 1e-6  # not frozen: statistics update
    folded.freeze_batch_norm()
    assert folded.freeze_bn_delay == 1  # frozen from the step after the one taken
    qat_model(x, training=True)
    np.testing.assert_array_equal(folded.moving_mean.numpy(), moved)

    naive = quantize_folded_for_training(
        tiny("conv_bn"), _schedule(correction=False, freeze=None), calibration_data=tiny_data.x)
    (layer,) = folded_layers(naive)
    assert not layer.bn_correction and layer.freeze_bn_delay is None
    with pytest.raises(TfquantError, match="naive BN fold .* never freezes"):
        layer.freeze_batch_norm()


def test_finetune_freezes_the_folded_layers_after_n_steps(
    tiny: Callable[..., Any], tiny_data: Any
) -> None:
    schedule = _schedule(freeze=2)
    qat_model = quantize_folded_for_training(
        tiny("conv_bn"), schedule, spec=QatSpec(weight_bits=4), calibration_data=tiny_data.x)
    result = qat.finetune(qat_model, schedule, tiny_data.x, tiny_data.y, epochs=2, seed=0,
                          verbose=False)
    (folded,) = folded_layers(qat_model)
    assert result.steps == 4 and result.bn_frozen_at_step == 2
    assert folded.freeze_bn_delay == 2 and int(folded.step.numpy()) == 4


@pytest.mark.parametrize("schedule, model, match", [
    ("not a schedule", "tiny", "schedule must be a FinetuneSchedule"),
    (_schedule(correction=False, freeze=3), "tiny", r"naive BN fold .*freeze_bn_after_steps=3"),
    (_schedule(), "no_bn", "no Conv2D / DepthwiseConv2D followed by a BatchNormalization"),
])
def test_bad_inputs_are_named(tiny: Callable[..., Any], schedule: Any, model: str, match: str) -> None:
    built = tiny("conv_bn") if model == "tiny" else tiny("reshape")
    with pytest.raises(TfquantError, match=match):
        quantize_folded_for_training(built, schedule)


def test_folded_layer_config_is_registered_for_both_classes() -> None:
    from tfquant.qat import registry

    reg = registry.QatRegistry(QatSpec(weight_bits=4))
    assert set(bn_correction.FREEZABLE_CLASSES.values()) == {
        FreezableFoldedConvBN, FreezableFoldedDepthwiseConvBN}
    for layer in (FreezableFoldedConvBN(2, 3), FreezableFoldedDepthwiseConvBN(3)):
        assert reg.supports(layer)


def test_with_bn_fold_sets_correction_and_freeze_per_fold() -> None:
    from tfquant.qat.bn_correction import BnFold, with_bn_fold

    schedule = qat.whitepaper_schedule(DEFAULT_CONFIGS["cnn"], bn_correction=False)
    assert with_bn_fold(schedule, BnFold.TFMOT, total_steps=64) is schedule
    naive = with_bn_fold(schedule, BnFold.NAIVE, total_steps=64)
    assert (naive.bn_correction, naive.freeze_bn_after_steps) == (False, None)
    corrected = with_bn_fold(schedule, BnFold.CORRECTED, total_steps=64)
    assert (corrected.bn_correction, corrected.freeze_bn_after_steps) == (True, 32)
    assert with_bn_fold(schedule, BnFold.CORRECTED, total_steps=10_000).freeze_bn_after_steps == 200
    assert with_bn_fold(schedule, BnFold.CORRECTED, total_steps=1).freeze_bn_after_steps == 1
    assert with_bn_fold(schedule, BnFold.CORRECTED, total_steps=64, freeze_bn_after_steps=7).freeze_bn_after_steps == 7
    plain = with_bn_fold(schedule, BnFold.CORRECTED, total_steps=64, folds=False)
    assert (plain.bn_correction, plain.freeze_bn_after_steps) == (False, None)
