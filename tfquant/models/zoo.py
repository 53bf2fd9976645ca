"""The model zoo registry: names -> builders, committed weights and their manifest.

Trained weights live beside this module in ``weights/<name>.weights.h5`` (Keras 2 HDF5,
``model.save_weights``); ``weights/manifest.json`` records, per model, how it was trained and
its float test accuracy on all 10,000 Fashion-MNIST test images. Both are written by
``python experiments/train_zoo.py`` (see :mod:`tfquant.models.train`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.models.cnn import build_cnn
from tfquant.models.keras_apps import KERAS_APPS, build_keras_app, load_weights_file
from tfquant.models.mobilenet_v1 import build_mobilenet_v1
from tfquant.models.mobilenet_v2 import build_mobilenet_v2
from tfquant.models.resnet import build_resnet
from tfquant.models.vit import build_vit
from tfquant.zoo_names import ZOO

TRAINED = "trained"
INPUT_SHAPE: tuple[int, int, int] = (28, 28, 1)
NUM_CLASSES = 10
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "manifest.json"

_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "cnn": build_cnn,
    "mobilenet_v1": build_mobilenet_v1,
    "mobilenet_v2": build_mobilenet_v2,
    "resnet": build_resnet,
    "vit": build_vit,
}


def _unknown_name(name: object) -> TfquantError:
    return TfquantError(
        f"unknown model {name!r}; choose one of: {', '.join(ZOO + tuple(KERAS_APPS))}"
    )


def _check_zoo_name(name: str) -> None:
    if name not in _BUILDERS:
        raise TfquantError(
            f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}"
        )


def weights_path(name: str, *, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Returns where the trained weights of zoo model ``name`` are stored.

    Args:
        name: A name in :data:`ZOO`.
        weights_dir: Directory to look in; defaults to :data:`WEIGHTS_DIR`.

    Raises:
        TfquantError: If ``name`` is not in :data:`ZOO`.
    """
    _check_zoo_name(name)
    return Path(weights_dir or WEIGHTS_DIR) / f"{name}.weights.h5"


def build_architecture(
    name: str,
    *,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds zoo model ``name`` with random initial weights.

    Args:
        name: A name in :data:`ZOO`.
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.

    Raises:
        TfquantError: If ``name`` is not in :data:`ZOO`.
    """
    _check_zoo_name(name)
    return _BUILDERS[name](input_shape=tuple(input_shape), num_classes=int(num_classes))


def build(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = TRAINED,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> keras.Model:
    """Builds a model of the zoo or a ``keras.applications`` model; every one outputs logits.

    Args:
        name: A zoo model (:data:`ZOO`: ``cnn``, ``mobilenet_v1``, ``mobilenet_v2``,
            ``resnet``, ``vit``) or a keras application (``keras_mobilenet``,
            ``keras_mobilenet_v2``, ``keras_resnet50``, ``keras_inception_v3``).
        weights: ``"trained"`` for the committed Fashion-MNIST weights (zoo models only),
            None for random initialisation, or the path of a Keras 2 HDF5 weights file.
        input_shape: Input shape; defaults to (28, 28, 1) for the zoo and to the ImageNet
            shape for keras applications. Trained zoo weights need the default.
        num_classes: Number of logits; defaults to 10 for the zoo, 1000 for keras
            applications. Trained zoo weights need the default.

    Returns:
        An uncompiled ``keras.Model`` (Keras 2).

    Raises:
        TfquantError: For an unknown name, missing trained weights (run
            ``python experiments/train_zoo.py --models NAME``), a missing or mismatched
            weights file, or a shape that the trained weights do not fit.
    """
    if name in KERAS_APPS:
        if isinstance(weights, str) and weights == TRAINED:
            raise TfquantError(
                f"{name} has no committed weights; pass weights=None for random "
                "initialisation or weights=PATH to a local Keras 2 .h5 weights file"
            )
        return build_keras_app(
            name,
            weights_path=weights,
            input_shape=input_shape,
            num_classes=1000 if num_classes is None else num_classes,
        )
    if name not in _BUILDERS:
        raise _unknown_name(name)
    shape = tuple(input_shape) if input_shape is not None else INPUT_SHAPE
    classes = NUM_CLASSES if num_classes is None else int(num_classes)
    if isinstance(weights, str) and weights == TRAINED:
        if shape != INPUT_SHAPE or classes != NUM_CLASSES:
            raise TfquantError(
                f"trained {name} weights fit input_shape={INPUT_SHAPE} and "
                f"num_classes={NUM_CLASSES}, got {shape} and {classes}; drop those "
                "arguments or pass weights=None"
            )
        path = weights_path(name)
        if not path.is_file():
            raise TfquantError(
                f"trained weights for {name!r} not found at {str(path)!r}; run "
                f"'python experiments/train_zoo.py --models {name}'"
            )
        weights = path
    model = build_architecture(name, input_shape=shape, num_classes=classes)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def read_manifest(weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Returns the whole manifest ``{model name: info}`` ({} if there is none yet).

    Raises:
        TfquantError: If the manifest exists but is not valid JSON.
    """
    path = Path(weights_dir or WEIGHTS_DIR) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TfquantError(
            f"{str(path)!r} is not valid JSON ({e}); restore it from git or retrain with "
            "'python experiments/train_zoo.py'"
        ) from e
    if not isinstance(manifest, dict):
        raise TfquantError(
            f"{str(path)!r} must hold a JSON object keyed by model name; restore it from git"
        )
    return manifest


def trained_info(
    name: str, *, weights_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Returns the manifest entry of trained zoo model ``name``.

    Keys include ``test_accuracy`` (float, all 10,000 test images), ``val_accuracy``,
    ``epochs``, ``batch_size``, ``params``, ``train_seconds``, ``seed``, ``tf_version``,
    ``keras_version``, ``weights_file`` and ``weights_sha256``.

    Args:
        name: A name in :data:`ZOO`.
        weights_dir: Directory holding ``manifest.json``; defaults to :data:`WEIGHTS_DIR`.

    Raises:
        TfquantError: If ``name`` is not in :data:`ZOO` or has not been trained.
    """
    _check_zoo_name(name)
    manifest = read_manifest(weights_dir)
    if name not in manifest:
        raise TfquantError(
            f"no trained entry for {name!r} in the weights manifest; run "
            f"'python experiments/train_zoo.py --models {name}'"
        )
    return dict(manifest[name])
