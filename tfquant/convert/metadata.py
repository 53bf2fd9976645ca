"""tfquant's entries in a .tflite's metadata: the recipe, calibrated ranges, rewrites, QAT record.

Each is a named ``Model.metadata`` entry (``tfquant_recipe`` holds ``recipe.to_json()`` as
UTF-8; the others are described at their names below). The flatbuffer itself is read and
written by :mod:`tfquant.tflite.flatbuffer` (:func:`~tfquant.tflite.flatbuffer.embed_bytes`,
:func:`~tfquant.tflite.flatbuffer.read_bytes`, re-exported here); this module only knows
what tfquant stores in the entries. The interpreter ignores unknown metadata, so the model
runs exactly as before. No TensorFlow needed.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.recipes.inputs import InputContract
from tfquant.tflite.flatbuffer import check_tflite_bytes, embed_bytes, read_bytes, tensor_name
from tfquant.tflite.flatbuffer import model_bytes as _model_bytes

__all__ = [
    "METADATA_NAME", "QAT_METADATA_NAME", "RANGES_METADATA_NAME", "REWRITES_METADATA_NAME",
    "check_tflite_bytes", "embed_bytes", "embed_ranges", "embed_recipe", "embed_rewrites",
    "read_bytes", "read_input_contract", "read_ranges", "read_recipe", "read_rewrites",
]

METADATA_NAME = "tfquant_recipe"
RANGES_METADATA_NAME = "tfquant_ranges"
"""Metadata entry with the calibrated range of each tensor and the calibrator that chose it
(JSON, written by :mod:`tfquant.convert.calibrated`)."""
REWRITES_METADATA_NAME = "tfquant_rewrites"
"""Metadata entry listing the Keras layers an exact int16x8 rewrite replaced (JSON: rewrite
name -> layer names), written by :func:`tfquant.convert.convert`."""
QAT_METADATA_NAME = "tfquant_qat"
"""Metadata entry with the QAT record (JSON) of a model exported by ``tfquant qat``."""


def embed_recipe(tflite: bytes, recipe: Recipe) -> bytes:
    """Returns ``tflite`` with ``recipe.to_json()`` stored under metadata ``tfquant_recipe``."""
    return embed_bytes(tflite, METADATA_NAME, recipe.to_json().encode("utf-8"))


_RANGE_RECORD = np.dtype([("tensor", "<i4"), ("min", "<f4"), ("max", "<f4")])


def embed_ranges(
    tflite: bytes, header: dict, tensors: list[int], lows: list[float], highs: list[float]
) -> bytes:
    """Stores calibrated ranges under metadata ``tfquant_ranges``, compactly.

    Layout: the JSON ``header`` (calibrator, statistics settings, ...), a NUL byte, then one
    12-byte little-endian record per tensor (int32 index in the main subgraph, float32 min,
    float32 max), so a model with hundreds of tensors grows by a few KiB, not by its tensor
    names.
    """
    records = np.zeros(len(tensors), dtype=_RANGE_RECORD)
    records["tensor"], records["min"], records["max"] = tensors, lows, highs
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return embed_bytes(tflite, RANGES_METADATA_NAME, raw + b"\0" + records.tobytes())


def read_ranges(tflite: bytes | str | os.PathLike[str]) -> dict | None:
    """The calibrated ranges embedded by :mod:`tfquant.convert.calibrated`, or ``None``.

    Returns:
      The header (``calibrator``, ``statistics``, ``weights``) plus ``activations``:
      ``{tensor name: {"min", "max", "calibrator"}}``, keyed by the integer tensor that
      carries each range.

    Raises:
      TfquantError: missing or corrupt model, or corrupt range metadata.
    """
    data = _model_bytes(tflite)
    raw = read_bytes(data, RANGES_METADATA_NAME)
    if raw is None:
        return None
    head, sep, body = raw.partition(b"\0")
    try:
        header = json.loads(head.decode("utf-8"))
        if not sep or len(body) % _RANGE_RECORD.itemsize:
            raise ValueError("truncated records")
        records = np.frombuffer(body, dtype=_RANGE_RECORD)
        names = [tensor_name(data, int(i)) for i in records["tensor"]]
    except (ValueError, UnicodeDecodeError, AttributeError, IndexError, struct.error):
        raise TfquantError(
            f"the model's {RANGES_METADATA_NAME} metadata is corrupt; re-export it with "
            "tfquant.convert"
        ) from None
    header["activations"] = {
        name: {"min": float(r["min"]), "max": float(r["max"]), "calibrator": header.get("calibrator")}
        for name, r in zip(names, records)
    }
    return header


def read_recipe(tflite: bytes | str | os.PathLike[str]) -> Recipe | None:
    """Reads the recipe embedded in a .tflite (bytes, or a path to the file).

    Args:
      tflite: model bytes, or the path of a .tflite file.

    Returns:
      The embedded :class:`Recipe`, or ``None`` when the model has no ``tfquant_recipe``
      metadata (e.g. it was not made by tfquant).

    Raises:
      TfquantError: the file is missing or not a TFLite model, or the embedded recipe is
        invalid.
    """
    raw = read_bytes(_model_bytes(tflite), METADATA_NAME)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TfquantError(
            "the model's embedded recipe is not UTF-8 text; re-export it with tfquant.convert"
        ) from None
    return Recipe.from_json(text)


def read_input_contract(tflite: bytes | str | os.PathLike[str]) -> InputContract | None:
    """The input contract recorded in a .tflite made by tfquant, or None.

    Looks in the embedded recipe (``convert``) and then in the QAT record (``qat``), whose
    ``input`` key holds the contract the fine-tuning data was fed with.

    Raises:
      TfquantError: the file is missing or not a TFLite model, or an embedded record is
        invalid.
    """
    data = _model_bytes(tflite)
    recipe = read_recipe(data)
    if recipe is not None:
        return recipe.input
    raw = read_bytes(data, QAT_METADATA_NAME)
    if raw is None:
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TfquantError(
            "the model's embedded QAT record is not valid JSON; re-export it with tfquant qat"
        ) from None
    contract = record.get("input") if isinstance(record, dict) else None
    return InputContract.from_dict(contract) if contract is not None else None


def embed_rewrites(tflite: bytes, done: dict[str, list[str]]) -> bytes:
    """Returns ``tflite`` with the int16x8 rewrites (rewrite -> replaced layers) embedded."""
    text = json.dumps({k: list(v) for k, v in sorted(done.items())}, sort_keys=True)
    return embed_bytes(tflite, REWRITES_METADATA_NAME, text.encode("utf-8"))


def read_rewrites(tflite: bytes | str | os.PathLike[str]) -> dict[str, list[str]]:
    """The int16x8 rewrites recorded in a model (rewrite -> replaced layer names); {} if none.

    Raises:
      TfquantError: the file is missing or not a TFLite model, or the entry is not JSON.
    """
    raw = read_bytes(_model_bytes(tflite), REWRITES_METADATA_NAME)
    if raw is None:
        return {}
    try:
        done = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TfquantError(
            "the model's embedded rewrite record is not valid JSON; re-export it with tfquant"
        ) from None
    return {str(k): [str(n) for n in v] for k, v in done.items()}
