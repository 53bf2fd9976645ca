"""Preprocessed arrays from an .npz file (``npz:PATH``).

Layout: arrays ``x`` (the model's input, one row per example: float NHWC images scaled to
[0, 1], or any float ``(N, ...)`` array for a model whose input is not an image, e.g. ``(N,
20)`` tabular features or ``(N, 128, 40)`` spectrograms; the input contract, if any, is
applied on top) and ``y`` (integer class labels) serve every split; ``x_<split>`` /
``y_<split>`` (e.g. ``x_train``, ``y_test``) take precedence for that split. Write one with::

    np.savez("data.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)

Labels are optional where none are needed: calibration reads an npz holding only ``x``
(``labels_required=False``) and ignores any ``y`` (so a regression target of float values
does not stop it); evaluation and training need integer ``y`` and say so.

The number of classes is ``1 + max label`` over every ``y*`` array in the file, so all
splits agree on it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from tfquant.data.preprocess import check_finite
from tfquant.errors import TfquantError

_SAVE_HINT = "save it with np.savez(PATH, x=images_float32_nhwc, y=int_labels)"


@dataclasses.dataclass(frozen=True)
class NpzSplit:
    """One validated split of an .npz file.

    Attributes:
      x: float32 (N, ...): NHWC images, or a non-image model's input.
      y: int64 (N,), or None for an unlabelled file read with ``labels_required=False``.
      num_classes: ``1 + max label`` over all label arrays in the file (0 without labels).
    """

    x: np.ndarray
    y: np.ndarray | None
    num_classes: int


def load_npz(
    path: str | os.PathLike[str], split: str, *, labels_required: bool = True, targets: bool = False
) -> NpzSplit:
    """Reads and validates ``split`` of an .npz file.

    Args:
      path: the .npz file.
      split: ``train``, ``test``, ...: ``x_<split>`` if present, else ``x``.
      labels_required: False (calibration) reads ``x`` only: ``y`` is then None, whatever
        label arrays the file holds.
      targets: ``y`` may also be float regression targets of any shape ``(N, ...)`` (the
        evaluation of a model whose output is not class scores); integer labels are checked
        as usual.

    Raises:
      TfquantError: the file is missing or unreadable, a key is missing, ``x`` is not float
        of rank >= 2, ``x`` and ``y`` differ in length, ``y`` is not 1-D non-negative integers, or
        ``x`` holds NaN/Inf.
    """
    p = Path(path)
    where = f"npz:{p}"
    if not p.is_file():
        raise TfquantError(f"{where}: file does not exist; {_SAVE_HINT}")
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = sorted(f.files)
            x_key, y_key = _keys_for(keys, split, where, labels_required=labels_required)
            if not labels_required:
                y_key = None  # calibration needs no labels: do not read or check them
            x = f[x_key]
            y = f[y_key] if y_key is not None else None
            labels = [f[k] for k in keys if k == "y" or k.startswith("y_")]
    except TfquantError:
        raise
    except Exception as e:  # noqa: BLE001  an untrusted file: any failure to read it is "cannot read"
        if isinstance(e, MemoryError):
            raise TfquantError(f"{where}: an array in the file is too large to load; {_SAVE_HINT}") from None
        raise TfquantError(
            f"{where}: cannot read the file ({_first_line(e)}); {_SAVE_HINT}"
        ) from None
    if y_key is None:
        where = f"{where} split {split!r} ({x_key}, no labels)"
        x = _check_x(x, where)
        check_finite(x, where)
        return NpzSplit(x=x, y=None, num_classes=0)
    where = f"{where} split {split!r} ({x_key}, {y_key})"
    x = _check_x(x, where)
    if targets and y.dtype.kind == "f" and y.ndim >= 1:
        check_finite(y, f"{where} targets")
        y = y.astype(np.float32, copy=False)
    else:
        y = _check_y(y, where, y_key)
    if len(x) != len(y):
        raise TfquantError(
            f"{where}: {x_key} has {len(x)} examples but {y_key} has {len(y)}; "
            "save one label per input"
        )
    check_finite(x, where)
    top = max((int(a.max()) for a in labels if a.size and a.dtype.kind in "iu"), default=0)
    return NpzSplit(x=x, y=y, num_classes=top + 1)


def _keys_for(
    keys: list[str], split: str, where: str, *, labels_required: bool = True
) -> tuple[str, str | None]:
    """The (x, y) key pair serving ``split``: ``x_<split>``/``y_<split>``, else ``x``/``y``.

    Without ``labels_required`` an ``x`` key alone serves, with ``None`` for ``y``.
    """
    for pair in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        present = [k for k in pair if k in keys]
        if len(present) == 2:
            return pair
        if present == [pair[0]] and not labels_required:
            return pair[0], None
        if present == [pair[0]]:
            raise TfquantError(
                f"{where} has {pair[0]!r} but no labels {pair[1]!r} (arrays: {keys}); "
                f"evaluation and training need integer labels: save them with "
                f"np.savez(PATH, {pair[0]}=..., {pair[1]}=labels) (calibration alone needs none)"
            )
        if present:
            missing = next(k for k in pair if k not in keys)
            raise TfquantError(
                f"{where} has {present[0]!r} but no {missing!r} (arrays: {keys}); "
                f"save both, e.g. np.savez(PATH, {pair[0]}=..., {pair[1]}=...)"
            )
    raise TfquantError(
        f"{where} has arrays {keys} but split {split!r} needs 'x_{split}' and 'y_{split}' "
        "or 'x' and 'y'; " + _SAVE_HINT
    )


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim < 2:
        raise TfquantError(
            f"{where}: x has shape {x.shape}, expected one model input per row: (N, H, W, C) "
            "images, or (N, ...) for other inputs; use x.reshape(N, 1) for one feature per example"
        )
    if x.dtype.kind in "iu" and x.dtype.itemsize >= 2 and x.ndim == 2:  # (N, T) token ids
        # (integer images, rank 4, stay refused: raw pixels given to a model that expects
        # [0, 1] would calibrate silently on the wrong scale)
        if x.size and max(abs(int(x.min())), abs(int(x.max()))) >= 1 << 24:
            raise TfquantError(
                f"{where}: x holds integers up to {max(abs(int(x.min())), abs(int(x.max())))}, beyond "
                "float32's exact range (2^24); pass smaller ids or float32 inputs"
            )
        return x.astype(np.float32)  # exact; fed back as the model's integer type
    if x.dtype.kind != "f":
        raise TfquantError(
            f"{where}: x has dtype {x.dtype}, expected preprocessed float32 (or integer token ids shaped (N, T)); "
            "convert it, e.g. x.astype(np.float32) / 255 for uint8 pixels"
        )
    return x.astype(np.float32, copy=False)


def _check_y(y: np.ndarray, where: str, key: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise TfquantError(
            f"{where}: {key} has dtype {y.dtype}, expected integer class labels; "
            "cast with y.astype(np.int64) (or y.argmax(-1) for one-hot labels)"
        )
    if y.ndim != 1:
        raise TfquantError(
            f"{where}: {key} has shape {y.shape}, expected 1-D labels (N,); use y.reshape(-1)"
        )
    if y.size and y.min() < 0:
        raise TfquantError(
            f"{where}: {key} holds negative labels (min {y.min()}); "
            "labels must be 0..num_classes-1"
        )
    return y.astype(np.int64, copy=False)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
