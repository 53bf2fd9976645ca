"""Repeatable training: one seed for Python, NumPy and TensorFlow, and deterministic ops.

``keras.utils.set_random_seed(seed)`` seeds Python's ``random``, NumPy and TensorFlow's
global seed. Random ops created afterwards draw their op seeds from TensorFlow's counter, so
*where* a caller seeds matters: the zoo seeds before building the model (the initial weights
follow the seed), the QGT fine-tunes before cloning, QAT right before its fit. Every caller
does it through :func:`seed_everything`.

Multi-threaded CPU kernels are not bit-reproducible unless TensorFlow's deterministic op
implementations are on (:func:`deterministic_ops`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.errors import TfquantError
from tfquant.tflite.tf_internals import disable_op_determinism, is_op_determinism_enabled


def check_seed(seed: object) -> int:
    """Returns ``seed`` as an int.

    Raises:
        TfquantError: If ``seed`` is not an integer (bools are rejected).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TfquantError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0")
    return seed


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``).

    Raises:
        TfquantError: If ``seed`` is not an integer.
    """
    keras.utils.set_random_seed(check_seed(seed))


@contextlib.contextmanager
def deterministic_ops() -> Iterator[None]:
    """TensorFlow's deterministic op implementations for the duration (restored afterwards).

    TF has a public switch on but no public getter or switch off; those come from the
    boundary package (:mod:`tfquant.tflite.tf_internals`).
    """
    was = is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            disable_op_determinism()
