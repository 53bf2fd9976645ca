"""The Keras callbacks of :func:`tfquant.training.fit`: progress, TensorBoard, checkpoints, BN freeze.

* :class:`EpochLog` -- one flushed line per epoch (``tfquant.progress.write``: stdout, below
  any progress bar) and the per-epoch history (the epoch's logs, extra per-epoch values and
  its wall time). Extra values (the learning rate, QGT's grid residual and λ) are added to
  the epoch's logs, so callbacks after it (:class:`ScalarLog`) record them too.
* :class:`ScalarLog` -- per-epoch TensorBoard scalars, laid out as Keras's TensorBoard
  callback lays them out (``train/`` and ``validation/`` runs, ``epoch_<name>``, step = the
  0-based epoch), without the ``tensorboard`` package (not a dependency; reading the logs
  needs it).
* :func:`checkpoint` -- Keras's ``ModelCheckpoint`` saving the weights after every epoch.
* :class:`FreezeBatchNorm` -- batch-norm freeze after N optimizer steps (Krishnamoorthi 2018,
  arXiv 1806.08342, Sec. 3.2.2): plain BatchNormalization layers switch to their moving
  statistics, layers implementing :class:`BatchNormFreezable` get ``freeze_batch_norm()``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant import progress as _progress

Extra = Callable[[keras.Model], "float | None"]
"""A per-epoch value computed from the model (None: not applicable, nothing logged)."""

# How EpochLog shows a log entry: key -> (label, format). Entries print in this order;
# keys not listed are recorded but not printed.
_SHOWN: dict[str, tuple[str, str]] = {
    "loss": ("loss", ".4f"),
    "accuracy": ("acc", ".4f"),
    "val_loss": ("val_loss", ".4f"),
    "val_accuracy": ("val_acc", ".4f"),
    "learning_rate": ("lr", ".3g"),
    "grid_residual": ("ΣR", ".4f"),
    "qgt_lambda": ("λ", ".4g"),
}


def last_learning_rate(model: keras.Model) -> float:
    """The learning rate of the last step taken (tf-keras evaluates a schedule per step)."""
    optimizer = model.optimizer
    lr = optimizer.learning_rate  # the current value, for a schedule too
    if callable(lr):  # a legacy optimizer hands back the schedule itself
        return float(lr(tf.maximum(optimizer.iterations - 1, 0)))
    return float(lr)


class EpochLog(keras.callbacks.Callback):
    """Records every epoch's logs and wall time; prints one line per epoch when given ``log``.

    Line: ``[label] epoch e/E<detail> loss … acc … [val_loss … val_acc …] [extras] S.Ss``.

    Args:
        label: Name shown in brackets.
        epochs: Total epochs (for ``e/E``).
        log: Where lines go (default :func:`tfquant.progress.write`); None prints nothing.
        extras: ``{name: fn(model)}`` evaluated at each epoch's end and added to its logs.
        detail: Text after ``e/E`` (e.g. ``" (40 steps)"``).
    """

    def __init__(
        self,
        label: str,
        epochs: int,
        *,
        log: Callable[[str], None] | None = _progress.write,
        extras: Mapping[str, Extra] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__()
        self._label, self._epochs, self._log, self._detail = label, epochs, log, detail
        self._extras = dict(extras or {})
        self._start = 0.0
        self.history: list[dict[str, float]] = []
        """Per epoch: every log value as a float, plus ``seconds`` (rounded to 0.01 s)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        for name, fn in self._extras.items():
            value = fn(self.model)
            if value is not None:
                logs[name] = float(value)
        seconds = time.perf_counter() - self._start
        self.history.append({k: float(v) for k, v in logs.items()} | {"seconds": round(seconds, 2)})
        if self._log is None:
            return
        shown = " ".join(
            f"{label} {float(logs[key]):{fmt}}" for key, (label, fmt) in _SHOWN.items() if key in logs
        )
        self._log(
            f"[{self._label}] epoch {epoch + 1}/{self._epochs}{self._detail} {shown} {seconds:.1f}s"
        )

    def series(self, key: str) -> tuple[float, ...]:
        """The value of ``key`` after each epoch that logged it."""
        return tuple(h[key] for h in self.history if key in h)

    def last(self, key: str) -> float:
        """``key`` after the last epoch (NaN if it was not logged)."""
        return self.history[-1].get(key, math.nan) if self.history else math.nan


class ScalarLog(keras.callbacks.Callback):
    """Per-epoch TensorBoard scalars under ``log_dir`` without the ``tensorboard`` package.

    ``tf.summary.scalar`` lives in that package; ``tf.summary.write`` with the scalars
    plugin's metadata writes the same event records from TensorFlow alone. Logs named
    ``val_<x>`` go to the ``validation`` run as ``epoch_<x>``, the others to ``train``.

    Args:
        log_dir: Folder of the runs (created).
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        root = Path(log_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._writers = {
            run: tf.summary.create_file_writer(str(root / run)) for run in ("train", "validation")
        }
        self._metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class="DATA_CLASS_SCALAR",
        )

    def _write(self, run: str, values: dict[str, float], step: int) -> None:
        with self._writers[run].as_default():
            for name, value in values.items():
                tf.summary.write(
                    f"epoch_{name}", tf.constant(value, tf.float32), step=step, metadata=self._metadata
                )
        self._writers[run].flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        train = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        self._write("train", train, epoch)
        val = {k[len("val_"):]: float(v) for k, v in logs.items() if k.startswith("val_")}
        if val:
            self._write("validation", val, epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()


def checkpoint(pattern: str | os.PathLike[str]) -> keras.callbacks.ModelCheckpoint:
    """Saves the weights after every epoch to ``pattern.format(epoch=e)`` (e from 1).

    The format follows the name, as in Keras: ``.h5`` = HDF5, anything else = TensorFlow
    checkpoint (restore either with ``model.load_weights(path)``). The folder is created.
    """
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    return keras.callbacks.ModelCheckpoint(str(pattern), save_weights_only=True)


@runtime_checkable
class BatchNormFreezable(Protocol):
    """The hook a BN-folded training layer implements to be frozen by :class:`FreezeBatchNorm`.

    ``freeze_batch_norm()`` is called once: the layer should stop using batch statistics
    (whitepaper Sec. 3.2.2: drop the σ_B/σ correction, freeze the moving statistics, and fold
    them into the bias).
    """

    def freeze_batch_norm(self) -> None: ...


def batch_norm_layers(
    model: keras.Model,
) -> tuple[list[keras.layers.Layer], list[BatchNormFreezable]]:
    """Plain BN layers and BN-freezable layers of ``model``, looking inside tfmot wrappers."""
    plain, freezable = [], []
    for layer in model.layers:
        for candidate in (layer, getattr(layer, "layer", None)):
            if candidate is None:
                continue
            if isinstance(candidate, BatchNormFreezable):
                freezable.append(candidate)
            elif isinstance(candidate, keras.layers.BatchNormalization):
                plain.append(candidate)
    return plain, freezable


class FreezeBatchNorm(keras.callbacks.Callback):
    """Freezes BN statistics after ``step`` optimizer steps (re-tracing the train function).

    Plain BatchNormalization layers get ``trainable = False`` (in tf-keras a non-trainable BN
    runs on its moving statistics and stops training γ / β); :class:`BatchNormFreezable`
    layers get ``freeze_batch_norm()``. The freeze stays after training.

    Attributes:
        frozen_at: The step after which the freeze happened (None: not yet).
    """

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.frozen_at: int | None = None
        self._seen = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._seen += 1
        if self.frozen_at is not None or self._seen < self.step:
            return
        plain, freezable = batch_norm_layers(self.model)
        for layer in plain:
            layer.trainable = False
        for layer in freezable:
            layer.freeze_batch_norm()
        # fit() calls self.model.train_function every step: the rebuilt one takes effect next.
        self.model.train_function = self.model.make_train_function(force=True)
        self.frozen_at = self._seen
