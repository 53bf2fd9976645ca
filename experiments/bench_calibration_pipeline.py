"""What calibration costs: statistics vs a plain forward pass; export-many vs convert-many.

Two measurements, each side by side in one run (interleaved repeats, median), on a zoo
model and a Fashion-MNIST calibration set:

1. Statistics collection (:func:`tfquant.calibration.collect_statistics`: one pass with
   every tensor kept, folded into min/max, EMA, moments and 2048-bin histograms) against a
   plain forward pass of the same float model over the same set with the same interpreter
   settings (builtin kernels, same batch size and threads). Target (issue 11): collection
   <= 1.5x the forward pass on every zoo model. With numba installed the pass runs the
   compiled statistics (:mod:`tfquant.calibration.fused`) and, as a third side, the numpy
   reference (``collect_numpy``: the pass before the kernels). When LiteRT's C API loads,
   ``collect`` reads the tensors in taps inside LiteRT (:mod:`tfquant.tflite.runtime_statistics`)
   and ``collect_outputs`` is the same pass with the tensors exposed as model outputs
   (``TFQUANT_TAPS=0``, the fallback). XNNPACK's forward pass is
   reported too, and the load average at each repeat. Wall
   and CPU seconds of this process are both reported (CPU time is what a loaded machine does
   not distort).
2. Calibrate once and export N calibrator variants (:mod:`tfquant.convert.calibrated`)
   against N separate conversions by the TFLite converter (each with its own calibration
   pass), per mode. Reports the marginal time per extra variant.

  python experiments/bench_calibration_pipeline.py --model resnet --output /tmp/bench_cal.json

  python experiments/bench_calibration_pipeline.py --parts statistics \
      --models cnn,mobilenet_v1,mobilenet_v2,resnet,vit --repeats 3

Smoke size: ``--num_calibration_examples 100 --repeats 1 --variants 2``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.io_utils import write_json_atomic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet", "Zoo model (part 2, and part 1 unless --models).")
flags.DEFINE_list("models", None, "Zoo models for part 1, side by side in one run (e.g. all five).")
flags.DEFINE_list("parts", ["statistics", "export"], "Which parts to run: statistics, export.")
flags.DEFINE_integer("num_calibration_examples", 1000, "Calibration set size.")
flags.DEFINE_integer("batch_size", 100, "Examples per invoke (both sides).")
flags.DEFINE_integer("repeats", 5, "Timed passes of each side (interleaved).")
flags.DEFINE_integer("variants", 8, "Calibrator variants exported per mode in part 2.")
flags.DEFINE_list("modes", ["int8", "int16x8"], "Modes for part 2.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_string("output", None, "Write the results as JSON here (atomically).")

VARIANTS = (
    {"calibrator": "max"}, {"calibrator": "entropy"}, {"calibrator": "mse"},
    {"calibrator": "percentile", "percentile": 99.9}, {"calibrator": "percentile", "percentile": 99.99},
    {"calibrator": "percentile", "percentile": 99.999}, {"calibrator": "aciq"},
    {"calibrator": "moving_average"},
)


def forward_pass(float_tflite: bytes, x, batch_size: int, *, xnnpack: bool) -> float:
    """Seconds for one plain pass of the float model over ``x`` (no tensors kept)."""
    from tfquant.qtypes import Runtime
    from tfquant.tflite.interpreter import make_interpreter

    runtime = Runtime.XNNPACK if xnnpack else Runtime.BUILTIN
    interpreter = make_interpreter(float_tflite, runtime=runtime, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    start = time.perf_counter()
    size = -1
    for begin in range(0, len(x), batch_size):
        batch = x[begin:begin + batch_size]
        if len(batch) != size:
            size = len(batch)
            interpreter.resize_tensor_input(index, [size, *x.shape[1:]], strict=False)
            interpreter.allocate_tensors()
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    del argv
    from tfquant import convert, data, models
    from tfquant.convert import calibrated
    from tfquant.study.provenance import provenance
    from tfquant.recipes import Recipe

    try:
        x = data.calibration_set("fashion_mnist", FLAGS.num_calibration_examples, data_dir=FLAGS.data_dir)
        model = models.build(FLAGS.model)
    except TfquantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(x)
    base = dict(num_calibration_examples=n, calibration_data="fashion_mnist")
    result: dict = {"model": FLAGS.model, "num_calibration_examples": n, "batch_size": FLAGS.batch_size,
                    "repeats": FLAGS.repeats, "provenance": provenance()}

    # 1. statistics vs forward pass
    if "statistics" in FLAGS.parts:
        result["statistics"] = {}
        for name in FLAGS.models or [FLAGS.model]:
            result["statistics"][name] = statistics_vs_forward(models.build(name), x, base)
            s = result["statistics"][name]
            print(f"[1] {name}, {n} images, {s['tensors']} tensors, median of {FLAGS.repeats}: forward (builtin) "
                  f"{s['forward_builtin_s']:.3f} s, forward (XNNPACK) {s['forward_xnnpack_s']:.3f} s, collect "
                  f"statistics {s['collect_s']:.3f} s -> {s['collect_over_forward_builtin']:.2f}x the builtin "
                  f"forward pass ({s['collect_over_forward_xnnpack']:.2f}x XNNPACK's); CPU seconds "
                  f"{s['collect_cpu_s']:.3f} vs {s['forward_builtin_cpu_s']:.3f} -> "
                  f"{s['collect_over_forward_builtin_cpu']:.2f}x"
                  + (f"; tensors as model outputs: CPU {s['collect_outputs_cpu_s']:.3f} s -> "
                     f"{s['collect_outputs_over_forward_builtin_cpu']:.2f}x" if "collect_outputs_cpu_s" in s else "")
                  + (f"; numpy statistics (before): CPU {s['collect_numpy_cpu_s']:.3f} s -> "
                     f"{s['collect_numpy_over_forward_builtin_cpu']:.2f}x" if "collect_numpy_cpu_s" in s else "")
                  + f"; load {s['load_1min']}", flush=True)
    if "export" not in FLAGS.parts:
        return _write(result)

    # 2. calibrate once + export N vs N conversions
    variants = VARIANTS[: FLAGS.variants]
    result["export"] = {}
    for mode in FLAGS.modes:
        t0 = time.perf_counter()
        c = calibrated.calibrate(model, Recipe(mode=mode, calibrator="max", **base), calibration_data=x)
        calibrate_s = time.perf_counter() - t0
        export_s = []
        for v in variants:
            t0 = time.perf_counter()
            calibrated.export(c, Recipe(mode=mode, **base, **v))
            export_s.append(time.perf_counter() - t0)
        convert_s = []
        for _ in variants:  # what N variants cost without tfquant: N full conversions
            t0 = time.perf_counter()
            convert.convert(model, Recipe(mode=mode, **base), calibration_data=x)
            convert_s.append(time.perf_counter() - t0)
        once = calibrate_s + sum(export_s)
        result["export"][mode] = {
            "variants": len(variants), "calibrate_once_s": round(calibrate_s, 3),
            "export_median_s": round(statistics.median(export_s), 3),
            "calibrate_once_plus_exports_s": round(once, 3),
            "separate_conversions_s": round(sum(convert_s), 3),
            "conversion_median_s": round(statistics.median(convert_s), 3),
            "speedup": round(sum(convert_s) / once, 2),
        }
        print(f"[2] {mode}: calibrate once {calibrate_s:.2f} s + {len(variants)} exports "
              f"(median {statistics.median(export_s):.3f} s each) = {once:.2f} s, vs {len(variants)} "
              f"conversions {sum(convert_s):.2f} s (median {statistics.median(convert_s):.2f} s): "
              f"{sum(convert_s) / once:.1f}x; marginal time per extra variant {statistics.median(export_s):.3f} s")
    return _write(result)


def _write(result: dict) -> int:
    if FLAGS.output:
        write_json_atomic(FLAGS.output, result)
        print(f"wrote {FLAGS.output}")
    return 0


def statistics_vs_forward(model, x, base: dict) -> dict:
    """Part 1 on one model: median wall and CPU seconds of each side over interleaved repeats."""
    from tfquant.calibration import collect_statistics, fused
    from tfquant.convert import calibrated
    from tfquant.recipes import Recipe
    from tfquant.tflite import runtime_statistics

    compiled = fused.AVAILABLE
    # (calibrate runs the pass once: the kernels are compiled or loaded before the timing)
    cal = calibrated.calibrate(model, Recipe(mode="int8", calibrator="max", **base), calibration_data=x)
    taps = runtime_statistics.available() is None
    sides = ["collect"] + (["collect_outputs"] if taps else []) + (["collect_numpy"] if fused.AVAILABLE else [])
    times: dict[str, list[float]] = {k: [] for k in (
        "forward_builtin", "forward_xnnpack", "forward_builtin_cpu", *sides, *(f"{s}_cpu" for s in sides))}
    load = [os.getloadavg()[0]]
    for _ in range(FLAGS.repeats):
        c0 = time.process_time()
        times["forward_builtin"].append(forward_pass(cal.float_model, x, FLAGS.batch_size, xnnpack=False))
        times["forward_builtin_cpu"].append(time.process_time() - c0)
        times["forward_xnnpack"].append(forward_pass(cal.float_model, x, FLAGS.batch_size, xnnpack=True))
        for side in sides:  # the compiled statistics, then the numpy reference (the pass before numba)
            fused.AVAILABLE = compiled and side != "collect_numpy"
            runtime_statistics.ENABLED = side == "collect"
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                gathered = collect_statistics(cal.float_model, x, cal.tensors, batch_size=FLAGS.batch_size)
                times[side].append(time.perf_counter() - t0)
                times[f"{side}_cpu"].append(time.process_time() - c0)
            finally:
                fused.AVAILABLE, runtime_statistics.ENABLED = compiled, taps
            assert side != "collect" or gathered.gathered_in == ("taps" if taps else "outputs")
        load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        **{f"{k}_s": round(v, 4) for k, v in med.items()},
        "tensors": len(cal.tensors),
        "compiled_statistics": compiled,
        "collect_gathered_in": "taps" if taps else "outputs",
        "load_1min": [round(v, 2) for v in load],
        "target": "collect <= 1.5x forward (builtin)",
    }
    for side in sides:
        result[f"{side}_over_forward_builtin"] = round(med[side] / med["forward_builtin"], 3)
        result[f"{side}_over_forward_builtin_cpu"] = round(med[f"{side}_cpu"] / med["forward_builtin_cpu"], 3)
    result["collect_over_forward_xnnpack"] = round(med["collect"] / med["forward_xnnpack"], 3)
    return result


if __name__ == "__main__":
    app.run(main)
