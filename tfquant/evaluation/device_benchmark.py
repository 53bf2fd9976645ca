"""Runs LiteRT's ``benchmark_model`` on an Android phone over adb and makes a latency record.

Steps: find adb (``$ADB``, else ``adb`` on PATH); check the device is attached
(``adb -s SERIAL get-state`` prints ``device``); read its model name (``getprop
ro.product.model``); push the .tflite and the benchmark binary to :data:`DEVICE_DIR`; run it
with the runtime's flags (:func:`runtime_flags`); parse what it prints
(:mod:`tfquant.evaluation.benchmark_output`). The record uses the evaluator's field names
(``latency_ms_avg``, ``latency_ms_min``, ``latency_ms_std``, ``init_ms``, ``delegated_ops``,
``total_ops``, ``peak_memory_mb``) plus ``device``, ``runtime`` and ``threads``.

A delegate that did not take the model (0 delegated ops, or a line saying it was not applied)
raises a one-line error instead of returning CPU timings under the delegate's name.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tfquant.errors import TfquantError
from tfquant.evaluation.benchmark_output import ParsedBenchmark, parse
from tfquant.qtypes import DeviceRuntime

DEVICE_DIR = "/data/local/tmp/tfquant"
TIMEOUT_S = 900


def find_adb() -> str:
    """``$ADB`` if set, else ``adb`` on PATH; a TfquantError if neither exists."""
    adb = os.environ.get("ADB") or shutil.which("adb")
    if not adb or not (shutil.which(adb) or Path(adb).is_file()):
        raise TfquantError(
            "adb not found: install Android platform-tools and put adb on PATH, or set $ADB to its path"
        )
    return adb


def runtime_flags(
    runtime: DeviceRuntime, *, num_threads: int, op_profiling: bool,
    dispatch_library_path: str | None = None, compiler_plugin_library_path: str | None = None,
    hexagon_lib_path: str | None = None,
) -> list[str]:
    """The benchmark tool's flags for ``runtime``.

    ``npu`` is LiteRT's CompiledModel path (``benchmark_litert_model``): ``--use_npu=true``,
    ``--use_cpu=false``, ``--require_full_delegation=true`` and the vendor's dispatch library
    and (for on-device compilation) compiler plugin paths; the others are
    ``benchmark_model``'s ``--use_xnnpack`` / ``--use_gpu`` / ``--use_hexagon`` /
    ``--use_nnapi``.
    """
    flags = [f"--num_threads={num_threads}"]
    if runtime is DeviceRuntime.NPU:
        flags += ["--use_npu=true", "--use_cpu=false", "--require_full_delegation=true",
                  f"--dispatch_library_path={dispatch_library_path or DEVICE_DIR}"]
        flags.append(f"--compiler_plugin_library_path={compiler_plugin_library_path or DEVICE_DIR}")
        if op_profiling:
            flags.append("--use_profiler=true")
        return flags
    flags.append({
        DeviceRuntime.XNNPACK: "--use_xnnpack=true",
        DeviceRuntime.GPU: "--use_gpu=true",
        DeviceRuntime.HEXAGON: "--use_hexagon=true",
        DeviceRuntime.NNAPI: "--use_nnapi=true",
    }[runtime])
    if runtime is DeviceRuntime.HEXAGON:
        flags.append(f"--hexagon_lib_path={hexagon_lib_path or '/data/local/tmp'}")
    if op_profiling:
        flags.append("--enable_op_profiling=true")
    return flags


def _adb(adb: str, serial: str, *args: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(
            [adb, "-s", serial, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TfquantError(f"adb {' '.join(args[:2])} failed ({type(e).__name__}: {e}); check the device connection") from None
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:200]
        raise TfquantError(f"adb {' '.join(args[:2])} failed on {serial!r}: {detail}; check 'adb devices'")
    return done.stdout + done.stderr


def check_device(adb: str, serial: str) -> str:
    """The device's model name; a TfquantError when ``serial`` is not an attached device."""
    try:
        state = subprocess.run(
            [adb, "-s", serial, "get-state"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TfquantError(f"cannot run adb ({e}); check $ADB / PATH") from None
    if state.returncode != 0 or state.stdout.strip() != "device":
        raise TfquantError(
            f"no Android device {serial!r} attached (adb get-state: "
            f"{' '.join((state.stderr or state.stdout).split())[:120] or 'nothing'}); "
            "connect it with USB debugging on and pass a serial from 'adb devices'"
        )
    return _adb(adb, serial, "shell", "getprop", "ro.product.model").strip()


def verdict(parsed: ParsedBenchmark, runtime: DeviceRuntime) -> None:
    """Raises a TfquantError when ``runtime``'s delegate did not take the model."""
    if runtime is DeviceRuntime.XNNPACK and parsed.fallback is None and parsed.delegated_ops != 0:
        return
    if parsed.fallback is not None:
        raise TfquantError(
            f"the {runtime.value} delegate did not take the model ({parsed.fallback}); the timings "
            "would be the CPU's: see which ops block it with 'python -m tfquant check --delegate ...'"
        )
    if parsed.delegated_ops == 0:
        raise TfquantError(
            f"the {runtime.value} delegate took 0 of {parsed.total_ops} ops; the timings would be the "
            "CPU's: re-export the model for this delegate (see 'python -m tfquant check')"
        )


def run(
    tflite: str | os.PathLike[str], *, serial: str, runtime: DeviceRuntime | str, num_threads: int,
    benchmark_binary: str | os.PathLike[str], op_profiling: bool = False,
    dispatch_library_path: str | None = None, compiler_plugin_library_path: str | None = None,
) -> dict[str, Any]:
    """Benchmarks ``tflite`` on the phone ``serial``; returns the record (see module doc)."""
    runtime = DeviceRuntime.parse(runtime, what="runtime")
    model, binary = Path(tflite), Path(benchmark_binary)
    if not model.is_file():
        raise TfquantError(f"model file {str(model)!r} does not exist; pass the .tflite to benchmark")
    if not binary.is_file():
        raise TfquantError(
            f"benchmark binary {str(binary)!r} does not exist; pass LiteRT's Android benchmark_model "
            "(benchmark_litert_model for --runtime npu) with --benchmark_binary"
        )
    adb = find_adb()
    device = check_device(adb, serial)
    remote_model, remote_binary = f"{DEVICE_DIR}/{model.name}", f"{DEVICE_DIR}/{binary.name}"
    _adb(adb, serial, "shell", "mkdir", "-p", DEVICE_DIR)
    _adb(adb, serial, "push", str(model), remote_model, timeout=600)
    _adb(adb, serial, "push", str(binary), remote_binary, timeout=600)
    _adb(adb, serial, "shell", "chmod", "755", remote_binary)
    flags = runtime_flags(
        runtime, num_threads=num_threads, op_profiling=op_profiling,
        dispatch_library_path=dispatch_library_path, compiler_plugin_library_path=compiler_plugin_library_path,
    )
    command = " ".join(shlex.quote(p) for p in [remote_binary, f"--graph={remote_model}", *flags])
    output = _adb(adb, serial, "shell", command, timeout=TIMEOUT_S)
    parsed = parse(output)
    if parsed.latency_ms_avg is None:
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
        raise TfquantError(f"{binary.name} printed no timings on {serial!r} (last line: {last.strip()[:160]})")
    verdict(parsed, runtime)
    if parsed.total_ops is None:  # old releases print no delegation line: count the model's ops
        from tfquant.tflite.op_graph import read_ops

        parsed.total_ops = len(read_ops(model.read_bytes()))
    record = parsed.to_dict()
    record.update(
        model=str(model), device=device, serial=serial, runtime=runtime.value, threads=num_threads,
        benchmark_binary=binary.name, command=command,
    )
    return record
