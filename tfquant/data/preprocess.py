"""Preprocessing shared by every dataset source: scaling, resizing, normalisation, checks.

The pipeline applied to every image, in this order:

1. scale to float32 in [0, 1]: ``x / 255`` for uint8, ``x / 65535`` for uint16, floats kept;
2. resize to ``image_size`` (H, W) with bilinear interpolation (``tf.image.resize``, no
   antialiasing), which keeps values inside [0, 1] because each output pixel is a convex
   combination of input pixels;
3. optionally apply the input contract per channel, ``(x[..., order] - mean) / std``
   (:class:`Normalization`, i.e. :class:`tfquant.recipes.inputs.InputContract`).
"""

from __future__ import annotations

from typing import Sequence

import tfquant._env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.errors import TfquantError
from tfquant.recipes.inputs import InputContract

# Images resized per call of tf.image.resize, bounding the float32 temporaries.
_RESIZE_CHUNK = 1024


Normalization = InputContract
"""The input contract (:class:`tfquant.recipes.inputs.InputContract`): per-channel
``(x[..., order] - mean) / std`` applied after scaling to [0, 1]. Kept under this name for
the data API (``normalization=`` arguments)."""


def check_image_size(image_size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validates ``image_size`` as (height, width) of positive ints; ``None`` passes through."""
    if image_size is None:
        return None
    valid = False
    if not isinstance(image_size, (str, bytes)):
        try:
            h, w = (int(v) for v in image_size)
            valid = h > 0 and w > 0 and all(float(v) == int(v) for v in image_size)
        except (TypeError, ValueError):
            pass
    if not valid:
        raise TfquantError(
            f"image_size must be (height, width) with positive integers, got {image_size!r}; "
            "e.g. (224, 224)"
        )
    return h, w


def check_positive(value: int | None, label: str) -> None:
    """Raises TfquantError unless ``value`` is ``None`` or an int >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise TfquantError(f"{label} must be a positive integer, got {value!r}")


def to_unit_float(image: tf.Tensor) -> tf.Tensor:
    """Scales an image tensor to float32 in [0, 1] according to its dtype (see module doc)."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    if image.dtype == tf.uint16:
        return tf.cast(image, tf.float32) / 65535.0
    if image.dtype.is_floating:
        return tf.cast(image, tf.float32)
    raise TfquantError(
        f"cannot scale images of dtype {image.dtype.name} to [0, 1]; "
        "use a dataset whose images are uint8, uint16 or float"
    )


def resize_np(x: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    """Bilinear resize of a float32 NHWC array; returns ``x`` itself if already that size."""
    if image_size is None or tuple(x.shape[1:3]) == tuple(image_size):
        return x
    chunks = [
        tf.image.resize(x[i : i + _RESIZE_CHUNK], image_size, method="bilinear").numpy()
        for i in range(0, len(x), _RESIZE_CHUNK)
    ]
    if not chunks:
        return np.zeros((0, *image_size, x.shape[-1]), np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def check_finite(x: np.ndarray, where: str) -> None:
    """Raises TfquantError naming how many values of ``x`` are NaN or +-Inf.

    Args:
      x: the inputs.
      where: what ``x`` is, for the message (e.g. "npz:/data/a.npz split 'train'").
    """
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise TfquantError(
            f"{where} holds {bad} NaN/Inf input value(s) out of {x.size}; fix or drop those "
            "examples in the source data (e.g. np.nan_to_num or filter rows with np.isfinite)"
        )
