"""Float-input recurrent models in int8 / int16x8 (found after the default-flags sweep).

TensorFlow 2.21's calibrator kills the process (segmentation fault in ``_feed_tensors``) on the
WHILE loop of a GRU / SimpleRNN with a fixed batch; such a model is refused with one line
before the converter runs, and the fixes the line names (``unroll=True``, LSTM, dynamic mode)
convert.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.convert.options import looped_recurrent_layers
from tfquant.errors import TfquantError


def _model(layer_fn):
    import tf_keras as keras

    inp = keras.Input((5, 3), batch_size=1)
    return keras.Model(inp, keras.layers.Dense(2)(layer_fn(keras)(inp)))


def _data(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 5, 3)).astype(np.float32)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_a_looped_gru_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path, mode: str) -> None:
    model = _model(lambda k: k.layers.GRU(4, name="gru_a"))
    out = tmp_path / "m.tflite"
    with pytest.raises(TfquantError, match=r"'gru_a'.*WHILE.*unroll=True") as info:
        tfquant.quantize(model, mode=mode, calibration_data=_data(), out=out)
    assert "\n" not in str(info.value) and not out.exists()


def test_which_recurrent_layers_loop() -> None:
    looped = _model(lambda k: k.layers.Bidirectional(k.layers.SimpleRNN(3, name="srnn")))
    assert any("srnn" in name for name in looped_recurrent_layers(looped))
    assert looped_recurrent_layers(_model(lambda k: k.layers.LSTM(3))) == []
    assert looped_recurrent_layers(_model(lambda k: k.layers.GRU(3, unroll=True))) == []


def test_the_named_fixes_convert(tmp_path: Path) -> None:
    unrolled = _model(lambda k: k.layers.GRU(4, unroll=True))
    tflite = tfquant.quantize(unrolled, mode="int8", calibration_data=_data(), out=tmp_path / "u.tflite")
    assert (tmp_path / "u.tflite").stat().st_size > 0 and tflite is not None
    looped = _model(lambda k: k.layers.GRU(4))
    tfquant.quantize(looped, mode="dynamic", out=tmp_path / "d.tflite")
    assert (tmp_path / "d.tflite").stat().st_size > 0


def _savedmodel(root: Path, kind: str) -> Path:
    """A SavedModel that Keras did not write (``tf.saved_model.save``), so no Keras layers
    to read: a GRU, an LSTM, a tf.while_loop over a TensorArray, or a plain tf.while_loop."""
    import tensorflow as tf
    import tf_keras as keras

    path = root / kind
    if kind in ("gru", "lstm"):
        layer = keras.layers.GRU(4) if kind == "gru" else keras.layers.LSTM(4)
        tf.saved_model.save(_model(lambda k: layer), str(path))
        return path

    class Loop(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 5, 3], tf.float32)])
        def __call__(self, x):
            if kind == "tensorarray":
                ta = tf.TensorArray(tf.float32, size=5)
                _, ta = tf.while_loop(lambda i, ta: i < 5, lambda i, ta: (i + 1, ta.write(i, x[:, i, :] * 2.0)),
                                      [tf.constant(0), ta])
                return {"y": tf.reduce_sum(ta.stack(), axis=0)}
            _, y = tf.while_loop(lambda i, y: i < 5, lambda i, y: (i + 1, tf.nn.relu(y * 0.9 + 0.1)),
                                 [tf.constant(0), x[:, 0, :]])
            return {"y": y}

    module = Loop()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def _convert(path: Path, mode: str, out: Path):
    from tests.outside_zoo.helpers import cli

    data = out.parent / "calib.npz"
    np.savez(data, x=_data(7))
    return cli("convert", "--model", str(path), "--mode", mode, "--calibration_data", f"npz:{data}",
               "--out", str(out))


@pytest.mark.parametrize("kind", ["gru", "tensorarray"])
def test_a_savedmodel_loop_over_tensorlists_is_refused(tmp_path: Path, kind: str) -> None:
    """Before the check, converting these crashed the process (exit 139, measured)."""
    from tests.outside_zoo.helpers import one_line_error
    from tfquant.convert.source import load_source

    path = _savedmodel(tmp_path, kind)
    source = load_source(path)
    assert source.keras_model is None and source.tensorlist_loops
    out = tmp_path / "m.tflite"
    err = one_line_error(_convert(path, "int8", out))
    assert "WHILE loop" in err and "TensorLists" in err and "unroll=True" in err and "dynamic" in err, err
    assert not out.exists()
    run = _convert(path, "dynamic", tmp_path / "d.tflite")  # the named fix
    assert run.rc == 0 and (tmp_path / "d.tflite").stat().st_size > 0, run.explain()


@pytest.mark.parametrize("kind", ["lstm", "plain_loop"])
def test_savedmodel_loops_that_calibrate_are_not_refused(tmp_path: Path, kind: str) -> None:
    from tfquant.convert.source import load_source

    path = _savedmodel(tmp_path, kind)
    assert load_source(path).tensorlist_loops == ()
    run = _convert(path, "int8", tmp_path / "q.tflite")
    assert run.rc == 0 and (tmp_path / "q.tflite").stat().st_size > 0, run.explain()
