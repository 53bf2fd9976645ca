"""Marginal cost of one more mixed-precision candidate vs one conversion (issue 11, item 5).

Side by side on resnet and the ViT: one calibrated int8 conversion; the mixed path's
one-time float conversion + statistics pass; one more candidate (an AEQ export from the same
statistics, and its accuracy run); and a sensitivity sweep over every layer. See
tfquant/experiments/bench_mixed_precision.py. ::

  python experiments/bench_mixed_precision.py                  # resnet, vit
  python experiments/bench_mixed_precision.py --models vit --no_sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.study import RESULTS_MD  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.experiments.bench_mixed_precision import NAME, BenchConfig, run_bench  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet", "vit"], "Zoo models.")
flags.DEFINE_string("run_name", "default", "Results go to <results_dir>/<run_name>/bench_mixed_precision/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_integer("num_calibration_examples", 200, "Calibration set size (train split).")
flags.DEFINE_integer("candidates", 8, "Candidates timed per model.")
flags.DEFINE_integer("eval_examples", 200, "Test images per accuracy run.")
flags.DEFINE_bool("sweep", True, "Also time the full single-layer sensitivity sweep.")


def _run() -> Path:
    config = BenchConfig(models=tuple(FLAGS.models), data_dir=FLAGS.data_dir,
                         num_calibration_examples=FLAGS.num_calibration_examples, candidates=FLAGS.candidates,
                         eval_examples=FLAGS.eval_examples, sweep=FLAGS.sweep)
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_bench(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("mixed-precision cost benchmark", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
