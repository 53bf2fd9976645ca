"""Preprocessing shared by every dataset source: scaling, resizing, normalisation, checks.

The pipeline applied to every image, in this order:

1. scale to float32 in [0, 1]: ``x / 255`` for uint8, ``x / 65535`` for uint16, floats kept;
2. resize to ``image_size`` (H, W) with bilinear interpolation (``tf.image.resize``, no
   antialiasing), which keeps values inside [0, 1] because each output pixel is a convex
   combination of input pixels;
3. optionally normalise per channel, ``(x - mean) / std`` (:class:`Normalization`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import tfquant._env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.errors import TfquantError

# Images resized per call of tf.image.resize, bounding the float32 temporaries.
_RESIZE_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel standardisation ``(x - mean) / std`` applied after scaling to [0, 1].

    Attributes:
      mean: one value for all channels or one per channel, in [0, 1] units
        (e.g. ImageNet's ``(0.485, 0.456, 0.406)``).
      std: one positive value for all channels or one per channel
        (e.g. ImageNet's ``(0.229, 0.224, 0.225)``).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise TfquantError(
                f"normalization std must be positive, got {self.std}; "
                "pass e.g. std=(0.229, 0.224, 0.225)"
            )

    def check_channels(self, channels: int) -> None:
        """Raises TfquantError unless mean/std have 1 or ``channels`` values."""
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise TfquantError(
                    f"normalization {label} has {len(values)} values but the images have "
                    f"{channels} channels; give 1 or {channels} values"
                )

    def apply_np(self, x: np.ndarray) -> np.ndarray:
        """Returns ``(x - mean) / std`` as a new float32 array (NHWC)."""
        self.check_channels(x.shape[-1])
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32)

    def apply_tf(self, x: tf.Tensor) -> tf.Tensor:
        """Returns ``(x - mean) / std`` for a float32 HWC or NHWC tensor."""
        return (x - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)


def _floats(values: Sequence[float] | float, label: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TfquantError(
            f"normalization {label} must be numbers, got {values!r}; pass e.g. {label}=(0.5,)"
        ) from None
    if not out or not all(math.isfinite(v) for v in out):
        raise TfquantError(f"normalization {label} must be 1 or C finite numbers, got {values!r}")
    return out


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
