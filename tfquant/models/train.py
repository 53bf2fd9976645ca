"""Training of the zoo models on Fashion-MNIST, and saving weights + manifest entries.

Recipe (every model): the first 55,000 training images for training, the last 5,000 for
validation (monitoring only; no early stopping or checkpoint selection), the 10,000 test
images for the reported float accuracy. Softmax cross-entropy on logits; Adam (AdamW for
the ViT, with no decay on biases, norms and the position embedding) and a cosine learning
rate decay to 0 after an optional linear warm-up (Loshchilov & Hutter, 2017, SGDR).
Optional augmentation (``TrainConfig.augment``, off in every default: at these short
schedules it cost accuracy) flips images horizontally and shifts them by up to 2 pixels.
Training runs on the one loop, :func:`tfquant.training.fit`;
``tfquant.training.seed_everything(seed)`` (before the model is built) seeds Python, NumPy
and TF; multi-threaded CPU kernels are not bit-reproducible, so a rerun need not reproduce
the manifest's accuracy exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant import progress as _progress
from tfquant import training
from tfquant.data.fashion_mnist import load_fashion_mnist
from tfquant.errors import TfquantError
from tfquant.io_utils import atomic_path, write_json_atomic
from tfquant.models.zoo import (
    MANIFEST_NAME,
    WEIGHTS_DIR,
    ZOO,
    build_architecture,
    read_manifest,
    weights_path,
)
from tfquant.study.provenance import git_revision

VAL_EXAMPLES = 5000
TRAIN_EXAMPLES = 55_000
"""The zoo trains on the first 55,000 training images (the last :data:`VAL_EXAMPLES` validate)."""
_MAX_SHIFT = 2  # pixels of random translation


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        epochs: Passes over the training images.
        batch_size: Images per step.
        learning_rate: Peak learning rate of the cosine schedule.
        warmup_epochs: Linear warm-up from 0 to ``learning_rate`` (0 = none).
        weight_decay: Decoupled weight decay (AdamW) if > 0, else plain Adam.
        augment: Random horizontal flip + up to 2-pixel translation.
    """

    epochs: int
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    augment: bool = False


DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    "cnn": TrainConfig(epochs=8, learning_rate=2e-3),
    "mobilenet_v1": TrainConfig(epochs=8, learning_rate=3e-3),
    "mobilenet_v2": TrainConfig(epochs=6, learning_rate=3e-3),
    "resnet": TrainConfig(epochs=8, learning_rate=3e-3),
    "vit": TrainConfig(
        epochs=10, batch_size=256, learning_rate=2e-3, warmup_epochs=1.0, weight_decay=0.05
    ),
}


@dataclass(frozen=True)
class TrainInfo:
    """What a training run produced; written as the model's manifest entry.

    Attributes:
        name: Zoo model name.
        test_accuracy: Float top-1 accuracy on ``test_examples`` test images.
        val_accuracy: Top-1 accuracy on the validation images after the last epoch.
        epochs: Epochs trained.
        batch_size: Images per step.
        learning_rate: Peak learning rate.
        warmup_epochs: Linear warm-up length.
        weight_decay: AdamW decay (0 = Adam).
        augment: Whether flip/translation augmentation was used.
        params: Number of model parameters (trainable and not).
        train_seconds: Wall time of ``fit`` (excludes data loading and test evaluation).
        epoch_seconds: Wall time of each epoch.
        val_accuracy_per_epoch: Validation accuracy after each epoch.
        seed: Random seed.
        train_examples: Training images used.
        val_examples: Validation images (taken from the end of the training split).
        test_examples: Test images evaluated (10,000 = the whole test split).
        tf_version: ``tf.__version__``.
        keras_version: ``tf_keras.__version__``.
        git_revision: ``git rev-parse HEAD`` of the repository (``+dirty`` with local
            changes), if available.
    """

    name: str
    test_accuracy: float
    val_accuracy: float
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_epochs: float
    weight_decay: float
    augment: bool
    params: int
    train_seconds: float
    epoch_seconds: tuple[float, ...]
    val_accuracy_per_epoch: tuple[float, ...]
    seed: int
    train_examples: int
    val_examples: int
    test_examples: int
    tf_version: str
    keras_version: str
    git_revision: str | None

    def as_dict(self) -> dict[str, Any]:
        """Returns the info as JSON-ready plain types."""
        out = dataclasses.asdict(self)
        out["epoch_seconds"] = list(self.epoch_seconds)
        out["val_accuracy_per_epoch"] = list(self.val_accuracy_per_epoch)
        return out


def _augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Random flip and integer translation of a batch (NHWC), zero padded."""
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    flip = tf.random.uniform([batch, 1, 1, 1]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [_MAX_SHIFT] * 2, [_MAX_SHIFT] * 2, [0, 0]])
    offsets = tf.cast(
        tf.random.uniform([batch, 2], 0, 2 * _MAX_SHIFT + 1, dtype=tf.int32), tf.float32
    )
    # Normalised boxes whose corners land on integer pixels of the padded image, so
    # crop_and_resize samples exactly (no interpolation): an integer shift of the image.
    span_h, span_w = float(height + 2 * _MAX_SHIFT - 1), float(width + 2 * _MAX_SHIFT - 1)
    boxes = tf.stack(
        [
            offsets[:, 0] / span_h,
            offsets[:, 1] / span_w,
            (offsets[:, 0] + height - 1) / span_h,
            (offsets[:, 1] + width - 1) / span_w,
        ],
        axis=1,
    )
    images = tf.image.crop_and_resize(
        padded, boxes, tf.range(batch), [height, width], method="nearest"
    )
    return images, labels


def _make_optimizer(
    config: TrainConfig, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    if warmup > 0:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, warmup_target=config.learning_rate, warmup_steps=warmup
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    if config.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=config.weight_decay
        )
        optimizer.exclude_from_weight_decay(
            var_names=["bias", "gamma", "beta", "embedding"]
        )
        return optimizer
    return keras.optimizers.Adam(learning_rate=schedule)


def parse_model_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validates a list of zoo model names (e.g. from ``--models``), dropping repeats.

    Raises:
        TfquantError: If the list is empty or holds a name that is not in the zoo.
    """
    cleaned = [n.strip() for n in names if n.strip()]
    if not cleaned:
        raise TfquantError(f"--models is empty; pass a comma list from: {','.join(ZOO)}")
    unknown = [n for n in cleaned if n not in ZOO]
    if unknown:
        raise TfquantError(f"--models has unknown names {unknown}; choose from: {','.join(ZOO)}")
    return tuple(dict.fromkeys(cleaned))


def _positive(value: int, what: str) -> int:
    if int(value) < 1:
        raise TfquantError(f"{what} must be a positive integer, got {value}")
    return int(value)


def train(
    name: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    train_examples: int | None = None,
    val_examples: int = VAL_EXAMPLES,
    test_examples: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    verbose: bool = True,
) -> tuple[keras.Model, TrainInfo]:
    """Trains zoo model ``name`` from scratch on Fashion-MNIST and measures test accuracy.

    Args:
        name: A name in :data:`~tfquant.models.ZOO`.
        epochs: Epochs; defaults to :data:`DEFAULT_CONFIGS` for the model.
        batch_size: Batch size; defaults to :data:`DEFAULT_CONFIGS` for the model.
        seed: Seed for ``keras.utils.set_random_seed``.
        train_examples: Use only the first N of the 55,000 training images (smoke runs).
        val_examples: Validation images, taken from the end of the 60,000 training images.
        test_examples: Evaluate only the first N test images (default: all 10,000).
        data_dir: Directory of the Fashion-MNIST IDX files (see ``load_fashion_mnist``).
        verbose: Print one line per epoch.

    Returns:
        ``(model, info)``: the trained Keras model (logits out) and its :class:`TrainInfo`.

    Raises:
        TfquantError: For an unknown model name or non-positive sizes.
    """
    if name not in ZOO:
        raise TfquantError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    base = DEFAULT_CONFIGS[name]
    config = dataclasses.replace(
        base,
        epochs=_positive(epochs if epochs is not None else base.epochs, "epochs"),
        batch_size=_positive(
            batch_size if batch_size is not None else base.batch_size, "batch_size"
        ),
    )
    x_all, y_all = load_fashion_mnist("train", data_dir=data_dir)
    x_test, y_test = load_fashion_mnist("test", data_dir=data_dir)
    val_examples = _positive(val_examples, "val_examples")
    if val_examples >= len(x_all):
        raise TfquantError(
            f"val_examples={val_examples} leaves no training images out of {len(x_all)}; "
            "use a smaller value"
        )
    n_train_max = len(x_all) - val_examples
    n_train = n_train_max if train_examples is None else _positive(train_examples, "train_examples")
    if n_train > n_train_max:
        raise TfquantError(
            f"train_examples={n_train} exceeds the {n_train_max} images left after "
            f"validation; use at most {n_train_max}"
        )
    n_test = len(x_test) if test_examples is None else _positive(test_examples, "test_examples")
    n_test = min(n_test, len(x_test))
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    x_val, y_val = x_all[-val_examples:], y_all[-val_examples:]
    x_test, y_test = x_test[:n_test], y_test[:n_test]

    keras.backend.clear_session()
    training.seed_everything(seed)  # before building: the initial weights follow the seed
    model = build_architecture(name)
    steps_per_epoch = -(-n_train // config.batch_size)
    log = _progress.write if verbose else None
    if log:
        log(
            f"[{name}] {model.count_params()} params, {n_train} train / {val_examples} val "
            f"images, {config}"
        )
    result = training.fit(
        model, x_train, y_train,
        epochs=config.epochs, batch_size=config.batch_size, seed=seed, reseed=False,
        optimizer=_make_optimizer(config, steps_per_epoch),
        loss=training.sparse_cross_entropy(from_logits=True),
        progress=training.EpochLog(name, config.epochs, log=log),
        augment=_augment if config.augment else None,
        validation_data=(x_val, y_val), validation_batch_size=500,
    )
    train_seconds = result.seconds
    val_accuracy = [h.get("val_accuracy", float("nan")) for h in result.history]
    test_accuracy = evaluate_accuracy(model, x_test, y_test)
    if log:
        log(
            f"[{name}] test accuracy {test_accuracy:.4f} on {n_test} images, "
            f"trained in {train_seconds:.0f}s"
        )
    info = TrainInfo(
        name=name,
        test_accuracy=test_accuracy,
        val_accuracy=val_accuracy[-1],
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_epochs=config.warmup_epochs,
        weight_decay=config.weight_decay,
        augment=config.augment,
        params=int(model.count_params()),
        train_seconds=round(train_seconds, 1),
        epoch_seconds=tuple(round(h["seconds"], 1) for h in result.history),
        val_accuracy_per_epoch=tuple(round(a, 4) for a in val_accuracy),
        seed=int(seed),
        train_examples=n_train,
        val_examples=val_examples,
        test_examples=n_test,
        tf_version=tf.__version__,
        keras_version=keras.__version__,
        git_revision=git_revision(),
    )
    return model, info


def evaluate_accuracy(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500
) -> float:
    """Returns top-1 accuracy of a logits model: mean(argmax(model(x)) == y).

    Args:
        model: A Keras model whose output is (batch, classes) logits or probabilities.
        images: Inputs, shape (N, ...) matching the model.
        labels: Integer labels, shape (N,).
        batch_size: Inference batch size.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise TfquantError(
            f"need the same non-zero number of images and labels, got {len(images)} and "
            f"{len(labels)}"
        )
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Holds an exclusive flock on ``directory`` so concurrent runs update the manifest in turn."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_trained(
    model: keras.Model,
    info: TrainInfo,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes ``<out_dir>/<name>.weights.h5`` and the model's entry in ``manifest.json``.

    Both writes are atomic; the manifest update (read, replace this model's entry, write)
    holds a lock on ``out_dir`` so concurrent training runs keep each other's entries.

    Args:
        model: The trained model.
        info: Its :class:`TrainInfo`.
        out_dir: Destination directory; defaults to the committed weights directory.
        extra: More JSON-ready keys for the manifest entry (e.g. the command line).

    Returns:
        The path of the weights file.
    """
    directory = Path(out_dir or WEIGHTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    target = weights_path(info.name, weights_dir=directory)
    with atomic_path(target) as tmp:
        model.save_weights(str(tmp), save_format="h5")
    entry = info.as_dict()
    entry.update(extra or {})
    entry["weights_file"] = target.name
    entry["weights_sha256"] = _sha256(target)
    entry["weights_bytes"] = target.stat().st_size
    with _locked(directory):
        manifest = read_manifest(directory)
        manifest[info.name] = entry
        write_json_atomic(directory / MANIFEST_NAME, manifest)
    return target


def command_line() -> str:
    """Returns the current process's command line, for provenance."""
    return " ".join([Path(sys.executable).name, *sys.argv])
