"""The QBitOpt study at smoke size: budget met, levels per kernel, exact bytes, the table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.algorithms.packed_size import float32_size_bytes, packed_size_bytes
from tfquant.experiments.qbitopt import SIZES, QbitoptConfig, run_qbitopt
from tfquant.io_utils import read_jsonl

COMMITTED = Path(__file__).resolve().parents[2] / "experiments" / "results" / "full" / "qbitopt" / "results.jsonl"


def test_smoke_records(tmp_path: Path) -> None:
    config = QbitoptConfig(**{**SIZES["smoke"], "methods": ("fixed", "qbitopt")})
    records = run_qbitopt(config, tmp_path, log=lambda s: None)
    by_cell = {r["cell"]: r for r in records}
    assert set(by_cell) == {"float", "fixed", "qbitopt"}
    for name in ("fixed", "qbitopt"):
        r = by_cell[name]
        assert r["executed_in"] == "tflite" and 0.0 <= r["accuracy"] <= 1.0
        total = sum(r["layer_bits"][n] * r["layer_params"][n] for n in r["layer_bits"])
        assert r["budget_met"] and total == 3 * sum(r["layer_params"].values())
        assert r["levels_within_bits"] and all(v > 0 for v in r["max_levels"].values())
        assert r["on_grid"] is True  # every stored weight an exact b-bit level (3-bit: INT4 q in [-3, 3])
        assert r["packed_bytes"] < r["float32_bytes"] and Path(r["tflite_path"]).is_file()
    md = (tmp_path / "results.md").read_text()
    assert "| cnn | 3 | " in md and "## What ran where" in md and "Goal" in md
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["experiment"] == "qbitopt" for x in lines)


def test_packed_bytes_exact() -> None:
    import tf_keras as keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="d")(x))
    # c: 36 weights at 3 bits -> ceil(108 / 8) = 14 bytes + 4 float32 scales; d: 6*6*4 x 3 =
    # 432 weights at 2 bits -> 108 bytes + 3 scales; biases 4 + 3 float32
    assert packed_size_bytes(model, {"c": 3, "d": 2}) == 14 + 16 + 108 + 12 + 4 * 7
    # a layer left out of the mapping stays float32; one b for every layer is the int form
    assert packed_size_bytes(model, {"c": 3}) == 14 + 16 + 4 * 432 + 4 * 7
    assert packed_size_bytes(model, {"c": 4, "d": 4}) == packed_size_bytes(model, 4)
    with pytest.raises(TfquantError, match="bits must be an integer"):
        packed_size_bytes(model, {"c": 1})


def test_committed_packed_bytes_are_recomputed_exactly() -> None:
    """The committed full run's packed and float32 bytes (written by the code before
    packed_size_bytes took per-layer bits) equal a recomputation on the BN-folded zoo models
    (sizes depend on shapes only, so untrained models do)."""
    from tfquant import models
    from tfquant.algorithms.bn_fold import fold_batch_norms

    records = [r for r in read_jsonl(COMMITTED) if r.get("packed_bytes") is not None]
    assert {r["model"] for r in records} >= {"cnn", "mobilenet_v1"}
    folded = {m: fold_batch_norms(models.build(m)) for m in {r["model"] for r in records}}
    mixed = 0
    for r in records:
        assert packed_size_bytes(folded[r["model"]], r["layer_bits"]) == r["packed_bytes"], r["cell"]
        assert float32_size_bytes(folded[r["model"]]) == r["float32_bytes"]
        mixed += len(set(r["layer_bits"].values())) > 1
        if r["cell"] == "fixed":
            assert packed_size_bytes(folded[r["model"]], int(r["budget"])) == r["packed_bytes"]
    assert mixed >= 2  # per-layer bits that differ, not only the uniform case


def test_bad_config() -> None:
    with pytest.raises(TfquantError, match="whole-bit"):
        QbitoptConfig(budgets=(3.5,))
    with pytest.raises(TfquantError, match="unknown zoo"):
        dataclasses.replace(QbitoptConfig(), models=("nope",))
