"""Banner et al.'s 4-bit PTQ methods on the CNN zoo: ACIQ clipping, per-channel bit allocation,
bias correction (arXiv 1810.05723). Rows naive / aciq / allocation / bias_correction / all /
sigma2; configs W8A4 and W4A4 (simulation, `sim`) and W4A8 (int8 .tflite in the interpreter).

  python experiments/aciq.py            # all CNN zoo models, whole test split -> results/default/aciq/
  python experiments/aciq.py --short    # the main job's version: cnn, 1000 test images, 200 calibration images
  python experiments/aciq.py --smoke --results_dir /tmp/r   # what the tests run

A re-run with the same --run_name resumes: finished records are kept and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import (< 1 s).
from tfquant.errors import TfquantError  # noqa: E402
from tfquant.experiments.aciq import CNN_ZOO, CONFIGS, NAME, ROWS, AciqConfig, run_aciq  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(CNN_ZOO), "CNN zoo models (table columns).")
flags.DEFINE_list("configs", list(CONFIGS), f"From: {', '.join(CONFIGS)}.")
flags.DEFINE_list("rows", list(ROWS), f"From: {', '.join(ROWS)}.")
flags.DEFINE_enum("bias_correction", "mean_std", ["mean", "mean_std", "sequential"],
                  "What the bias-correction rows restore (sequential: W4A8 only).")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/aciq/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 1000, "Calibration set size (train split).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_bool("short", False, "Main-job size: cnn only, 1000 test images, 200 calibration images.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn, 200 test images, 100 calibration images.")


def _run() -> Path:
    small = FLAGS.smoke or FLAGS.short
    config = AciqConfig(
        models=tuple(["cnn"] if small else FLAGS.models),
        configs=tuple(FLAGS.configs),
        rows=tuple(FLAGS.rows),
        bias_correction=FLAGS.bias_correction,
        data_dir=FLAGS.data_dir,
        num_calibration_examples=100 if FLAGS.smoke else 200 if FLAGS.short else FLAGS.num_calibration_examples,
        limit=200 if FLAGS.smoke else 1000 if FLAGS.short else FLAGS.limit,
    )
    for name in config.models:
        if name not in CNN_ZOO:
            raise TfquantError(f"unknown CNN zoo model {name!r}; choose from: {', '.join(CNN_ZOO)}")
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_aciq(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("ACIQ study", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
