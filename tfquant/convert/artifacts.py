"""Writing a converted model and its recipe side by side: ``OUT.tflite`` + ``OUT.recipe.json``."""

from __future__ import annotations

import os
from typing import Any
from pathlib import Path

from tfquant.convert.metadata import check_tflite_bytes, read_recipe
from tfquant.errors import TfquantError
from tfquant.io_utils import atomic_path, write_text_atomic
from tfquant.recipes import Recipe

TFLITE_SUFFIX = ".tflite"
RECIPE_SUFFIX = ".recipe.json"


def recipe_path_for(tflite_path: str | os.PathLike[str]) -> Path:
    """``dir/name.tflite`` -> ``dir/name.recipe.json``."""
    return Path(tflite_path).with_suffix(RECIPE_SUFFIX)


def save(tflite: bytes, out_path: str | os.PathLike[str], recipe: Recipe) -> Path:
    """Writes ``OUT.tflite`` and, beside it, ``OUT.recipe.json``; returns the .tflite path.

    Each file is written atomically (temporary file + rename, :mod:`tfquant.io_utils`). The
    recipe is renamed into place only after the model's bytes are on disk, and removed again
    if the model's rename fails, so a failed save leaves neither file (nor a temporary).

    Args:
      tflite: bytes from :func:`tfquant.convert.convert`.
      out_path: where the model goes; must end in ``.tflite``. Parent dirs are created.
      recipe: the recipe the model was made with; if the model embeds a recipe it must be
        this one.

    Raises:
      TfquantError: not TFLite bytes, a bad suffix, a recipe that differs from the embedded
        one, or the files could not be written (the message names the OS error).
    """
    data = check_tflite_bytes(tflite)
    if not isinstance(recipe, Recipe):
        raise TfquantError(
            f"recipe must be a tfquant Recipe, got {type(recipe).__name__}; pass the recipe "
            "the model was converted with"
        )
    target = Path(out_path)
    if target.suffix != TFLITE_SUFFIX:
        raise TfquantError(
            f"out_path {str(target)!r} must end in {TFLITE_SUFFIX}; e.g. "
            f"{str(target.with_suffix(TFLITE_SUFFIX))!r}"
        )
    embedded = read_recipe(data)
    if (
        embedded is not None
        and recipe.channel_bits is None
        and embedded.channel_bits is not None
        and embedded == recipe.replace(channel_bits=embedded.channel_bits)
    ):
        recipe = embedded  # the same recipe with the per-channel bits the conversion chose
    if embedded is not None and embedded != recipe:
        raise TfquantError(
            "the recipe passed to save() differs from the one embedded in the model "
            f"(mode {embedded.mode}, {embedded.weight_granularity}); pass the recipe used "
            "for convert()"
        )
    recipe_target = recipe_path_for(target)
    recipe_written = False
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
            write_text_atomic(recipe_target, recipe.to_json())
            recipe_written = True
    except OSError as e:
        if recipe_written:
            recipe_target.unlink(missing_ok=True)
        raise TfquantError(
            f"could not write {str(target)!r} ({type(e).__name__}: {e.strerror or e}); check "
            "the output directory is a writable directory"
        ) from None
    return target


def convert_and_save(model: Any, recipe: Recipe, out_path: str | os.PathLike[str], *,
                     calibration_data: Any = None) -> bytes:
    """:func:`~tfquant.convert.convert` ``model`` with ``recipe`` and :func:`save` it (with its
    recipe) at ``out_path``; returns the .tflite's bytes.

    ``calibration_data`` is passed only when the recipe's mode calibrates, so a study can hand
    its calibration images to every cell.

    Raises:
      TfquantError: as :func:`~tfquant.convert.convert` and :func:`save`.
    """
    from tfquant.convert.converter import convert

    tflite = convert(model, recipe, calibration_data=calibration_data if recipe.mode.needs_calibration else None)
    save(tflite, str(out_path), recipe)
    return tflite
