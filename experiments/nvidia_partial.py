"""NVIDIA's partial-quantization table with int16 promotion next to float fallback (issue 11).

Cases where full int8 loses more than a point (an outlier channel under per-tensor max
ranges; the ViT with entropy ranges), and per case: float, full int8, int8 + k layers float,
int8 + k layers int16x8, whole int16x8; accuracy, size, latency under XNNPACK and builtin,
every cell in the LiteRT interpreter. See tfquant/experiments/nvidia_partial.py. ::

  python experiments/nvidia_partial.py --short   # main job: cnn_outlier, 1000 test images
  python experiments/nvidia_partial.py           # full: cnn_outlier and vit_entropy, whole test split

A re-run with the same --run_name resumes: finished records are kept and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import (< 1 s).
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.experiments.nvidia_partial import CASES, NAME, NvidiaPartialConfig, run_nvidia_partial  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", list(CASES), f"Cases, from: {', '.join(CASES)}.")
flags.DEFINE_integer("max_layers", 3, "Largest k of the int8 + k layers columns.")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/nvidia_partial/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 500, "Calibration set size (train split).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_integer("latency_runs", 50, "Timed single-image invokes per runtime and cell.")
flags.DEFINE_bool("short", False, "The main job's size: cnn_outlier only, k <= 2, 1000 test images, 200 calibration images.")


def _run() -> Path:
    config = NvidiaPartialConfig(
        cases=("cnn_outlier",) if FLAGS.short else tuple(FLAGS.cases),
        max_layers=2 if FLAGS.short else FLAGS.max_layers,
        data_dir=FLAGS.data_dir,
        num_calibration_examples=200 if FLAGS.short else FLAGS.num_calibration_examples,
        limit=1000 if FLAGS.short else FLAGS.limit,
        latency_runs=20 if FLAGS.short else FLAGS.latency_runs,
    )
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_nvidia_partial(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("partial quantization study", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
