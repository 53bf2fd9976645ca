"""Choose QGT's λ and finish on validation images (never the test split): issue 9.

Each candidate is the QGT study's fine-tune (``experiments/qgt.py``) of one zoo model,
hard-quantized on its frozen grid and scored on the zoo's held-out validation images
(images 55,000..59,999 of the training file). Stage 1 sweeps λ per bit width at the default
finish; stage 2 tries other finish fractions at the best λ. results.md lists every
candidate, the chosen one and why. See :mod:`tfquant.experiments.qgt_select`. The runs
behind the QGT study's defaults (cnn; 45-95 s per candidate on one core; committed as
``experiments/results/full/qgt_select/`` and ``full/qgt_select_w4_low/``)::

  python experiments/qgt_select.py --run_name full   # -> results/full/qgt_select/
  python experiments/qgt_select.py --run_name full_w4_low --bits 4 \
      --lambdas 4:1,4:0.3,4:0.1 --finish_fractions ""  # the 4-bit best was the sweep's smallest λ

Smoke size (what the tests run: 2 bits, 2 λ, 384 training and 300 validation images)::

  python experiments/qgt_select.py --smoke --results_dir /tmp/r
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only TensorFlow-free imports here: a bad flag fails before the TensorFlow import.
from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.zoo_names import ZOO  # noqa: E402

_LAMBDAS = ("2:10", "2:30", "2:100", "4:3", "4:10", "4:30")

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "cnn", list(ZOO), "Zoo model to fine-tune.")
flags.DEFINE_list("bits", ["2", "4"], "Weight bit widths, each in [2, 8].")
flags.DEFINE_list("lambdas", list(_LAMBDAS), "Stage 1: candidate λ as BITS:LAMBDA entries.")
flags.DEFINE_list("finish_fractions", ["0.3"], "Stage 2: finish fractions tried at stage 1's best λ (may be empty).")
flags.DEFINE_float("qgt_finish_fraction", 0.5, "Stage 1's finish fraction.")
flags.DEFINE_float("qgt_finish_factor", 1000.0, "The finish: λ grows by this factor.")
flags.DEFINE_enum("grid_scale", "mse", ["max", "mse"], "Per-channel grid step.")
flags.DEFINE_float("epochs", 3.0, "Fine-tuning epochs of every candidate.")
flags.DEFINE_integer("validation_examples", 5000, "Validation images (the training file's last 5000 at most).")
flags.DEFINE_integer("seed", 0, "Seed of every fine-tune.")
flags.DEFINE_string("run_name", None, "Results go to <results_dir>/<run_name>/qgt_select/ (default 'default', or 'smoke').")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: 2 bits, λ 10 and 30, 384 training and 300 validation images.")


def _fields() -> dict:
    """The config's fields from the flags (checks that need no TensorFlow)."""
    try:
        bits = tuple(int(b) for b in FLAGS.bits)
        lambdas = tuple((int(b), float(lam)) for b, lam in (e.split(":") for e in FLAGS.lambdas))
        fractions = tuple(float(f) for f in FLAGS.finish_fractions)
    except ValueError:
        raise TfquantError("--bits must be integers, --lambdas BITS:LAMBDA entries (e.g. 2:10,2:30) and "
                           f"--finish_fractions numbers; got {FLAGS.bits}, {FLAGS.lambdas}, {FLAGS.finish_fractions}"
                           ) from None
    return dict(model=FLAGS.model, bits=bits, lambdas=lambdas, finish_fractions=fractions,
                qgt_finish_fraction=FLAGS.qgt_finish_fraction, qgt_finish_factor=FLAGS.qgt_finish_factor,
                grid_scale=FLAGS.grid_scale, epochs=FLAGS.epochs, validation_examples=FLAGS.validation_examples,
                seed=FLAGS.seed, data_dir=FLAGS.data_dir)


def _run() -> Path:
    fields = None if FLAGS.smoke else _fields()
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    from tfquant.experiments.qgt_select import QgtSelectConfig, run_qgt_select

    if fields is None:
        config = QgtSelectConfig.of_size("smoke", data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    else:
        config = QgtSelectConfig(**fields)
    out = Path(FLAGS.results_dir) / (FLAGS.run_name or ("smoke" if FLAGS.smoke else "default")) / "qgt_select"
    run_qgt_select(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("QGT selection", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
