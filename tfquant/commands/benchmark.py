"""``python -m tfquant benchmark --tflite M.tflite --android_serial SERIAL --runtime R ...``.

Runs LiteRT's benchmark tool on an Android phone over adb and writes a latency record
(:mod:`tfquant.evaluation.device_benchmark`) with the evaluator's field names.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from tfquant.qtypes import DeviceRuntime

    p = sub.add_parser("benchmark", help="latency of a .tflite on an Android phone (adb + LiteRT's benchmark_model)")
    p.add_argument("--tflite", required=True)
    p.add_argument("--android_serial", required=True, help="device serial, as 'adb devices' lists it")
    p.add_argument("--runtime", required=True, choices=[r.value for r in DeviceRuntime],
                   help="delegate (npu: LiteRT's CompiledModel NPU path, needs benchmark_litert_model)")
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--benchmark_binary", required=True,
                   help="LiteRT's Android benchmark_model (benchmark_litert_model for --runtime npu)")
    p.add_argument("--output", required=True, help="R.json")
    p.add_argument("--op_profiling", action="store_true", help="per-op-type times (--enable_op_profiling)")
    p.add_argument("--dispatch_library_path", default=None,
                   help="on-device folder of the vendor's LiteRT dispatch library (npu; default /data/local/tmp/tfquant)")
    p.add_argument("--compiler_plugin_library_path", default=None,
                   help="on-device folder of the vendor's LiteRT compiler plugin (npu; default /data/local/tmp/tfquant)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfquant.errors import TfquantError
    from tfquant.evaluation import device_benchmark
    from tfquant.io_utils import write_json_atomic

    if not str(args.output).endswith(".json"):
        raise TfquantError(f"--output must end in .json, got {args.output!r}")
    if args.num_threads < 1:
        raise TfquantError(f"--num_threads must be >= 1, got {args.num_threads}")
    record = device_benchmark.run(
        args.tflite, serial=args.android_serial, runtime=args.runtime, num_threads=args.num_threads,
        benchmark_binary=args.benchmark_binary, op_profiling=args.op_profiling,
        dispatch_library_path=args.dispatch_library_path,
        compiler_plugin_library_path=args.compiler_plugin_library_path,
    )
    write_json_atomic(args.output, record)
    ops = "" if record["delegated_ops"] is None else f", {record['delegated_ops']} of {record['total_ops']} ops delegated"
    print(
        f"{record['device']} ({args.runtime}, {args.num_threads} thread(s)): latency avg "
        f"{record['latency_ms_avg']:.3f} ms, min {record['latency_ms_min']:.3f} ms{ops}; wrote {args.output}"
    )
    return 0
