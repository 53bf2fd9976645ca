"""`qat --bit_budget B --bit_allocation {qbitopt,oneshot,fixed}`: per-layer weight bits, exact
budget, each kernel of the exported int8 .tflite on its own recorded b-bit grid (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.outside_zoo import builders as B
from tests.outside_zoo.helpers import cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tf_keras as keras

    work = tmp_path_factory.mktemp("bitbudget")
    d = B.digits_splits()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    B.train(model, d["x_train"], d["y_train"], 3)
    path = work / "small.keras"
    model.save(path)
    np.savez(work / "train.npz", x=d["x_train"][:512], y=d["y_train"][:512])
    np.savez(work / "test.npz", x=d["x_test"], y=d["y_test"])
    return {"model": path, "train": work / "train.npz", "test": work / "test.npz", "work": work}


def _run(trained: dict[str, Path], allocation: str, budget: str) -> tuple[dict, Path]:
    out = trained["work"] / f"{allocation}_{budget}.tflite"
    run = cli("qat", "--model", str(trained["model"]), "--train_data", f"npz:{trained['train']}",
              "--calibration_data", f"npz:{trained['train']}", "--num_calibration_examples", "128",
              "--epochs", "2", "--bit_budget", budget, "--bit_allocation", allocation,
              "--original_learning_rate", "1e-2", "--out", str(out))
    assert run.rc == 0, run.explain()
    return json.loads(out.with_suffix(".qat.json").read_text()), out


@pytest.mark.parametrize(("allocation", "budget"), [("qbitopt", "3"), ("oneshot", "3"), ("fixed", "4")])
def test_budget_met_exactly_and_levels_match_recorded_bits(trained, allocation, budget):
    from tfquant.qat.export import weight_levels

    rec, out = _run(trained, allocation, budget)
    bits, params = rec["layer_bits"], rec["layer_params"]
    assert set(bits) == {"conv1", "conv2", "logits"}
    total = sum(bits[n] * params[n] for n in bits)
    assert total == float(budget) * sum(params.values())  # the budget, exactly
    assert rec["mean_weight_bits"] == float(budget) and rec["bit_allocation"] == allocation
    assert all(2 <= b <= 8 for b in bits.values())
    if allocation == "fixed":
        assert set(bits.values()) == {4}
    if allocation == "qbitopt":
        hist = rec["allocation_history"]
        assert len(hist) >= 2 and all(
            sum(h["bits"][n] * params[n] for n in bits) == total for h in hist)
    levels = weight_levels(out.read_bytes())
    seen = set()
    for layer, b in bits.items():
        tensors = [w for w in levels if layer in w.tensor]
        assert len(tensors) == 1, (layer, [w.tensor for w in levels])
        seen.add(layer)
        distinct = tensors[0].max_distinct_per_channel
        assert distinct <= 2 ** b - 1, (layer, b, distinct)  # on its own b-bit grid
        if b <= 4:  # and really b bits: more levels than b - 1 bits hold
            assert distinct > 2 ** (b - 1) - 1, (layer, b, distinct)
    assert rec["weight_bits"] == max(bits.values())


def test_fixed_needs_whole_bits(trained):
    run = cli("qat", "--model", str(trained["model"]), "--train_data", f"npz:{trained['train']}",
              "--calibration_data", f"npz:{trained['train']}", "--epochs", "1",
              "--bit_budget", "3.5", "--bit_allocation", "fixed",
              "--out", str(trained["work"] / "bad.tflite"))
    assert run.rc == 2 and "error:" in run.err and "whole bit width" in run.err
    assert not (trained["work"] / "bad.tflite").exists()
