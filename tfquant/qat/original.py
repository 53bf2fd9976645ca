"""How the float model was trained: the learning rate and batch size QAT schedules scale.

The learning rate of the float training (priority, first wins; :func:`original_training`):

1. ``learning_rate`` given (the CLI's ``--original_learning_rate``);
2. ``original`` given (a zoo model's :class:`tfquant.models.train.TrainConfig`);
3. the optimizer saved in the model file (``model_path``; :func:`saved_learning_rate`);
4. :data:`DEFAULT_LEARNING_RATE` = 1e-3, Keras's Adam default: what a user who wrote
   ``optimizer="adam"`` trained with, the most common case; the schedules take a fraction of
   it, so an LR off by a few times only scales a fine-tune of a few hundred steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.errors import TfquantError

DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 128


@dataclasses.dataclass(frozen=True)
class OriginalTraining:
    """The float training a schedule is a fraction of (learning rate and batch size).

    Attributes:
      learning_rate: Its (initial) learning rate.
      batch_size: Its batch size (the fine-tune's).
      source: Where the learning rate came from: ``given``, ``zoo``, ``saved_optimizer``
        or ``default``.
    """

    learning_rate: float
    batch_size: int
    source: str = "given"


def _lr_from_config(value: Any) -> float | None:
    """A learning rate from a serialized optimizer's ``learning_rate`` (a number or a schedule)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        config = value.get("config", value)
        if isinstance(config, Mapping):
            for key in ("initial_learning_rate", "learning_rate"):
                if key in config:
                    return _lr_from_config(config[key])
            values = config.get("values")
            if isinstance(values, (list, tuple)) and values:
                return _lr_from_config(values[0])
            if "value" in config:  # a serialized tensor / variable
                return _lr_from_config(config["value"])
    return None


def _lr_from_optimizer(optimizer: Any) -> float | None:
    """The LR of a serialized optimizer: a name (its Keras default) or a config dict."""
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        try:
            return float(keras.backend.get_value(keras.optimizers.get(optimizer).learning_rate))
        except (ValueError, TypeError):
            return None
    if isinstance(optimizer, Mapping):
        config = optimizer.get("config", {})
        if not isinstance(config, Mapping):
            return None
        for key in ("learning_rate", "lr"):
            if key in config:
                return _lr_from_config(config[key])
    return None


def _saved_model_training_config(path: Path) -> Any:
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = path / "keras_metadata.pb"
    if not metadata.is_file():
        return None
    saved = saved_metadata_pb2.SavedMetadata()
    saved.ParseFromString(metadata.read_bytes())
    for node in saved.nodes:
        if node.node_path == "root":
            return json.loads(node.metadata).get("training_config")
    return None


def saved_learning_rate(path: "str | os.PathLike[str]") -> float | None:
    """The learning rate recorded with the optimizer in a saved Keras model, without loading it.

    Reads the compile / training config the file keeps: ``.keras`` (``config.json`` ->
    ``compile_config.optimizer``), ``.h5`` (the ``training_config`` attribute ->
    ``optimizer_config``) or a Keras SavedModel directory (``keras_metadata.pb``, root node
    -> ``training_config``). A schedule gives its initial learning rate
    (``initial_learning_rate``; a piecewise-constant schedule its first value); an optimizer
    saved by name (``compile(optimizer="adam")``) gives that optimizer's Keras default.

    Args:
      path: A ``.keras`` / ``.h5`` / ``.hdf5`` file or a SavedModel directory.

    Returns:
      The learning rate, or None when the file records no optimizer (saved uncompiled, with
      ``include_optimizer=False``, a plain TF SavedModel) or one whose LR cannot be read.

    Raises:
      TfquantError: ``path`` does not exist or is not a readable Keras model file.
    """
    path = Path(path)
    if not path.exists():
        raise TfquantError(f"model file {str(path)!r} does not exist; pass the saved model's path")
    try:
        if path.is_dir():
            training = _saved_model_training_config(path)
            return _lr_from_optimizer((training or {}).get("optimizer_config"))
        if path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("training_config")
            if raw is None:
                return None
            training = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            return _lr_from_optimizer(training.get("optimizer_config"))
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
        return _lr_from_optimizer((config.get("compile_config") or {}).get("optimizer"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError) as e:
        raise TfquantError(
            f"cannot read the training config of {str(path)!r} ({type(e).__name__}: {e}); "
            "pass a .keras / .h5 file or a Keras SavedModel directory, or give "
            "--original_learning_rate"
        ) from None


def original_training(
    learning_rate: float | None,
    original: Any,
    model_path: "str | os.PathLike[str] | None",
    batch_size: int | None,
) -> OriginalTraining:
    """The float training's learning rate (see the module docstring) and batch size.

    Args:
      learning_rate: LR the float model was trained with, or None.
      original: A zoo :class:`~tfquant.models.train.TrainConfig` (or anything with
        ``learning_rate`` and ``batch_size``), or None.
      model_path: The model's file, whose saved optimizer gives the LR, or None.
      batch_size: Fine-tuning batch size; None: ``original``'s, else 128.

    Raises:
      TfquantError: a non-positive learning rate or batch size; an unreadable model file.
    """
    if learning_rate is not None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not (
            learning_rate > 0 and np.isfinite(learning_rate)
        ):
            raise TfquantError(
                f"learning_rate must be a positive number, got {learning_rate!r}; pass the LR "
                "the float model was trained with"
            )
        lr, source = float(learning_rate), "given"
    elif original is not None:
        lr, source = float(original.learning_rate), "zoo"
    else:
        saved = saved_learning_rate(model_path) if model_path is not None else None
        if saved is not None and saved > 0:
            lr, source = saved, "saved_optimizer"
        else:
            lr, source = DEFAULT_LEARNING_RATE, "default"
    if batch_size is None:
        batch_size = int(getattr(original, "batch_size", DEFAULT_BATCH_SIZE))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TfquantError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 128")
    return OriginalTraining(learning_rate=lr, batch_size=batch_size, source=source)
