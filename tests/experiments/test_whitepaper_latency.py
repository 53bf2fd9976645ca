"""The whitepaper latency study: interleaved timing (fake clock) and the smoke-size flow."""

from __future__ import annotations

import pytest

from tfquant import TfquantError
from tfquant.evaluation.interleaved import speedup, time_interleaved


class _FakeCpu:
    """A clock that advances only inside invokes, by each model's cost times the load, which
    changes every fake second (1x, 2x, 3x, 1x, ...): steady within most rounds, not across them."""

    def __init__(self) -> None:
        self.now = 0

    def clock(self) -> int:
        return self.now

    def model(self, cost_ns: int):
        def invoke() -> None:
            self.now += cost_ns * (1 + (self.now // 1_000_000_000) % 3)
        return invoke


def test_interleaved_timing_bounds_slow_models_and_gives_ratios() -> None:
    cpu = _FakeCpu()
    invokes = {"fast": cpu.model(1_000_000), "slow": cpu.model(4_000_000), "huge": cpu.model(900_000_000)}
    times = time_interleaved(invokes, rounds=6, runs_per_round=4, warmup=2, max_seconds=2.0, min_runs=3,
                             clock=cpu.clock)
    assert times["fast"].runs == times["slow"].runs == 24 and not times["fast"].bounded
    # 0.9 s per invoke at least: stopped after min_runs once 2 s were spent, and says so
    assert times["huge"].bounded and 3 <= times["huge"].runs < 24
    assert times["fast"].min_ms >= 1.0 and times["fast"].median_ms <= times["fast"].p90_ms
    ratio = speedup(times["fast"], times["slow"])
    assert ratio == pytest.approx(4.0)  # the load cancels within a round
    assert speedup(times["fast"], times["fast"]) == pytest.approx(1.0)


def test_interleaved_timing_rejects_bad_counts() -> None:
    with pytest.raises(TfquantError, match="rounds must be an integer >= 1"):
        time_interleaved({"a": lambda: None}, rounds=0)
    with pytest.raises(TfquantError, match="no models"):
        time_interleaved({})


def test_smoke_run_records_and_table(tmp_path) -> None:
    from tfquant.experiments.whitepaper_latency import WhitepaperLatencyConfig, run_whitepaper_latency

    config = WhitepaperLatencyConfig.of_size("smoke")
    records = [r.to_json() for r in run_whitepaper_latency(config, tmp_path, log=lambda s: None)]
    assert {(r["mode"], r["runtime"]) for r in records} == {
        (m, r) for m in ("fp32", "int8") for r in ("xnnpack", "builtin")}
    for r in records:
        assert r["executed_in"] == "tflite" and r["weights"] == "random"
        assert 0 < r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["input_shape"] == [32, 32, 3] and r["latency_runs"] >= 3
        if r["mode"] == "fp32":
            assert r.get("speedup_vs_fp32") is None
        else:
            assert r["speedup_vs_fp32"] > 0
        if r["runtime"] == "builtin":
            assert r["delegated_ops"] == 0 and r.get("speedup_vs_builtin") is None
        else:
            assert 0 < r["delegated_ops"] <= r["total_ops"] and r["speedup_vs_builtin"] > 0
    sizes = {r["mode"]: r["size_bytes"] for r in records}
    assert 3.0 < sizes["fp32"] / sizes["int8"] < 4.1
    table = (tmp_path / "results.md").read_text()
    assert "random weights" in table and "executed_in: tflite" in table
    assert "Which of the paper's speed-ups hold on this CPU" in table and "4x smaller" in table


@pytest.mark.parametrize("kw, message", [
    ({"models": ("vgg",)}, "unknown or no models"),
    ({"modes": ("int4",)}, "unknown or no modes"),
    ({"runtimes": ("delegate",)}, "xnnpack and/or builtin"),
    ({"input_size": 50}, "inception_v3 needs input_size >= 75"),
    ({"input_size": 16, "models": ("mobilenet",)}, "input_size must be >= 32"),
    ({"rounds": 0}, "rounds must be a positive integer"),
    ({"max_seconds": 0}, "max_seconds must be > 0"),
])
def test_config_rejects_bad_settings(kw, message) -> None:
    from tfquant.experiments.whitepaper_latency import WhitepaperLatencyConfig

    with pytest.raises(TfquantError, match=message):
        WhitepaperLatencyConfig(**kw)
