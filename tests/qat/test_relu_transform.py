"""A conv / dense read directly by a ReLU layer keeps its kernel fake quant.

tfmot's ``LayerReLUQuantize`` / ``LayerReluActivationQuantize`` transforms give such a layer a
no-op config (no fake quant between it and the ReLU, which the converter fuses) and with it
drop the kernel's fake quant; ``quantize_for_training`` puts the kernel's back
(``KernelOnlyConfig``) and raises if any kernel outside ``skip_layers`` is left in float.
"""

from __future__ import annotations

from typing import Any

import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.evaluation import fidelity

from tests.qat.conftest import BATCH


def _conv_relu_model(seed: int = 0) -> Any:
    """Input -> Conv2D(linear) -> ReLU() -> DepthwiseConv2D -> Activation('relu') ->
    Flatten -> Dense(linear) -> ReLU -> Dense: every ReLU-fed weight layer kind."""
    import tf_keras as keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1), name="image")
    x = L.Conv2D(8, 3, strides=2, name="conv")(inputs)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.Activation("relu", name="dw_relu")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(32, name="fc")(x)
    x = L.ReLU(name="fc_relu")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x), name="conv_relu")


@pytest.fixture(scope="module")
def trained(fmnist: dict[str, Any]) -> Any:
    import tf_keras as keras

    model = _conv_relu_model()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(fmnist["train"].x, fmnist["train"].y, epochs=4, batch_size=BATCH, verbose=0)
    return model


def _config_names(qat_model: Any) -> dict[str, str]:
    return {
        layer.layer.name: type(layer.quantize_config).__name__
        for layer in qat_model.layers
        if hasattr(layer, "quantize_config")
    }


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"weight_bits": 4}, {"weight_granularity": "per_tensor"}],
    ids=["tfmot_default", "n_bit", "per_tensor"],
)
def test_relu_fed_kernels_are_fake_quantized(trained: Any, kwargs: dict[str, Any]) -> None:
    from tfquant import qat
    from tfquant.qat.annotate import float_kernels
    from tfquant.qat.export import weight_bits

    qat_model = qat.quantize_for_training(trained, **kwargs)
    assert float_kernels(qat_model) == []
    bits = weight_bits(qat_model)
    for name in ("conv", "dw", "fc", "logits"):
        assert bits[f"quant_{name}"] == kwargs.get("weight_bits", 8), name
    configs = _config_names(qat_model)
    # No fake quant between the layer and its ReLU: the ReLU's range is the fused op's.
    assert configs["conv"] == configs["dw"] == configs["fc"] == "KernelOnlyConfig"


def test_conv_relu_exports_and_agrees(trained: Any, fmnist: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from tfquant import qat

    qat_model = qat.quantize_for_training(trained, calibration_data=fmnist["cal"])
    tflite = qat.export_tflite(qat_model)
    assert qat.float_ops(tflite) == []
    ops = [op["op_name"] for op in Interpreter(model_content=tflite)._get_ops_details()]
    assert "RELU" not in ops, ops  # the converter fuses each ReLU into its conv / dense
    n = 300
    report = fidelity.compare(qat_model, tflite, fmnist["test"].x[:n], fmnist["test"].y[:n])
    assert report.agreement >= 0.98, report.summary()


def test_skipped_layer_stays_float(trained: Any) -> None:
    from tfquant import qat
    from tfquant.qat.annotate import float_kernels
    from tfquant.qat.export import weight_bits

    qat_model = qat.quantize_for_training(trained, skip_layers=["conv"])
    assert "quant_conv" not in weight_bits(qat_model)
    # tfmot output-quantizes the skipped conv (its reader is quantized); the kernel is float.
    assert float_kernels(qat_model) == ["quant_conv"]
    assert "quant_dw" in weight_bits(qat_model)


def test_kernel_left_in_float_is_an_error(trained: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fix-up, tfmot's transform would leave kernels in float: named, not silent."""
    from tfquant import qat
    from tfquant.qat import annotate
    from tfquant.errors import TfquantError

    monkeypatch.setattr(annotate, "_KernelKeepingScheme", lambda scheme, ours: scheme)
    with pytest.raises(TfquantError, match=r"'conv'.*'dw'.*'fc'.*skip_layers"):
        qat.quantize_for_training(trained)
    qat_model = qat.quantize_for_training(trained, skip_layers=["conv", "dw", "fc"])
    assert len(annotate.float_kernels(qat_model)) == 3


def test_kernel_only_config_round_trips() -> None:
    from tfquant.qat import annotate, configs

    config = annotate.KernelOnlyConfig(
        weight_attr="kernel", kernel_layout="conv", weight_bits=4, activation_bits=8,
        per_channel=True,
    )
    again = annotate.KernelOnlyConfig.from_config(config.get_config())
    assert again == config
    assert again != configs.WeightLayerConfig(**config.get_config())
    assert annotate.custom_objects()["KernelOnlyConfig"] is annotate.KernelOnlyConfig
    assert again.get_activations_and_quantizers(None) == []
