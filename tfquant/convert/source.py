"""The model to convert, loaded once: a Keras model, or a SavedModel Keras did not write.

Shared by :mod:`tfquant.convert.converter` and :mod:`tfquant.convert.calibrated` (neither
imports the other's internals).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

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


def _savedmodel_inputs(
    path: Path,
) -> tuple[list[tuple[int | None, ...]], list[tuple[int | None, ...]], tuple[str, ...], list[np.dtype]]:
    """Loads the SavedModel (so a broken one fails clearly); returns the input and output
    shapes of its serving signature, its :func:`tensorlist_loops` and its input dtypes."""
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
    specs = list(signature.structured_input_signature[1].values())
    shapes = [tuple(spec.shape) for spec in specs]
    outputs = [tuple(spec.shape) for spec in tf.nest.flatten(signature.structured_outputs)]
    return shapes, outputs, tensorlist_loops(signature), [np.dtype(spec.dtype.as_numpy_dtype) for spec in specs]


def tensorlist_loops(function: "tf.types.experimental.ConcreteFunction") -> tuple[str, ...]:
    """The WHILE loops of ``function`` whose body reads or writes a TensorList: the loop of a
    GRU / SimpleRNN / ``keras.layers.RNN`` that is not unrolled, or a ``tf.while_loop`` over a
    ``tf.TensorArray``. TensorFlow 2.21's calibrator crashes the process (segmentation fault)
    on each of them (measured on SavedModels of a GRU, a SimpleRNN, a Bidirectional(GRU) and a
    TensorArray loop; a loop without TensorLists and an LSTM calibrate). Functions that
    implement an LSTM (``api_implements: lstm_...``) are skipped: the converter fuses them into
    UNIDIRECTIONAL_SEQUENCE_LSTM. Returns the loops' node names (or their functions' names)."""
    graph = function.graph.as_graph_def()
    functions = {f.signature.name: f for f in graph.library.function}
    found = []
    for f in graph.library.function:
        implements = f.attr["api_implements"].s.decode() if "api_implements" in f.attr else ""
        if implements.startswith("lstm"):
            continue
        for node in f.node_def:
            if node.op not in ("While", "StatelessWhile"):
                continue
            body = functions.get(node.attr["body"].func.name)
            if body is not None and any(n.op.startswith("TensorList") for n in body.node_def):
                found.append(node.name if "/" in node.name
                             else re.sub(r"^__inference_|_\d+$", "", f.signature.name))
    return tuple(sorted(set(found)))


@dataclasses.dataclass
class Source:
    """A model to convert: a Keras model, or a SavedModel directory not written by Keras."""

    keras_model: "tf.keras.Model | None" = None
    savedmodel_dir: Path | None = None
    input_shapes: list[tuple[int | None, ...]] | None = None
    tensorlist_loops: tuple[str, ...] = ()
    """A SavedModel's WHILE loops over TensorLists (:func:`tensorlist_loops`)."""
    output_shapes: list[tuple[int | None, ...]] | None = None
    """A SavedModel's output shapes (None for a Keras model: read its ``outputs``)."""
    input_dtypes: list[np.dtype] | None = None
    """The inputs' dtypes (float32, or an integer type for token ids)."""

    def input_shape(self) -> tuple[int | None, ...]:
        """The single input's shape, batch dimension first."""
        if self.input_shapes is None:
            self.input_shapes = _keras_input_shapes(self.keras_model)
        return _single_input(self.input_shapes, "the model")

    def input_dtype(self) -> np.dtype:
        """The single input's dtype (an integer type for token ids)."""
        if self.input_dtypes is None:
            inputs = getattr(self.keras_model, "inputs", None) or []
            self.input_dtypes = [np.dtype(t.dtype.as_numpy_dtype) for t in inputs]
        self.input_shape()  # one input, else the error that says so
        return self.input_dtypes[0]


def load_source(
    model: "tf.keras.Model | str | os.PathLike[str]", *, custom_objects: CustomObjectsSpec = None
) -> Source:
    """``model`` (a Keras model or a path) as a :class:`Source`, loaded and checked."""
    if isinstance(model, (str, os.PathLike)):
        path = check_model_path(model)
        if path.is_dir() and not is_keras_savedmodel(path):
            # Loaded here, so a broken one gets a clear error whatever the mode.
            shapes, outputs, loops, dtypes = _savedmodel_inputs(path)
            return Source(savedmodel_dir=path, input_shapes=shapes, tensorlist_loops=loops,
                          output_shapes=outputs, input_dtypes=dtypes)
        return Source(keras_model=load_model(path, custom_objects=custom_objects))
    if not isinstance(model, tf.keras.Model):
        raise TfquantError(
            f"model must be a tf.keras.Model or a path, got {type(model).__name__}; note "
            "tfquant uses Keras 2 (tf.keras / tf_keras), not Keras 3"
        )
    return Source(keras_model=model)
