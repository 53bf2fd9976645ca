"""The Python API behind the CLI: quantize, evaluate and inspect in a few lines.

``python -m tfquant convert / evaluate / inspect`` call these functions, so a notebook gets
the same behaviour and the same :class:`~tfquant.errors.TfquantError` messages::

    import tfquant

    result = tfquant.quantize("my_model.keras", mode="int8", calibration_data="npz:calib.npz",
                              preprocess="mobilenet_v2", out="my_model_int8.tflite")
    print(tfquant.evaluate("my_model_int8.tflite", "npz:test.npz")["accuracy"])
    print(tfquant.inspect("my_model_int8.tflite"))

Nothing here imports TensorFlow until a function runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.recipes import inputs as _inputs
from tfquant.recipes.inputs import InputContract

ZOO_PREFIX = "zoo:"
Note = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` produced.

    Attributes:
      tflite: the model bytes (with the recipe embedded).
      recipe: the recipe as used (calibration count and source filled in).
      path: where the model was written, or None when ``out`` was not given.
      seconds: conversion time (calibration data loading excluded).
    """

    tflite: bytes
    recipe: Recipe
    path: Path | None
    seconds: float


def load_model(model: Any, *, custom_objects: Any = None) -> Any:
    """A Keras model from a path (.keras / .h5 / Keras SavedModel), ``zoo:NAME``, or as given.

    Raises:
      TfquantError: as :func:`tfquant.convert.load_model` and :func:`tfquant.models.build`.
    """
    if not isinstance(model, (str, os.PathLike)):
        return model
    spec = os.fspath(model)
    if spec.startswith(ZOO_PREFIX):
        from tfquant import models

        return models.build(spec[len(ZOO_PREFIX):])
    from tfquant import convert

    return convert.load_model(spec, custom_objects=custom_objects)


def input_contract(
    *,
    preprocess: str | None = None,
    input_mean: Sequence[float] | float | None = None,
    input_std: Sequence[float] | float | None = None,
) -> InputContract | None:
    """The input contract from a preset name or mean / std (see :mod:`tfquant.recipes.inputs`)."""
    as_tuple = lambda v: None if v is None else (tuple(v) if isinstance(v, (list, tuple)) else (v,))  # noqa: E731
    return _inputs.resolve(preset=preprocess, mean=as_tuple(input_mean), std=as_tuple(input_std))


def quantize(
    model: Any,
    *,
    mode: str = "int8",
    calibration_data: str | np.ndarray | None = None,
    out: str | os.PathLike[str] | None = None,
    num_calibration_examples: int | None = None,
    calibration_seed: int = 0,
    preprocess: str | None = None,
    input_mean: Sequence[float] | float | None = None,
    input_std: Sequence[float] | float | None = None,
    custom_objects: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    recipe: Recipe | None = None,
    note: Note | None = print,
    **recipe_options: Any,
) -> QuantizeResult:
    """Converts a float model to .tflite as the recipe says; the ``convert`` command.

    Args:
      model: a path (.keras, .h5, SavedModel dir), ``zoo:NAME`` or a Keras model.
      mode: ``fp32``, ``fp16``, ``dynamic``, ``int8`` or ``int16x8``.
      calibration_data: a dataset spec (``npz:PATH``, ``folder:PATH``, ``tfds:NAME``,
        ``fashion_mnist``) or an array of the model's inputs (images in [0, 1], NHWC, or any
        (N, ...) float array for a non-image model); needed by int8 / int16x8.
        No labels needed.
      out: write ``out`` (.tflite) and ``out`` with ``.recipe.json`` beside it, atomically.
      num_calibration_examples: calibration set size; None: 1000, or every example when
        the source has fewer (``note`` says so).
      calibration_seed: seed of the calibration draw.
      preprocess, input_mean, input_std: the input contract (see
        :mod:`tfquant.recipes.inputs`), applied to the calibration images and recorded.
      custom_objects: the model's custom layers: a .py file, a module name or a mapping.
      data_dir, image_size: as for :func:`tfquant.data.load`; without ``image_size``,
        images decoded from files (``folder:``, ``tfds:``) are resized to the model's input
        height and width when the model fixes them.
      recipe: a full :class:`~tfquant.recipes.Recipe` instead of ``mode`` and
        ``recipe_options`` (the input contract arguments still override its ``input``).
      note: where one-line notes go (``print``; None for silence).
      **recipe_options: other :class:`~tfquant.recipes.Recipe` fields (``calibrator``,
        ``weight_granularity``, ``io_dtype``, ``percentile``, ...).

    Returns:
      A :class:`QuantizeResult`.

    Raises:
      TfquantError: bad options, model, data, or a conversion the converter refuses.
    """
    from tfquant.data import DEFAULT_NUM_CALIBRATION_EXAMPLES

    contract = input_contract(preprocess=preprocess, input_mean=input_mean, input_std=input_std)
    if recipe is None:
        recipe = Recipe(
            mode=mode,
            num_calibration_examples=num_calibration_examples or DEFAULT_NUM_CALIBRATION_EXAMPLES,
            calibration_seed=calibration_seed,
            input=contract,
            **recipe_options,
        )
    else:
        if recipe_options:
            raise TfquantError(
                f"pass either recipe= or recipe options ({', '.join(sorted(recipe_options))}), "
                "not both; use recipe.replace(...)"
            )
        if contract is not None:
            recipe = recipe.replace(input=contract)
    if out is not None and not os.fspath(out).endswith(".tflite"):
        raise TfquantError(f"out must end in .tflite, got {os.fspath(out)!r}")
    savedmodel = _plain_savedmodel(model)
    if savedmodel is not None:  # converted from its serving_default signature, no Keras model
        keras_model, model_hw = None, _input_hw(savedmodel.input_shapes or [])
    else:
        keras_model = load_model(model, custom_objects=custom_objects)
        model_hw = _keras_input_hw(keras_model)
    if image_size is None and isinstance(calibration_data, str):
        image_size = _decoded_image_size(calibration_data, model_hw)
    calibration = None
    if recipe.mode.needs_calibration:
        source = calibration_data if calibration_data is not None else recipe.calibration_data
        if source is None:
            raise TfquantError(
                f"mode {recipe.mode} needs calibration data; pass --calibration_data DATASET "
                "(e.g. npz:PATH, folder:PATH, tfds:NAME, fashion_mnist)"
            )
        calibration, label = _calibration_images(
            source, num_calibration_examples, recipe, data_dir=data_dir, image_size=image_size
        )
        line = calibration_note(label, len(calibration), num_calibration_examples)
        if note is not None and line is not None:
            note(line)
        family = _inputs.guess_family(getattr(keras_model, "name", ""))
        if note is not None and recipe.input is None and family is not None:
            note(
                f"note: model {keras_model.name!r} looks like keras.applications {family}, which "
                f"expects --preprocess {family}; calibrating on [0, 1] images as given (pass "
                "--preprocess none to say that is intended)"
            )
        recipe = recipe.replace(
            num_calibration_examples=len(calibration),
            calibration_data=label if isinstance(source, str) else recipe.calibration_data,
        )
    from tfquant import convert

    start = time.perf_counter()
    tflite = convert.convert(keras_model if savedmodel is None else model, recipe, calibration_data=calibration)
    seconds = time.perf_counter() - start
    recipe = convert.read_recipe(tflite) or recipe  # with the per-channel bits, if chosen
    path = convert.save(tflite, out, recipe) if out is not None else None
    return QuantizeResult(tflite=tflite, recipe=recipe, path=path, seconds=seconds)


def calibration_note(source: str, n_used: int, requested: int | None) -> str | None:
    """The one line saying a source smaller than the default calibration size is used whole,
    or None when a count was asked for or the default was reached."""
    from tfquant.data import DEFAULT_NUM_CALIBRATION_EXAMPLES

    if requested is not None or n_used >= DEFAULT_NUM_CALIBRATION_EXAMPLES:
        return None
    return (
        f"calibration: {source} has {n_used} examples (fewer than the default "
        f"{DEFAULT_NUM_CALIBRATION_EXAMPLES}); using all of them"
    )


def _keras_input_hw(model: Any) -> tuple[int, int] | None:
    """(H, W) of a Keras model's single 4-D input when both are fixed, else None."""
    return _input_hw([tuple(t.shape) for t in getattr(model, "inputs", None) or []])


def _input_hw(shapes: Sequence[Sequence[int | None]]) -> tuple[int, int] | None:
    """(H, W) of a single 4-D (NHWC) input when both are fixed, else None."""
    if len(shapes) != 1 or len(shapes[0]) != 4:
        return None
    h, w = shapes[0][1], shapes[0][2]
    return (int(h), int(w)) if h is not None and w is not None else None


def _plain_savedmodel(model: Any) -> Any:
    """The loaded :class:`~tfquant.convert.source.Source` when ``model`` is the path of a
    SavedModel that Keras did not write (``tf.saved_model.save``, TF Hub exports), else None."""
    if not isinstance(model, (str, os.PathLike)) or os.fspath(model).startswith(ZOO_PREFIX):
        return None
    path = Path(model)
    if not path.is_dir():
        return None
    from tfquant.convert.loading import is_keras_savedmodel, is_savedmodel_dir
    from tfquant.convert.source import load_source

    if not is_savedmodel_dir(path) or is_keras_savedmodel(path):
        return None
    return load_source(path)


def _decoded_image_size(spec: str, model_hw: tuple[int, int] | None) -> tuple[int, int] | None:
    """The model's (H, W) for sources decoded from image files (``folder:``, ``tfds:``), so
    their images are resized to what the model takes without ``--image_size``; None for
    arrays (``npz:``, ``fashion_mnist``), which are used as given."""
    if model_hw is None or not spec.startswith(("folder:", "tfds:")):
        return None
    return model_hw


def _calibration_images(
    source: str | np.ndarray,
    requested: int | None,
    recipe: Recipe,
    *,
    data_dir: str | os.PathLike[str] | None,
    image_size: tuple[int, int] | None,
) -> tuple[np.ndarray, str]:
    """The calibration images, with the recipe's input contract applied, and their label."""
    from tfquant import data

    if isinstance(source, str):
        x = data.calibration_set(
            source,
            requested,
            seed=recipe.calibration_seed,
            data_dir=data_dir,
            image_size=image_size,
            normalization=recipe.input,
        )
        return x, source
    x = np.asarray(source, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise TfquantError(
            f"calibration_data array has shape {x.shape}; pass the model's inputs, one per row "
            "((N, H, W, C) images, or (N, ...) for other inputs) with N >= 1"
        )
    if requested is not None:
        if requested > len(x):
            raise TfquantError(
                f"calibration_data has {len(x)} images, cannot take {requested}; ask for at most "
                f"{len(x)}, or leave the count out to use them all"
            )
        x = x[:requested]
    elif len(x) > data.DEFAULT_NUM_CALIBRATION_EXAMPLES:
        x = x[: data.DEFAULT_NUM_CALIBRATION_EXAMPLES]
    data.preprocess.check_finite(x, "calibration_data")
    if recipe.input is not None:
        x = recipe.input.apply_np(x)
    return x, "array"


def evaluate(
    tflite: str | os.PathLike[str],
    dataset: str,
    *,
    split: str = "test",
    preprocess: str | None = None,
    input_mean: Sequence[float] | float | None = None,
    input_std: Sequence[float] | float | None = None,
    runtime: str = "xnnpack",
    num_threads: int = 1,
    batch_size: int = 256,
    limit: int | None = None,
    latency_runs: int = 0,
    delegate_path: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy (or, for a model whose output is not class scores, its regression
    error), size (and latency) of a .tflite in the LiteRT interpreter; ``evaluate``.

    The input contract is the one given (``preprocess`` or ``input_mean`` / ``input_std``),
    else the one recorded in the model by ``convert`` / ``qat``, else none ([0, 1] images).
    Without ``image_size``, images decoded from files (``folder:``, ``tfds:``) are resized to
    the model's input height and width.

    Returns:
      The record ``evaluate --output`` writes: ``task`` (``classification``: top-1
      ``accuracy`` on integer or one-hot labels; ``regression``: ``mae``, ``rmse``,
      ``max_abs_error`` against float targets, ``accuracy`` None, see
      :mod:`tfquant.evaluation.regression`), ``n_examples``, ``size_bytes``,
      ``runtime``, ``threads``, ``executed_in`` (``tflite``), ``input`` and ``input_source``
      (``flags``, ``recorded in the model`` or ``none``), ``recipe``, and with
      ``latency_runs`` > 0 ``latency_ms_median`` / ``_p90`` / ``_min``.

    Raises:
      TfquantError: a missing or corrupt model, a dataset without labels, a shape mismatch.
    """
    from tfquant import convert, data, evaluation
    from tfquant.qtypes import Runtime

    rt = Runtime.parse(runtime, what="runtime")
    # Load the model first: a corrupt file should fail before the dataset is read.
    interpreter = evaluation.load_interpreter(
        tflite, runtime=rt, num_threads=num_threads, delegate_path=delegate_path
    )
    if image_size is None:
        shape = interpreter.get_input_details()[0]["shape"]
        hw = (int(shape[1]), int(shape[2])) if len(shape) == 4 else None
        image_size = _decoded_image_size(dataset, hw)
    contract = input_contract(preprocess=preprocess, input_mean=input_mean, input_std=input_std)
    contract_source = "flags"
    if contract is None:
        contract = convert.read_input_contract(tflite)
        contract_source = "recorded in the model" if contract is not None else "none"
    x, y, info = data.load_numpy(
        dataset, split, data_dir=data_dir, image_size=image_size, limit=limit,
        normalization=contract, targets=True,
    )
    from tfquant.evaluation import regression

    outputs = interpreter.get_output_details()
    labels = regression.as_class_labels(tuple(outputs[0]["shape"]) if len(outputs) == 1 else (), y)
    measured: dict[str, Any]
    if labels is not None or np.asarray(y).dtype.kind in "iu" and len(outputs) != 1:
        acc = evaluation.evaluate_accuracy(
            tflite, x, labels if labels is not None else y, runtime=rt, num_threads=num_threads,
            batch_size=batch_size, delegate_path=delegate_path,
        )
        measured = {"task": "classification", "accuracy": acc.accuracy, "n_examples": acc.n_examples}
    else:
        reg = regression.evaluate_regression(
            tflite, x, y, runtime=rt, num_threads=num_threads, batch_size=batch_size,
            delegate_path=delegate_path,
        )
        measured = {"task": "regression", "accuracy": None, "mae": reg.mae, "rmse": reg.rmse,
                    "max_abs_error": reg.max_abs_error, "n_examples": reg.n_examples}
    result: dict[str, Any] = {
        "tflite_path": os.fspath(tflite),
        "dataset": dataset,
        "split": info.split,
        "runtime": rt.value,
        "threads": num_threads,
        **measured,
        "size_bytes": evaluation.file_size(tflite),
        "executed_in": "tflite",
        "input": contract.to_dict() if contract is not None else None,
        "input_source": contract_source,
    }
    if latency_runs > 0:
        lat = evaluation.measure_latency(
            tflite, runtime=rt, num_threads=num_threads, runs=latency_runs,
            delegate_path=delegate_path, sample=x[:1],
        )
        result.update(
            latency_ms_median=lat.median_ms, latency_ms_p90=lat.p90_ms, latency_ms_min=lat.min_ms,
            latency_runs=lat.runs,
        )
    recipe = convert.read_recipe(tflite)
    result["recipe"] = recipe.to_dict() if recipe else None
    return result


def inspect(tflite: str | os.PathLike[str] | bytes, *, as_dict: bool = False) -> str | dict[str, Any]:
    """What is in a .tflite; the ``inspect`` command.

    Returns:
      The text ``inspect`` prints (per-tensor dtype, scale, zero point; op counts; each
      activation's range and who chose it; the input contract; the recipe), or with
      ``as_dict`` the object ``inspect --json`` prints (the report's fields plus
      ``ranges``, ``rewrites``, ``input`` and ``recipe``).
    """
    from tfquant import convert, evaluation

    report = evaluation.inspect_model(tflite)
    ranges = convert.read_ranges(tflite)
    contract = convert.read_input_contract(tflite)
    recipe = convert.read_recipe(tflite)
    done = convert.read_rewrites(tflite)
    standard = _standard_metadata(tflite)
    from tfquant.convert.mixed import format_precision, read_precision

    precision = read_precision(tflite)
    if as_dict:
        out = dataclasses.asdict(report)
        out["precision"] = precision
        out["ranges"] = ranges
        out["rewrites"] = done
        out["input"] = contract.to_dict() if contract is not None else None
        out["recipe"] = recipe.to_dict() if recipe is not None else None
        out["standard_metadata"] = standard
        return out
    lines = [
        evaluation.format_report(report),
        evaluation.format_activation_ranges(report, ranges, recipe),
        "input contract: "
        + (contract.describe() if contract is not None else "none recorded ([0, 1] images)"),
        "int16x8 rewrites (exact in float): "
        + ("; ".join(f"{k} x{len(v)} ({', '.join(v[:4])}{', ...' if len(v) > 4 else ''})"
                     for k, v in sorted(done.items())) or "none"),
        _describe_standard_metadata(standard),
        "weight bits per channel: " + _format_channel_bits(recipe),
        "recipe: " + (_recipe_text(recipe) if recipe else "(none embedded)"),
    ]
    if precision is not None:
        lines.insert(-1, format_precision(precision))
    return "\n".join(lines)


def _standard_metadata(tflite: str | os.PathLike[str] | bytes) -> dict[str, Any] | None:
    """The model's standard TFLite metadata (MediaPipe's reader), None without; an ``error``
    entry when it is there but cannot be read (e.g. MediaPipe is not installed)."""
    from tfquant.convert.standard_metadata import read_standard_metadata
    from tfquant.tflite.flatbuffer import model_bytes, read_bytes

    data = model_bytes(tflite)
    try:
        return read_standard_metadata(data)
    except TfquantError as e:
        if read_bytes(data, "TFLITE_METADATA") is None:
            raise
        return {"error": str(e)}


def _describe_standard_metadata(standard: dict[str, Any] | None) -> str:
    if standard is None:
        return "standard TFLite metadata: none (write it with 'convert --labels labels.txt')"
    if "error" in standard:
        return f"standard TFLite metadata: present, not readable here ({standard['error']})"
    md = standard["metadata"]
    parts = [f"name {md.get('name')!r}", f"version {md.get('version')!r}"]
    inputs = md.get("subgraph_metadata", [{}])[0].get("input_tensor_metadata", [{}])
    for unit in inputs[0].get("process_units", []) if inputs else []:
        if unit.get("options_type") == "NormalizationOptions":
            o = unit["options"]
            parts.append(f"input (pixel - {o.get('mean')}) / {o.get('std')} (pixels 0..255)")
    if inputs and "int8 tensor" in inputs[0].get("description", ""):
        parts.append(inputs[0]["description"].split("; ", 1)[1])
    labels = standard.get("labels")
    if labels:
        parts.append(f"labels.txt: {len(labels)} labels ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})")
    parts.append(f"min parser version {standard.get('min_parser_version')}")
    return "standard TFLite metadata: " + "; ".join(parts)


def _format_channel_bits(recipe: Recipe | None) -> str:
    """One line per weight tensor: mean, range and every channel's bit width."""
    if recipe is None or not recipe.channel_bits:
        return "8 (int8 grid)" if recipe is not None and recipe.mode.value == "int8" else "n/a"
    rows = [
        f"\n  {name}: mean {sum(bits) / len(bits):.2f} ({min(bits)}..{max(bits)}), "
        f"{len(bits)} channels: {' '.join(str(b) for b in bits)}"
        for name, bits in recipe.channel_bits.items()
    ]
    return f"{recipe.weight_bit_allocation} allocation, bias correction {recipe.bias_correction}" + "".join(rows)


def _recipe_text(recipe: Recipe) -> str:
    """The recipe's JSON, with ``channel_bits`` summarised (it is listed above in full)."""
    if not recipe.channel_bits:
        return recipe.to_json().strip()
    d = recipe.to_dict()
    d["channel_bits"] = f"{len(recipe.channel_bits)} tensors (listed above)"
    return json.dumps(d, indent=2, sort_keys=True)

