"""The whitepaper's QAT tables on the zoo (Krishnamoorthi 2018, arXiv 1806.08342).

Table A 8-bit PTQ vs QAT (float, PTQ int8 and QAT int8 per-channel .tflite, with the QAT
Keras-vs-tflite agreement), Table B 4-bit weights (PTQ per-layer / per-channel in
simulation, QAT per-layer / per-channel .tflite with INT4 kernels), Table C low-bit
activations (PTQ W8A4, QAT W8A4 and W4A8, simulation), Table D BN folding during QAT (naive
fold vs correction + freeze, at 8- and 4-bit weights, simulation); every cell marked tflite
(LiteRT interpreter) or sim (fake quantization in TF). See
:mod:`tfquant.experiments.whitepaper_qat`. cnn, mobilenet_v1, mobilenet_v2 and resnet (tfmot
cannot wrap the ViT), whole test split, NVIDIA's fine-tuning schedule on the first 16,384
training images::

  python experiments/whitepaper_qat.py     # -> results/default/whitepaper_qat/

The long schedules (NVIDIA's whole 10% schedule: one epoch on all 55,000 images)::

  python experiments/whitepaper_qat.py --full

The main job's short version (cnn and mobilenet_v1, Tables A and B, 4096 training images,
2000 test images)::

  python experiments/whitepaper_qat.py --short

Smoke size (what the tests run: cnn, 256 training images, 300 test images)::

  python experiments/whitepaper_qat.py --smoke --results_dir /tmp/r

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
from tfquant.study.settings import check_qat_models  # noqa: E402
from tfquant.zoo_names import QAT_ZOO  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(QAT_ZOO), "Zoo models (rows); tfmot cannot wrap the ViT.")
flags.DEFINE_list("cells", None, "Cells (columns) to run (default: all of them).")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/whitepaper_qat/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("train_examples", 16_384, "Fine-tuning images per epoch (first N of 55,000).")
flags.DEFINE_integer("epochs", None, "Fine-tuning epochs (default: NVIDIA's 10% of the original schedule).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_integer("seed", 0, "Seed of every fine-tune.")
flags.DEFINE_string("tensorboard_dir", None, "Write TensorBoard scalars of each fine-tune here.")
flags.DEFINE_string("checkpoint_dir", None, "Write a checkpoint per fine-tuning epoch here.")
flags.DEFINE_bool("full", False, "Long schedules: every model, one epoch on all 55,000 images.")
flags.DEFINE_bool("short", False, "The main job's size: cnn, mobilenet_v1; Tables A, B; 4096 images.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn, 256 training images, 300 test images.")


def _run() -> Path:
    """Checks the flags, then imports TensorFlow, builds the config and runs the flow; returns
    the run folder."""
    chosen = [name for name in ("smoke", "short", "full") if FLAGS[name].value]
    if len(chosen) > 1:
        raise TfquantError(f"--{' and --'.join(chosen)} are different sizes; pass one of them")
    if not chosen:
        check_qat_models(FLAGS.models)  # before the TensorFlow import: a bad flag fails fast
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    from tfquant.experiments.whitepaper_qat import CELLS, WhitepaperQatConfig, run_whitepaper_qat

    if chosen:  # the size fixes models, cells and sizes; data_dir and seed still apply
        config = WhitepaperQatConfig.of_size(chosen[0], data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    else:
        config = WhitepaperQatConfig(
            models=tuple(FLAGS.models), cells=tuple(CELLS if FLAGS.cells is None else FLAGS.cells),
            data_dir=FLAGS.data_dir,
            train_examples=FLAGS.train_examples, epochs=FLAGS.epochs, limit=FLAGS.limit,
            seed=FLAGS.seed,
        )
    out = Path(FLAGS.results_dir) / FLAGS.run_name / "whitepaper_qat"
    run_whitepaper_qat(config, out, tensorboard_dir=FLAGS.tensorboard_dir,
                       checkpoint_dir=FLAGS.checkpoint_dir)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("whitepaper QAT tables", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
