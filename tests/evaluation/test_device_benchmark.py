"""tfquant benchmark: benchmark_model outputs (tests/data/benchmark_outputs) replayed by a fake adb.

The fake adb is a small script that logs its arguments, answers ``get-state`` and
``getprop ro.product.model``, accepts pushes, and prints a recorded output for the benchmark
run. The outputs follow what ``benchmark_model`` prints in recent releases (``count= ...
p95=``, ``Inference timings in us``, memory lines, the delegate's ``Replacing N out of M
node(s)``, op profiling), in old ones (``Timings (microseconds)``, ``Average inference
timings in us``) and what ``benchmark_litert_model`` prints for the NPU.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tfquant.cli import main
from tfquant.evaluation.benchmark_output import parse

OUTPUTS = Path(__file__).resolve().parents[1] / "data" / "benchmark_outputs"
FAKE_ADB = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["get-state"]:
    if os.environ.get("FAKE_ADB_NO_DEVICE"):
        sys.stderr.write("error: device not found\\n")
        sys.exit(1)
    print("device")
elif args[:2] == ["shell", "getprop"]:
    print("Pixel 8")
elif args[0] == "push":
    print("1 file pushed")
elif args[0] == "shell" and "--graph=" in " ".join(args):
    sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
"""


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ADB", str(adb))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    from tfquant.tflite.flatbuffer import one_op_model

    (tmp_path / "m.tflite").write_bytes(one_op_model())
    (tmp_path / "benchmark_model").write_bytes(b"\x7fELF")
    return tmp_path


def _run(tmp: Path, output: str, runtime: str, *extra: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(OUTPUTS / output))
    return main([
        "benchmark", "--tflite", str(tmp / "m.tflite"), "--android_serial", "R5CT1234",
        "--runtime", runtime, "--num_threads", "4", "--benchmark_binary", str(tmp / "benchmark_model"),
        "--output", str(tmp / "r.json"), *extra,
    ])


def _adb_calls(tmp: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp / "adb.log").read_text().splitlines()]


def test_recent_format_xnnpack_with_op_profiling(fake_adb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(fake_adb, "recent_xnnpack.txt", "xnnpack", "--op_profiling", monkeypatch=monkeypatch) == 0
    r = json.loads((fake_adb / "r.json").read_text())
    assert r["device"] == "Pixel 8" and r["runtime"] == "xnnpack" and r["threads"] == 4
    assert r["latency_ms_avg"] == pytest.approx(11.7884) and r["latency_ms_min"] == pytest.approx(11.588)
    assert r["latency_ms_std"] == pytest.approx(0.212) and r["init_ms"] == pytest.approx(61.523)
    assert (r["delegated_ops"], r["total_ops"]) == (31, 31) and r["peak_memory_mb"] == pytest.approx(17.4492)
    assert r["op_profile"][0]["node_type"] == "TfLiteXNNPackDelegate"
    calls = _adb_calls(fake_adb)
    assert all(c[:2] == ["-s", "R5CT1234"] for c in calls)
    assert any(c[2] == "push" and c[3].endswith("m.tflite") for c in calls)
    run = next(c[3] for c in calls if c[2] == "shell" and "--graph=" in c[3])
    assert "--use_xnnpack=true" in run and "--num_threads=4" in run and "--enable_op_profiling=true" in run
    assert "31 of 31 ops delegated" in capsys.readouterr().out


def test_old_format(fake_adb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = parse((OUTPUTS / "old_cpu.txt").read_text())
    assert parsed.format == "old" and parsed.latency_ms_avg == pytest.approx(26.2875)
    assert parsed.init_ms == pytest.approx(7.482) and parsed.warmup_ms_avg == pytest.approx(26.4321)
    assert parsed.latency_ms_min == pytest.approx(25.903) and parsed.runs == 50
    assert _run(fake_adb, "old_cpu.txt", "xnnpack", monkeypatch=monkeypatch) == 0
    r = json.loads((fake_adb / "r.json").read_text())
    assert r["latency_ms_std"] == pytest.approx(0.318) and r["peak_memory_mb"] is None
    assert (r["delegated_ops"], r["total_ops"]) == (None, 1)  # no delegation line: the model's op count


def test_partial_gpu_delegation_is_reported(fake_adb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(fake_adb, "recent_gpu_partial.txt", "gpu", monkeypatch=monkeypatch) == 0
    r = json.loads((fake_adb / "r.json").read_text())
    assert (r["delegated_ops"], r["total_ops"]) == (12, 14) and r["memory_init_mb"] == pytest.approx(61.0586)
    assert "--use_gpu=true" in " ".join(c[-1] for c in _adb_calls(fake_adb))


def test_delegate_fallback_is_an_error_not_a_cpu_number(fake_adb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(fake_adb, "hexagon_fallback.txt", "hexagon", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the hexagon delegate did not take the model") and "\n" not in err
    assert not (fake_adb / "r.json").exists()


def test_zero_delegated_ops_is_an_error(fake_adb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = (OUTPUTS / "recent_gpu_partial.txt").read_text().replace("Replacing 12 out of 14", "Replacing 0 out of 14")
    (fake_adb / "zero.txt").write_text(text)
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(fake_adb / "zero.txt"))
    assert main(["benchmark", "--tflite", str(fake_adb / "m.tflite"), "--android_serial", "X", "--runtime", "gpu",
                 "--benchmark_binary", str(fake_adb / "benchmark_model"), "--output", str(fake_adb / "r.json")]) == 2
    assert "took 0 of 14 ops" in capsys.readouterr().err


def test_npu_passes_litert_flags(fake_adb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(fake_adb, "litert_npu.txt", "npu", "--dispatch_library_path", "/data/local/tmp/qnn", monkeypatch=monkeypatch) == 0
    r = json.loads((fake_adb / "r.json").read_text())
    assert r["format"] == "litert" and r["peak_memory_mb"] == pytest.approx(45.13) and r["init_ms"] == pytest.approx(512.44)
    run = next(c[3] for c in _adb_calls(fake_adb) if c[2] == "shell" and "--graph=" in c[3])
    assert "--use_npu=true" in run and "--dispatch_library_path=/data/local/tmp/qnn" in run
    assert "--compiler_plugin_library_path=" in run and "--use_xnnpack" not in run


def test_no_device_and_no_adb(fake_adb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_ADB_NO_DEVICE", "1")
    assert _run(fake_adb, "recent_xnnpack.txt", "xnnpack", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Android device 'R5CT1234' attached") and err.count("\n") == 1
    monkeypatch.setenv("ADB", str(fake_adb / "missing-adb"))
    monkeypatch.setenv("PATH", str(fake_adb / "empty"))
    assert _run(fake_adb, "recent_xnnpack.txt", "xnnpack", monkeypatch=monkeypatch) == 2
    assert capsys.readouterr().err.startswith("error: adb not found")
    assert not (fake_adb / "r.json").exists()
