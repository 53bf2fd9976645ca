"""The ACIQ study at smoke size: tflite and sim cells, exact mean bits, the table and claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.experiments.aciq import AciqConfig, executed_in, run_aciq
from tfquant.study import Verdict


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("aciq")
    config = AciqConfig(models=("cnn",), configs=("W4A8", "W4A4"), rows=("naive", "all"),
                        num_calibration_examples=100, limit=200)
    return out, config, run_aciq(config, out, log=lambda s: None)


def test_every_cell_is_measured_where_the_table_says(smoke) -> None:
    _, config, records = smoke
    assert {r.key for r in records} == {("cnn", "float", "float")} | {
        ("cnn", c, r) for c in config.configs for r in config.rows}
    for r in records:
        assert not r.failed, r.error
        assert 0.0 <= r.accuracy <= 1.0 and r.n_examples == 200
        if r.config != "float":
            assert r.executed_in == executed_in(r.config)
            assert r.mean_bits == pytest.approx(4.0, abs=1e-9)  # the mean is met exactly
    assert executed_in("W4A8") == "tflite" and executed_in("W4A4") == "sim" and executed_in("W8A4") == "sim"
    allocated = next(r for r in records if r.key == ("cnn", "W4A8", "all"))
    assert allocated.channel_bits_range[0] < 4 < allocated.channel_bits_range[1]
    assert Path(allocated.tflite_path).is_file()


def test_results_table_marks_sim_cells_and_states_findings(smoke) -> None:
    out, _, _ = smoke
    text = (out / "results.md").read_text()
    assert "## W4A8 (tflite)" in text and "## W4A4 (sim)" in text
    assert " sim |" in text and " tflite |" in text
    assert "## Findings vs the paper" in text
    assert any(v.value in text for v in (Verdict.HELD, Verdict.NOT_HELD, Verdict.PARTLY))


def test_unknown_config_or_row_is_an_error() -> None:
    with pytest.raises(TfquantError, match="unknown config/row"):
        AciqConfig(models=("cnn",), configs=("W2A2",))
    with pytest.raises(TfquantError, match="unknown config/row"):
        AciqConfig(models=("cnn",), rows=("magic",))
