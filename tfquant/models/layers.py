"""The zoo's only custom layer: a learned position embedding for the ViT.

Keras 2 has no built-in "add a learned (tokens, dim) tensor" layer that is free of
``Lambda``/``TFOpLambda``, so :class:`AddPositionEmbedding` owns one weight and adds it.
It lowers to a single ``ADD`` with a constant operand in TFLite (float, int8 and int16x8).

The layer is registered for Keras serialization under ``tfquant>AddPositionEmbedding``.
tfmot's ``quantize_annotate_model`` does not know it; QAT code must either leave it
unannotated or give it a ``QuantizeConfig`` inside ``tfmot.quantization.keras.quantize_scope``
(``custom_objects()`` below returns the mapping to pass).
"""

from __future__ import annotations

from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="tfquant")
class AddPositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding to a token sequence.

    ``y[b, t, d] = x[b, t, d] + E[t, d]`` with ``E`` of shape ``(tokens, dim)``, initialised
    from N(0, ``stddev``^2) as in ViT (Dosovitskiy et al., 2021, "An Image is Worth 16x16
    Words", eq. 1).

    Args:
        stddev: Standard deviation of the initial embedding.
        **kwargs: Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, *, stddev: float = 0.02, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def build(self, input_shape: tf.TensorShape) -> None:
        shape = tf.TensorShape(input_shape)
        if shape.rank != 3 or shape[1] is None or shape[2] is None:
            # Internal invariant: the ViT builder always feeds (batch, tokens, dim).
            raise ValueError(f"AddPositionEmbedding expects (batch, tokens, dim), got {shape}")
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, int(shape[1]), int(shape[2])),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
            trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs + tf.cast(self.embedding, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["stddev"] = self.stddev
        return config


def custom_objects() -> dict[str, type[keras.layers.Layer]]:
    """Returns the zoo's custom layers by name, for ``custom_objects=`` / ``quantize_scope``."""
    return {"AddPositionEmbedding": AddPositionEmbedding}
