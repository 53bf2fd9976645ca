"""Vectorised entropy / MSE amax searches against the per-candidate reference loops.

On realistic 2048-bin histograms of |x| (Laplace activations with a few far outliers, signed;
and a post-ReLU half-normal tensor, unsigned), built batch by batch with
:class:`tfquant.calibration.histogram.AbsHistogram` as calibration builds them, it times

* :func:`tfquant.calibration.entropy.entropy_amax` vs
  :func:`tfquant.calibration.reference.entropy_amax_reference` (pytorch-quantization's loop),
* :func:`tfquant.calibration.mse.mse_amax` vs
  :func:`tfquant.calibration.reference.mse_amax_reference`,

side by side in one run (interleaved repeats, median per tensor), checks that every pair
returns the identical amax (exit status 1 otherwise), and prints the speed-ups. The
target is >= 100x for both searches. The first MSE call of the process also builds the cached
level-boundary pattern; its time is reported separately.

  python experiments/bench_calibration_search.py --bits 8 --repeats 5

Smoke size (what the tests run)::

  python experiments/bench_calibration_search.py --repeats 1 --samples 20000 --num_bins 384
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.io_utils import write_json_atomic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed rounds (each times every search once per tensor, interleaved).")
flags.DEFINE_integer("bits", 8, "Bit width the searches target.")
flags.DEFINE_integer("samples", 1_000_000, "Values per synthetic tensor (fed in 10 batches).")
flags.DEFINE_integer("num_bins", 2048, "Histogram bins.")
flags.DEFINE_string("output", None, "Write the results as JSON here (atomically).")

TARGET_SPEEDUP = 100.0
# The vectorised searches take ~0.2-5 ms; several calls per timing keep the clock's
# resolution and scheduler noise out of the per-tensor figure.
FAST_CALLS = 20


def realistic_histograms(samples: int, num_bins: int, seed: int = 0):
    """{name: (AbsHistogram, unsigned)} for a Laplace+outliers tensor and a post-ReLU one."""
    import numpy as np

    from tfquant.calibration.histogram import AbsHistogram

    rng = np.random.default_rng(seed)
    laplace = rng.laplace(scale=1.0, size=samples).astype(np.float32)
    outliers = rng.choice(samples, size=max(1, samples // 100_000), replace=False)
    laplace[outliers] *= 25.0  # a handful of values far beyond the bulk (residual adds, GELU)
    relu = np.maximum(rng.normal(0.3, 1.0, size=samples), 0.0).astype(np.float32)
    out = {}
    for name, x, unsigned in (("laplace_outliers", laplace, False), ("post_relu", relu, True)):
        h = AbsHistogram.empty(num_bins)
        for batch in np.array_split(x, 10):
            h.update(np.abs(batch))
        out[name] = (h, unsigned)
    return out


def _per_call(fn: Callable[[], float], calls: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(calls):
        amax = fn()
    return (time.perf_counter() - start) / calls, amax


def main(argv: list[str]) -> int:
    del argv
    from importlib.metadata import version

    from tfquant.calibration.entropy import entropy_amax
    from tfquant.calibration.mse import mse_amax
    from tfquant.calibration.reference import entropy_amax_reference, mse_amax_reference

    if FLAGS.repeats < 1 or FLAGS.samples < 1:
        print("error: --repeats and --samples must be >= 1", file=sys.stderr)
        return 2
    searches = {
        "entropy": (entropy_amax, entropy_amax_reference),
        "mse": (mse_amax, mse_amax_reference),
    }
    try:
        tensors = realistic_histograms(FLAGS.samples, FLAGS.num_bins)
        first_mse = {}
        for name, (h, unsigned) in tensors.items():
            first_mse[name], _ = _per_call(
                lambda: mse_amax(h.counts, h.edges, bits=FLAGS.bits, unsigned=unsigned), 1
            )
        times = {(s, t, side): [] for s in searches for t in tensors for side in ("vectorised", "reference")}
        amax = {}
        mismatches = []
        for _ in range(FLAGS.repeats):
            for tname, (h, unsigned) in tensors.items():
                for sname, (fast, slow) in searches.items():
                    kwargs = {"bits": FLAGS.bits, "unsigned": unsigned}
                    t_fast, a_fast = _per_call(lambda: fast(h.counts, h.edges, **kwargs), FAST_CALLS)
                    t_slow, a_slow = _per_call(lambda: slow(h.counts, h.edges, **kwargs), 1)
                    times[(sname, tname, "vectorised")].append(t_fast)
                    times[(sname, tname, "reference")].append(t_slow)
                    amax[(sname, tname)] = (a_fast, a_slow)
                    if a_fast != a_slow:
                        mismatches.append((sname, tname, a_fast, a_slow))
    except TfquantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    rows = []
    print(
        f"{FLAGS.num_bins}-bin histograms of {FLAGS.samples} values, bits={FLAGS.bits}, "
        f"{FLAGS.repeats} interleaved repeats (median time per tensor):"
    )
    for sname in searches:
        for tname, (h, unsigned) in tensors.items():
            fast = statistics.median(times[(sname, tname, "vectorised")])
            slow = statistics.median(times[(sname, tname, "reference")])
            a_fast, a_slow = amax[(sname, tname)]
            rows.append({
                "search": sname, "tensor": tname, "unsigned": unsigned,
                "vectorised_s": fast, "reference_s": slow, "speedup": slow / fast,
                "amax_vectorised": a_fast, "amax_reference": a_slow, "identical": a_fast == a_slow,
            })
            print(
                f"  {sname:8s} {tname:17s} vectorised {fast * 1e3:8.3f} ms   reference "
                f"{slow * 1e3:9.1f} ms   speed-up {slow / fast:7.0f}x   amax {a_fast:.6g} "
                f"({'identical' if a_fast == a_slow else f'REFERENCE {a_slow:.6g}'})"
            )
    for tname, t in first_mse.items():
        print(f"  mse first call ({tname}, builds the cached boundary pattern if new): {t * 1e3:.2f} ms")
    worst = min(r["speedup"] for r in rows)
    print(f"  smallest speed-up {worst:.0f}x (target >= {TARGET_SPEEDUP:.0f}x: "
          f"{'met' if worst >= TARGET_SPEEDUP else 'NOT met'})")
    if FLAGS.output:
        write_json_atomic(FLAGS.output, {
            "bits": FLAGS.bits, "samples": FLAGS.samples, "num_bins": FLAGS.num_bins,
            "repeats": FLAGS.repeats, "fast_calls_per_timing": FAST_CALLS, "rows": rows,
            "mse_first_call_s": first_mse, "target_speedup": TARGET_SPEEDUP,
            "versions": {"python": platform.python_version(), "numpy": version("numpy"),
                         "scipy": version("scipy")},
        })
        print(f"wrote {FLAGS.output}")
    if mismatches:
        print(f"error: vectorised and reference amax differ: {mismatches}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
