"""Command line: ``python -m tfquant {convert,qat,evaluate,inspect} ...``.

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


QAT_METADATA_NAME = "tfquant_qat"


def cmd_qat(args: argparse.Namespace) -> int:
    """Quantization-aware fine-tuning (tfmot), then int8 export and a fidelity check."""
    import dataclasses
    import json

    from tfquant import data
    from tfquant.convert import qat
    from tfquant.convert.metadata import embed_bytes
    from tfquant.io_utils import write_bytes_atomic, write_text_atomic
    from tfquant.models.train import DEFAULT_CONFIGS, TrainConfig

    out = Path(args.out)
    if out.suffix != ".tflite":
        raise TfquantError(f"--out must end in .tflite, got {args.out!r}")
    model = _load_model(args.model)
    zoo_name = args.model[len(ZOO_PREFIX):] if args.model.startswith(ZOO_PREFIX) else None
    if zoo_name in DEFAULT_CONFIGS and args.original_learning_rate is None:
        original = DEFAULT_CONFIGS[zoo_name]
    elif args.original_learning_rate is None:
        raise TfquantError(
            "--original_learning_rate is needed for a model outside the zoo (the fine-tuning "
            "recipes are fractions of the original schedule); pass the LR it was trained with"
        )
    else:
        original = TrainConfig(epochs=1, batch_size=args.batch_size, learning_rate=args.original_learning_rate)
    finetune_recipe = (
        qat.nvidia_recipe(original) if args.finetune_recipe == "nvidia" else qat.whitepaper_recipe(original)
    )
    options = dict(data_dir=args.data_dir, image_size=args.image_size)
    x_cal = data.calibration_set(
        args.calibration_data, args.num_calibration_examples, seed=args.calibration_seed, **options
    )
    x_train, y_train, _ = data.load_numpy(args.train_data, "train", limit=args.limit_train, **options)
    qat_model = qat.quantize_for_training(
        model,
        weight_bits=args.weight_bits,
        weight_granularity=args.weight_granularity,
        calibration_data=x_cal,
    )
    start = time.perf_counter()
    result = qat.finetune(
        qat_model, finetune_recipe, x_train, y_train, epochs=args.epochs, seed=args.seed,
        log_dir=args.log_dir, checkpoint_dir=args.checkpoint_dir,
    )
    tflite = qat.export_tflite(qat_model)
    record: dict[str, Any] = {
        "model": args.model, "weight_bits": args.weight_bits, "activation_bits": 8,
        "weight_granularity": args.weight_granularity, "epochs": args.epochs, "seed": args.seed,
        "train_data": args.train_data, "train_examples": int(len(x_train)),
        "calibration_data": args.calibration_data,
        "num_calibration_examples": args.num_calibration_examples,
        "calibration_seed": args.calibration_seed, "finetune_recipe": finetune_recipe.to_dict(),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    if dataclasses.is_dataclass(result):
        record["finetune"] = json.loads(json.dumps(dataclasses.asdict(result), default=str))
    if args.eval_data:
        x_test, y_test, _ = data.load_numpy(args.eval_data, "test", limit=args.limit_eval, **options)
        report = qat.compare(qat_model, tflite, x_test, y_test)
        record["fidelity"] = json.loads(json.dumps(dataclasses.asdict(report), default=str))
        print(report.summary())
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    tflite = embed_bytes(tflite, QAT_METADATA_NAME, text.encode("utf-8"))
    write_bytes_atomic(out, tflite)
    write_text_atomic(out.with_suffix(".qat.json"), text)
    print(
        f"wrote {out} ({len(tflite):,} bytes, int8, {args.weight_bits}-bit weights on the int8 grid, "
        f"{args.weight_granularity}) and {out.with_suffix('.qat.json').name}"
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

    q = sub.add_parser("qat", help="quantization-aware fine-tuning (tfmot), int8 export, fidelity check")
    q.add_argument("--model", required=True, help="PATH (.keras, .h5, SavedModel dir) or zoo:NAME (a trained float model)")
    q.add_argument("--train_data", required=True, help="DATASET to fine-tune on (its train split)")
    q.add_argument("--calibration_data", required=True, help="DATASET for the initial activation ranges")
    q.add_argument("--epochs", type=_positive_int, required=True)
    q.add_argument("--weight_bits", type=int, choices=[8, 4, 2], default=8,
                   help="sub-8-bit weights are stored as int8 values on the b-bit grid")
    q.add_argument("--weight_granularity", choices=[g.value for g in Granularity], default="per_channel")
    q.add_argument("--finetune_recipe", choices=["nvidia", "whitepaper"], default="nvidia",
                   help="nvidia: Adam, LR 1%% of the original, cosine; whitepaper: SGD + momentum, BN frozen after N steps")
    q.add_argument("--original_learning_rate", type=float, default=None,
                   help="LR the float model was trained with (zoo models know theirs)")
    q.add_argument("--batch_size", type=_positive_int, default=128, help="for models outside the zoo")
    q.add_argument("--num_calibration_examples", type=_positive_int, default=1000)
    q.add_argument("--calibration_seed", type=int, default=0)
    q.add_argument("--seed", type=int, default=0, help="makes the run repeatable")
    q.add_argument("--limit_train", type=_positive_int, default=None, help="only the first N training examples")
    q.add_argument("--eval_data", default=None, help="DATASET whose test split checks QAT-Keras vs .tflite agreement")
    q.add_argument("--limit_eval", type=_positive_int, default=None)
    q.add_argument("--log_dir", default=None, help="TensorBoard logs")
    q.add_argument("--checkpoint_dir", default=None, help="one checkpoint per epoch")
    q.add_argument("--out", required=True, help="OUT.tflite (OUT.qat.json is written beside it)")
    _add_data_flags(q)
    q.set_defaults(func=cmd_qat)

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
