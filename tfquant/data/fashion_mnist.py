"""Fashion-MNIST from local IDX files (Debian package ``dataset-fashion-mnist``).

Preprocessing: uint8 pixels -> float32 in [0, 1], shape (N, 28, 28, 1) NHWC; labels int64.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfquant.data.idx import read_idx
from tfquant.errors import TfquantError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
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


def load_fashion_mnist(
    split: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(x, y)`` for ``split`` ('train' or 'test') from IDX files.

    Looks in ``data_dir`` if given, else ``$TFQUANT_FASHION_MNIST_DIR``, else the Debian
    package's directory ``/usr/share/datasets/fashion-mnist``.
    """
    if split not in _FILES:
        raise TfquantError(f"fashion_mnist has splits 'train' and 'test', not {split!r}")
    directory = Path(data_dir or os.environ.get("TFQUANT_FASHION_MNIST_DIR") or DEFAULT_DIR)
    img_stem, lbl_stem = _FILES[split]
    img_path, lbl_path = _find(directory, img_stem), _find(directory, lbl_stem)
    if img_path is None or lbl_path is None:
        raise TfquantError(
            f"Fashion-MNIST IDX files ({img_stem}[.gz], {lbl_stem}[.gz]) not found in "
            f"{str(directory)!r}; install them with 'apt-get install dataset-fashion-mnist' "
            "(as root) or pass --data_dir pointing at a folder that holds them"
        )
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise TfquantError(
            f"Fashion-MNIST files in {str(directory)!r} do not match: images {images.shape}, "
            f"labels {labels.shape}; re-install the data"
        )
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)
