"""Images from a folder tree (``folder:PATH``).

Two layouts:

* ``PATH/<split>/<class_name>/*.png`` - one tree per split (``train``, ``test``, ...);
* ``PATH/<class_name>/*.png`` - no split folders; the same images serve every split.

Unlabelled images (``PATH/*.png`` or ``PATH/<split>/*.png``, no class folders) serve
calibration, which needs no labels (``labels_required=False``); evaluation and training
need class folders and say so.

Class indices are the positions of the class folder names in sorted order (over all split
folders, so every split agrees). Files with the suffixes in ``IMAGE_SUFFIXES`` are decoded
with ``tf.io.decode_image`` to float32 in [0, 1] and, if ``image_size`` is given, resized
bilinearly. Grayscale images keep one channel; if a folder mixes channel counts, every
image becomes RGB (grayscale repeated, alpha dropped).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tfquant._env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.errors import TfquantError
from tfquant.progress import progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_NAMES = ("train", "test", "validation")
_LAYOUT_HINT = "expected PATH/<split>/<class>/*.png or PATH/<class>/*.png"


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The decoded images of one split.

    Attributes:
      x: float32 (N, H, W, C) in [0, 1].
      y: int64 (N,) class indices into ``class_names``; None for unlabelled images.
      class_names: sorted class folder names (empty for unlabelled images).
      files: the image paths, in the order of ``x``.
    """

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...]
    files: tuple[Path, ...]


def load_folder(
    path: str | os.PathLike[str],
    split: str,
    *,
    image_size: tuple[int, int] | None = None,
    labels_required: bool = True,
) -> FolderSplit:
    """Decodes every image of ``split`` under ``path`` (see the module docstring).

    Args:
      path: the root folder.
      split: the split folder to read, when the tree has split folders.
      image_size: (height, width) to resize to; needed when images differ in size.
      labels_required: False also accepts images with no class folders (``y`` is None).

    Raises:
      TfquantError: the folder is missing, holds no class folders or a split other than the
        one asked for, an image cannot be decoded, or images differ in size and no
        ``image_size`` was given.
    """
    root = Path(path)
    where = f"folder:{root}"
    if not root.is_dir():
        raise TfquantError(f"{where}: folder does not exist; {_LAYOUT_HINT}")
    split_dirs = {d.name: d for d in _subdirs(root) if d.name in SPLIT_NAMES}
    if split_dirs:
        if split not in split_dirs:
            raise TfquantError(
                f"{where} has split folders {sorted(split_dirs)} but no {split!r}; "
                f"add {root / split} or ask for one of {sorted(split_dirs)}"
            )
        class_names = sorted({c.name for d in split_dirs.values() for c in _subdirs(d)})
        base = split_dirs[split]
    else:
        class_names = sorted(d.name for d in _subdirs(root))
        base = root
    if not class_names or not _subdirs(base):
        loose = _image_files(base)
        if loose and not labels_required:
            images = _decode_all(loose, image_size, root)
            return _stack(images, loose, where, image_size, None, ())
        if loose:
            raise TfquantError(
                f"{where} holds {len(loose)} images but no class folders, so it has no labels; "
                f"evaluation and training need labels: put each image in {base}/<class>/ "
                "(calibration alone needs none)"
            )
        if not class_names:
            raise TfquantError(f"{where}: no class folders found; {_LAYOUT_HINT}")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        class_dir = base / name
        if not class_dir.is_dir():
            continue
        for f in _image_files(class_dir):
            files.append(f)
            labels.append(index)
    if not files:
        raise TfquantError(
            f"{where} split {split!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class "
            f"folders of {base}; {_LAYOUT_HINT}"
        )
    images = _decode_all(files, image_size, root)
    return _stack(images, files, where, image_size, np.asarray(labels, dtype=np.int64),
                  tuple(class_names))


def _decode_all(files: list[Path], image_size: tuple[int, int] | None, root: Path) -> list[np.ndarray]:
    """Decodes ``files`` in order, with a progress report (large folders take a while)."""
    return [_decode(f, image_size) for f in progress(files, desc=f"decode {root.name}", unit="image")]


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted (hidden files skipped)."""
    return [
        f for f in sorted(folder.iterdir())
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    ]


def _stack(
    images: list[np.ndarray],
    files: list[Path],
    where: str,
    image_size: tuple[int, int] | None,
    labels: np.ndarray | None,
    class_names: tuple[str, ...],
) -> FolderSplit:
    """Checks sizes, unifies channels (all gray, else RGB) and stacks into a FolderSplit."""
    _check_sizes(images, files, where, image_size)
    channels = {im.shape[-1] for im in images}
    if channels != {1}:
        images = [_to_rgb(im) for im in images]
    return FolderSplit(
        x=np.stack(images).astype(np.float32, copy=False),
        y=labels,
        class_names=class_names,
        files=tuple(files),
    )


def _subdirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _decode(path: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    try:
        image = tf.io.decode_image(
            tf.io.read_file(str(path)), channels=0, dtype=tf.float32, expand_animations=False
        )
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        message = (e.message or "").splitlines()[0] if e.message else type(e).__name__
        raise TfquantError(
            f"cannot decode image {str(path)!r} ({message}); delete or re-save it"
        ) from None
    if image_size is not None and tuple(image.shape[:2]) != tuple(image_size):
        image = tf.image.resize(image, image_size, method="bilinear")
    return image.numpy()


def _check_sizes(
    images: list[np.ndarray], files: list[Path], where: str, image_size: tuple[int, int] | None
) -> None:
    first = images[0].shape[:2]
    for im, f in zip(images, files):
        if im.shape[:2] != first:
            raise TfquantError(
                f"{where}: images differ in size ({files[0].name} is {first[0]}x{first[1]}, "
                f"{f.name} is {im.shape[0]}x{im.shape[1]}); pass image_size (--image_size H,W)"
            )
    assert image_size is None or first == tuple(image_size), (first, image_size)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """1 -> 3 channels (repeat), 2 (gray + alpha) -> 3 (repeat gray), 4 (RGBA) -> RGB."""
    c = image.shape[-1]
    if c in (1, 2):
        return np.repeat(image[..., :1], 3, axis=-1)
    return image[..., :3]
