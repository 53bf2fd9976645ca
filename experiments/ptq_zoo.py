"""Main job: every zoo model x TFLite variant, accuracy / size / latency in LiteRT.

Default (what ``./run_all.sh`` runs)::

  python experiments/ptq_zoo.py            # -> results/default/ptq_zoo/{results.jsonl,results.md}

Smoke size (what the tests run)::

  python experiments/ptq_zoo.py --smoke --results_dir /tmp/r

A re-run with the same --run_name resumes: finished records are kept and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import (< 1 s).
from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.experiments.ptq_zoo import NAME, PtqZooConfig, run_ptq_zoo  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.recipes import VARIANTS  # noqa: E402
from tfquant.zoo_names import ZOO  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(ZOO), "Zoo models to run.")
flags.DEFINE_list("variants", list(VARIANTS), "TFLite variants (recipes) to compare.")
flags.DEFINE_list("runtimes", ["xnnpack", "builtin"], "Interpreter runtimes.")
flags.DEFINE_integer("threads", 1, "Interpreter threads.")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/ptq_zoo/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 1000, "Calibration set size (train split).")
flags.DEFINE_integer("calibration_seed", 0, "Seed of the calibration draw.")
flags.DEFINE_integer("latency_runs", 100, "Single-image invokes timed per model x runtime.")
flags.DEFINE_integer("workers", 2, "Unused since cells run on Ray (one worker per CPU, see --ray_address); kept so old commands and run folders still work.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images (smoke runs).")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn only, 300 test images, 100 calibration images.")


def _run() -> Path:
    """Builds and checks the config from the flags, then imports TensorFlow and runs the flow;
    returns the run folder."""
    config = PtqZooConfig(
        models=tuple(["cnn"] if FLAGS.smoke else FLAGS.models),
        variants=tuple(FLAGS.variants),
        runtimes=tuple(FLAGS.runtimes),
        threads=FLAGS.threads,
        data_dir=FLAGS.data_dir,
        num_calibration_examples=100 if FLAGS.smoke else FLAGS.num_calibration_examples,
        calibration_seed=FLAGS.calibration_seed,
        latency_warmup=2 if FLAGS.smoke else 20,
        latency_runs=5 if FLAGS.smoke else FLAGS.latency_runs,
        limit=300 if FLAGS.smoke else FLAGS.limit,
        workers=FLAGS.workers,
    )
    for name in config.models:
        if name not in ZOO:
            raise TfquantError(f"unknown zoo model {name!r}; choose from: {', '.join(ZOO)}")
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_ptq_zoo(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("PTQ zoo", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
