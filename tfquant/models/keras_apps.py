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
import numpy as np
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
            from tfquant.tflite.keras_internals import load_legacy_h5_weights

            load_legacy_h5_weights(model, str(path))
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


@dataclass(frozen=True)
class ApplicationFamily:
    """One ``keras.applications`` family, by one representative constructor.

    Attributes:
        constructor: Name of the constructor in ``keras.applications`` (``"ResNet50"``).
        module: The ``keras.applications`` submodule holding its ``preprocess_input``.
        min_size: Smallest height/width the constructor accepts with ``weights=None``.
    """

    constructor: str
    module: str
    min_size: int


# One representative per family of tf-keras 2.21 keras.applications; min_size is what
# ``imagenet_utils.obtain_input_shape`` enforces (75 for the Inceptions, 71 for Xception,
# 32 for the rest).
APPLICATION_FAMILIES: dict[str, ApplicationFamily] = {
    family.constructor: family
    for family in (
        ApplicationFamily("ConvNeXtTiny", "convnext", 32),
        ApplicationFamily("DenseNet121", "densenet", 32),
        ApplicationFamily("EfficientNetB0", "efficientnet", 32),
        ApplicationFamily("EfficientNetV2B0", "efficientnet_v2", 32),
        ApplicationFamily("InceptionV3", "inception_v3", 75),
        ApplicationFamily("InceptionResNetV2", "inception_resnet_v2", 75),
        ApplicationFamily("MobileNet", "mobilenet", 32),
        ApplicationFamily("MobileNetV2", "mobilenet_v2", 32),
        ApplicationFamily("MobileNetV3Small", "mobilenet_v3", 32),
        ApplicationFamily("MobileNetV3Large", "mobilenet_v3", 32),
        ApplicationFamily("NASNetMobile", "nasnet", 32),
        ApplicationFamily("RegNetX002", "regnet", 32),
        ApplicationFamily("ResNet50", "resnet", 32),
        ApplicationFamily("ResNet50V2", "resnet_v2", 32),
        ApplicationFamily("ResNetRS50", "resnet_rs", 32),
        ApplicationFamily("VGG16", "vgg16", 32),
        ApplicationFamily("Xception", "xception", 71),
    )
}


def _family(name: str) -> ApplicationFamily:
    if name not in APPLICATION_FAMILIES:
        raise TfquantError(
            f"unknown keras.applications family {name!r}; choose from: "
            f"{', '.join(APPLICATION_FAMILIES)}"
        )
    return APPLICATION_FAMILIES[name]


def build_application(name: str, *, size: int | None = None, num_classes: int = 10) -> keras.Model:
    """A ``keras.applications`` model with random weights (nothing is downloaded).

    Args:
        name: A key of :data:`APPLICATION_FAMILIES`, e.g. ``"MobileNetV3Small"``.
        size: Input height and width (3 channels); default the family's ``min_size``.
        num_classes: Number of output logits (``include_top=True``,
            ``classifier_activation=None``).

    Returns:
        An uncompiled model; its input preprocessing is :func:`application_preprocess`.

    Raises:
        TfquantError: An unknown family, or ``size`` below the family's minimum.
    """
    family = _family(name)
    size = family.min_size if size is None else int(size)
    if size < family.min_size:
        raise TfquantError(
            f"{name} needs images of at least {family.min_size}x{family.min_size}, got "
            f"{size}x{size}; pass a larger size"
        )
    constructor = getattr(keras.applications, family.constructor)
    return constructor(
        input_shape=(size, size, 3),
        include_top=True,
        weights=None,
        classes=int(num_classes),
        classifier_activation=None,
    )


def application_preprocess(name: str) -> Callable:
    """The family's ``preprocess_input``: pixels in [0, 255] -> what the model expects."""
    import importlib

    family = _family(name)
    module = importlib.import_module(f"tf_keras.applications.{family.module}")
    return module.preprocess_input


def set_batch_norm_statistics(model: keras.Model, x: np.ndarray) -> None:
    """Sets every BatchNormalization's moving mean / variance to its batch statistics on ``x``.

    With random weights the stored statistics (mean 0, variance 1) normalize nothing, and
    activations vanish or explode with depth (keras.applications MobileNet logits ~1e-21 at
    32 px), which no quantizer can represent. One training-mode pass with momentum 0 stores
    ``μ_B`` and ``σ²_B`` of each layer's input (Ioffe & Szegedy 2015, arXiv:1502.03167,
    Alg. 1, with the running averages replaced by the batch's own), as a trained network's
    statistics would be: every layer then sees unit-scale inputs in inference mode too.

    Args:
        model: The model, modified in place.
        x: A batch of preprocessed inputs (a few examples suffice).
    """
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    momenta = [n.momentum for n in norms]
    for n in norms:
        n.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for n, momentum in zip(norms, momenta):
            n.momentum = momentum
