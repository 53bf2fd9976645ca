"""``python -m tfquant check --delegate xnnpack|gpu|hexagon|nnapi MODEL.tflite [--json]``.

Per op: would the delegate take it, and if not, why; then ``xnnpack: N of M ops delegated``.
Predicted from the flatbuffer alone (:mod:`tfquant.evaluation.delegates`), before shipping.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from tfquant.qtypes import TargetDelegate

    p = sub.add_parser("check", help="which ops a delegate (xnnpack, gpu, hexagon, nnapi) would take, and why not")
    p.add_argument("tflite", metavar="MODEL.tflite")
    p.add_argument("--delegate", required=True, choices=[d.value for d in TargetDelegate])
    p.add_argument("--json", action="store_true", help="one JSON object (delegated_ops, total_ops, ops)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfquant.evaluation.delegates import check
    from tfquant.tflite.flatbuffer import model_bytes

    report = check(model_bytes(args.tflite), args.delegate)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    width = max(len(v.op) for v in report.ops)
    for v in report.ops:
        verdict = "delegated" if v.delegated else f"CPU: {v.reason}"
        print(f"{v.index:4d}  {v.op:<{width}}  v{v.version}  {verdict}")
    print(report.summary())
    return 0
