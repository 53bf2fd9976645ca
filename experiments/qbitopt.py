"""QBitOpt vs one-shot allocation vs uniform QAT under an average weight-bit budget (issue 9).

For each CNN zoo model and budget (3 and 4 average bits, parameter-weighted and met exactly):
QAT with ``fixed`` (uniform bits), ``oneshot`` (one allocation from the float model's
sensitivities) and ``qbitopt`` (re-allocated during QAT) per-layer weight bits, each run
exported to an int8 .tflite with every kernel on its own b-bit grid and measured in the LiteRT
interpreter; the budget met, the levels per channel, exact packed bytes. See
:mod:`tfquant.experiments.qbitopt`. The full experiment (cnn, mobilenet_v1, mobilenet_v2,
resnet; budgets 3 and 4; 2 QAT epochs over 16,384 training images; whole test split)::

  python experiments/qbitopt.py                # -> results/default/qbitopt/

The main job's short version (cnn, budget 3, 1 epoch over 1024 images, 1000 test images)::

  python experiments/qbitopt.py --short        # -> results/short/qbitopt/

A re-run with the same --run_name resumes: finished records are kept and skipped.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import (< 1 s).
from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.experiments.qbitopt import (  # noqa: E402
    METHODS, NAME, RESULTS_MD, SIZES, QbitoptConfig, run_qbitopt)
from tfquant.study.settings import check_zoo_models  # noqa: E402

# QbitoptConfig's field defaults (building one checks the budgets, which imports TensorFlow).
_DEFAULT = {f.name: f.default for f in dataclasses.fields(QbitoptConfig)}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(_DEFAULT["models"]), "CNN zoo models (rows).")
flags.DEFINE_list("budgets", [f"{b:g}" for b in _DEFAULT["budgets"]], "Average weight-bit budgets, each in [2, 8].")
flags.DEFINE_list("methods", list(METHODS), f"Allocations, from: {', '.join(METHODS)}.")
flags.DEFINE_integer("epochs", _DEFAULT["epochs"], "QAT epochs.")
flags.DEFINE_integer("train_examples", _DEFAULT["train_examples"], "Fine-tune on the first N training images.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_integer("seed", 0, "Seed of every QAT run.")
flags.DEFINE_string("run_name", None, "Results go to <results_dir>/<run_name>/qbitopt/ (default: "
                    "'default', or 'short' / 'smoke' with those flags).")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_bool("short", False, "The main job's size: cnn, budget 3, 1 epoch over 1024 images, 1000 test images.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn, budget 3, 256 training and 200 test images.")


def _run() -> Path:
    """Checks the flags (the checks that need no TensorFlow), imports TensorFlow, builds the
    config and runs the study; returns the run folder."""
    if FLAGS.smoke and FLAGS.short:
        raise TfquantError("--smoke and --short are two sizes; pass one of them")
    size = "smoke" if FLAGS.smoke else "short" if FLAGS.short else None
    try:
        budgets = tuple(float(b) for b in FLAGS.budgets)
    except ValueError:
        raise TfquantError(f"--budgets must be numbers (e.g. 3,4), got {FLAGS.budgets}") from None
    args = dict(models=tuple(FLAGS.models), budgets=budgets, methods=tuple(FLAGS.methods), epochs=FLAGS.epochs,
                train_examples=FLAGS.train_examples, limit=FLAGS.limit, seed=FLAGS.seed, data_dir=FLAGS.data_dir)
    if size is not None:
        args.update(SIZES[size])
    check_zoo_models(args["models"])
    bad = [m for m in args["methods"] if m not in METHODS]
    if bad:
        raise TfquantError(f"unknown method(s) {bad}; choose from: {', '.join(METHODS)}")
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    config = QbitoptConfig(**args)  # checks the budgets' range (tfquant.algorithms imports TensorFlow)
    out = Path(FLAGS.results_dir) / (FLAGS.run_name or size or "default") / NAME
    run_qbitopt(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("QBitOpt study", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
