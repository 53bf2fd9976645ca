"""Generators of tiny datasets for the tfquant.data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfquant.data.idx import write_idx

# Fashion-MNIST-shaped IDX data: (train, test) sizes kept tiny so the tests stay fast.
TRAIN_SIZE, TEST_SIZE = 30, 12


def make_idx_dir(directory: Path, *, gz: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes Fashion-MNIST-named IDX files; returns the uint8 images and labels per split."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    suffix = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", TRAIN_SIZE), ("test", "t10k", TEST_SIZE)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # the full range is present
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images, labels)
    return out
