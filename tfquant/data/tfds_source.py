"""TensorFlow Datasets source (``tfds:NAME[/CONFIG][:VERSION]``), offline.

Only datasets already prepared in a TFDS data directory are read (``data_dir`` if given,
else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``); nothing is downloaded. A dataset
that is not prepared raises :class:`TfdsNotPreparedError` saying how to prepare it.

The dataset must be a classification dataset with supervised keys ``(image, label)`` and a
``ClassLabel`` label. Images go through :mod:`tfquant.data.preprocess` (float32 in [0, 1],
optional bilinear resize and normalisation); labels become int64.

Split ``test`` reads ``validation`` when the dataset has no test split but a validation
split (e.g. ``imagenet2012``); the returned split name says which split was read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tfquant._env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfquant.data.preprocess import Normalization, to_unit_float
from tfquant.data.spec import TfdsSpec
from tfquant.errors import TfquantError

# Datasets known to have train/validation but no test split; used when the split names are
# not in the metadata yet (a builder that is not prepared, or tfds.testing.mock_data).
NO_TEST_SPLIT = frozenset({"imagenet2012", "imagenet2012_subset", "imagenette"})
_SHUFFLE_BUFFER = 4096


class TfdsNotPreparedError(TfquantError):
    """The TFDS dataset is not prepared in the data directory (and we cannot download)."""


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """One split of a prepared TFDS classification dataset.

    Attributes:
      spec: what the user asked for.
      split: the TFDS split read (``validation`` when ``test`` was mapped to it).
      num_examples: examples in the split.
      num_classes: classes of the label feature.
      image_shape: (H, W, C) of the stored images; H and W are ``None`` when they vary.
      builder: the TFDS builder.
    """

    spec: TfdsSpec
    split: str
    num_examples: int
    num_classes: int
    image_shape: tuple[int | None, ...]
    builder: Any

    @property
    def where(self) -> str:
        return f"tfds:{self.spec.tfds_name} split {self.split!r}"

    def output_shape(self, image_size: tuple[int, int] | None) -> tuple[int, int, int]:
        """(H, W, C) after resizing; raises if the images vary in size and no size is given."""
        h, w, c = self.image_shape
        if image_size is not None:
            h, w = image_size
        if h is None or w is None or c is None:
            raise TfquantError(
                f"{self.where}: images vary in size {self.image_shape}; pass image_size "
                "(--image_size H,W), e.g. 224,224"
            )
        return int(h), int(w), int(c)

    def dataset(
        self,
        *,
        batch_size: int,
        image_size: tuple[int, int] | None,
        normalization: Normalization | None,
        limit: int | None = None,
        shuffle_seed: int | None = None,
    ) -> tf.data.Dataset:
        """Batched, prefetched ``(x float32 NHWC, y int64)``; ``limit`` applies before shuffling."""
        shape = self.output_shape(image_size)
        ds = _as_dataset(self)
        if limit is not None:
            ds = ds.take(limit)
        if shuffle_seed is not None:
            n = min(self.num_examples, limit or self.num_examples)
            ds = ds.shuffle(
                min(n, _SHUFFLE_BUFFER), seed=shuffle_seed, reshuffle_each_iteration=True
            )
        preprocess = _preprocess_fn(shape, image_size, normalization)
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def gather(
        self,
        indices: np.ndarray,
        *,
        image_size: tuple[int, int] | None,
        normalization: Normalization | None,
    ) -> np.ndarray:
        """The inputs at sorted ``indices``, in one pass that decodes only those images.

        Images are read undecoded (``tfds.decode.SkipDecoding``), filtered by index, then
        decoded and preprocessed, so drawing a few hundred calibration images from a large
        train split does not decode the whole split.
        """
        shape = self.output_shape(image_size)
        image_key = self.builder.info.supervised_keys[0]
        feature = self.builder.info.features[image_key]
        skip = isinstance(feature, tfds.features.Image)
        ds = _as_dataset(self, decoders={image_key: tfds.decode.SkipDecoding()} if skip else None)
        mask = np.zeros(self.num_examples, dtype=bool)
        mask[indices] = True
        mask_t = tf.constant(mask)
        ds = ds.take(int(indices[-1]) + 1).enumerate().filter(lambda i, ex: mask_t[i])
        preprocess = _preprocess_fn(shape, image_size, normalization)

        def decode(i: tf.Tensor, ex: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            image, label = ex
            if skip:
                image = feature.decode_example(image)
            return preprocess(image, label)[0]

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
        batches = [b.numpy() for b in ds]
        x = np.concatenate(batches)
        # TFDS asserts the split's cardinality, so a short split fails inside tf.data first.
        assert len(x) == len(indices), (len(x), len(indices))
        return x


def open_split(spec: TfdsSpec, split: str, *, data_dir: str | None = None) -> TfdsSplit:
    """Opens ``split`` of a prepared TFDS dataset and reads its metadata.

    Raises:
      TfdsNotPreparedError: the dataset is not prepared in the data directory.
      TfquantError: unknown dataset or config, unknown split, not an (image, label)
        classification dataset, or an empty split.
    """
    where = f"tfds:{spec.tfds_name}"
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise TfquantError(
            f"{where}: no dataset {spec.name!r} in tensorflow_datasets {tfds.__version__}; "
            "check the name in the TFDS catalog (https://www.tensorflow.org/datasets/catalog)"
        ) from None
    except (ValueError, KeyError, AssertionError) as e:
        # TFDS raises AssertionError for an unknown version, ValueError for an unknown config.
        raise TfquantError(
            f"{where}: cannot open it ({_first_line(e)}); check the config and version in the "
            "TFDS catalog (https://www.tensorflow.org/datasets/catalog)"
        ) from None
    except ImportError as e:
        raise TfquantError(
            f"{where} needs a package that is not installed ({e}); pip install it"
        ) from None
    info = builder.info
    keys = info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise TfquantError(
            f"{where} has no (image, label) supervised keys (got {keys!r}); use a classification "
            "dataset or export inputs and labels to npz:PATH"
        )
    num_classes = getattr(info.features[keys[1]], "num_classes", None)
    if not num_classes:
        raise TfquantError(
            f"{where}: label feature {keys[1]!r} is not a ClassLabel; use a classification dataset"
        )
    resolved = _resolve_split(spec, split, set(info.splits))
    probe = TfdsSplit(spec, resolved, 0, int(num_classes), (None, None, None), builder)
    ds = _as_dataset(probe)
    image_spec = ds.element_spec[0]
    if image_spec.shape.rank != 3:
        raise TfquantError(
            f"{where}: input {keys[0]!r} has shape {image_spec.shape}, expected images (H, W, C); "
            "use an image classification dataset"
        )
    if not (image_spec.dtype in (tf.uint8, tf.uint16) or image_spec.dtype.is_floating):
        raise TfquantError(
            f"{where}: images have dtype {image_spec.dtype.name}; only uint8, uint16 and float "
            "images can be scaled to [0, 1]"
        )
    n = int(ds.cardinality())
    if n < 0 and resolved in info.splits:
        n = int(info.splits[resolved].num_examples)
    if n < 0:
        raise TfquantError(
            f"{where} split {resolved!r}: unknown number of examples; re-prepare the dataset"
        )
    return dataclasses.replace(probe, num_examples=n, image_shape=tuple(image_spec.shape.as_list()))


def _resolve_split(spec: TfdsSpec, split: str, known: set[str]) -> str:
    if split == "test" and "test" not in known:
        if "validation" in known or (not known and spec.name in NO_TEST_SPLIT):
            return "validation"
    return split


def _as_dataset(s: TfdsSplit, decoders: dict[str, Any] | None = None) -> tf.data.Dataset:
    """``builder.as_dataset`` as (image, label) pairs, with TFDS errors made user-facing."""
    where = f"tfds:{s.spec.tfds_name}"
    try:
        return s.builder.as_dataset(
            split=s.split, as_supervised=True, shuffle_files=False, decoders=decoders
        )
    except AssertionError:
        # TFDS raises AssertionError when the prepared files are missing (download=False).
        raise TfdsNotPreparedError(
            f"{where} is not prepared in {str(s.builder.data_dir_root)!r} and tfquant does "
            "not download; "
            f"prepare it where there is internet (tfds build {s.spec.tfds_name}) and copy the "
            f"{s.spec.name}/ folder into that directory, or pass --data_dir (a TFDS data dir)"
        ) from None
    except ValueError as e:
        splits = sorted(s.builder.info.splits)
        raise TfquantError(
            f"{where} has no split {s.split!r} (splits: {splits}); pick one of those "
            f"({_first_line(e)})"
        ) from None


def _preprocess_fn(
    shape: tuple[int, int, int],
    image_size: tuple[int, int] | None,
    normalization: Normalization | None,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Per-example (image, label) -> (float32 HWC, int64) following tfquant.data.preprocess."""
    if normalization is not None:
        normalization.check_channels(shape[-1])

    def preprocess(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = to_unit_float(image)
        if image_size is not None:
            x = tf.image.resize(x, image_size, method="bilinear")
        if normalization is not None:
            x = normalization.apply_tf(x)
        x = tf.ensure_shape(x, shape)
        return x, tf.cast(label, tf.int64)

    return preprocess


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
