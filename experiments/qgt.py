"""QGT vs PTQ vs plain QAT at 2- and 4-bit weights, with exact packed sizes (arXiv 2103.06231).

For each zoo model (BN folded first) and bit width: PTQ, plain QAT and QGT accuracy (all
"sim"), the model's exact size with weights packed at b bits against float32, a per-layer
bottleneck report before and after QGT, and the QGT model exported as an int8 .tflite on
the b-bit grid ("tflite"). See :mod:`tfquant.experiments.qgt`. The full experiment (cnn and
mobilenet_v1, 2 and 4 bits, 3 epochs of fine-tuning per method, whole test split;
about 4 minutes on 2 cores)::

  python experiments/qgt.py                # -> results/default/qgt/

The main job's short version (cnn; 2 and 4 bits; half an epoch; 2000 test images; about
30 s)::

  python experiments/qgt.py --short        # -> results/short/qgt/

Smoke size (what the tests run: cnn, 2 bits, 384 training and 300 test images)::

  python experiments/qgt.py --smoke --results_dir /tmp/r

A re-run with the same --run_name resumes: finished records are kept and skipped, and
fine-tuned weights already saved in the run folder are loaded instead of re-trained.
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
from tfquant.study.settings import bit_width_map, check_zoo_models  # noqa: E402
from tfquant.zoo_names import ZOO  # noqa: E402

# QgtStudyConfig's defaults (tests/experiments/test_qgt.py checks they agree): λ and the finish
# were chosen on validation images by experiments/qgt_select.py (experiments/results/full/qgt_select*/).
_MODELS, _BITS, _EPOCHS, _STRENGTH, _SEED = ("cnn", "mobilenet_v1"), (2, 4), 3.0, ((2, 30.0), (4, 1.0)), 0
_GRID_SCALE, _FINISH_FRACTION, _FINISH_FACTOR = "mse", 0.5, 1000.0

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(_MODELS), f"Zoo models (rows); any of: {', '.join(ZOO)}.")
flags.DEFINE_list("bits", [str(b) for b in _BITS], "Weight bit widths, each in [2, 8].")
flags.DEFINE_float("epochs", _EPOCHS, "Fine-tuning epochs of QAT and QGT (fractions allowed).")
flags.DEFINE_list("qgt_strength", [f"{b}:{lam:g}" for b, lam in _STRENGTH],
                  "Final λ of the QGT regulariser per bit width, BITS:LAMBDA entries (or one number for all).")
flags.DEFINE_enum("grid_scale", _GRID_SCALE, ["max", "mse"],
                  "Per-channel grid step: max|W_c| / q_max, or the MSE-optimal step (all methods).")
flags.DEFINE_float("qgt_finish_fraction", _FINISH_FRACTION,
                   "QGT finish: last fraction of the steps with the grid frozen and λ growing (0 = none).")
flags.DEFINE_float("qgt_finish_factor", _FINISH_FACTOR, "QGT finish: λ grows by this factor.")
flags.DEFINE_integer("seed", _SEED, "Seed of every fine-tune (keras.utils.set_random_seed).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N test images.")
flags.DEFINE_bool("export_tflite", True, "Also export the QGT model as an int8 .tflite on the b-bit grid.")
flags.DEFINE_string("run_name", None, "Results go to <results_dir>/<run_name>/qgt/ (default: "
                    "'default', or 'short' / 'smoke' with those flags).")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_string("tensorboard_dir", None, "Write TensorBoard logs of every fine-tune under this folder.")
flags.DEFINE_string("checkpoint_dir", None, "Save the weights after every fine-tuning epoch under this folder.")
flags.DEFINE_bool("short", False, "The main job's size: cnn, 2 and 4 bits, half an epoch, 2000 test images.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: cnn, 2 bits, 384 training and 300 test images.")


def _parse_strength(entries: list[str]) -> float | tuple[tuple[int, float], ...]:
    """``["2:10000", "4:10"]`` -> ((2, 10000.0), (4, 10.0)); ``["100"]`` -> 100.0 (every bit width)."""
    try:
        if len(entries) == 1 and ":" not in entries[0]:
            return float(entries[0])
        return tuple((int(b), float(lam)) for b, lam in (e.split(":") for e in entries))
    except ValueError:
        raise TfquantError(
            f"--qgt_strength must be BITS:LAMBDA entries (e.g. 2:10000,4:10) or one number, got {entries}"
        ) from None


def _checked_flags() -> tuple[str | None, dict]:
    """The size (or None) and the config's fields from the flags; the checks that need no
    TensorFlow (the config checks the rest)."""
    if FLAGS.smoke and FLAGS.short:
        raise TfquantError("--smoke and --short are two sizes; pass one of them")
    size = "smoke" if FLAGS.smoke else "short" if FLAGS.short else None
    if size:  # the size fixes models, bits and sizes; data_dir and seed still apply
        return size, dict(data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    try:
        bits = tuple(int(b) for b in FLAGS.bits)
    except ValueError:
        raise TfquantError(f"--bits must be integers in [2, 8], got {FLAGS.bits}") from None
    strength = _parse_strength(FLAGS.qgt_strength)
    check_zoo_models(FLAGS.models)
    bit_width_map(strength, bits, name="qgt_strength",
                  example="e.g. {2: 10000, 4: 10}, or one number for every bit width")
    return None, dict(
        models=tuple(FLAGS.models), bits=bits, epochs=FLAGS.epochs,
        qgt_strength=strength, seed=FLAGS.seed, limit=FLAGS.limit,
        export_tflite=FLAGS.export_tflite, data_dir=FLAGS.data_dir, grid_scale=FLAGS.grid_scale,
        qgt_finish_fraction=FLAGS.qgt_finish_fraction, qgt_finish_factor=FLAGS.qgt_finish_factor,
    )


def _run() -> Path:
    """Checks the flags, then imports TensorFlow, builds the config and runs the flow; returns
    the run folder."""
    size, fields = _checked_flags()
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    from tfquant.experiments.qgt import QgtStudyConfig, run_qgt_study

    config = QgtStudyConfig.of_size(size, **fields) if size else QgtStudyConfig(**fields)
    out = Path(FLAGS.results_dir) / (FLAGS.run_name or size or "default") / "qgt"
    run_qgt_study(config, out, tensorboard_dir=FLAGS.tensorboard_dir,
                  checkpoint_dir=FLAGS.checkpoint_dir)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("QGT study", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
