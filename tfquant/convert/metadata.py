"""The recipe inside the .tflite: a flatbuffer ``Model.metadata`` entry named ``tfquant_recipe``.

TFLite's schema lets a model carry named metadata entries, each pointing at a raw buffer
(the converter itself adds ``min_runtime_version`` and ``CONVERSION_METADATA``). We add one
more whose buffer holds ``recipe.to_json()`` as UTF-8. The interpreter ignores unknown
metadata, so the model runs exactly as before.

This module needs no TensorFlow: it uses the schema and flatbuffer helpers that ship with
``ai_edge_litert``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.recipes.inputs import InputContract

METADATA_NAME = "tfquant_recipe"
RANGES_METADATA_NAME = "tfquant_ranges"
"""Metadata entry with the calibrated range of each tensor and the calibrator that chose it
(JSON, written by :mod:`tfquant.convert.calibrated`)."""
REWRITES_METADATA_NAME = "tfquant_rewrites"
"""Metadata entry listing the Keras layers an exact int16x8 rewrite replaced (JSON: rewrite
name -> layer names), written by :func:`tfquant.convert.convert`."""
QAT_METADATA_NAME = "tfquant_qat"
"""Metadata entry with the QAT record (JSON) of a model exported by ``tfquant qat``."""
_FILE_IDENTIFIER = b"TFL3"


def check_tflite_bytes(tflite: object, *, what: str = "tflite") -> bytes:
    """Returns ``tflite`` as bytes after checking it is a TFLite flatbuffer.

    Raises:
      TfquantError: not bytes, or no ``TFL3`` file identifier.
    """
    if not isinstance(tflite, (bytes, bytearray, memoryview)):
        raise TfquantError(
            f"{what} must be the bytes returned by tfquant.convert.convert(), got "
            f"{type(tflite).__name__}"
        )
    data = bytes(tflite)
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise TfquantError(
            f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier); pass the bytes "
            "returned by tfquant.convert.convert()"
        )
    return data


def embed_bytes(tflite: bytes, name: str, raw: bytes) -> bytes:
    """Returns ``tflite`` with ``raw`` stored under the metadata entry ``name``.

    An existing entry of that name is replaced (its old buffer stays, unreferenced).
    Tensors, ops and weights are unchanged.
    """
    data = check_tflite_bytes(tflite)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    payload = schema.BufferT()
    payload.data = np.frombuffer(raw, dtype=np.uint8)
    model.buffers.append(payload)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != name] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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


def _name(raw: bytes | str | None) -> str | None:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _model_bytes(tflite: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(tflite, (str, os.PathLike)):
        path = Path(tflite)
        if not path.is_file():
            raise TfquantError(
                f"tflite file {str(path)!r} does not exist; pass the path of a .tflite file"
            )
        return check_tflite_bytes(path.read_bytes(), what=f"file {str(path)!r}")
    return check_tflite_bytes(tflite)


def read_bytes(data: bytes, name: str) -> bytes | None:
    """The raw bytes of metadata entry ``name`` of model ``data``, or ``None``.

    Raises:
      TfquantError: not a TFLite model.
    """
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) != name:
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large-model layout: data lives after the flatbuffer
                raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                array = buffer.DataAsNumpy()  # 0, not an array, when the buffer is empty
                raw = array.tobytes() if isinstance(array, np.ndarray) else b""
            return raw
    except (IndexError, ValueError, TypeError, struct.error) as e:
        raise TfquantError(
            f"the tflite model is corrupt (its flatbuffer does not parse: {type(e).__name__}); "
            "re-export it with tfquant.convert"
        ) from None
    return None


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
        subgraph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
        names = [_name(subgraph.Tensors(int(i)).Name()) for i in records["tensor"]]
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
