"""Which keras.applications families convert and run, in which mode (not part of the tests).

One representative per family (``tfquant.models.keras_apps.APPLICATION_FAMILIES``), random
weights with batch-norm statistics set from 32 random images (so activations neither vanish
nor explode, as in a trained network; ``set_batch_norm_statistics``), the smallest input each accepts (32 px; 71 for Xception, 75 for the Inceptions),
10 classes. Each model is saved as ``.keras`` and loaded back with
``tfquant.convert.load_model`` (the path a user takes), then converted in every mode with a
few calibration images (the family's ``preprocess_input`` of uniform [0, 255] pixels) and
run in the LiteRT interpreter (builtin kernels) on a few more. A cell is ``ok`` with the
conversion time, size, top-1 agreement with the Keras model and max |tflite - keras| /
max |keras|, or the one-line error tfquant raised::

  python experiments/keras_apps_coverage.py                       # every family, every mode
  python experiments/keras_apps_coverage.py --families MobileNetV3Small --modes int16x8

Writes ``<results_dir>/<run_name>/keras_apps_coverage.{md,jsonl}``. A re-run with the same
--run_name resumes (finished cells are skipped; --retry_errors re-runs the failed ones, the
newest record of a cell wins).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.study.script import report_run  # noqa: E402
from tfquant.models.keras_apps import APPLICATION_FAMILIES  # noqa: E402

MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
RESULTS_MD = "keras_apps_coverage.md"
RESULTS_JSONL = "keras_apps_coverage.jsonl"

FLAGS = flags.FLAGS
flags.DEFINE_list("families", list(APPLICATION_FAMILIES), "keras.applications constructors (rows).")
flags.DEFINE_list("modes", list(MODES), "Conversion modes (columns).")
flags.DEFINE_integer("size", None, "Input height/width; default each family's minimum.")
flags.DEFINE_integer("num_classes", 10, "Output logits.")
flags.DEFINE_integer("num_calibration_examples", 8, "Random calibration images.")
flags.DEFINE_integer("num_test_examples", 16, "Random images compared with the Keras model.")
flags.DEFINE_bool("retry_errors", False, "Re-run cells whose last record is an error.")
flags.DEFINE_string("run_name", "apps_coverage", "Results go to <results_dir>/<run_name>/.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")


def _images(family: str, n: int, size: int, seed: int) -> Any:
    import numpy as np

    from tfquant.models.keras_apps import application_preprocess

    pixels = np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    return np.asarray(application_preprocess(family)(pixels), dtype=np.float32)


def _cell(model: Any, family: str, mode: str, x_cal: Any, x_test: Any, ref: Any) -> dict[str, Any]:
    """Converts ``model`` in ``mode`` and compares the .tflite with the Keras outputs."""
    import numpy as np

    from tfquant import convert
    from tfquant.evaluation.accuracy import predict
    from tfquant.recipes import Recipe

    recipe = Recipe(mode=mode, num_calibration_examples=len(x_cal))
    start = time.perf_counter()
    tflite = convert.convert(model, recipe, calibration_data=x_cal)
    seconds = time.perf_counter() - start
    try:
        out = predict(tflite, x_test, batch_size=len(x_test), runtime="builtin")
    except TfquantError:
        raise
    except Exception as e:  # the interpreter's own RuntimeError / ValueError
        raise TfquantError(f"LiteRT could not run the {mode} model: {' '.join(str(e).split())[:200]}") from None
    scale = float(np.abs(ref).max()) or 1.0
    return {
        "status": "ok",
        "convert_seconds": round(seconds, 1),
        "size_kib": round(len(tflite) / 1024, 1),
        "top1_agreement": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
        "rel_max_error": float(np.abs(out - ref).max() / scale),
    }


def _table(records: list[dict[str, Any]], modes: list[str]) -> str:
    latest = {(r["family"], r["mode"]): r for r in records}
    families = [f for f in APPLICATION_FAMILIES if any(r["family"] == f for r in records)]
    lines = [
        "| family | size | " + " | ".join(modes) + " |",
        "|---|---|" + "---|" * len(modes),
    ]
    for family in families:
        cells, size = [], ""
        for mode in modes:
            r = latest.get((family, mode))
            if r is None:
                cells.append("")
                continue
            size = str(r.get("size", size))
            if r["status"] == "ok":
                cells.append(
                    f"ok {r['convert_seconds']:.0f} s, agree {r['top1_agreement']:.2f}, "
                    f"err {r['rel_max_error']:.1e}"
                )
            else:
                cells.append(f"**error** ({r.get('convert_seconds', 0):.0f} s): {r['error']}")
        lines.append(f"| {family} | {size} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    legend = (
        "\nok: converted and ran in LiteRT (builtin kernels); s = conversion time (int16x8 "
        "includes its runtime check); agree = top-1 agreement with the Keras model and err = "
        "max |tflite - keras| / max |keras| on random images (counts in config.json). Not a "
        "measure of quantization quality: these random-weight networks amplify small "
        "perturbations (even dynamic, weights only, disagrees) and the few calibration images "
        "do not cover the test images' ranges. Read the ok / error coverage.\n"
    )
    return "\n".join(lines) + "\n" + legend


def _run() -> Path:
    import tfquant._env  # noqa: F401  (before TensorFlow)
    import tf_keras as keras

    from tfquant import convert
    from tfquant.study.provenance import open_run
    from tfquant.io_utils import append_jsonl, read_jsonl, write_text_atomic
    from tfquant.models.keras_apps import build_application, set_batch_norm_statistics

    for family in FLAGS.families:
        if family not in APPLICATION_FAMILIES:
            raise TfquantError(f"unknown family {family!r}; choose from: {', '.join(APPLICATION_FAMILIES)}")
    for mode in FLAGS.modes:
        if mode not in MODES:
            raise TfquantError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")
    out = Path(FLAGS.results_dir) / FLAGS.run_name
    open_run(out, {
        "experiment": "keras_apps_coverage",
        "size": FLAGS.size,
        "num_classes": FLAGS.num_classes,
        "num_calibration_examples": FLAGS.num_calibration_examples,
        "num_test_examples": FLAGS.num_test_examples,
    })
    jsonl = out / RESULTS_JSONL
    for family in FLAGS.families:
        latest = {(r["family"], r["mode"]): r for r in read_jsonl(jsonl)}
        todo = [
            m for m in FLAGS.modes
            if (family, m) not in latest
            or (FLAGS.retry_errors and latest[(family, m)]["status"] != "ok")
        ]
        if not todo:
            continue
        size = FLAGS.size or APPLICATION_FAMILIES[family].min_size
        keras.backend.clear_session()
        print(f"{family} ({size} px): {', '.join(todo)}", flush=True)
        load_error = None
        with tempfile.TemporaryDirectory(prefix="tfquant_apps_") as tmp:
            path = Path(tmp) / f"{family}.keras"
            built = build_application(family, size=size, num_classes=FLAGS.num_classes)
            set_batch_norm_statistics(built, _images(family, 32, size, seed=2))
            built.save(path)
            keras.backend.clear_session()
            try:
                model = convert.load_model(path)
            except TfquantError as e:
                load_error = str(e)
        if load_error is None:
            x_cal = _images(family, FLAGS.num_calibration_examples, size, seed=0)
            x_test = _images(family, FLAGS.num_test_examples, size, seed=1)
            ref = model(x_test, training=False).numpy()
        for mode in todo:
            start = time.perf_counter()
            record: dict[str, Any] = {"family": family, "mode": mode, "size": size}
            if load_error is not None:
                record.update(status="error", error=load_error, convert_seconds=0.0)
            else:
                try:
                    record.update(_cell(model, family, mode, x_cal, x_test, ref))
                except TfquantError as e:
                    record.update(
                        status="error", error=str(e),
                        convert_seconds=round(time.perf_counter() - start, 1),
                    )
            print(f"  {mode}: {record['status']} {record.get('error', '')}", flush=True)
            append_jsonl(jsonl, record)
    write_text_atomic(
        out / RESULTS_MD,
        _table(read_jsonl(jsonl), list(MODES)),
    )
    return out


def main(argv: list[str]) -> int:
    del argv
    return report_run("keras.applications coverage", RESULTS_MD, _run)


if __name__ == "__main__":
    app.run(main)
