"""Layers tfmot's registry rejects or that need configs of ours: train one step, export, match.

Each tiny model (see conftest) has the layer under test between a conv and the classifier.
At 4-bit weights every layer's config comes from our registry; at 8 bits (tfmot's default
scheme) only Multiply and the TF-op layers do.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import pytest

from tfquant.evaluation import fidelity
from tfquant import qat
from tfquant.qat import configs, tfop
from tfquant.errors import TfquantError
from tfquant.evaluation import inspect_model

# kind -> (layer whose config we check, our config class at 4 bits, TFLite op it becomes)
CASES = {
    "multiply": ("multiply", configs.OutputConfig, "MUL"),
    "reshape": ("reshape", configs.PassThroughConfig, "RESHAPE"),
    "upsampling2d": ("upsampling2d", configs.OutputConfig, "RESIZE_NEAREST_NEIGHBOR"),
    "conv2d_transpose": ("conv2d_transpose", configs.WeightLayerConfig, "TRANSPOSE_CONV"),
    "tf_op": ("tf.math.reduce_mean", configs.OutputConfig, "MEAN"),
}


@pytest.mark.parametrize(
    ("kind", "bits"),
    [(kind, 4) for kind in CASES] + [("multiply", 8), ("tf_op", 8)],
)
def test_layer_trains_one_step_and_exports(
    tiny: Callable[..., Any], tiny_data: Any, kind: str, bits: int
) -> None:
    layer_name, config_class, op = CASES[kind]
    qat_model = qat.quantize_for_training(
        tiny(kind), weight_bits=bits, calibration_data=tiny_data.x
    )
    # TF-op layers are named by Keras with a per-process counter (tf.math.reduce_mean_3).
    (wrapper,) = [
        layer
        for layer in qat_model.layers
        if re.fullmatch(
            re.escape(layer_name) + r"(_\d+)?", getattr(getattr(layer, "layer", None), "name", "")
        )
    ]
    assert isinstance(wrapper.quantize_config, config_class), type(wrapper.quantize_config)

    before = [w.numpy().copy() for w in qat_model.trainable_weights]
    recipe = qat.FinetuneSchedule(
        name="one_step", optimizer="adam", learning_rate=1e-3, batch_size=len(tiny_data.x)
    )
    result = qat.finetune(
        qat_model, recipe, tiny_data.x, tiny_data.y, epochs=1, seed=0, verbose=False
    )
    assert result.steps == 1 and np.isfinite(result.loss[0])
    after = [w.numpy() for w in qat_model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "no weight moved"

    tflite = qat.export_tflite(qat_model)  # raises if any op stayed float
    report = inspect_model(tflite)
    assert report.op_counts.get(op, 0) >= 1, report.op_counts
    diffs = fidelity.first_divergence(qat_model, tflite, tiny_data.x[:16])
    assert fidelity.first_diverged(diffs) is None, fidelity.format_layer_diffs(diffs)
    report = fidelity.compare(qat_model, tflite, tiny_data.x, tiny_data.y, diagnose_below=None)
    logit_scale = float(np.abs(qat_model.predict(tiny_data.x, verbose=0)).max())
    assert report.max_abs_logit_diff <= 0.05 * logit_scale, report.summary()
    if kind == "conv2d_transpose" and bits == 4:
        (w,) = [w for w in qat.weight_levels(tflite) if w.op == "TRANSPOSE_CONV"]
        assert w.max_distinct_per_channel <= 15 and -7 <= w.qmin and w.qmax <= 7, w


def test_tf_op_binding_keeps_the_function(tiny: Callable[..., Any], tiny_data: Any) -> None:
    model = tiny("tf_op")
    bound = tfop.bind_tf_op_layers(model)
    kinds = {type(layer).__name__ for layer in bound.layers}
    assert "TFOpLambda" not in kinds and "TFOpCall" in kinds
    assert [layer.name for layer in bound.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(bound(tiny_data.x).numpy(), model(tiny_data.x).numpy())
    (concat,) = [layer for layer in bound.layers if getattr(layer, "function", None) == "concat"]
    assert concat.first_is_list and concat.num_first == 2 and concat.constant_kwargs == {"axis": -1}


def test_tf_op_slicing_is_refused() -> None:
    import tf_keras as keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)[:, 1:, :, :]
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(
        TfquantError, match=r"TF-op layer '.*getitem.*' cannot be quantized \(tensor slicing"
    ):
        qat.quantize_for_training(model)


@pytest.mark.parametrize("kind", ["tf_op", "depthwise_bn"])
def test_qat_model_saves_and_loads_in_qat_scope(
    tiny: Callable[..., Any], tiny_data: Any, tmp_path: Any, kind: str
) -> None:
    """Our configs, quantizers and TFOpCall deserialize (HDF5: tfmot cannot SavedModel-save
    every wrapped layer, e.g. Conv2DTranspose)."""
    import tf_keras as keras

    qat_model = qat.quantize_for_training(tiny(kind), weight_bits=4, calibration_data=tiny_data.x)
    path = str(tmp_path / "qat.h5")
    qat_model.save(path)
    with qat.qat_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(tiny_data.x, verbose=0), qat_model.predict(tiny_data.x, verbose=0)
    )
