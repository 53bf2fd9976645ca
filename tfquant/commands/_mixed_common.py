"""Flags and data loading shared by the ``sensitivity`` and ``autoquant`` commands."""

from __future__ import annotations

import argparse
from typing import Any

from tfquant.errors import TfquantError


def add_flags(p: argparse.ArgumentParser) -> None:
    """--model, --calibration_data, --eval_data and their size / input-contract flags."""
    from tfquant import cli

    cli._add_model_flags(p)  # noqa: SLF001  (the CLI's own flag helpers)
    p.add_argument("--calibration_data", required=True, help="DATASET for the statistics pass (its train split)")
    p.add_argument("--eval_data", required=True, help="DATASET whose test split measures accuracy")
    p.add_argument("--num_calibration_examples", type=cli._positive_int, default=None,  # noqa: SLF001
                   help="calibration set size (default: 1000, or all examples when the source has fewer)")
    p.add_argument("--calibration_seed", type=int, default=0)
    p.add_argument("--limit_eval", type=cli._positive_int, default=None,  # noqa: SLF001
                   help="only the first N evaluation examples")
    cli._add_data_flags(p)  # noqa: SLF001
    cli._add_input_flags(p)  # noqa: SLF001


def load_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The model (a Keras model, or the path of a SavedModel Keras did not write), the
    calibration images and the evaluation arrays the flags name."""
    from tfquant import api, data

    contract = api.input_contract(preprocess=args.preprocess, input_mean=args.input_mean, input_std=args.input_std)
    savedmodel = api._plain_savedmodel(args.model)  # noqa: SLF001
    if savedmodel is not None:  # not written by Keras: converted from its serving signature
        model, hw = args.model, api._input_hw(savedmodel.input_shapes or [])  # noqa: SLF001
        _check_classifier(args.model, savedmodel.output_shapes or [])
    else:
        model = api.load_model(args.model, custom_objects=args.custom_objects)
        _check_classifier(args.model, [tuple(o.shape) for o in getattr(model, "outputs", None) or []])
        hw = api._keras_input_hw(model)  # noqa: SLF001
    image_size = args.image_size
    cal_size = image_size or api._decoded_image_size(args.calibration_data, hw)  # noqa: SLF001
    eval_size = image_size or api._decoded_image_size(args.eval_data, hw)  # noqa: SLF001
    x_cal = data.calibration_set(args.calibration_data, args.num_calibration_examples, seed=args.calibration_seed,
                                 data_dir=args.data_dir, image_size=cal_size, normalization=contract)
    x_eval, y_eval, _ = data.load_numpy(args.eval_data, "test", data_dir=args.data_dir, image_size=eval_size,
                                        limit=args.limit_eval, normalization=contract)
    if len(x_eval) < 2:
        raise TfquantError(f"--eval_data {args.eval_data!r} has {len(x_eval)} test example(s); pass at least 2")
    return {"model": model, "x_cal": x_cal, "x_eval": x_eval, "y_eval": y_eval, "input": contract}


def _check_classifier(name: str, outs: list[tuple[int | None, ...]]) -> None:
    """Refuses, before the statistics pass, a model whose top-1 cannot be measured: not one
    output of class scores (batch, K >= 2), e.g. two heads, an image or a regression value."""
    shape = tuple(outs[0]) if len(outs) == 1 else ()
    if len(outs) != 1 or len(shape) != 2 or shape[1] is None or shape[1] < 2:
        shapes = ", ".join(str(tuple(o)) for o in outs)
        raise TfquantError(
            f"model {name!r} has {len(outs)} output(s) {shapes}; sensitivity and autoquant rank by "
            "top-1 accuracy, which needs one output of class scores (batch, num_classes): quantize "
            "this model with tfquant convert instead"
        )
