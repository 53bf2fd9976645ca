"""QAT on small user-like models and data outside the zoo (issue 13), before and after.

UCI digits and drawn shapes; an SE-ResNet, a depthwise-separable block and a plain CNN trained
briefly in float; run_qat at 8 and 4 bits with today's schedule (``nvidia``) and the default
(``auto``), the .tflite measured in LiteRT (see :mod:`tfquant.experiments.qat_outside_zoo`)::

  python experiments/qat_outside_zoo.py            # -> results/default/qat_outside_zoo/results.{md,jsonl}
  python experiments/qat_outside_zoo.py --smoke    # one model, one dataset, 4 bits

A re-run with the same --run_name resumes: finished rows are kept and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.experiments.qat_outside_zoo import NAME, QatOutsideZooConfig, run_qat_outside_zoo  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["digits", "shapes"], "Datasets (digits, shapes).")
flags.DEFINE_list("models", ["se_resnet", "ds_block", "plain"], "Models.")
flags.DEFINE_list("bits", ["8", "4"], "Weight bits.")
flags.DEFINE_list("recipes", ["nvidia", "auto"], "Fine-tuning schedules: finetune_schedule values of "
                  "run_qat (nvidia = before); --schedules is the same flag.")
flags.DEFINE_alias("schedules", "recipes")
flags.DEFINE_integer("epochs", 2, "QAT epochs (the documented command's --epochs 2).")
flags.DEFINE_integer("float_epochs", 15, "Float training epochs.")
flags.DEFINE_integer("seed", 0, "Seed of data, float training and QAT.")
flags.DEFINE_string("run_name", "default", f"Results go to <results_dir>/<run_name>/{NAME}/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_bool("smoke", False, "Tiny run: se_resnet on digits, 4 bits, both schedules.")


def _run() -> Path:
    """Builds the config from the flags and runs the study; returns its folder."""
    selected = {"datasets": tuple(FLAGS.datasets), "models": tuple(FLAGS.models), "bits": tuple(FLAGS.bits)}
    config = QatOutsideZooConfig.of_size(
        "smoke" if FLAGS.smoke else "full",
        **({} if FLAGS.smoke else selected),
        recipes=tuple(FLAGS.recipes), epochs=FLAGS.epochs, float_epochs=FLAGS.float_epochs, seed=FLAGS.seed,
    )
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_qat_outside_zoo(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("QAT outside the zoo", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
