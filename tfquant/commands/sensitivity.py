"""``python -m tfquant sensitivity``: per-layer error analysis and single-layer sensitivity.

Writes REPORT.json (a list ``layers``, most sensitive first, each with ``name``, ``op``,
``accuracy_drop`` and the error metrics), REPORT.md (the table), REPORT.png (bar chart) and
REPORT.model_explorer.json (node data to load in Google's Model Explorer on the float
model, written as REPORT.float.tflite). See :mod:`tfquant.evaluation.sensitivity`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfquant.commands import _mixed_common
from tfquant.errors import TfquantError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="per-layer int8 / int16x8 error analysis and sensitivity (interpreter)")
    _mixed_common.add_flags(p)
    p.add_argument("--mode", choices=["int8", "int16x8"], default="int8")
    p.add_argument("--calibrator", default="max", help="activation calibrator (default max)")
    p.add_argument("--percentile", type=float, default=None, help="for --calibrator percentile")
    p.add_argument("--debug_examples", type=int, default=32, help="examples of the per-tensor error pass")
    p.add_argument("--no_promotion", action="store_true", help="skip the per-layer promotion gain")
    p.add_argument("--output", required=True, help="REPORT.json (REPORT.md, .png, .model_explorer.json beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfquant.convert import mixed
    from tfquant.evaluation import sensitivity
    from tfquant.io_utils import write_bytes_atomic, write_json_atomic, write_text_atomic, atomic_path
    from tfquant.progress import stage
    from tfquant.recipes import Recipe

    out = Path(args.output)
    if out.suffix != ".json":
        raise TfquantError(f"--output must end in .json, got {args.output!r}")
    inputs = _mixed_common.load_inputs(args)
    recipe = Recipe(mode=args.mode, calibrator=args.calibrator, percentile=args.percentile,
                    num_calibration_examples=len(inputs["x_cal"]), calibration_seed=args.calibration_seed,
                    calibration_data=args.calibration_data, input=inputs["input"])
    calibrated = mixed.calibrate_mixed(inputs["model"], recipe, calibration_data=inputs["x_cal"])
    with stage("per-layer sensitivity"):
        report = sensitivity.analyze(
            calibrated, recipe, inputs["x_eval"], inputs["y_eval"],
            x_debug=inputs["x_cal"][: max(1, args.debug_examples)], promote=not args.no_promotion,
        )
    stem = out.with_suffix("")
    d = report.to_dict()
    d["model"] = args.model
    d["eval_data"] = args.eval_data
    d["recipe"] = recipe.to_dict()
    d["statistics_seconds"] = calibrated.statistics_seconds
    d["float_conversion_seconds"] = calibrated.convert_seconds
    write_text_atomic(f"{stem}.md", sensitivity.to_markdown(report))
    with atomic_path(f"{stem}.png") as tmp:
        sensitivity.bar_chart(report, str(tmp))
    write_bytes_atomic(f"{stem}.float.tflite", calibrated.float_model)
    write_text_atomic(f"{stem}.model_explorer.json",
                      json.dumps(sensitivity.model_explorer_node_data(report, calibrated), indent=1) + "\n")
    write_json_atomic(out, d)
    top = report.layers[0] if report.layers else None
    print(
        f"wrote {out} ({len(report.layers)} layers; float {report.float_accuracy:.4f}, {report.mode} "
        f"{report.quantized_accuracy:.4f} on {report.n_eval} examples"
        + (f"; most sensitive: {top.name} ({top.op}, drop {top.accuracy_drop:+.4f})" if top else "")
        + f") and {stem.name}.md/.png/.model_explorer.json/.float.tflite"
    )
    return 0
