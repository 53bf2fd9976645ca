"""The QBitOpt study at smoke size: budget met, levels per kernel, exact bytes, the table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.experiments.qbitopt import SIZES, QbitoptConfig, mixed_packed_bytes, run_qbitopt


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
    assert mixed_packed_bytes(model, {"c": 3, "d": 2}) == 14 + 16 + 108 + 12 + 4 * 7


def test_bad_config() -> None:
    with pytest.raises(TfquantError, match="whole-bit"):
        QbitoptConfig(budgets=(3.5,))
    with pytest.raises(TfquantError, match="unknown zoo"):
        dataclasses.replace(QbitoptConfig(), models=("nope",))
