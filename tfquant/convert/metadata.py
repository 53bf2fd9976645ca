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

METADATA_NAME = "tfquant_recipe"
RANGES_METADATA_NAME = "tfquant_ranges"
"""Metadata entry with the calibrated range of each tensor and the calibrator that chose it
(JSON, written by :mod:`tfquant.convert.calibrated`)."""
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


def embed_text(tflite: bytes, name: str, text: str) -> bytes:
    """Returns ``tflite`` with ``text`` (UTF-8) stored under the metadata entry ``name``.

    An existing entry of that name is replaced (its old buffer stays, unreferenced).
    Tensors, ops and weights are unchanged.
    """
    data = check_tflite_bytes(tflite)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    payload = schema.BufferT()
    payload.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(payload)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != name] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def embed_recipe(tflite: bytes, recipe: Recipe) -> bytes:
    """Returns ``tflite`` with ``recipe.to_json()`` stored under metadata ``tfquant_recipe``."""
    return embed_text(tflite, METADATA_NAME, recipe.to_json())


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


def read_text(tflite: bytes | str | os.PathLike[str], name: str) -> str | None:
    """The UTF-8 text of metadata entry ``name``, or ``None`` when the model has none.

    Raises:
      TfquantError: the file is missing or not a TFLite model.
    """
    data = _model_bytes(tflite)
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
            return raw.decode("utf-8")
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as e:
        raise TfquantError(
            f"the tflite model is corrupt (its flatbuffer does not parse: {type(e).__name__}); "
            "re-export it with tfquant.convert"
        ) from None
    return None


def read_ranges(tflite: bytes | str | os.PathLike[str]) -> dict | None:
    """The calibrated ranges embedded by :mod:`tfquant.convert.calibrated`, or ``None``.

    Returns:
      ``{"activations": {tensor name: {"min", "max", "calibrator"}}, "weights": {tensor
      name: {"calibrator", "amax_min", "amax_max", "channels"}}}``.
    """
    text = read_text(tflite, RANGES_METADATA_NAME)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise TfquantError(
            f"the model's {RANGES_METADATA_NAME} metadata is not valid JSON; re-export it with "
            "tfquant.convert"
        ) from None


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
    text = read_text(tflite, METADATA_NAME)
    return None if text is None else Recipe.from_json(text)
