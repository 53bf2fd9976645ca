"""Model zoo: small Fashion-MNIST models (logits out) and offline keras.applications.

``build(name)`` returns a Keras 2 model with the committed trained weights;
``build(name, weights=None)`` a randomly initialised one; ``trained_info(name)`` the
manifest entry (test accuracy, epochs, params, ...). Train with
``python experiments/train_zoo.py --models cnn,vit``.
"""

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)
from tfquant.models.keras_apps import KERAS_APPS
from tfquant.models.layers import AddPositionEmbedding, custom_objects
from tfquant.models.zoo import (
    INPUT_SHAPE,
    NUM_CLASSES,
    TRAINED,
    WEIGHTS_DIR,
    ZOO,
    build,
    build_architecture,
    read_manifest,
    trained_info,
    weights_path,
)

__all__ = [
    "AddPositionEmbedding",
    "INPUT_SHAPE",
    "KERAS_APPS",
    "NUM_CLASSES",
    "TRAINED",
    "WEIGHTS_DIR",
    "ZOO",
    "build",
    "build_architecture",
    "custom_objects",
    "read_manifest",
    "trained_info",
    "weights_path",
]
