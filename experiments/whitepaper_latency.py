"""The whitepaper's latency table on this CPU (Krishnamoorthi 2018, arXiv 1806.08342, section 1 of
methods.md): keras.applications MobileNet, MobileNetV2, ResNet50, InceptionV3 (random weights),
fp32 / int8 / dynamic / fp16 / int16x8 x XNNPACK / builtin x 1 and 2 threads, median and p90
latency, speed-ups timed side by side, and which of the paper's speed-ups hold here and why::

  python experiments/whitepaper_latency.py            # -> results/default/whitepaper_latency/

The main job's short version (MobileNet at 96x96, fp32 / int8 / int16x8, few runs; under a minute of CPU)::

  python experiments/whitepaper_latency.py --short

Smoke size (what the tests run)::

  python experiments/whitepaper_latency.py --smoke --results_dir /tmp/r

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
from tfquant.experiments.whitepaper_latency import (  # noqa: E402
    MODE_VARIANTS,
    MODELS,
    NAME,
    WhitepaperLatencyConfig,
    run_whitepaper_latency,
)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), "keras.applications models (rows).")
flags.DEFINE_list("modes", list(MODE_VARIANTS), "TFLite modes.")
flags.DEFINE_integer("input_size", None, "Input height = width; default each model's ImageNet size.")
flags.DEFINE_integer("rounds", 10, "Interleaved timing rounds.")
flags.DEFINE_float("max_seconds", 20.0, "Timed seconds after which a (slow) cell stops.")
flags.DEFINE_string("run_name", "default", f"Results go to <results_dir>/<run_name>/{NAME}/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_bool("short", False, "The main job's size: mobilenet at 96x96, fp32 / int8 / int16x8, 5 rounds.")
flags.DEFINE_bool("smoke", False, "Tiny run for tests: mobilenet at 32x32, fp32 and int8, 1 thread.")


def _run() -> Path:
    """Builds the config from the flags and runs the flow; returns the run folder."""
    if FLAGS.smoke and FLAGS.short:
        raise TfquantError("--smoke and --short are two sizes; pass one of them")
    size = "smoke" if FLAGS.smoke else "short" if FLAGS.short else None
    if size is not None:
        config = WhitepaperLatencyConfig.of_size(size)
    else:
        config = WhitepaperLatencyConfig(models=tuple(FLAGS.models), modes=tuple(FLAGS.modes),
                                         input_size=FLAGS.input_size, rounds=FLAGS.rounds,
                                         max_seconds=FLAGS.max_seconds)
    from tfquant import _quiet

    _quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines
    out = Path(FLAGS.results_dir) / FLAGS.run_name / NAME
    run_whitepaper_latency(config, out)
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("whitepaper latency", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
