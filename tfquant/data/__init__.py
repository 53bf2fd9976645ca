"""Datasets: one entry point for evaluation and calibration data.

A dataset is named by a spec string (``--dataset`` / ``--calibration_data`` on the CLI):

* ``fashion_mnist`` - local IDX files: ``data_dir``, else ``$TFQUANT_FASHION_MNIST_DIR``,
  else ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``);
  if they are missing, TFDS ``fashion_mnist`` when it is prepared in TFDS's default data dir.
* ``tfds:NAME[/CONFIG][:VERSION]`` - a TensorFlow Datasets classification dataset that is
  already prepared (``data_dir`` is then the TFDS data dir); nothing is downloaded. Split
  ``test`` reads ``validation`` for datasets without a test split (e.g. ``imagenet2012``).
* ``npz:PATH`` - arrays ``x`` (float32 NHWC in [0, 1], or any float (N, ...) array that a
  non-image model takes) and ``y`` (integer labels), or
  ``x_<split>`` / ``y_<split>`` per split; ``x`` alone serves calibration.
* ``folder:PATH`` - images in ``PATH/<split>/<class>/*`` or ``PATH/<class>/*``; a folder of
  images with no class folders serves calibration.

Every source yields ``x`` float32 NHWC and ``y`` int64. Images are scaled to [0, 1],
resized bilinearly to ``image_size`` when given and, if a :class:`Normalization` is given,
standardised per channel: ``x = (x - mean) / std`` (see :mod:`tfquant.data.preprocess`).
``npz`` inputs are taken as already scaled to [0, 1]; only ``image_size`` and
``normalization`` apply to them. Calibration needs no labels; evaluation and training do.

Example::

    from tfquant import data
    x, y, info = data.load_numpy("fashion_mnist", "test")
    calib = data.calibration_set("fashion_mnist", 500, seed=0)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Union

import tfquant._env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.data import fashion_mnist, image_folder, npz, tfds_source
from tfquant.data.preprocess import (
    Normalization,
    check_finite,
    check_image_size,
    check_positive,
    resize_np,
)
from tfquant.data.spec import (
    SPEC_FORMS,
    FashionMnistSpec,
    FolderSpec,
    NpzSpec,
    TfdsSpec,
    parse_spec,
)
from tfquant.errors import TfquantError

__all__ = [
    "DatasetInfo",
    "Normalization",
    "SPEC_FORMS",
    "DEFAULT_NUM_CALIBRATION_EXAMPLES",
    "calibration_set",
    "load",
    "load_numpy",
    "parse_spec",
]

_log = logging.getLogger(__name__)
_NUMPY_BATCH = 256

DEFAULT_NUM_CALIBRATION_EXAMPLES = 1000
"""Calibration set size when none is asked for: this many, or every example when the source
has fewer (NVIDIA's study calibrates on ~1000 images, Wu et al. 2020, Sec. 4.2)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What was loaded.

    Attributes:
      name: the spec string, as given.
      split: the split read; ``validation`` when ``test`` was mapped to it (TFDS datasets
        without a test split).
      num_examples: examples delivered (after ``limit``).
      input_shape: (H, W, C) of one input after resizing.
      num_classes: number of classes of the labels.
    """

    name: str
    split: str
    num_examples: int
    input_shape: tuple[int, ...]
    num_classes: int


@dataclasses.dataclass(frozen=True)
class _Arrays:
    """An in-memory split before ``limit``, resizing and normalisation."""

    x: np.ndarray
    y: np.ndarray | None
    num_classes: int
    split: str

    @property
    def num_examples(self) -> int:
        return len(self.x)


_Source = Union[_Arrays, tfds_source.TfdsSplit]


def load(
    spec: str,
    split: str = "test",
    *,
    batch_size: int = 256,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    normalization: Normalization | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Batched, preprocessed tf.data pipeline of (x float32 NHWC, y int64) batches (prefetched).

    Args:
      spec: dataset spec string (see the module docstring).
      split: ``train`` or ``test`` (TFDS and folders may have others, e.g. ``validation``).
      batch_size: examples per batch; the last batch may be smaller.
      data_dir: Fashion-MNIST IDX folder, or TFDS data dir for ``tfds:`` specs; unused by
        ``npz:`` and ``folder:`` specs, whose spec holds the path.
      image_size: (height, width) to resize to (bilinear); needed when images vary in size.
      limit: keep only the first ``limit`` examples of the split.
      shuffle_seed: if given, examples are shuffled (after ``limit``) with this seed and
        reshuffled every epoch; ``None`` keeps the stored order.
      normalization: optional per-channel ``(x - mean) / std`` after scaling to [0, 1].

    Returns:
      The dataset and its :class:`DatasetInfo`. Fashion-MNIST, npz and folder data are held
      in memory; TFDS data is streamed.

    Raises:
      TfquantError: bad spec or arguments, missing or invalid data, empty split.
    """
    parsed = parse_spec(spec)
    check_positive(batch_size, "batch_size")
    if shuffle_seed is not None and not _is_int(shuffle_seed):
        raise TfquantError(f"shuffle_seed must be an integer or None, got {shuffle_seed!r}")
    size, source = _open(spec, parsed, split, data_dir, image_size, limit)
    if isinstance(source, tfds_source.TfdsSplit):
        ds = source.dataset(
            batch_size=batch_size,
            image_size=size,
            normalization=normalization,
            limit=limit,
            shuffle_seed=shuffle_seed,
        )
        info = DatasetInfo(
            name=spec,
            split=source.split,
            num_examples=min(source.num_examples, limit or source.num_examples),
            input_shape=source.output_shape(size),
            num_classes=source.num_classes,
        )
        return ds, info
    y = _labels(spec, source)[:limit]
    x = _finish(spec, source, source.x[:limit], size, normalization)
    return _array_dataset(x, y, batch_size, shuffle_seed), _info(spec, source, x)


def load_numpy(
    spec: str,
    split: str = "test",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    limit: int | None = None,
    normalization: Normalization | None = None,
    targets: bool = False,
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """The whole split as arrays (x float32 NHWC, y int64). For evaluation of small/medium sets.

    ``targets``: an npz ``y`` may also hold float regression targets ``(N, ...)`` (float32);
    the other sources always give integer labels.

    Fashion-MNIST is decoded once per process and cached; without resizing or
    normalisation the returned arrays are read-only views of that cache (copy them before
    editing in place). Arguments are as for :func:`load`.

    Raises:
      TfquantError: bad spec or arguments, missing or invalid data, empty split, NaN/Inf.
    """
    parsed = parse_spec(spec)
    size, source = _open(spec, parsed, split, data_dir, image_size, limit, targets=targets)
    if isinstance(source, tfds_source.TfdsSplit):
        ds = source.dataset(
            batch_size=_NUMPY_BATCH, image_size=size, normalization=normalization, limit=limit
        )
        batches = [(bx.numpy(), by.numpy()) for bx, by in ds]
        assert batches, "open_split rejects empty splits and TFDS asserts the cardinality"
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        check_finite(x, f"{spec} split {source.split!r}")
        info = DatasetInfo(spec, source.split, len(x), tuple(x.shape[1:]), source.num_classes)
        return x, y, info
    y = _labels(spec, source)[:limit]
    x = _finish(spec, source, source.x[:limit], size, normalization)
    return x, y, _info(spec, source, x)


def calibration_set(
    spec: str,
    num_examples: int | None = None,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    normalization: Normalization | None = None,
) -> np.ndarray:
    """`num_examples` inputs drawn without replacement from the TRAIN split with a fixed seed.

    Labels are not needed: an npz holding only ``x`` and a folder of images with no class
    folders are valid calibration data. Indices are ``np.sort(np.random.default_rng(seed).choice(N, num_examples,
    replace=False))`` over the N train examples, so the same seed gives the same subset
    and a different seed a different one (for N > num_examples). The inputs are
    preprocessed exactly as :func:`load_numpy` does. For TFDS only the drawn images are
    decoded (one pass over the split's records).

    Args:
      spec: dataset spec string (see the module docstring).
      num_examples: size of the calibration set, 1..N; None (the default) takes
        :data:`DEFAULT_NUM_CALIBRATION_EXAMPLES`, or all N examples when the source has
        fewer (the draw is then a permutation, sorted back: every example, in order). Only
        an explicit request for more than N is an error.
      seed: seed of the draw.
      data_dir, image_size, normalization: as for :func:`load`.

    Returns:
      float32 (num_examples, H, W, C), a fresh writable array.

    Raises:
      TfquantError: num_examples < 1 or larger than the train split, or the inputs hold
        NaN/Inf (the message gives the count), or any error of :func:`load_numpy`.
    """
    parsed = parse_spec(spec)
    check_positive(num_examples, "num_examples (calibration set size)")
    if not _is_int(seed):
        raise TfquantError(f"calibration seed must be an integer, got {seed!r}")
    size, source = _open(spec, parsed, "train", data_dir, image_size, None, labels_required=False)
    n = source.num_examples
    if num_examples is None:
        num_examples = min(n, DEFAULT_NUM_CALIBRATION_EXAMPLES)
    elif num_examples > n:
        raise TfquantError(
            f"{spec} train split has {n} examples, cannot draw {num_examples} calibration "
            f"examples without replacement; ask for at most {n}, or leave the count out to use all {n}"
        )
    indices = np.sort(np.random.default_rng(seed).choice(n, size=num_examples, replace=False))
    if isinstance(source, tfds_source.TfdsSplit):
        x = source.gather(indices, image_size=size, normalization=normalization)
        check_finite(x, f"calibration set from {spec} split 'train'")
        return x
    # Fancy indexing copies, so the result never aliases a cached array.
    return _finish(spec, source, source.x[indices], size, normalization)


def _open(
    spec: str,
    parsed: FashionMnistSpec | TfdsSpec | NpzSpec | FolderSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    image_size: tuple[int, int] | None,
    limit: int | None,
    *,
    labels_required: bool = True,
    targets: bool = False,
) -> tuple[tuple[int, int] | None, _Source]:
    """Validates the common arguments and opens ``split``; raises if it is empty."""
    size = check_image_size(image_size)
    check_positive(limit, "limit")
    if not isinstance(split, str) or not split:
        raise TfquantError(
            f"split must be a non-empty string such as 'train' or 'test', got {split!r}"
        )
    source: _Source
    if isinstance(parsed, FashionMnistSpec):
        source = _open_fashion_mnist(split, data_dir)
    elif isinstance(parsed, TfdsSpec):
        source = tfds_source.open_split(parsed, split, data_dir=_opt_str(data_dir))
    elif isinstance(parsed, NpzSpec):
        s = npz.load_npz(parsed.path, split, labels_required=labels_required, targets=targets)
        source = _Arrays(s.x, s.y, s.num_classes, split)
    else:
        f = image_folder.load_folder(
            parsed.path, split, image_size=size, labels_required=labels_required
        )
        source = _Arrays(f.x, f.y, len(f.class_names), split)
    if source.num_examples == 0:
        raise TfquantError(
            f"{spec} split {source.split!r} has 0 examples; use a split that holds data"
        )
    return size, source


def _open_fashion_mnist(split: str, data_dir: str | os.PathLike[str] | None) -> _Source:
    """Local IDX files, else a prepared TFDS ``fashion_mnist``, else the apt-get error."""
    if fashion_mnist.has_files(split, data_dir=data_dir):
        x, y = fashion_mnist.load_fashion_mnist_cached(split, data_dir=data_dir)
        return _Arrays(x, y, fashion_mnist.NUM_CLASSES, split)
    directory = fashion_mnist.resolve_dir(data_dir)
    try:
        source = tfds_source.open_split(TfdsSpec("fashion_mnist"), split)
    except tfds_source.TfdsNotPreparedError:
        raise TfquantError(
            fashion_mnist.missing_files_message(directory, split)
            + " (TFDS fashion_mnist is not prepared either)"
        ) from None
    _log.info("Fashion-MNIST IDX files not found in %s; reading TFDS fashion_mnist", directory)
    return source


def _finish(
    spec: str,
    source: _Arrays,
    x: np.ndarray,
    image_size: tuple[int, int] | None,
    normalization: Normalization | None,
) -> np.ndarray:
    """Resizes and normalises in-memory inputs, then checks they are finite."""
    if image_size is not None and x.ndim != 4:
        raise TfquantError(
            f"{spec} split {source.split!r} holds inputs of shape {tuple(x.shape[1:])}, not "
            "(H, W, C) images, so they cannot be resized; leave out image_size (--image_size)"
        )
    x = resize_np(x, image_size)
    if normalization is not None:
        x = normalization.apply_np(x)
    check_finite(x, f"{spec} split {source.split!r}")
    return x


def _labels(spec: str, source: _Arrays) -> np.ndarray:
    """The split's labels; internal invariant: sources opened with labels required have them."""
    assert source.y is not None, f"{spec} was opened without labels"
    return source.y


def _info(spec: str, source: _Arrays, x: np.ndarray) -> DatasetInfo:
    return DatasetInfo(
        name=spec,
        split=source.split,
        num_examples=len(x),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=source.num_classes,
    )


def _array_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None
) -> tf.data.Dataset:
    """Batches gathered from in-memory tensors; shuffles indices, not images."""
    x_t, y_t = tf.constant(x), tf.constant(y)
    indices = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = indices.batch(batch_size).map(
        lambda i: (tf.gather(x_t, i), tf.gather(y_t, i)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _opt_str(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
