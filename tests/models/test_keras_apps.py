"""keras.applications builders: offline construction and local weights files.

ResNet50 and InceptionV3 take 10-16 s each for the weights round trip; the whole suite
stays within its budget with them, so they run every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

from tfquant.errors import TfquantError
from tfquant.models import KERAS_APPS, build

# The smallest input each application accepts keeps these tests fast.
_SHAPES = {
    "keras_mobilenet": (32, 32, 3),
    "keras_mobilenet_v2": (32, 32, 3),
    "keras_resnet50": (32, 32, 3),
    "keras_inception_v3": (75, 75, 3),
}


def _inputs(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(2, *shape)).astype(np.float32)


def test_all_apps_have_a_test_shape() -> None:
    assert set(_SHAPES) == set(KERAS_APPS)


@pytest.mark.parametrize("name", sorted(_SHAPES))
def test_weights_round_trip(name: str, tmp_path: Path) -> None:
    shape = _SHAPES[name]
    model = build(name, weights=None, input_shape=shape, num_classes=10)
    x = _inputs(shape)
    out = model(x, training=False).numpy()
    assert out.shape == (2, 10)
    # Logits, not probabilities: a softmax head would make every row sum to 1.
    assert not np.allclose(out.sum(axis=1), 1.0)
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(str(path))
    again = build(name, weights=path, input_shape=shape, num_classes=10)
    np.testing.assert_array_equal(again(x, training=False).numpy(), out)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="not found"):
        build("keras_mobilenet", weights=str(tmp_path / "nope.h5"), input_shape=(32, 32, 3))


def test_apps_have_no_committed_weights() -> None:
    with pytest.raises(TfquantError, match="no committed weights"):
        build("keras_resnet50")


def test_bad_shape_or_classes() -> None:
    with pytest.raises(TfquantError, match=">= 75"):
        build("keras_inception_v3", weights=None, input_shape=(64, 64, 3))
    with pytest.raises(TfquantError, match="num_classes must be >= 1"):
        build("keras_mobilenet", weights=None, input_shape=(32, 32, 3), num_classes=0)
