"""The arrays a zoo study measures with: test split, fine-tuning prefix, calibration draw."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfquant.errors import TfquantError


@dataclasses.dataclass(frozen=True)
class StudyData:
    """The arrays of a run.

    Attributes:
      x_test, y_test: The test split (its first ``limit`` images).
      x_train, y_train: The first ``train_examples`` training images (copies), or None.
      x_cal: The calibration draw (:func:`tfquant.data.calibration_set`), or None.
      info: The dataset's :class:`~tfquant.data.DatasetInfo`.
    """

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray | None
    y_train: np.ndarray | None
    x_cal: np.ndarray | None
    info: Any


def load_study_data(
    dataset: str,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    train_examples: int | None = None,
    num_calibration_examples: int | None = None,
    calibration_seed: int = 0,
) -> StudyData:
    """Loads what a study needs: the test split (first ``limit`` images), with
    ``train_examples`` the first N training images, with ``num_calibration_examples`` the
    seeded calibration draw from the training split.

    Raises:
      TfquantError: data errors, or fewer training images than ``train_examples``.
    """
    from tfquant import data

    x_test, y_test, info = data.load_numpy(dataset, "test", data_dir=data_dir, limit=limit)
    x_train = y_train = x_cal = None
    if train_examples is not None:
        x_all, y_all, _ = data.load_numpy(dataset, "train", data_dir=data_dir)
        if train_examples > len(x_all):
            raise TfquantError(f"{dataset} has {len(x_all)} training images, fewer than the "
                               f"{train_examples} to fine-tune on")
        x_train, y_train = np.array(x_all[:train_examples]), np.array(y_all[:train_examples])
    if num_calibration_examples is not None:
        x_cal = data.calibration_set(dataset, num_calibration_examples, seed=calibration_seed, data_dir=data_dir)
    return StudyData(x_test=x_test, y_test=np.asarray(y_test), x_train=x_train, y_train=y_train, x_cal=x_cal,
                     info=info)
