"""The standard TFLite metadata tfquant writes for an image classifier (``convert --labels``).

Built from the recipe's input contract (:class:`tfquant.recipes.inputs.InputContract`),
a labels file (one label per line, one line per output class) and the model itself (its
int8 input quantization); written and read by MediaPipe's metadata library through
:mod:`tfquant.tflite.metadata`. tfquant's own ``tfquant_recipe`` entry stays beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.tflite.metadata import ClassifierMetadata, classifier_io, read_standard_metadata
from tfquant.tflite.metadata import write_classifier_metadata

__all__ = ["add_classifier_metadata", "read_labels", "read_standard_metadata", "normalization_255"]


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The labels of ``path`` (one per line, blank lines at the end ignored)."""
    p = Path(path)
    if not p.is_file():
        raise TfquantError(f"labels file {str(p)!r} does not exist; pass a text file with one label per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TfquantError(f"labels file {str(p)!r} is not UTF-8 text; save it as UTF-8, one label per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or any(not line.strip() for line in lines):
        raise TfquantError(f"labels file {str(p)!r} has empty lines; write one non-empty label per line")
    return tuple(line.strip() for line in lines)


def normalization_255(recipe: Recipe, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The recipe's input contract as metadata normalisation ``(pixel - mean) / std``, pixels 0..255.

    ``x = (pixel / 255 - m) / s`` equals ``(pixel - 255 m) / (255 s)``; no contract is
    ``mean 0, std 255`` (the model takes [0, 1] images). A ``bgr`` contract cannot be said in
    the metadata (it has no channel order), so it is refused.
    """
    contract = recipe.input
    if contract is None:
        mean, std = (0.0,), (1.0,)
    else:
        if contract.channel_order != "rgb":
            raise TfquantError(
                "the model's input contract reverses channels (bgr), which TFLite metadata cannot "
                "express; the app must feed BGR itself: drop --labels or use an rgb preset"
            )
        mean, std = contract.mean, contract.std
    if len(mean) == 1 and len(std) > 1:
        mean = mean * len(std)
    if len(std) == 1 and len(mean) > 1:
        std = std * len(mean)
    if len(mean) not in (1, channels):
        raise TfquantError(f"input contract has {len(mean)} means for a {channels}-channel input")
    return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)


def add_classifier_metadata(
    tflite: bytes, recipe: Recipe, *, labels: tuple[str, ...] = (), name: str, version: str = "1",
    description: str | None = None,
) -> bytes:
    """Returns ``tflite`` with standard image-classifier metadata; tfquant's entries kept.

    Raises:
      TfquantError: the label count differs from the model's output size, the input is not an
        image (N, H, W, C), or MediaPipe is missing.
    """
    io = classifier_io(tflite)
    if len(io.input_shape) != 4:
        raise TfquantError(
            f"image-classifier metadata needs an image input (N, H, W, C), the model's is {io.input_shape}"
        )
    classes = io.output_shape[-1] if io.output_shape else 0
    if labels and len(labels) != classes:
        raise TfquantError(
            f"the labels file has {len(labels)} labels but the model outputs {classes} classes; "
            "write one label per output class"
        )
    mean, std = normalization_255(recipe, io.input_shape[-1])
    if description is None:
        description = (
            f"Image classifier ({classes} classes), converted by tfquant: mode {recipe.mode}, "
            f"{recipe.weight_granularity} weights, {recipe.io_dtype} input/output."
        )
    info = ClassifierMetadata(
        name=name, version=version, description=description, mean=mean, std=std, labels=labels,
        input_quantization=io.input_quantization,
    )
    return write_classifier_metadata(tflite, info)
