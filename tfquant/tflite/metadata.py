"""Standard TFLite metadata for image classifiers, written and read by MediaPipe's metadata library.

What Android's LiteRT / MediaPipe / Support-library code reads from a .tflite: the
``TFLITE_METADATA`` metadata entry (a ``ModelMetadata`` flatbuffer of
``metadata_schema.fbs``, identifier ``M001``, with its ``min_parser_version``), and the
associated files (here ``labels.txt``) packed as a zip archive appended to the flatbuffer. Both
are produced by MediaPipe's ``metadata_writers.MetadataWriter`` (which populates them through
``metadata.MetadataPopulator``) and read back by ``metadata.MetadataDisplayer``; tfquant's own
entries (``tfquant_recipe``, ...) are kept, as the populator rewrites only ``TFLITE_METADATA``.

Normalisation follows the metadata convention ``x = (pixel - mean) / std`` with pixels in
0..255, so tfquant's input contract (``(x01 - mean01) / std01``, x01 = pixel / 255) is written
as ``mean = 255 * mean01``, ``std = 255 * std01`` (no contract: mean 0, std 255). A model
with int8 input also needs the input tensor's quantization (``q = round(x / scale) +
zero_point``); the tensor carries it and the input's description repeats it.

MediaPipe is imported lazily (it is large); the version used (0.10.21, installed with
``--no-deps`` beside TF 2.21 and numpy 2) prints a protobuf notice while importing its
framework bindings, which :func:`_mediapipe` drops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
from typing import Any

from tfquant.errors import TfquantError

METADATA_ENTRY = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
_IMPORT_NOISE = "has no attribute 'GetPrototype'"
_INSTALL = (
    "install MediaPipe's metadata library: pip install --no-deps mediapipe==0.10.21 "
    "opencv-python-headless (see BUILD_NOTES.md, 'Shipping to Android')"
)


def _mediapipe() -> tuple[Any, Any, Any]:
    """``(metadata, metadata_writer, metadata_info)`` modules of MediaPipe, or a TfquantError."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            from mediapipe.tasks.python.metadata import metadata
            from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer
    except ImportError as e:
        raise TfquantError(f"standard TFLite metadata needs MediaPipe ({e}); {_INSTALL}") from None
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip() and _IMPORT_NOISE not in line:
                print(line, file=sys.stderr)
    return metadata, metadata_writer, metadata_info


@dataclasses.dataclass(frozen=True)
class ClassifierMetadata:
    """What goes into an image classifier's standard metadata.

    Attributes:
      name / version / description / author: the model's general info.
      mean / std: per-channel normalisation in 0..255 pixel units (``(pixel - mean) / std``).
      labels: one label per output class (packed as ``labels.txt``), or () for none.
      input_quantization: ``(scale, zero_point)`` of an integer input tensor, else None.
    """

    name: str
    version: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...] = ()
    author: str = "tfquant"
    input_quantization: tuple[float, int] | None = None


def write_classifier_metadata(tflite: bytes, info: ClassifierMetadata) -> bytes:
    """Returns ``tflite`` with standard image-classifier metadata (and labels) populated.

    Raises:
      TfquantError: MediaPipe missing, or the model / labels do not fit a classifier
        (the message names the problem).
    """
    _, writer_lib, info_lib = _mediapipe()
    input_description = "Input image, RGB"
    if info.input_quantization is not None:
        scale, zero_point = info.input_quantization
        input_description += (
            f"; int8 tensor: q = round(((pixel - mean) / std) / {scale:.9g}) + {zero_point}"
            f" (scale {scale:.9g}, zero_point {zero_point})"
        )
    writer = writer_lib.MetadataWriter.create(bytearray(tflite))
    writer.add_general_info(info.name, info.description)
    writer.add_image_input(list(info.mean), list(info.std), description=input_description)
    if info.labels:
        writer.add_classification_output(writer_lib.Labels().add(list(info.labels)))
    else:
        writer.add_feature_output(name="score", description="Score of each class.")
    # add_general_info takes name and description only; version and author go on the same record.
    writer._general_md = info_lib.GeneralMd(  # noqa: SLF001  (MediaPipe has no setter for version)
        name=info.name, version=info.version, description=info.description, author=info.author
    )
    try:
        model, _ = writer.populate()
    except (ValueError, IndexError, RuntimeError) as e:
        raise TfquantError(f"MediaPipe could not write the model's metadata ({e})") from None
    return bytes(model)


def read_standard_metadata(tflite: bytes) -> dict[str, Any] | None:
    """The model's standard metadata via MediaPipe's ``MetadataDisplayer``, or None if it has none.

    Returns:
      ``{"metadata": <the metadata as JSON data>, "associated_files": [names],
      "labels": [the labels file's lines] (when packed), "min_parser_version": str}``.
    """
    from tfquant.tflite.flatbuffer import read_bytes

    if read_bytes(tflite, METADATA_ENTRY) is None:
        return None
    metadata, _, _ = _mediapipe()
    try:
        displayer = metadata.MetadataDisplayer.with_model_buffer(bytearray(tflite))
        record = json.loads(displayer.get_metadata_json())
        files = list(displayer.get_packed_associated_file_list())
    except (ValueError, RuntimeError) as e:
        raise TfquantError(f"the model's TFLITE_METADATA does not parse ({e}); re-export it") from None
    out: dict[str, Any] = {"metadata": record, "associated_files": files,
                           "min_parser_version": record.get("min_parser_version")}
    if LABELS_FILE in files:
        out["labels"] = displayer.get_associated_file_buffer(LABELS_FILE).decode("utf-8").splitlines()
    return out


@dataclasses.dataclass(frozen=True)
class ClassifierIO:
    """The first input and output of a model: type, shape, and the input's quantization."""

    input_type: str
    input_shape: tuple[int, ...]
    input_quantization: tuple[float, int] | None
    output_shape: tuple[int, ...]


def classifier_io(tflite: bytes) -> ClassifierIO:
    """Reads the main subgraph's first input and output tensors."""
    from tfquant.tflite import flatbuffer as fb

    model = fb.read(fb.check_tflite_bytes(tflite))
    subgraph = model.subgraphs[0]
    x = subgraph.tensors[int(subgraph.inputs[0])]
    y = subgraph.tensors[int(subgraph.outputs[0])]
    q = x.quantization
    quant = None
    if q is not None and q.scale is not None and len(q.scale) == 1 and fb.type_name(x.type) != "FLOAT32":
        quant = (float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None else 0)
    return ClassifierIO(
        input_type=fb.type_name(x.type), input_shape=tuple(int(d) for d in x.shape),
        input_quantization=quant, output_shape=tuple(int(d) for d in y.shape),
    )
