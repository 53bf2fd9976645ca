"""Throughput of tfquant's evaluator against a hand-written LiteRT loop (int8, XNNPACK).

Both run top-1 evaluation over the same preloaded Fashion-MNIST test images, interleaved,
and the median images/s of each is compared; the target is evaluator >= 80% of the raw loop.
The comparison itself is :func:`tfquant.evaluation.throughput.compare_throughput`.

Default (10k test images, a small CNN with random weights, int8 with int8 I/O)::

  python experiments/bench_evaluator.py --output /tmp/bench_evaluator.json

On a model of your own::

  python experiments/bench_evaluator.py --tflite /tmp/cnn_int8.tflite --batch_size 256

Smoke size::

  python experiments/bench_evaluator.py --limit 512 --repeats 1
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.io_utils import write_json_atomic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("tflite", None, "Model to time; default: build an int8 small CNN.")
flags.DEFINE_integer("batch_size", 256, "Examples per invoke.")
flags.DEFINE_integer("repeats", 5, "Timed passes of each side (interleaved).")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
flags.DEFINE_integer("limit", None, "Use only the first N test images (smoke runs).")
flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")
flags.DEFINE_string("output", None, "Write the results as JSON here (atomically).")

TARGET_RATIO = 0.8


def build_int8_cnn(path: Path, calibration) -> Path:
    """A small Fashion-MNIST CNN (random weights: throughput does not depend on them), int8."""
    import tfquant._env  # noqa: F401  (before TensorFlow)
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPool2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPool2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])

    def representative():
        for i in range(0, len(calibration), 10):
            yield [calibration[i:i + 10].astype(np.float32)]

    from tfquant.tflite.converter import ConverterOptions, run_converter

    options = ConverterOptions(optimize=True, ops_set="int8", io_dtype=tf.int8)
    path.write_bytes(run_converter(keras_model=model, options=options, representative_dataset=representative))
    return path


def _git_revision() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str]) -> int:
    del argv
    from importlib.metadata import version

    from tfquant.data.fashion_mnist import load_fashion_mnist
    from tfquant.evaluation import file_size, inspect_model
    from tfquant.evaluation.throughput import compare_throughput

    try:
        x, y = load_fashion_mnist("test", data_dir=FLAGS.data_dir)
        if FLAGS.limit is not None:
            x, y = x[: FLAGS.limit], y[: FLAGS.limit]
        with tempfile.TemporaryDirectory() as tmp:
            if FLAGS.tflite:
                model_path = Path(FLAGS.tflite)
            else:
                x_train, _ = load_fashion_mnist("train", data_dir=FLAGS.data_dir)
                model_path = build_int8_cnn(Path(tmp) / "cnn_int8.tflite", x_train[:200])
            report = inspect_model(model_path)
            start = time.perf_counter()
            cmp = compare_throughput(
                str(model_path), x, y, batch_size=FLAGS.batch_size, repeats=FLAGS.repeats,
                num_threads=FLAGS.num_threads,
            )
            size = file_size(model_path)
    except TfquantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {
        "model": str(FLAGS.tflite) if FLAGS.tflite else "built: small CNN (conv32-conv64-dense128), int8 I/O",
        "size_bytes": size,
        "input_dtype": report.inputs[0].dtype,
        "n_examples": cmp.n_examples,
        "batch_size": cmp.batch_size,
        "num_threads": cmp.num_threads,
        "runtime": "xnnpack",
        "repeats": cmp.repeats,
        "evaluator_images_per_s": list(cmp.evaluator_images_per_s),
        "raw_images_per_s": list(cmp.raw_images_per_s),
        "evaluator_images_per_s_median": cmp.evaluator_median,
        "raw_images_per_s_median": cmp.raw_median,
        "ratio": cmp.ratio,
        "paired_ratio": cmp.paired_ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": cmp.ratio >= TARGET_RATIO,
        "evaluator_accuracy": cmp.evaluator_accuracy,
        "raw_accuracy": cmp.raw_accuracy,
        "git_revision": _git_revision(),
        "versions": {
            "python": platform.python_version(),
            "ai-edge-litert": version("ai-edge-litert"),
            "numpy": version("numpy"),
        },
        "seconds": time.perf_counter() - start,
    }
    print(
        f"{cmp.n_examples} images, batch {cmp.batch_size}, {cmp.num_threads} thread(s), "
        f"{cmp.repeats} interleaved repeats (median):\n"
        f"  evaluator {cmp.evaluator_median:10.0f} images/s (top-1 {cmp.evaluator_accuracy:.4f})\n"
        f"  raw loop  {cmp.raw_median:10.0f} images/s (top-1 {cmp.raw_accuracy:.4f})\n"
        f"  ratio {cmp.ratio:.3f}, median of per-repeat ratios {cmp.paired_ratio:.3f} "
        f"(target >= {TARGET_RATIO}: "
        f"{'met' if result['meets_target'] else 'NOT met'})"
    )
    if FLAGS.output:
        write_json_atomic(FLAGS.output, result)
        print(f"wrote {FLAGS.output}")
    return 0


if __name__ == "__main__":
    app.run(main)
