"""The model to convert, loaded once: a Keras model, or a SavedModel Keras did not write.

Shared by :mod:`tfquant.convert.converter` and :mod:`tfquant.convert.calibrated` (neither
imports the other's internals).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf

from tfquant.convert.custom_objects import CustomObjectsSpec
from tfquant.convert.loading import check_model_path, is_keras_savedmodel, load_model
from tfquant.errors import TfquantError
from tfquant.recipes import Recipe
from tfquant.tflite.converter import captured_output


def check_recipe(recipe: object) -> None:
    """Raises a TfquantError unless ``recipe`` is a :class:`~tfquant.recipes.Recipe`."""
    if not isinstance(recipe, Recipe):
        raise TfquantError(
            f"recipe must be a tfquant Recipe, got {type(recipe).__name__}; build one with "
            "Recipe(mode=...) or tfquant.variant(name)"
        )


def _single_input(shapes: list[tuple[int | None, ...]], what: str) -> tuple[int | None, ...]:
    if len(shapes) != 1:
        raise TfquantError(
            f"{what} has {len(shapes)} inputs; calibration_data feeds exactly one, so "
            "convert a single-input model"
        )
    return shapes[0]


def _keras_input_shapes(model: tf.keras.Model) -> list[tuple[int | None, ...]]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise TfquantError(
            "the Keras model has no defined input; build it with tf.keras.Input(shape=...) "
            "or call it on one batch before converting"
        )
    return [tuple(t.shape) for t in inputs]


def _savedmodel_input_shapes(path: Path) -> list[tuple[int | None, ...]]:
    """Loads the SavedModel (so a broken one fails clearly) and returns its input shapes."""
    try:
        with captured_output():
            loaded = tf.saved_model.load(str(path))
    except Exception as e:  # protobuf / TF errors of many types
        raise TfquantError(
            f"could not load SavedModel {str(path)!r} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:160]}); check the directory is a complete SavedModel"
        ) from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise TfquantError(
            f"SavedModel {str(path)!r} has no 'serving_default' signature; re-export it with "
            "signatures={'serving_default': fn}"
        )
    return [tuple(spec.shape) for spec in signature.structured_input_signature[1].values()]


@dataclasses.dataclass
class Source:
    """A model to convert: a Keras model, or a SavedModel directory not written by Keras."""

    keras_model: "tf.keras.Model | None" = None
    savedmodel_dir: Path | None = None
    input_shapes: list[tuple[int | None, ...]] | None = None

    def input_shape(self) -> tuple[int | None, ...]:
        """The single input's shape, batch dimension first."""
        if self.input_shapes is None:
            self.input_shapes = _keras_input_shapes(self.keras_model)
        return _single_input(self.input_shapes, "the model")


def load_source(
    model: "tf.keras.Model | str | os.PathLike[str]", *, custom_objects: CustomObjectsSpec = None
) -> Source:
    """``model`` (a Keras model or a path) as a :class:`Source`, loaded and checked."""
    if isinstance(model, (str, os.PathLike)):
        path = check_model_path(model)
        if path.is_dir() and not is_keras_savedmodel(path):
            # Loaded here, so a broken one gets a clear error whatever the mode.
            return Source(savedmodel_dir=path, input_shapes=_savedmodel_input_shapes(path))
        return Source(keras_model=load_model(path, custom_objects=custom_objects))
    if not isinstance(model, tf.keras.Model):
        raise TfquantError(
            f"model must be a tf.keras.Model or a path, got {type(model).__name__}; note "
            "tfquant uses Keras 2 (tf.keras / tf_keras), not Keras 3"
        )
    return Source(keras_model=model)
