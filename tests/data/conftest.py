"""Tiny generated datasets shared by the tfquant.data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import make_idx_dir


@pytest.fixture
def idx_data(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A tiny gzipped Fashion-MNIST IDX folder and the uint8 arrays written into it."""
    directory = tmp_path / "fmnist"
    return directory, make_idx_dir(directory)


@pytest.fixture
def idx_dir(idx_data: tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]) -> Path:
    return idx_data[0]


@pytest.fixture
def empty_tfds_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points TFDS's default data dir at an empty folder, so nothing is prepared."""
    directory = tmp_path / "tfds_empty"
    directory.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_tfds_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A TFDS data dir holding the prepared ``tfquant_tiny_images`` dataset."""
    from tests.data import tiny_tfds

    directory = tmp_path_factory.mktemp("tfds_prepared")
    tiny_tfds.prepare(str(directory))
    return str(directory)
