"""delegated_op_count: how many ops XNNPACK takes, rebuilt from LiteRT's delegate nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.conftest import TinyModels, convert_keras
from tfquant.evaluation import delegated_op_count, inspect_model


@pytest.mark.parametrize("model", ["fp32", "int8", "int8_io"])
def test_xnnpack_takes_all_ops_and_builtin_none(tiny: TinyModels, model: str) -> None:
    path = getattr(tiny, model)
    total = inspect_model(path).num_ops
    assert delegated_op_count(path, runtime="xnnpack") == (total, total)
    assert delegated_op_count(path, runtime="builtin") == (0, total)
    assert total > 0


def test_unsupported_op_splits_the_graph(tmp_path: Path) -> None:
    import tensorflow as tf

    keras = tf.keras
    inp = keras.layers.Input((16,))
    h = keras.layers.Dense(12)(inp)
    h = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(h)  # no XNNPACK kernel
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    path = convert_keras(model, tmp_path / "cumsum.tflite")
    assert inspect_model(path).ops == ("FULLY_CONNECTED", "CUMSUM", "FULLY_CONNECTED")
    # Two partitions of one FULLY_CONNECTED each; CUMSUM stays on the builtin kernels.
    assert delegated_op_count(path) == (2, 3)
    assert delegated_op_count(path, runtime="builtin", num_threads=2) == (0, 3)
