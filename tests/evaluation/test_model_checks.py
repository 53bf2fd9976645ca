"""Models the evaluator cannot run as classifiers, and interpreter failures, give TfquantError."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels
from tfquant.errors import TfquantError
from tfquant.evaluation import (
    evaluate_accuracy,
    inspect_model,
    load_interpreter,
    measure_latency,
    predict,
)


def _from_function(fn, *specs, allow_custom_ops: bool = False) -> bytes:
    import tensorflow as tf

    concrete = tf.function(fn, input_signature=list(specs)).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.allow_custom_ops = allow_custom_ops
    return converter.convert()


def test_unresolved_custom_op_fails_at_load() -> None:
    import tensorflow as tf

    model = _from_function(tf.math.bessel_i0e, tf.TensorSpec([None, 4], tf.float32), allow_custom_ops=True)
    assert inspect_model(model).ops == ("BesselI0e",)  # inspect does not need to prepare ops
    with pytest.raises(TfquantError, match=r"LiteRT cannot prepare .*unresolved custom op: BesselI0e.*builtin ops only"):
        load_interpreter(model)


def test_scalar_input() -> None:
    import tensorflow as tf

    model = _from_function(lambda t: t * 2.0, tf.TensorSpec([], tf.float32))
    with pytest.raises(TfquantError, match="scalar input.*re-export"):
        predict(model, np.zeros(3, np.float32))


def test_integer_non_quantized_input_gets_rounded_ids_and_integer_output_is_refused() -> None:
    import tensorflow as tf

    model = _from_function(lambda t: tf.cast(t, tf.float32) * 2.0, tf.TensorSpec([None, 3], tf.int32))
    ids = np.array([[1.0, 2.2, 2.8], [0.0, 5.0, 7.0]], np.float32)  # token ids stored as floats
    np.testing.assert_array_equal(predict(model, ids), 2.0 * np.rint(ids))
    model = _from_function(lambda t: tf.cast(t * 2.0, tf.int32), tf.TensorSpec([None, 3], tf.float32))
    with pytest.raises(TfquantError, match=r"output .* has dtype int32.*float32/float16, quantized int8/uint8/int16"):
        predict(model, np.zeros((2, 3), np.float32))


def test_two_outputs() -> None:
    import tensorflow as tf

    model = _from_function(lambda t: (t * 2.0, t + 1.0), tf.TensorSpec([None, 3], tf.float32))
    with pytest.raises(TfquantError, match=r"1 input\(s\) and 2 output\(s\).*exactly one input and one output"):
        evaluate_accuracy(model, np.zeros((2, 3), np.float32), np.zeros(2, np.int64))


def test_dynamic_spatial_input_needs_a_latency_sample() -> None:
    import tensorflow as tf

    def classifier(t):
        return tf.reduce_mean(t, axis=[1, 2]) * tf.ones([1, 3])

    model = _from_function(classifier, tf.TensorSpec([None, None, None, 1], tf.float32))
    with pytest.raises(TfquantError, match=r"dynamic input shape.*pass sample="):
        measure_latency(model, runs=1, warmup=0)
    assert measure_latency(model, runs=2, warmup=0, sample=np.ones((5, 7, 1), np.float32)).runs == 2
    # Any spatial size is accepted where the model declares -1.
    logits = predict(model, np.full((2, 5, 7, 1), 2.0, np.float32))
    np.testing.assert_allclose(logits, np.full((2, 3), 2.0))


def test_invoke_failure_is_reported(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = load_interpreter(tiny.fp32)

    def failing_invoke() -> None:
        raise RuntimeError("Node number 3 (FOO) failed to invoke.")

    monkeypatch.setattr(interpreter, "invoke", failing_invoke)
    with pytest.raises(TfquantError, match=r"LiteRT failed to run the model \(Node number 3 .FOO. failed to invoke.\)"):
        predict(interpreter, tiny.x[:2])


def test_model_that_refuses_every_allocation(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = load_interpreter(tiny.fp32)

    def failing_allocate() -> None:
        raise RuntimeError("delegate refused")

    monkeypatch.setattr(interpreter, "allocate_tensors", failing_allocate)
    with pytest.raises(TfquantError, match=r"cannot prepare the given interpreter \(delegate refused\)"):
        evaluate_accuracy(interpreter, tiny.x[:8], tiny.y[:8], batch_size=8)


def test_model_that_refuses_every_resize(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = load_interpreter(tiny.fp32)

    def failing_resize(*args, **kwargs) -> None:
        raise ValueError("delegate refused")

    monkeypatch.setattr(interpreter, "resize_tensor_input", failing_resize)
    with pytest.raises(TfquantError, match=r"cannot run at its own batch size 1 .*batch 8 refused \(delegate refused\)"):
        evaluate_accuracy(interpreter, tiny.x[:8], tiny.y[:8], batch_size=8)


def test_report_tensor_lookup(tiny: TinyModels) -> None:
    report = inspect_model(tiny.int8_io)
    assert report.tensor(report.inputs[0].name) == report.inputs[0]
    with pytest.raises(TfquantError, match="no tensor named 'nope'"):
        report.tensor("nope")
