"""What every zoo study shares: models, the test split, the calibration draw, the interpreter.

Each experiment's config subclasses :class:`ZooStudySettings` (a frozen, keyword-only
dataclass) and adds its own fields; the checks here name the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, ClassVar, Iterable, Mapping, Sequence, TypeVar

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.zoo_names import QAT_ZOO, UNWRAPPABLE_ZOO, ZOO

_POSITIVE = ("num_calibration_examples", "threads", "batch_size", "workers")


def positive_int(value: Any, name: str, *, none_means: str | None = None) -> None:
    """Raises unless ``value`` is an integer >= 1 (numpy's too; a bool is not), or None when ``none_means``
    says what None stands for."""
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        extra = f" or None ({none_means})" if none_means else ""
        raise TfquantError(f"{name} must be a positive integer{extra}, got {value!r}")


def is_int(value: Any) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_zoo_models(models: Iterable[str]) -> None:
    """Raises naming the models that are not zoo models (no TensorFlow needed: scripts call it
    on their flags before they import it)."""
    unknown = [m for m in models if m not in ZOO]
    if unknown:
        raise TfquantError(f"unknown zoo model(s) {unknown}; choose from: {', '.join(ZOO)}")


def check_qat_models(models: Sequence[str] | str) -> None:
    """Raises unless ``models`` is a non-empty list of zoo models tfmot can wrap for QAT
    (:data:`tfquant.zoo_names.QAT_ZOO`); names the bad one and the choices."""
    if isinstance(models, str) or not models:
        raise TfquantError(f"no models to run; pass --models with at least one of: {', '.join(QAT_ZOO)}")
    for m in models:
        if m in UNWRAPPABLE_ZOO:
            raise TfquantError(
                f"zoo model {m!r} cannot be wrapped for QAT by tfmot (its attention, "
                "LayerNormalization and position embedding have no quantize config); "
                f"choose from: {', '.join(QAT_ZOO)}")
        if m not in QAT_ZOO:
            raise TfquantError(f"unknown zoo model {m!r}; choose from: {', '.join(QAT_ZOO)}")


def bit_width_map(value: Any, bits: Sequence[int], *, name: str, example: str) -> tuple[tuple[int, float], ...]:
    """``value`` (one number for every bit width, a ``{bits: x}`` mapping or (bits, x) pairs) ->
    sorted (bits, x) pairs for exactly ``bits``, every x a finite number > 0; entries for
    other bit widths are dropped. Raises naming the bad entry or the bit widths without one."""
    if is_number(value):
        pairs = [(b, value) for b in bits]
    else:
        try:
            pairs = list(value.items() if isinstance(value, Mapping) else value)
            pairs = [(int(b), x) for b, x in pairs]
        except (TypeError, ValueError):
            raise TfquantError(f"{name} must map bit widths to λ ({example}), got {value!r}") from None
    out: dict[int, float] = {}
    for b, x in pairs:
        if not is_number(x) or not math.isfinite(x) or x <= 0:
            raise TfquantError(f"{name} for {b}-bit weights must be a finite number > 0, got {x!r}")
        out[b] = float(x)
    missing = [b for b in bits if b not in out]
    if missing:
        raise TfquantError(f"{name} has no λ for bit width(s) {missing}; give one per bit width ({example})")
    return tuple(sorted((b, out[b]) for b in bits))


S = TypeVar("S", bound="Sized")


class Sized:
    """A study config with named sizes (the scripts' ``--smoke`` / ``--short`` / ``--full``).

    A subclass sets ``sizes`` (name -> the fields that size sets).
    """

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def of_size(cls: type[S], name: str, **overrides: Any) -> S:
        """The config of size ``name`` (:attr:`sizes`), with ``overrides`` applied."""
        if name not in cls.sizes:
            raise TfquantError(f"unknown size {name!r}; choose from: {', '.join(cls.sizes)}")
        return cls(**{**cls.sizes[name], **overrides})


def zoo_fingerprint(config: Mapping[str, Any], models: Iterable[str],
                    cells: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A zoo study's fingerprint: its config, its cell definitions (when it has them) and the
    sha256 of every model's trained weights (a retrained model is a different run)."""
    from tfquant import models as zoo

    out: dict[str, Any] = {"config": dict(config)}
    if cells is not None:
        out["cells"] = dict(cells)
    out["weights_sha256"] = {m: zoo.trained_info(m).get("weights_sha256") for m in models}
    return out


def interpreter_runtime(runtime: Runtime | str, *, what: str) -> Runtime:
    """``runtime`` parsed; a study runs xnnpack or builtin, never a device delegate."""
    parsed = Runtime.parse(runtime, what="runtime")
    if parsed is Runtime.DELEGATE:
        raise TfquantError(f"{what}: runtime xnnpack or builtin only; evaluate a delegate with "
                           "'python -m tfquant evaluate --runtime delegate'")
    return parsed


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZooStudySettings:
    """Models, data, calibration draw and evaluation settings of a zoo study.

    Attributes:
      models: Zoo models (rows); at least one.
      dataset, data_dir: The dataset spec and where its files are.
      num_calibration_examples, calibration_seed: The calibration draw (training split).
      threads, batch_size: Interpreter threads and evaluation batch size.
      workers: Unused since issue 10 (cells run on Ray, one worker per CPU: :mod:`tfquant.study.cluster`);
        kept in the config so run folders made before still resume.
      limit: Evaluate only the first N test images (smoke and short runs); None: all.
    """

    models: tuple[str, ...]
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    threads: int = 1
    batch_size: int = 256
    workers: int = 2
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise TfquantError("no models to run; pass --models with at least one zoo model")
        object.__setattr__(self, "models", tuple(self.models))
        for name in _POSITIVE:
            positive_int(getattr(self, name), name)
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise TfquantError(f"limit must be a positive integer or None (whole test split), got {self.limit!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON data (enums by value), for config.json."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples -> lists, enums -> their values, recursively."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return getattr(value, "value", value)
