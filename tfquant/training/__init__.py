"""One training loop (:func:`fit`) with its callbacks, for zoo training, QAT and QGT.

* :mod:`~tfquant.training.loop`: :func:`fit` (seeded shuffle, batches, epochs, Keras ``fit``),
  :func:`batches`, :class:`FitResult`, the cosine-decayed Adam and the cross-entropy loss
  the three trainers share.
* :mod:`~tfquant.training.callbacks`: :class:`EpochLog` (progress line + history),
  :class:`ScalarLog` (TensorBoard), :func:`checkpoint`, :class:`FreezeBatchNorm` and the
  :class:`BatchNormFreezable` hook.
* :mod:`~tfquant.training.seeding`: :func:`seed_everything`, :func:`deterministic_ops`.

Who uses it: :func:`tfquant.models.train.train` (the zoo), :func:`tfquant.qat.finetune`,
:func:`tfquant.algorithms.qgt_train.finetune_weights` (QGT and plain weight QAT).
"""

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)
from tfquant.training.callbacks import (
    BatchNormFreezable,
    EpochLog,
    FreezeBatchNorm,
    ScalarLog,
    batch_norm_layers,
    checkpoint,
    last_learning_rate,
)
from tfquant.training.loop import FitResult, batches, cosine_adam, fit, sparse_cross_entropy
from tfquant.training.seeding import check_seed, deterministic_ops, seed_everything

__all__ = [
    "BatchNormFreezable",
    "EpochLog",
    "FitResult",
    "FreezeBatchNorm",
    "ScalarLog",
    "batch_norm_layers",
    "batches",
    "check_seed",
    "checkpoint",
    "cosine_adam",
    "deterministic_ops",
    "fit",
    "last_learning_rate",
    "seed_everything",
    "sparse_cross_entropy",
]
