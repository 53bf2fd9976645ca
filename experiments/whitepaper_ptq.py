"""The whitepaper's PTQ tables on the zoo (Krishnamoorthi 2018, arXiv 1806.08342).

Table A 8-bit weight-only (asymmetric per-layer, symmetric per-channel, asymmetric
per-channel, float; TFLite's dynamic range beside them), Table B int8 weights + activations
(per-channel and per-layer weights, tflite next to sim), Table C 4-bit weights / 8-bit
activations (per-layer, per-channel), Table D W8A4, and the per-channel weight-range spread
per model; every cell marked tflite (LiteRT interpreter) or sim (fake quantization in TF).
See :mod:`tfquant.experiments.whitepaper_ptq`. Whole test split, all five zoo models::

  python experiments/whitepaper_ptq.py     # -> results/default/whitepaper_ptq/

The main job's short version (cnn, mobilenet_v1, resnet; 2000 test images)::

  python experiments/whitepaper_ptq.py --short

Smoke size (what the tests run: cnn, 300 test images, 100 calibration images)::

  python experiments/whitepaper_ptq.py --smoke --results_dir /tmp/r

A re-run with the same --run_name resumes: finished records are kept and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import (< 1 s).
from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.study.settings import check_zoo_models  # noqa: E402
from tfquant.zoo_names import ZOO  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(ZOO), "Zoo models (rows).")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/whitepaper_ptq/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 1000, "Calibration set size (train split).")
flags.DEFINE_integer("workers", 1, "Unused since cells run on Ray (one worker per CPU, see --ray_address); kept so old commands and run folders still work.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_bool("short", False, "The main job's size: cnn, mobilenet_v1, resnet; 2000 test images.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn only, 300 test images, 100 calibration images.")


def _run() -> Path:
    """Checks the flags, then imports TensorFlow, builds the config and runs the flow; returns
    the run folder."""
    if FLAGS.smoke and FLAGS.short:
        raise TfquantError("--smoke and --short are two sizes; pass one of them")
    size = "smoke" if FLAGS.smoke else "short" if FLAGS.short else None
    if not size:
        check_zoo_models(FLAGS.models)  # before the TensorFlow import: a bad flag fails fast
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    from tfquant.experiments.whitepaper_ptq import NAME, WhitepaperPtqConfig, run_whitepaper_ptq

    if size:  # the size fixes models and limits; data_dir and workers still apply
        config = WhitepaperPtqConfig.of_size(size, data_dir=FLAGS.data_dir, workers=FLAGS.workers)
    else:
        config = WhitepaperPtqConfig(
            models=tuple(FLAGS.models), data_dir=FLAGS.data_dir,
            num_calibration_examples=FLAGS.num_calibration_examples, workers=FLAGS.workers,
            limit=FLAGS.limit,
        )
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_whitepaper_ptq(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("whitepaper PTQ tables", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
