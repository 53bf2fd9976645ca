"""NVIDIA's calibration study on the zoo (Wu et al. 2020, Table 3): accuracy per calibrator.

Rows = zoo models; columns = float, converter (the converter's own calibration), max, entropy, percentile 99.9 / 99.99 /
99.999 / 99.9999, MSE, ACIQ; for int8 and int16x8; every cell measured in the LiteRT
interpreter on the whole test split. Part of the main job (``./run_all.sh``)::

  python experiments/nvidia_calibration.py     # -> results/default/nvidia_calibration/

Smoke size (what the tests run)::

  python experiments/nvidia_calibration.py --smoke --results_dir /tmp/r

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
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.experiments.nvidia_calibration import (  # noqa: E402
    COLUMNS,
    DEFAULT_COLUMNS,
    NAME,
    NvidiaCalibrationConfig,
    run_nvidia_calibration,
)
from tfquant.zoo_names import ZOO  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(ZOO), "Zoo models (rows).")
flags.DEFINE_list("modes", ["int8", "int16x8"], "Quantization modes (one table each).")
flags.DEFINE_list("columns", list(DEFAULT_COLUMNS), f"Columns, from: {', '.join(COLUMNS)}.")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/nvidia_calibration/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 1000, "Calibration set size (train split).")
flags.DEFINE_integer("calibration_seed", 0, "Seed of the calibration draw.")
flags.DEFINE_integer("workers", 2, "Unused since cells run on Ray (one worker per CPU, see --ray_address); kept so old commands and run folders still work.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images (smoke runs).")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn only, 300 test images, 100 calibration images.")


def _run() -> Path:
    """Builds and checks the config from the flags, then imports TensorFlow and runs the flow;
    returns the run folder."""
    config = NvidiaCalibrationConfig(
        models=tuple(["cnn"] if FLAGS.smoke else FLAGS.models),
        modes=tuple(FLAGS.modes),
        columns=tuple(FLAGS.columns),
        data_dir=FLAGS.data_dir,
        num_calibration_examples=100 if FLAGS.smoke else FLAGS.num_calibration_examples,
        calibration_seed=FLAGS.calibration_seed,
        workers=FLAGS.workers,
        limit=300 if FLAGS.smoke else FLAGS.limit,
    )
    for name in config.models:
        if name not in ZOO:
            raise TfquantError(f"unknown zoo model {name!r}; choose from: {', '.join(ZOO)}")
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_nvidia_calibration(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("calibration study", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
