"""Command line: ``python -m tfquant {convert,evaluate,inspect} ...``.

Every user mistake surfaces as one line ``error: <what is wrong and how to fix it>`` on
stderr and exit status 2; output files are written atomically, so a failed command leaves
none behind.

Examples::

  python -m tfquant convert --model zoo:cnn --mode int8 --calibration_data fashion_mnist \\
      --out /tmp/cnn_int8.tflite
  python -m tfquant evaluate --tflite /tmp/cnn_int8.tflite --dataset fashion_mnist \\
      --output /tmp/cnn_int8.json
  python -m tfquant convert --model zoo:resnet --mode int16x8 --calibrator entropy \\
      --calibration_data fashion_mnist --out /tmp/resnet_int16x8_entropy.tflite
  python -m tfquant inspect /tmp/cnn_int8.tflite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tfquant.errors import TfquantError
from tfquant.qtypes import (
    AciqPrior,
    ActivationScheme,
    Calibration,
    Granularity,
    IODType,
    Mode,
    Runtime,
    WeightCalibration,
)

ZOO_PREFIX = "zoo:"


def _image_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"--image_size takes H,W (e.g. 224,224), got {text!r}")
    return parts[0], parts[1]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=None, help="folder with the dataset's files (e.g. Fashion-MNIST IDX files)")
    p.add_argument("--image_size", type=_image_size, default=None, help="resize images to H,W")


def _load_model(spec: str) -> Any:
    if spec.startswith(ZOO_PREFIX):
        from tfquant import models

        return models.build(spec[len(ZOO_PREFIX):])
    from tfquant import convert

    return convert.load_model(spec)


def cmd_convert(args: argparse.Namespace) -> int:
    from tfquant import convert
    from tfquant.recipes import Recipe

    if args.recipe:
        path = Path(args.recipe)
        if not path.is_file():
            raise TfquantError(f"recipe file {args.recipe!r} does not exist; pass a .recipe.json path")
        recipe = Recipe.from_json(path.read_text())
    else:
        recipe = Recipe(
            mode=args.mode or Mode.INT8,
            weight_granularity=args.weight_granularity,
            io_dtype=args.io_dtype,
            num_calibration_examples=args.num_calibration_examples,
            calibration_seed=args.calibration_seed,
            calibration_data=args.calibration_data,
            calibrator=args.calibrator,
            percentile=args.percentile,
            aciq_prior=args.aciq_prior,
            activation_scheme=args.activation_scheme,
            weight_calibrator=args.weight_calibrator,
            weight_percentile=args.weight_percentile,
        )
    if not str(args.out).endswith(".tflite"):
        raise TfquantError(f"--out must end in .tflite, got {args.out!r}")
    calibration = None
    if recipe.mode.needs_calibration:
        source = recipe.calibration_data or args.calibration_data
        if not source:
            raise TfquantError(
                f"mode {recipe.mode} needs calibration data; pass --calibration_data DATASET "
                "(e.g. fashion_mnist, npz:PATH, tfds:NAME, folder:PATH)"
            )
        from tfquant import data

        calibration = data.calibration_set(
            source,
            recipe.num_calibration_examples,
            seed=recipe.calibration_seed,
            data_dir=args.data_dir,
            image_size=args.image_size,
        )
    model = _load_model(args.model)
    start = time.perf_counter()
    tflite = convert.convert(model, recipe, calibration_data=calibration)
    out = convert.save(tflite, args.out, recipe)
    print(
        f"wrote {out} ({len(tflite):,} bytes, mode {recipe.mode}, "
        f"{recipe.weight_granularity} weights, activation ranges: {recipe.calibration_label}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tfquant import convert, data, evaluation
    from tfquant.io_utils import write_json_atomic

    if args.output and not str(args.output).endswith(".json"):
        raise TfquantError(f"--output must end in .json, got {args.output!r}")
    runtime = Runtime.parse(args.runtime, what="runtime")
    # Load the model first: a corrupt file should fail before the dataset is read.
    evaluation.load_interpreter(args.tflite, runtime=runtime, num_threads=args.num_threads,
                                delegate_path=args.delegate_path)
    x, y, info = data.load_numpy(
        args.dataset, args.split, data_dir=args.data_dir, image_size=args.image_size, limit=args.limit
    )
    acc = evaluation.evaluate_accuracy(
        args.tflite, x, y, runtime=runtime, num_threads=args.num_threads,
        batch_size=args.batch_size, delegate_path=args.delegate_path,
    )
    result: dict[str, Any] = {
        "tflite_path": str(args.tflite),
        "dataset": args.dataset,
        "split": args.split,
        "runtime": runtime.value,
        "threads": args.num_threads,
        "accuracy": acc.accuracy,
        "n_examples": acc.n_examples,
        "size_bytes": evaluation.file_size(args.tflite),
        "executed_in": "tflite",
    }
    if args.latency_runs > 0:
        lat = evaluation.measure_latency(
            args.tflite, runtime=runtime, num_threads=args.num_threads,
            runs=args.latency_runs, delegate_path=args.delegate_path, sample=x[:1],
        )
        result.update(
            latency_ms_median=lat.median_ms, latency_ms_p90=lat.p90_ms, latency_ms_min=lat.min_ms,
            latency_runs=lat.runs,
        )
    recipe = convert.read_recipe(args.tflite)
    result["recipe"] = recipe.to_dict() if recipe else None
    line = (
        f"{Path(args.tflite).name}: top-1 {acc.accuracy:.4f} on {acc.n_examples} {info.name}/{args.split} "
        f"examples ({runtime}, {args.num_threads} thread(s)), {result['size_bytes']:,} bytes"
    )
    if "latency_ms_median" in result:
        line += f", latency median {result['latency_ms_median']:.3f} ms"
    print(line)
    if args.output:
        write_json_atomic(args.output, result)
        print(f"wrote {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tfquant import convert, evaluation

    report = evaluation.inspect_model(args.tflite)
    if args.json:
        import dataclasses
        import json

        out = dataclasses.asdict(report)
        out["ranges"] = convert.read_ranges(args.tflite)
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(evaluation.format_report(report))
    ranges = convert.read_ranges(args.tflite)
    print(evaluation.format_activation_ranges(report, ranges, convert.read_recipe(args.tflite)))
    recipe = convert.read_recipe(args.tflite)
    print("recipe: " + (recipe.to_json().strip() if recipe else "(none embedded)"))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...; see --help``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tfquant", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("convert", help="convert a Keras/SavedModel model to .tflite")
    c.add_argument("--model", required=True, help="PATH (.keras, .h5, SavedModel dir) or zoo:NAME")
    c.add_argument("--mode", choices=[m.value for m in Mode], default=None, help="default int8")
    c.add_argument("--weight_granularity", choices=[g.value for g in Granularity], default="per_channel")
    c.add_argument("--io_dtype", choices=[d.value for d in IODType], default="float32")
    c.add_argument("--calibration_data", default=None, help="DATASET: fashion_mnist, tfds:NAME, npz:PATH, folder:PATH")
    c.add_argument("--num_calibration_examples", type=_positive_int, default=1000)
    c.add_argument("--calibration_seed", type=int, default=0)
    c.add_argument("--calibrator", choices=[m.value for m in Calibration], default=None,
                   help="activation ranges (int8/int16x8); default: the converter's own min/max")
    c.add_argument("--percentile", type=float, default=None, help="for --calibrator percentile (default 99.99)")
    c.add_argument("--aciq_prior", choices=[p.value for p in AciqPrior], default=None,
                   help="for --calibrator aciq (default laplace)")
    c.add_argument("--activation_scheme", choices=[a.value for a in ActivationScheme], default=None,
                   help="int8: affine (default) or symmetric; int16x8 is always symmetric")
    c.add_argument("--weight_calibrator", choices=[w.value for w in WeightCalibration], default="max",
                   help="weight bounds per channel (needs --calibrator when not max)")
    c.add_argument("--weight_percentile", type=float, default=None,
                   help="for --weight_calibrator percentile (default 99.99)")
    c.add_argument("--recipe", default=None, help="a .recipe.json to use instead of the flags above")
    c.add_argument("--out", required=True, help="OUT.tflite (OUT.recipe.json is written beside it)")
    _add_data_flags(c)
    c.set_defaults(func=cmd_convert)

    e = sub.add_parser("evaluate", help="top-1 accuracy, size and latency of a .tflite in LiteRT")
    e.add_argument("--tflite", required=True)
    e.add_argument("--dataset", required=True, help="fashion_mnist, tfds:NAME, npz:PATH, folder:PATH")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=_positive_int, default=None, help="only the first N examples")
    e.add_argument("--runtime", choices=[r.value for r in Runtime], default="xnnpack")
    e.add_argument("--delegate_path", default=None, help="external delegate library (runtime delegate)")
    e.add_argument("--num_threads", type=_positive_int, default=1)
    e.add_argument("--batch_size", type=_positive_int, default=256)
    e.add_argument("--latency_runs", type=int, default=100, help="single-image invokes to time; 0 skips")
    e.add_argument("--output", default=None, help="RESULT.json")
    _add_data_flags(e)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("inspect", help="per-tensor dtype, scale, zero point; op counts; recipe")
    i.add_argument("tflite")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)
    return parser


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 muted.

    On a machine without a GPU, TensorFlow's C++ start-up writes cuda-stub notices straight
    to fd 2 (no environment variable silences them), which would bury the CLI's one-line
    errors. A real import failure still raises ImportError with its message.
    """
    if "tensorflow" in sys.modules:
        return
    import os

    from tfquant import _env  # noqa: F401

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit status."""
    args = build_parser().parse_args(argv)
    _import_tensorflow_quietly()
    try:
        return int(args.func(args))
    except TfquantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished outputs are complete, nothing half-written was kept", file=sys.stderr)
        return 130
