"""Which keras.applications families convert and run, in which mode (not part of the tests).

One random-weight model per family, saved as .keras, loaded back, converted in every mode and
run in LiteRT (see :mod:`tfquant.experiments.keras_apps_coverage`)::

  python experiments/keras_apps_coverage.py                       # every family, every mode
  python experiments/keras_apps_coverage.py --families MobileNetV3Small --modes int16x8
  python experiments/keras_apps_coverage.py --smoke --results_dir /tmp/r   # MobileNet, fp32 and int8

Writes ``<results_dir>/<run_name>/keras_apps_coverage/results.{md,jsonl}``. A re-run with the
same --run_name resumes (finished cells are skipped; --retry_errors re-runs the failed ones).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.experiments import keras_apps_coverage as coverage  # noqa: E402
from tfquant.models.keras_apps import APPLICATION_FAMILIES  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("families", list(APPLICATION_FAMILIES), "keras.applications constructors (rows).")
flags.DEFINE_list("modes", list(coverage.MODES), "Conversion modes (columns).")
flags.DEFINE_integer("size", None, "Input height/width; default each family's minimum.")
flags.DEFINE_integer("num_classes", 10, "Output logits.")
flags.DEFINE_integer("num_calibration_examples", 8, "Random calibration images.")
flags.DEFINE_integer("num_test_examples", 16, "Random images compared with the Keras model.")
flags.DEFINE_bool("retry_errors", False, "Re-run cells whose last record is an error.")
flags.DEFINE_string("run_name", "apps_coverage", f"Results go to <results_dir>/<run_name>/{coverage.NAME}/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_bool("smoke", False, "Tiny run (what the tests run): MobileNet in fp32 and int8.")


def _run() -> Path:
    """Builds the config from the flags and runs the study; returns its folder."""
    selected = {"families": tuple(FLAGS.families), "modes": tuple(FLAGS.modes)}
    config = coverage.KerasAppsCoverageConfig.of_size(
        "smoke" if FLAGS.smoke else "full",
        **({} if FLAGS.smoke else selected),
        size=FLAGS.size,
        num_classes=FLAGS.num_classes,
        num_calibration_examples=FLAGS.num_calibration_examples,
        num_test_examples=FLAGS.num_test_examples,
        retry_errors=FLAGS.retry_errors,
    )
    out = Path(FLAGS.results_dir) / FLAGS.run_name / coverage.NAME
    coverage.run_keras_apps_coverage(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("keras.applications coverage", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
