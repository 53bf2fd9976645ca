"""``python -m tfquant autoquant``: the 1% workflow as one command (issue 11).

Per-channel max weights; the calibrators tried on one statistics pass; then the most
sensitive layers promoted one at a time, to int16x8 activations first and to float only
where int16 is refused or does not help, until the model is within ``--max_drop`` of float
on a validation slice of ``--eval_data`` (the other half reports the final accuracy). Writes
OUT.tflite, OUT.recipe.json, OUT.steps.json and OUT.steps.md; when the budget cannot be met
it says so in one line, exits 2 and writes nothing under OUT's name.
See :mod:`tfquant.convert.autoquant`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tfquant.commands import _mixed_common
from tfquant.errors import TfquantError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autoquant", help="search int8 / int16x8 / float per layer within an accuracy budget")
    _mixed_common.add_flags(p)
    p.add_argument("--max_drop", type=float, default=0.01,
                   help="budget: top-1 drop from float as a fraction (default 0.01 = one point)")
    p.add_argument("--out", required=True, help="OUT.tflite (OUT.recipe.json, OUT.steps.json/.md beside it)")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the validation / report split of --eval_data")
    p.add_argument("--latency_runs", type=int, default=20, help="single-image invokes timed per candidate; 0 skips")
    p.add_argument("--max_promotions", type=int, default=None, help="at most N promotion steps (default: all layers)")
    p.add_argument("--allow_qat", action="store_true",
                   help="finish with QAT (whole model int8, tfmot) when promotion misses the budget; needs --train_data")
    p.add_argument("--train_data", default=None, help="DATASET to fine-tune on with --allow_qat (its train split)")
    p.add_argument("--qat_epochs", type=int, default=1, help="QAT epochs with --allow_qat (default 1)")
    p.add_argument("--limit_train", type=int, default=None, help="only the first N training examples for QAT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfquant.convert import autoquant, save
    from tfquant.io_utils import write_json_atomic, write_text_atomic
    from tfquant.recipes import Recipe

    out = Path(args.out)
    if out.suffix != ".tflite":
        raise TfquantError(f"--out must end in .tflite, got {args.out!r}")
    if args.allow_qat and not args.train_data:
        raise TfquantError("--allow_qat fine-tunes on labelled data; add --train_data DATASET")
    inputs = _mixed_common.load_inputs(args)
    if args.allow_qat and isinstance(inputs["model"], str):
        raise TfquantError(
            f"--allow_qat fine-tunes Keras layers, and SavedModel {args.model!r} was not written by "
            "Keras; pass the Keras model (.keras / .h5), or drop --allow_qat")
    qat = _qat_function(args, inputs) if args.allow_qat else None
    base = Recipe(mode="int8", calibrator="max", num_calibration_examples=len(inputs["x_cal"]),
                  calibration_seed=args.calibration_seed, calibration_data=args.calibration_data,
                  input=inputs["input"])
    result = autoquant.autoquant(
        inputs["model"], inputs["x_cal"], inputs["x_eval"], inputs["y_eval"], base=base,
        max_drop=args.max_drop, seed=args.split_seed, latency_runs=args.latency_runs,
        max_promotions=args.max_promotions, qat=qat, log=lambda line: print(line, file=sys.stderr),
    )
    if not result.met:
        raise TfquantError(
            f"the budget of {args.max_drop:g} cannot be met: best top-1 {result.accuracy_val:.4f} vs float "
            f"{result.float_accuracy_val:.4f} on the validation slice after {len(result.steps)} candidates; "
            "raise --max_drop or fine-tune with 'python -m tfquant qat'"
        )
    stem = out.with_suffix("")
    d = result.to_dict()
    d["model"] = args.model
    d["eval_data"] = args.eval_data
    write_json_atomic(f"{stem}.steps.json", d)
    write_text_atomic(f"{stem}.steps.md", autoquant.steps_markdown(result))
    if result.recipe is not None:
        save(result.tflite, out, result.recipe)
        sidecar = "recipe.json"
    else:  # the QAT model: its QAT record is its recipe (as `tfquant qat` writes it)
        from tfquant.convert.metadata import QAT_METADATA_NAME, embed_bytes
        from tfquant.io_utils import write_bytes_atomic

        write_text_atomic(f"{stem}.qat.json", result.qat_record)
        write_bytes_atomic(out, embed_bytes(result.tflite, QAT_METADATA_NAME, result.qat_record.encode("utf-8")))
        sidecar = "qat.json"
    print(
        f"wrote {out} ({len(result.tflite):,} bytes): top-1 {result.accuracy_report:.4f} vs float "
        f"{result.float_accuracy_report:.4f} on {result.n_report} held-out examples (budget {args.max_drop:g}, "
        f"met on the validation slice: {result.accuracy_val:.4f} vs {result.float_accuracy_val:.4f}); "
        f"{stem.name}.{sidecar}, .steps.json, .steps.md"
    )
    return 0


def _qat_function(args: argparse.Namespace, inputs: dict):
    """``() -> (tflite, QAT record JSON)``: tfmot QAT of the whole model (int8), run on demand."""

    def run_qat() -> tuple[bytes, str]:
        from tfquant import data, qat

        x_train, y_train, _ = data.load_numpy(args.train_data, "train", data_dir=args.data_dir,
                                              image_size=args.image_size, limit=args.limit_train,
                                              normalization=inputs["input"])
        outcome = qat.run_qat(inputs["model"], x_train, y_train, inputs["x_cal"], epochs=args.qat_epochs,
                              model_path=None if args.model.startswith("zoo:") else args.model, verbose=False)
        record = outcome.record.replace(model=args.model, train_data=args.train_data,
                                        calibration_data=args.calibration_data)
        return outcome.tflite, record.to_json()

    return run_qat
