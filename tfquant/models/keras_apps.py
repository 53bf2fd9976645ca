"""Builders for ``keras.applications`` models (Keras 2), offline only.

The papers report on ImageNet MobileNet-v1/v2, ResNet-50 and Inception-v3; these builders
give the same architectures for experiments that bring their own weights file. Nothing is
ever downloaded: the application is built with ``weights=None`` and, if ``weights_path`` is
given, filled with ``model.load_weights(weights_path)``.

Every model outputs logits (``classifier_activation=None``) like the rest of the zoo, and
includes no input preprocessing: MobileNet/MobileNetV2/InceptionV3 expect pixels scaled to
[-1, 1], ResNet50 expects caffe-style BGR mean subtraction (see each application's
``preprocess_input``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import h5py
import tf_keras as keras

from tfquant.errors import TfquantError


@dataclass(frozen=True)
class KerasApp:
    """One ``keras.applications`` architecture.

    Attributes:
        constructor: The ``keras.applications`` function.
        min_size: Smallest height/width the application accepts.
        default_input_shape: ImageNet input shape of the published weights.
    """

    constructor: Callable[..., keras.Model]
    min_size: int
    default_input_shape: tuple[int, int, int]


KERAS_APPS: dict[str, KerasApp] = {
    "keras_mobilenet": KerasApp(keras.applications.MobileNet, 32, (224, 224, 3)),
    "keras_mobilenet_v2": KerasApp(keras.applications.MobileNetV2, 32, (224, 224, 3)),
    "keras_resnet50": KerasApp(keras.applications.ResNet50, 32, (224, 224, 3)),
    "keras_inception_v3": KerasApp(keras.applications.InceptionV3, 75, (299, 299, 3)),
}


def load_weights_file(model: keras.Model, weights_path: str | os.PathLike[str]) -> None:
    """Loads a Keras 2 HDF5 weights file (``model.save_weights(...h5)``) into ``model``.

    Args:
        model: The built model.
        weights_path: Path of an HDF5 weights file.

    Raises:
        TfquantError: If the file is missing, is not HDF5, or does not fit ``model``.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise TfquantError(
            f"weights file {str(path)!r} not found; pass an existing .h5 file saved with "
            "model.save_weights(), or weights=None for random initialisation"
        )
    if not h5py.is_hdf5(path):
        raise TfquantError(
            f"weights file {str(path)!r} is not HDF5; save it with "
            "model.save_weights('NAME.weights.h5') (Keras 2)"
        )
    try:
        with h5py.File(path, "r") as f:
            legacy_layout = "layer_names" in f.attrs
        if legacy_layout:
            # Keras 2 HDF5 layout (what train.py writes). tf-keras picks its loader by file
            # name and sends every '*.weights.h5' to the Keras 3 ("vars") layout, so call the
            # legacy HDF5 loader directly.
            from tf_keras.src.saving.legacy import save as legacy_save

            legacy_save.load_weights(model, str(path))
        else:
            model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TfquantError(
            f"weights file {str(path)!r} does not fit model {model.name!r} ({first_line}); "
            "build the same architecture, input shape and num_classes it was saved from"
        ) from e


def build_keras_app(
    name: str,
    *,
    weights_path: str | os.PathLike[str] | None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds a ``keras.applications`` model with local weights or random init.

    Args:
        name: One of :data:`KERAS_APPS` (``keras_mobilenet``, ``keras_mobilenet_v2``,
            ``keras_resnet50``, ``keras_inception_v3``).
        weights_path: A local HDF5 weights file, or None for random initialisation.
        input_shape: ``(height, width, channels)``; defaults to the ImageNet shape.
        num_classes: Number of output logits.

    Returns:
        An uncompiled ``keras.Model`` that outputs logits.

    Raises:
        TfquantError: For an unknown name, too small an input, a bad ``num_classes`` or a
            missing/mismatched weights file.
    """
    if name not in KERAS_APPS:
        raise TfquantError(
            f"unknown keras application {name!r}; choose one of: {', '.join(KERAS_APPS)}"
        )
    app = KERAS_APPS[name]
    shape = tuple(int(d) for d in (input_shape or app.default_input_shape))
    if len(shape) != 3 or min(shape[0], shape[1]) < app.min_size or shape[2] < 1:
        raise TfquantError(
            f"{name} needs input_shape (height, width, channels) with height and width >= "
            f"{app.min_size}, got {input_shape}; resize the images or pass a larger shape"
        )
    if int(num_classes) < 1:
        raise TfquantError(f"num_classes must be >= 1, got {num_classes}")
    if weights_path is not None and not Path(weights_path).is_file():
        raise TfquantError(
            f"weights file {str(weights_path)!r} not found; pass an existing .h5 file "
            "saved with model.save_weights(), or weights=None for random initialisation"
        )
    model = app.constructor(
        input_shape=shape,
        include_top=True,
        weights=None,
        classes=int(num_classes),
        classifier_activation=None,
    )
    if weights_path is not None:
        load_weights_file(model, weights_path)
    return model
