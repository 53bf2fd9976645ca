"""Loading float models: .keras / .h5 files and SavedModel directories.

A SavedModel directory written by Keras (it holds ``keras_metadata.pb``) loads as a Keras
model; any other SavedModel is converted straight from its ``serving_default`` signature
(see :func:`tfquant.convert.convert`). Custom layers come from ``custom_objects`` (a dict, a
.py file or a module, see :mod:`tfquant.convert.custom_objects`); the layers that
keras.applications defines (ConvNeXt's ``LayerScale``, ...) are always added.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf

from tfquant.convert.custom_objects import (
    CustomObjectsSpec,
    application_custom_objects,
    load_custom_objects,
    named_in_keras_error,
    unresolved_class_names,
)
from tfquant.errors import TfquantError

KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
_KERAS_SAVEDMODEL_MARKER = "keras_metadata.pb"
_SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def _one_line(text: str, limit: int = 300) -> str:
    """Collapses whitespace so a wrapped library message fits one line."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def is_savedmodel_dir(path: Path) -> bool:
    """True if ``path`` is a directory holding a SavedModel."""
    return path.is_dir() and any((path / name).is_file() for name in _SAVEDMODEL_FILES)


def is_keras_savedmodel(path: Path) -> bool:
    """True if ``path`` is a SavedModel directory written by Keras."""
    return is_savedmodel_dir(path) and (path / _KERAS_SAVEDMODEL_MARKER).is_file()


def check_model_path(path: str | os.PathLike[str]) -> Path:
    """Returns ``path`` as a Path after checking it names a model we know how to read.

    Raises:
      TfquantError: the path does not exist, or is neither a Keras file nor a SavedModel.
    """
    p = Path(path)
    if not p.exists():
        raise TfquantError(
            f"model path {str(p)!r} does not exist; pass a .keras/.h5 file or a SavedModel "
            "directory"
        )
    if p.is_dir():
        if not is_savedmodel_dir(p):
            raise TfquantError(
                f"directory {str(p)!r} holds no saved_model.pb; pass a SavedModel directory "
                "or a .keras/.h5 file"
            )
        return p
    if p.suffix.lower() not in KERAS_FILE_SUFFIXES:
        raise TfquantError(
            f"model file {str(p)!r} has suffix {p.suffix!r}; pass a .keras or .h5 file or a "
            "SavedModel directory"
        )
    return p


def load_model(
    path: str | os.PathLike[str], *, custom_objects: CustomObjectsSpec = None
) -> tf.keras.Model:
    """Loads a float Keras model (uncompiled) from a .keras / .h5 file or a SavedModel dir.

    Args:
      path: a ``.keras`` or ``.h5`` file, or a SavedModel directory written by Keras.
      custom_objects: the model's custom layers / functions: a dict name -> object, a
        Python file (``"my_layers.py"``) or an importable module (``"pkg.module"``); see
        :func:`tfquant.convert.custom_objects.load_custom_objects`. The layers of
        keras.applications (e.g. ConvNeXt's ``LayerScale``) are always included.

    Returns:
      The model, not compiled (conversion needs no optimizer state).

    Raises:
      TfquantError: the path is missing, has an unknown suffix, is a SavedModel that is not
        a Keras model (convert that path directly with :func:`tfquant.convert.convert`),
        the model uses a class Keras cannot resolve (the message names it and says to pass
        ``--custom_objects`` / ``custom_objects=``), ``custom_objects`` is bad, or the file
        is corrupt / unreadable.
    """
    p = check_model_path(path)
    if p.is_dir() and not is_keras_savedmodel(p):
        raise TfquantError(
            f"SavedModel {str(p)!r} was not written by Keras (no {_KERAS_SAVEDMODEL_MARKER}), so it "
            "has no Keras layers to load: tfquant convert / sensitivity / autoquant (and "
            "tfquant.convert.convert()) take it as it is, from its serving_default signature; "
            "QAT needs the Keras model (.keras / .h5)"
        )
    objects = {**application_custom_objects(), **load_custom_objects(custom_objects)}
    try:
        model = tf.keras.models.load_model(str(p), custom_objects=objects, compile=False)
    except Exception as e:  # h5py, zipfile, protobuf and Keras all raise their own types
        missing = unresolved_class_names(p, objects) or named_in_keras_error(str(e))
        if missing:
            names = ", ".join(missing)
            raise TfquantError(
                f"model {str(p)!r} uses {names}, which Keras does not know; pass the module "
                f"that defines {'them' if len(missing) > 1 else 'it'}: --custom_objects "
                "my_layers.py (a file or pkg.module; custom_objects= in Python)"
            ) from None
        raise TfquantError(
            f"could not load a Keras model from {str(p)!r} ({type(e).__name__}: "
            f"{_one_line(e, 160)}); check the file is complete and was saved by tf.keras "
            "(Keras 2), and pass its custom layers with --custom_objects if it has any"
        ) from None
    if not isinstance(model, tf.keras.Model):
        raise TfquantError(
            f"{str(p)!r} loaded as {type(model).__name__}, not a Keras model; pass the path "
            "to tfquant.convert.convert() instead"
        )
    return model
