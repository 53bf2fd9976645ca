"""A Keras model as a source of the statistics pass: its chosen tensors, batch by batch.

:func:`keras_batches` runs a probe model (the model's inputs -> the tensors to observe) over
the calibration inputs; :func:`keras_min_max` is the pass with a :class:`MinMax` observer per
tensor, the "max" calibration that the simulation's activation ranges and QAT's initial
ranges use (as the TFLite converter's own calibrator: running [min, max] over every batch).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.calibration.observe import MinMax, statistics_pass


def keras_batches(
    model: keras.Model, tensors: Sequence[Any], x: np.ndarray, *, batch_size: int, compiled: bool
) -> Iterator[list[np.ndarray]]:
    """Per batch of ``x``, the values of ``tensors`` (KerasTensors of ``model``) as arrays.

    Args:
      model: A functional Keras model with one input.
      tensors: The tensors to observe.
      x: Inputs (N, ...), N >= 1; batches of ``batch_size`` in order, the last one smaller.
      batch_size: Examples per forward pass.
      compiled: Run the probe as one ``tf.function`` (faster; graph optimisations such as
        fused conv + bias + activation kernels can change the last bits of the values) or
        eagerly, layer by layer. The simulation uses compiled passes and QAT range
        initialisation eager ones, each as it always has, so their ranges stay bit-identical.
    """
    probe = keras.Model(model.inputs, list(tensors))
    if compiled:
        run = tf.function(lambda b: probe(b, training=False), reduce_retracing=True)
    else:
        run = lambda b: probe(b, training=False)  # noqa: E731
    for start in range(0, len(x), batch_size):
        outs = run(tf.constant(x[start : start + batch_size]))
        yield [np.asarray(o) for o in tf.nest.flatten(outs)]


def keras_min_max(
    model: keras.Model,
    tensors: Sequence[Any],
    x: np.ndarray,
    *,
    batch_size: int,
    compiled: bool,
    per_channel: bool = False,
) -> list[MinMax]:
    """[min, max] of each of ``tensors`` over ``x``: one statistics pass (see :func:`keras_batches`).

    Args:
      per_channel: One range per channel of the last axis instead of one per tensor.

    Returns:
      One :class:`MinMax` per tensor, in order.
    """
    observers = [MinMax(per_channel=per_channel) for _ in tensors]
    statistics_pass(keras_batches(model, tensors, x, batch_size=batch_size, compiled=compiled), observers)
    return observers
