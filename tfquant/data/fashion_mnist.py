"""Fashion-MNIST from local IDX files (Debian package ``dataset-fashion-mnist``).

Preprocessing: uint8 pixels -> float32 in [0, 1] (``x / 255``), shape (N, 28, 28, 1) NHWC;
labels int64 in [0, 10).

Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747 (2017).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from tfquant.data.idx import read_idx
from tfquant.errors import TfquantError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "TFQUANT_FASHION_MNIST_DIR"
NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _check_split(split: str) -> None:
    if split not in _FILES:
        raise TfquantError(
            f"fashion_mnist has splits 'train' and 'test', not {split!r}; pick one of those"
        )


def resolve_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The IDX directory: ``data_dir``, else ``$TFQUANT_FASHION_MNIST_DIR``, else the Debian dir."""
    return Path(data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def has_files(split: str, *, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the image and label IDX files of ``split`` exist (gzipped or raw)."""
    _check_split(split)
    directory = resolve_dir(data_dir)
    return all(_find(directory, stem) is not None for stem in _FILES[split])


def missing_files_message(directory: Path, split: str) -> str:
    """The one-line error for absent IDX files, saying how to get them."""
    img_stem, lbl_stem = _FILES[split]
    return (
        f"Fashion-MNIST IDX files ({img_stem}[.gz], {lbl_stem}[.gz]) not found in "
        f"{str(directory)!r}; install them with 'apt-get install dataset-fashion-mnist' "
        f"(as root), set ${ENV_VAR} or pass --data_dir pointing at a folder that holds them"
    )


def load_fashion_mnist(
    split: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(x, y)`` for ``split`` ('train' or 'test') from IDX files.

    Looks in ``data_dir`` if given, else ``$TFQUANT_FASHION_MNIST_DIR``, else the Debian
    package's directory ``/usr/share/datasets/fashion-mnist``. Each call reads the files
    again and returns fresh, writable arrays; :func:`load_fashion_mnist_cached` is the fast
    path.

    Returns:
      ``x`` float32 (N, 28, 28, 1) in [0, 1] and ``y`` int64 (N,).

    Raises:
      TfquantError: unknown split, missing files, or files that do not belong together.
    """
    _check_split(split)
    directory = resolve_dir(data_dir)
    img_stem, lbl_stem = _FILES[split]
    img_path, lbl_path = _find(directory, img_stem), _find(directory, lbl_stem)
    if img_path is None or lbl_path is None:
        raise TfquantError(missing_files_message(directory, split))
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise TfquantError(
            f"Fashion-MNIST files in {str(directory)!r} do not match: images {images.shape}, "
            f"labels {labels.shape}; re-install the data"
        )
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)


def load_fashion_mnist_cached(
    split: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load_fashion_mnist`, decoded once per process and ``(directory, split)``.

    The arrays are shared by all callers and therefore read-only (``writeable=False``);
    copy them before editing in place.
    """
    _check_split(split)
    return _load_cached(str(resolve_dir(data_dir).resolve()), split)


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist(split, data_dir=directory)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y
