"""The QAT export round trip: the .tflite computes what the QAT Keras model simulated."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant.evaluation import fidelity
from tfquant import qat


def test_zoo_cnn_export_agrees_with_the_qat_model(
    cnn_qat: dict[str, Any], fmnist: dict[str, Any]
) -> None:
    test = fmnist["test"]
    report = fidelity.compare(cnn_qat["model"], cnn_qat["tflite"], test.x, test.y)
    assert report.n_examples == 1000
    assert report.agreement >= 0.99, report.summary()
    # Agreement of two accuracies within 1% follows; check both are a trained model's.
    assert report.keras_accuracy > 0.85 and report.tflite_accuracy > 0.85, report.summary()
    assert abs(report.keras_accuracy - report.tflite_accuracy) <= 1 - report.agreement + 1e-9
    logits_scale = np.abs(cnn_qat["model"].predict(test.x[:100], verbose=0)).max()
    assert report.max_abs_logit_diff < 0.05 * logits_scale, report.summary()


def test_export_is_int8_end_to_end(cnn_qat: dict[str, Any]) -> None:
    assert qat.float_ops(cnn_qat["tflite"]) == []
    levels = qat.weight_levels(cnn_qat["tflite"])
    assert [w.op for w in levels] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"] * 2
    assert all(w.qmin >= -127 and w.qmax <= 127 for w in levels)


def test_healthy_export_has_no_diverging_layer(
    cnn_qat: dict[str, Any], fmnist: dict[str, Any]
) -> None:
    diffs = fidelity.first_divergence(cnn_qat["model"], cnn_qat["tflite"], fmnist["test"].x[:8])
    names = [d.layer for d in diffs]
    for layer in ("quant_conv1", "quant_conv2", "quant_conv3", "quant_fc1", "quant_logits"):
        assert layer in names, names
    assert fidelity.first_diverged(diffs) is None, fidelity.format_layer_diffs(diffs)
    for d in diffs:
        assert d.dtype == "int8" and d.scale is not None
        assert d.local_max_diff_steps is not None and d.local_max_diff_steps <= 1.001, d


def test_first_divergence_names_the_layer_that_differs(
    cnn_qat: dict[str, Any], fmnist: dict[str, Any]
) -> None:
    """Shift conv2's bias in the Keras model after export: the diff must blame conv2."""
    model, tflite = cnn_qat["model"], cnn_qat["tflite"]
    bias = model.get_layer("quant_conv2").layer.bias
    saved = bias.numpy()
    try:
        bias.assign(saved + 0.5)
        diffs = fidelity.first_divergence(model, tflite, fmnist["test"].x[:8])
        first = fidelity.first_diverged(diffs)
        assert first is not None and first.layer == "quant_conv2", fidelity.format_layer_diffs(diffs)
        assert first.local_max_diff_steps > 10
        upstream = [d for d in diffs if d.layer in ("quantize_layer", "quant_conv1", "quant_pool1")]
        assert upstream and not any(d.diverged for d in upstream)
        report = fidelity.compare(
            model, tflite, fmnist["test"].x[:64], fmnist["test"].y[:64], diagnose_below=1.01
        )
        assert report.first_divergent_layer == "quant_conv2", report.summary()
        assert report.layer_diffs
    finally:
        bias.assign(saved)


def test_compare_rejects_mismatched_labels(cnn_qat: dict[str, Any], fmnist: dict[str, Any]) -> None:
    import pytest

    from tfquant.errors import TfquantError

    test = fmnist["test"]
    with pytest.raises(TfquantError, match="integer labels"):
        fidelity.compare(cnn_qat["model"], cnn_qat["tflite"], test.x[:10], test.y[:9])
    with pytest.raises(TfquantError, match="shape"):
        fidelity.compare(cnn_qat["model"], cnn_qat["tflite"], test.x[:10, :14], test.y[:10])


def test_grid_levels_read_back_the_weight_grid(cnn_qat: dict[str, Any]) -> None:
    from tfquant.qat.export import grid_levels

    levels = qat.weight_levels(cnn_qat["tflite"])
    on8 = grid_levels(cnn_qat["tflite"], 8)
    assert [w["tensor"] for w in on8["weight_levels"]] == [w.tensor for w in sorted(levels, key=lambda w: w.index)]
    assert on8["max_distinct_per_channel"] == max(w.max_distinct_per_channel for w in levels) <= 255
    assert on8["allowed_levels"] == 255 and on8["on_b_bit_grid"]
    assert not grid_levels(cnn_qat["tflite"], 2)["on_b_bit_grid"]  # 8-bit QAT weights are not on 3 levels


def test_export_run_writes_the_tflite_and_its_qat_record(cnn_qat: dict[str, Any], fmnist: dict[str, Any],
                                                          tmp_path) -> None:
    import json
    import time

    from tfquant.qat.pipeline import TrainedQat

    trained = TrainedQat(qat_model=cnn_qat["model"], finetune=None, from_logits=True, bn_reestimated=0,
                         start_accuracy=None)
    test = fmnist["test"]
    path = tmp_path / "cnn" / "qat.tflite"
    tflite, report = qat.export_run(trained, path, test.x[:200], test.y[:200], started=time.perf_counter(),
                                    record=dict(model="zoo:cnn", weight_bits=8, weight_granularity="per_channel",
                                                epochs=1, seed=0, train_examples=10, num_calibration_examples=10,
                                                finetune_recipe_choice="nvidia", finetune_recipe={}))
    assert path.read_bytes() == tflite and report.n_examples == 200
    record = json.loads(path.with_suffix(".qat.json").read_text())
    assert record["model"] == "zoo:cnn" and record["qat_accuracy"] == report.tflite_accuracy
    assert record["accuracy_data"] == "200 eval examples" and record["fidelity"]["agreement"] == report.agreement
