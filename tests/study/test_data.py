"""The arrays a study loads: test prefix, training prefix (copies), calibration draw."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import data
from tfquant.errors import TfquantError
from tfquant.study.data import load_study_data


def test_load_study_data_gives_prefixes_and_the_seeded_draw() -> None:
    d = load_study_data("fashion_mnist", limit=20, train_examples=30, num_calibration_examples=8, calibration_seed=1)
    x_test, y_test, _ = data.load_numpy("fashion_mnist", "test", limit=20)
    x_train, _, _ = data.load_numpy("fashion_mnist", "train", limit=30)
    assert np.array_equal(d.x_test, x_test) and np.array_equal(d.y_test, y_test)
    assert np.array_equal(d.x_train, x_train) and d.x_train.flags.writeable and len(d.y_train) == 30
    assert np.array_equal(d.x_cal, data.calibration_set("fashion_mnist", 8, seed=1))
    bare = load_study_data("fashion_mnist", limit=5)
    assert bare.x_train is None and bare.y_train is None and bare.x_cal is None and len(bare.x_test) == 5


def test_more_training_images_than_the_split_has_is_refused() -> None:
    with pytest.raises(TfquantError, match="training images, fewer than the 10000000 to fine-tune on"):
        load_study_data("fashion_mnist", limit=5, train_examples=10_000_000)
