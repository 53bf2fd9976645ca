"""Command line: ``python -m tfquant COMMAND ...``: convert, qat, evaluate, inspect, and the commands in tfquant/commands/.

The four core commands live here; sensitivity, autoquant, check, benchmark and report are one
module each in :mod:`tfquant.commands`.

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
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from tfquant.errors import TfquantError, error_line, show_traceback
from tfquant import qtypes

ZOO_PREFIX = "zoo:"
# tfquant.qat.FINETUNE_SCHEDULES, spelled here so that --help needs no TensorFlow.
FINETUNE_SCHEDULES = ("auto", "nvidia", "whitepaper")


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


def _values(enum: type) -> list[str]:
    """The choices of a flag: the values of a :mod:`tfquant.qtypes` enum."""
    return [member.value for member in enum]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _floats_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected one number or one per channel separated by commas (e.g. 0.5 or "
            f"0.485,0.456,0.406), got {text!r}"
        )
    return values


def _names_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected layer names separated by commas (e.g. ln_1,ln_2), got {text!r}")
    return names


def _add_out_data_input_flags(p: argparse.ArgumentParser, *, sidecar: str, func: Any) -> None:
    """--out OUT.tflite (OUT.<sidecar>.json beside it), the data and input-contract flags, and
    the command's function."""
    p.add_argument("--out", required=True, help=f"OUT.tflite (OUT.{sidecar}.json is written beside it)")
    _add_data_flags(p)
    _add_input_flags(p)
    p.set_defaults(func=func)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=None, help="folder with the dataset's files (e.g. Fashion-MNIST IDX files)")
    p.add_argument("--image_size", type=_image_size, default=None, help="resize images to H,W")


def _add_input_flags(p: argparse.ArgumentParser, *, evaluate: bool = False) -> None:
    from tfquant.recipes.inputs import preset_names

    when = (
        "default: the contract recorded in the model, else none"
        if evaluate
        else "recorded in the recipe; default: none ([0, 1] images as they are)"
    )
    p.add_argument("--input_mean", type=_floats_list, default=None,
                   help=f"input contract: per-channel mean in [0, 1] units, x = (x01 - mean) / std ({when})")
    p.add_argument("--input_std", type=_floats_list, default=None,
                   help="input contract: per-channel std in [0, 1] units (e.g. 0.5 with mean 0.5 gives [-1, 1])")
    p.add_argument("--preprocess", default=None, metavar="PRESET",
                   help=f"input contract preset, one of: {', '.join(preset_names())} ({when})")


def _add_model_flags(p: argparse.ArgumentParser, *, what: str = "PATH (.keras, .h5, SavedModel dir) or zoo:NAME") -> None:
    p.add_argument("--model", required=True, help=what)
    p.add_argument("--custom_objects", default=None, metavar="MODULE_OR_FILE",
                   help="Python file (my_layers.py) or module (pkg.layers) defining the model's custom layers")


def _input_contract(args: argparse.Namespace) -> Any:
    """The input contract the flags give (an InputContract), or None when none was given."""
    from tfquant.recipes import inputs

    return inputs.resolve(preset=args.preprocess, mean=args.input_mean, std=args.input_std)


def _load_model(spec: str, custom_objects: str | None = None) -> Any:
    from tfquant import api

    return api.load_model(spec, custom_objects=custom_objects)


def _calibration_note(source: str, n_used: int, requested: int | None) -> None:
    """Prints the line saying a small calibration source is used whole (see tfquant.api)."""
    from tfquant.api import calibration_note

    line = calibration_note(source, n_used, requested)
    if line is not None:
        print(line)


def cmd_convert(args: argparse.Namespace) -> int:
    from tfquant import api
    from tfquant.recipes import Recipe

    recipe = None
    options: dict[str, Any] = {}
    if args.recipe:
        path = Path(args.recipe)
        if not path.is_file():
            raise TfquantError(f"recipe file {args.recipe!r} does not exist; pass a .recipe.json path")
        recipe = Recipe.from_json(path.read_text())
    else:
        options = dict(
            weight_granularity=args.weight_granularity,
            io_dtype=args.io_dtype,
            calibrator=args.calibrator,
            percentile=args.percentile,
            aciq_prior=args.aciq_prior,
            activation_scheme=args.activation_scheme,
            weight_calibrator=args.weight_calibrator,
            weight_percentile=args.weight_percentile,
            weight_bits=args.weight_bits,
            weight_bit_allocation=args.weight_bit_allocation,
            bias_correction=args.bias_correction,
        )
    if not str(args.out).endswith(".tflite"):
        raise TfquantError(f"--out must end in .tflite, got {args.out!r}")
    labels = None
    if args.labels is not None:  # standard TFLite metadata: checked before the conversion
        from tfquant.convert.standard_metadata import read_labels

        labels = read_labels(args.labels)
    result = api.quantize(
        args.model,
        mode=args.mode or qtypes.Mode.INT8.value,
        calibration_data=args.calibration_data,
        num_calibration_examples=args.num_calibration_examples,
        calibration_seed=args.calibration_seed,
        preprocess=args.preprocess,
        input_mean=args.input_mean,
        input_std=args.input_std,
        custom_objects=args.custom_objects,
        data_dir=args.data_dir,
        image_size=args.image_size,
        recipe=recipe,
        out=None if labels is not None else args.out,
        **options,
    )
    recipe = result.recipe
    if labels is not None:
        from tfquant.convert import save
        from tfquant.convert.standard_metadata import add_classifier_metadata

        tflite = add_classifier_metadata(
            result.tflite, recipe, labels=labels, name=args.model_name or Path(args.out).stem,
            version=args.model_version, description=args.model_description,
        )
        result = dataclasses.replace(result, tflite=tflite, path=save(tflite, args.out, recipe))
    line = (
        f"wrote {result.path} ({len(result.tflite):,} bytes, mode {recipe.mode}, "
        f"{recipe.weight_granularity} weights, activation ranges: {recipe.calibration_label}"
    )
    if recipe.input is not None and not recipe.input.is_identity:
        line += f", input {recipe.input.describe()}"
    if recipe.channel_bits:
        bits = [b for v in recipe.channel_bits.values() for b in v]
        line += (
            f", weights {sum(bits) / len(bits):.2f} bits per channel on average "
            f"({min(bits)}..{max(bits)}, {recipe.weight_bit_allocation}), bias correction "
            f"{recipe.bias_correction}"
        )
    print(line + f") in {result.seconds:.1f} s")
    return 0


def cmd_qat(args: argparse.Namespace) -> int:
    """Quantization-aware fine-tuning (tfmot), then int8 export and a fidelity check."""
    from tfquant import api, data
    from tfquant import qat
    from tfquant.convert.metadata import QAT_METADATA_NAME, embed_bytes
    from tfquant.io_utils import write_bytes_atomic, write_text_atomic
    from tfquant.models.train import DEFAULT_CONFIGS

    out = Path(args.out)
    if out.suffix != ".tflite":
        raise TfquantError(f"--out must end in .tflite, got {args.out!r}")
    model = _load_model(args.model, args.custom_objects)
    contract = _input_contract(args)
    zoo_name = args.model[len(ZOO_PREFIX):] if args.model.startswith(ZOO_PREFIX) else None
    hw = api._keras_input_hw(model)  # noqa: SLF001

    def options(spec: str) -> dict:
        # As in convert / evaluate: images decoded from files are resized to the model's input.
        size = args.image_size or api._decoded_image_size(spec, hw)  # noqa: SLF001
        return dict(data_dir=args.data_dir, image_size=size, normalization=contract)

    x_cal = data.calibration_set(
        args.calibration_data, args.num_calibration_examples, seed=args.calibration_seed,
        **options(args.calibration_data),
    )
    _calibration_note(args.calibration_data, len(x_cal), args.num_calibration_examples)
    x_train, y_train, _ = data.load_numpy(
        args.train_data, "train", limit=args.limit_train, **options(args.train_data)
    )
    x_test = y_test = None
    if args.eval_data:
        x_test, y_test, _ = data.load_numpy(
            args.eval_data, "test", limit=args.limit_eval, **options(args.eval_data)
        )
    outcome = qat.run_qat(
        model, x_train, y_train, x_cal,
        weight_bits=args.weight_bits, weight_granularity=args.weight_granularity,
        epochs=args.epochs, seed=args.seed, learning_rate=args.original_learning_rate,
        batch_size=args.batch_size, finetune_schedule=args.finetune_schedule,
        x_eval=x_test, y_eval=y_test, log_dir=args.log_dir, checkpoint_dir=args.checkpoint_dir,
        original=DEFAULT_CONFIGS.get(zoo_name) if zoo_name else None,
        model_path=None if zoo_name else args.model,
        bit_budget=args.bit_budget, bit_allocation=args.bit_allocation,
        skip_layers=args.skip_layers,
    )
    record = outcome.record.replace(
        model=args.model, train_data=args.train_data, eval_data=args.eval_data,
        calibration_data=args.calibration_data, calibration_seed=args.calibration_seed,
        input=contract.to_dict() if contract is not None else None,
    )
    text = record.to_json()
    tflite = embed_bytes(outcome.tflite, QAT_METADATA_NAME, text.encode("utf-8"))
    write_bytes_atomic(out, tflite)
    write_text_atomic(out.with_suffix(".qat.json"), text)
    line = (
        f"wrote {out} ({len(tflite):,} bytes, int8, "
        + (f"{args.weight_bits}-bit" if args.bit_budget is None else
           f"per-layer ({record.bit_allocation}, mean {record.mean_weight_bits:g} bits)")
        + f" weights on the int8 grid, {args.weight_granularity}) and {out.with_suffix('.qat.json').name}"
    )
    if outcome.float_accuracy is not None and outcome.qat_accuracy is not None:
        line += (
            f"; top-1 float {outcome.float_accuracy:.4f} -> .tflite {outcome.qat_accuracy:.4f} "
            f"on {record.accuracy_data or 'held-out data'}"
        )
    print(line)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tfquant import api
    from tfquant.io_utils import write_json_atomic

    if args.output and not str(args.output).endswith(".json"):
        raise TfquantError(f"--output must end in .json, got {args.output!r}")
    result = api.evaluate(
        args.tflite, args.dataset, split=args.split, preprocess=args.preprocess,
        input_mean=args.input_mean, input_std=args.input_std, runtime=args.runtime,
        num_threads=args.num_threads, batch_size=args.batch_size, limit=args.limit,
        latency_runs=args.latency_runs, delegate_path=args.delegate_path,
        data_dir=args.data_dir, image_size=args.image_size,
    )
    measured = (f"top-1 {result['accuracy']:.4f}" if result["task"] == "classification" else
                f"MAE {result['mae']:.4g}, RMSE {result['rmse']:.4g} (max {result['max_abs_error']:.4g})")
    line = (
        f"{Path(args.tflite).name}: {measured} on {result['n_examples']} "
        f"{args.dataset}/{result['split']} examples ({result['runtime']}, {args.num_threads} thread(s)), "
        f"{result['size_bytes']:,} bytes"
    )
    if "latency_ms_median" in result:
        line += f", latency median {result['latency_ms_median']:.3f} ms"
    if result["input"] is not None:
        from tfquant.recipes.inputs import InputContract

        contract = InputContract.from_dict(result["input"])
        if not contract.is_identity:
            line += f"; input {contract.describe()} ({result['input_source']})"
    print(line)
    if args.output:
        write_json_atomic(args.output, result)
        print(f"wrote {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tfquant import api

    if args.json:
        import json

        print(json.dumps(api.inspect(args.tflite, as_dict=True), indent=2, default=str))
        return 0
    print(api.inspect(args.tflite))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...; see --help``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tfquant", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("convert", help="convert a Keras/SavedModel model to .tflite")
    _add_model_flags(c)
    c.add_argument("--mode", choices=_values(qtypes.Mode), default=None, help="default int8")
    c.add_argument("--weight_granularity", choices=_values(qtypes.Granularity), default="per_channel")
    c.add_argument("--io_dtype", choices=_values(qtypes.IODType), default="float32")
    c.add_argument("--calibration_data", default=None, help="DATASET: fashion_mnist, tfds:NAME, npz:PATH, folder:PATH")
    c.add_argument("--num_calibration_examples", type=_positive_int, default=None,
                   help="calibration set size (default: 1000, or all examples when the source has fewer)")
    c.add_argument("--calibration_seed", type=int, default=0)
    c.add_argument("--calibrator", choices=_values(qtypes.Calibration), default=None,
                   help="activation ranges (int8/int16x8); default: the converter's own min/max")
    c.add_argument("--percentile", type=float, default=None, help="for --calibrator percentile (default 99.99)")
    c.add_argument("--aciq_prior", choices=_values(qtypes.AciqPrior), default=None,
                   help="for --calibrator aciq (default laplace)")
    c.add_argument("--activation_scheme", choices=_values(qtypes.ActivationScheme), default=None,
                   help="int8: affine (default) or symmetric; int16x8 is always symmetric")
    c.add_argument("--weight_calibrator", choices=_values(qtypes.WeightCalibration), default="max",
                   help="weight bounds per channel (needs --calibrator when not max)")
    c.add_argument("--weight_percentile", type=float, default=None,
                   help="for --weight_calibrator percentile (default 99.99)")
    c.add_argument("--weight_bits", type=int, default=8,
                   help="int8: mean weight bit width 2..8; each output channel is stored in int8 on its "
                        "own b-bit grid (needs --calibrator)")
    c.add_argument("--weight_bit_allocation", choices=_values(qtypes.WeightBitAllocation), default="uniform",
                   help="uniform: every channel at --weight_bits; aciq: 2^b_c ~ alpha_c^(2/3), mean exactly "
                        "--weight_bits per tensor (Banner et al. 2019)")
    c.add_argument("--bias_correction", choices=_values(qtypes.BiasCorrection), default="none",
                   help="mean: fold each channel's expected output shift into its bias; mean_std: also "
                        "restore the weights' spread through the channel scale")
    c.add_argument("--recipe", default=None, help="a .recipe.json to use instead of the flags above")
    c.add_argument("--labels", default=None, metavar="labels.txt",
                   help="write standard TFLite metadata for an image classifier (normalisation from the "
                        "input contract, these labels packed as labels.txt, name, version, description)")
    c.add_argument("--model_name", default=None, help="metadata name (default: the --out file's stem)")
    c.add_argument("--model_version", default="1", help="metadata version (default 1)")
    c.add_argument("--model_description", default=None, help="metadata description (default: mode, weights, I/O)")
    _add_out_data_input_flags(c, sidecar="recipe", func=cmd_convert)

    q = sub.add_parser("qat", help="quantization-aware fine-tuning (tfmot), int8 export, fidelity check")
    _add_model_flags(q, what="PATH (.keras, .h5, SavedModel dir) or zoo:NAME (a trained float model)")
    q.add_argument("--train_data", required=True, help="DATASET to fine-tune on (its train split)")
    q.add_argument("--calibration_data", required=True, help="DATASET for the initial activation ranges")
    q.add_argument("--epochs", type=_positive_int, required=True)
    q.add_argument("--weight_bits", type=int, choices=[8, 4, 2], default=8,
                   help="sub-8-bit weights are stored as int8 values on the b-bit grid")
    q.add_argument("--weight_granularity", choices=_values(qtypes.Granularity), default="per_channel")
    q.add_argument("--bit_budget", type=float, default=None,
                   help="mixed precision: average weight bits over all kernels (parameter-weighted, met "
                        "exactly), each layer on its own b-bit grid, b in 2..8 (replaces --weight_bits)")
    q.add_argument("--bit_allocation", choices=["qbitopt", "oneshot", "fixed"], default="qbitopt",
                   help="with --bit_budget: qbitopt (re-allocated during QAT from gradient sensitivities, "
                        "frozen for the last 20%%), oneshot (once, from the float model), fixed (uniform)")
    q.add_argument("--finetune_schedule", "--finetune_recipe", dest="finetune_schedule",
                   choices=list(FINETUNE_SCHEDULES), default="auto",
                   help="auto (default): nvidia + batch-norm re-estimation after fine-tuning, LR 10%% of the "
                        "original below 8-bit weights; nvidia: Adam, LR 1%% of the original, cosine; "
                        "whitepaper: SGD + momentum, BN frozen after N steps (--finetune_recipe: "
                        "the same flag, its earlier name)")
    q.add_argument("--original_learning_rate", type=float, default=None,
                   help="LR the float model was trained with (default: the zoo's, else the optimizer "
                        "saved in the model file, else 1e-3, Keras's Adam default)")
    q.add_argument("--batch_size", type=_positive_int, default=None,
                   help="fine-tuning batch size (default: the zoo model's, else 128)")
    q.add_argument("--num_calibration_examples", type=_positive_int, default=None,
                   help="calibration set size (default: 1000, or all examples when the source has fewer)")
    q.add_argument("--calibration_seed", type=int, default=0)
    q.add_argument("--skip_layers", type=_names_list, default=(), metavar="NAME[,NAME...]",
                   help="Keras layers to leave unquantized (they run in float in the .tflite), e.g. "
                        "the LayerNormalization / Conv1D / custom layers QAT refuses")
    q.add_argument("--seed", type=int, default=0, help="makes the run repeatable")
    q.add_argument("--limit_train", type=_positive_int, default=None, help="only the first N training examples")
    q.add_argument("--eval_data", default=None, help="DATASET whose test split checks QAT-Keras vs .tflite agreement")
    q.add_argument("--limit_eval", type=_positive_int, default=None)
    q.add_argument("--log_dir", default=None, help="TensorBoard logs")
    q.add_argument("--checkpoint_dir", default=None, help="one checkpoint per epoch")
    _add_out_data_input_flags(q, sidecar="qat", func=cmd_qat)

    e = sub.add_parser("evaluate", help="top-1 accuracy, size and latency of a .tflite in LiteRT")
    e.add_argument("--tflite", required=True)
    e.add_argument("--dataset", required=True, help="fashion_mnist, tfds:NAME, npz:PATH, folder:PATH")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=_positive_int, default=None, help="only the first N examples")
    e.add_argument("--runtime", choices=_values(qtypes.Runtime), default="xnnpack")
    e.add_argument("--delegate_path", default=None, help="external delegate library (runtime delegate)")
    e.add_argument("--num_threads", type=_positive_int, default=1)
    e.add_argument("--batch_size", type=_positive_int, default=256)
    e.add_argument("--latency_runs", type=int, default=100, help="single-image invokes to time; 0 skips")
    e.add_argument("--output", default=None, help="RESULT.json")
    _add_data_flags(e)
    _add_input_flags(e, evaluate=True)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("inspect", help="per-tensor dtype, scale, zero point; op counts; recipe")
    i.add_argument("tflite")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)

    from tfquant import commands  # the other subcommands: one module each in tfquant/commands/

    commands.register_all(sub)
    return parser


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow without its CPU-only start-up notices (see :mod:`tfquant._quiet`).

    On a machine without a GPU TensorFlow's C++ start-up writes cuda-stub / oneDNN notices
    and, at the first device use, a ``failed call to cuInit`` line straight to fd 2 (no
    environment variable silences them), which would bury the CLI's one-line results and
    errors. Only those known lines are dropped; anything else still reaches stderr, and a
    real import failure still raises ImportError with its message.
    """
    from tfquant import _quiet

    _quiet.import_tensorflow()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit status."""
    args = build_parser().parse_args(argv)
    _import_tensorflow_quietly()
    from tfquant import progress

    try:
        with progress.reporting():  # stderr: bars on a terminal, one line per stage in a log
            return int(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted; finished outputs are complete, nothing half-written was kept", file=sys.stderr)
        return 130
    except Exception as e:  # TfquantError, a full disk, a file broken in an unforeseen way: one line
        if show_traceback() and not isinstance(e, TfquantError):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
