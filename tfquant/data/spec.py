"""Dataset spec strings: the text users type as ``--dataset`` / ``--calibration_data``.

Allowed forms::

    fashion_mnist                    local IDX files (Debian package dataset-fashion-mnist)
    tfds:NAME[/CONFIG][:VERSION]     a prepared TensorFlow Datasets dataset, e.g. tfds:cifar10
    tfds:NAME:CONFIG                 same as tfds:NAME/CONFIG (a part after ':' that is not a
                                     version such as 3.0.2 or 3.*.* is read as the config)
    npz:PATH                         an .npz with arrays x, y (or x_<split>, y_<split>)
    folder:PATH                      images in PATH/<split>/<class>/* or PATH/<class>/*

:func:`parse_spec` turns a string into one of the frozen spec types below; nothing else in
tfquant parses spec strings.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Union

from tfquant.errors import TfquantError

SPEC_FORMS = (
    "'fashion_mnist', 'tfds:NAME[/CONFIG][:VERSION]' (e.g. 'tfds:cifar10'), "
    "'npz:PATH' (arrays x, y or x_train, y_train, x_test, y_test) or "
    "'folder:PATH' (images in PATH/<split>/<class>/*.png or PATH/<class>/*.png)"
)

_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TFDS_CONFIG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_TFDS_VERSION = re.compile(r"\d+(\.(\d+|\*)){0,2}|\*")


@dataclasses.dataclass(frozen=True)
class FashionMnistSpec:
    """Fashion-MNIST from local IDX files (TFDS ``fashion_mnist`` as a fallback)."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A TensorFlow Datasets dataset.

    Attributes:
      name: the registered dataset name, e.g. ``cifar10``.
      config: the builder config, or ``None`` for the default one.
      version: a version such as ``3.0.2`` or ``3.*.*``, or ``None`` for the default one.
    """

    name: str
    config: str | None = None
    version: str | None = None

    @property
    def tfds_name(self) -> str:
        """The name as ``tfds.builder`` spells it: ``NAME[/CONFIG][:VERSION]``."""
        text = self.name
        if self.config:
            text += f"/{self.config}"
        if self.version:
            text += f":{self.version}"
        return text


@dataclasses.dataclass(frozen=True)
class NpzSpec:
    """An .npz file of preprocessed arrays."""

    path: Path


@dataclasses.dataclass(frozen=True)
class FolderSpec:
    """A folder of image files, one sub-folder per class."""

    path: Path


DatasetSpec = Union[FashionMnistSpec, TfdsSpec, NpzSpec, FolderSpec]


def parse_spec(spec: str) -> DatasetSpec:
    """Parses a dataset spec string (see the module docstring for the forms).

    Args:
      spec: e.g. ``"fashion_mnist"``, ``"tfds:cifar10"``, ``"npz:/data/calib.npz"``.

    Returns:
      The matching frozen spec object.

    Raises:
      TfquantError: the string matches none of the allowed forms.
    """
    if not isinstance(spec, str):
        raise TfquantError(
            f"dataset spec must be a string, got {type(spec).__name__}; use {SPEC_FORMS}"
        )
    text = spec.strip()
    if text == "fashion_mnist":
        return FashionMnistSpec()
    kind, sep, rest = text.partition(":")
    if sep and kind in ("npz", "folder"):
        if not rest:
            raise TfquantError(f"dataset spec {spec!r} has no path; write '{kind}:PATH'")
        path = Path(rest).expanduser()
        return NpzSpec(path) if kind == "npz" else FolderSpec(path)
    if sep and kind == "tfds":
        return _parse_tfds(spec, rest)
    raise TfquantError(f"unknown dataset spec {spec!r}; use {SPEC_FORMS}")


def _parse_tfds(spec: str, rest: str) -> TfdsSpec:
    """Parses the part of a ``tfds:`` spec after the prefix."""
    parts = rest.split(":")
    name, _, config = parts[0].partition("/")
    version = None
    for part in parts[1:]:
        if _TFDS_VERSION.fullmatch(part) and version is None:
            version = part
        elif not config and version is None:
            config = part
        else:
            raise TfquantError(
                f"cannot read dataset spec {spec!r}; write 'tfds:NAME', 'tfds:NAME/CONFIG' "
                "or 'tfds:NAME/CONFIG:VERSION' (e.g. 'tfds:cifar10')"
            )
    if not _TFDS_NAME.fullmatch(name):
        raise TfquantError(
            f"{name!r} in dataset spec {spec!r} is not a TFDS dataset name (lower-case letters, "
            "digits and '_'); write e.g. 'tfds:cifar10'"
        )
    if config and not _TFDS_CONFIG.fullmatch(config):
        raise TfquantError(
            f"{config!r} in dataset spec {spec!r} is not a TFDS config name; "
            "write e.g. 'tfds:imagenet2012_subset/10pct'"
        )
    return TfdsSpec(name=name, config=config or None, version=version)
