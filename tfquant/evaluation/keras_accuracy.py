"""Top-1 accuracy of float Keras models in TensorFlow, one traced forward pass per model.

For studies that evaluate many Keras models (simulated, fine-tuned, or edited in place layer
by layer) on one test set: :class:`KerasAccuracy` traces ``model(x, training=False)`` once per
model with a batch dimension of None and reuses it, and :func:`quiet_retracing` drops
TensorFlow's retracing warning that this one-trace-per-model pattern otherwise triggers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras


class _DropRetracingWarnings(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing".

    TensorFlow counts traces per Python code location, so the one trace per model that
    :class:`KerasAccuracy` and Keras' ``predict`` do for every model reads to it like a
    retracing loop.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_retracing() -> Iterator[None]:
    """Within the block, TensorFlow's retracing warnings are not logged."""
    logger, drop = tf.get_logger(), _DropRetracingWarnings()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class KerasAccuracy:
    """Top-1 accuracy of float Keras models on one test set: ``mean_i [argmax model(x_i) == y_i]``.

    Each model's ``model(x, training=False)`` is traced once with a batch dimension of None
    and kept (with the model) until :meth:`clear`, so repeated calls on a model whose kernels
    are edited in place (e.g. :func:`tfquant.algorithms.bottleneck_report`) cost no retracing.

    Args:
      x: Inputs ``(N, ...)`` (float32).
      y: Integer labels ``(N,)``.
      batch_size: Examples per forward pass.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        self._x, self._y, self._batch_size = x, np.asarray(y).reshape(-1), batch_size
        self._forward: dict[int, tuple[keras.Model, Callable[[tf.Tensor], tf.Tensor]]] = {}

    def clear(self) -> None:
        """Forgets the traced models (call when they are no longer used)."""
        self._forward.clear()

    def __call__(self, model: keras.Model) -> float:
        entry = self._forward.get(id(model))
        if entry is None or entry[0] is not model:
            spec = tf.TensorSpec((None, *self._x.shape[1:]), tf.float32)
            entry = (model, tf.function(lambda b: model(b, training=False), input_signature=[spec]))
            self._forward[id(model)] = entry
        forward = entry[1]
        correct = 0
        for i in range(0, len(self._x), self._batch_size):
            logits = forward(tf.constant(self._x[i:i + self._batch_size]))
            correct += int(np.count_nonzero(np.argmax(logits, axis=-1) == self._y[i:i + self._batch_size]))
        return correct / len(self._x)
