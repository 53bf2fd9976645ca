"""A text classifier with a GRU (token ids in, dynamic batch): the converter's TensorList
failure is one line whose fix works (found by the default-flags sweep, where the printed
hint was the generic "replace the op with TFLite builtin ops")."""

from __future__ import annotations

from pathlib import Path

import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.errors import TfquantError


def test_gru_with_dynamic_batch_names_the_fix_and_the_fix_converts(tmp_path: Path) -> None:
    import tf_keras as keras

    inp = keras.Input((6,), dtype="int32")
    h = keras.layers.GRU(4)(keras.layers.Embedding(20, 4)(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    out = tmp_path / "gru.tflite"
    with pytest.raises(TfquantError, match=r"recurrent layer .*batch_size=1") as info:
        tfquant.quantize(model, mode="fp32", out=out)
    assert "\n" not in str(info.value) and not out.exists()
    fixed_in = keras.Input((6,), batch_size=1, dtype="int32")  # what the message says to do
    result = tfquant.quantize(keras.Model(fixed_in, model(fixed_in)), mode="fp32", out=out)
    assert result.path == out and out.stat().st_size > 0
