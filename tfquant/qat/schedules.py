"""QAT fine-tuning schedules as data: optimizer, learning rate, LR decay, BN handling.

("Schedule", not "recipe": in tfquant a *recipe* is only the quantization
:class:`tfquant.recipes.Recipe`.) A :class:`FinetuneSchedule` is a frozen value that
round-trips through JSON (unknown keys are rejected), kept apart from
:func:`tfquant.qat.finetune`, which applies it. Named schedules (:class:`ScheduleName`),
defined relative to how the float model was trained
(:class:`tfquant.models.train.TrainConfig`):

* :func:`nvidia_schedule` -- Wu, Judd, Zhang, Isaev, Micikevicius 2020 ("Integer Quantization
  for Deep Learning Inference", arXiv 2004.09602, Sec. 5 and Appendix A): start from the
  best calibrated model (activation ranges from calibration), fine-tune for about 10% of the
  original schedule, initial learning rate 1% of the original, cosine decay; same optimizer
  family as the original training (Adam for the zoo).
* :func:`whitepaper_schedule` -- Krishnamoorthi 2018 ("Quantizing deep convolutional networks
  for efficient inference: A whitepaper", arXiv 1806.08342, Sec. 3.2 and 4): fine-tune from
  the float checkpoint with SGD; batch-norm correction with folded weights (Sec. 3.2.2) and
  batch-norm statistics frozen after ``freeze_bn_after_steps`` steps. The paper fixes no
  learning rate for our models; ours -- momentum 0.9, a constant 10% of the original (Adam)
  peak learning rate -- is our choice.

BN correction itself lives in the BN-folded training layer of ``tfquant.algorithms.bn_fold``
(not in this package): a schedule with ``bn_correction=True`` needs a QAT model built with
those layers, and :func:`~tfquant.qat.finetune` checks that (see
:class:`~tfquant.qat.finetune.BatchNormFreezable` for the hook it calls).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from tfquant.dataclass_json import from_json_dict, loads_object
from tfquant.errors import TfquantError
from tfquant.qtypes import LRSchedule, Optimizer, _ParsableEnum

SCHEDULE_VERSION = 1
NVIDIA_SCHEDULE_FRACTION = 0.1
NVIDIA_LR_FRACTION = 0.01
WHITEPAPER_LR_FRACTION = 0.1
WHITEPAPER_MOMENTUM = 0.9
WHITEPAPER_FREEZE_BN_AFTER_STEPS = 200


class ScheduleName(_ParsableEnum):
    """The named fine-tuning schedules (the ``qat`` command's ``--finetune_schedule``).

    ``nvidia``: :func:`nvidia_schedule`; ``whitepaper``: :func:`whitepaper_schedule` (no BN
    correction); ``auto``: NVIDIA's with a larger learning rate below 8-bit weights and
    batch-norm re-estimation after fine-tuning (:func:`tfquant.qat.pipeline.make_schedule`).
    """

    AUTO = "auto"
    NVIDIA = "nvidia"
    WHITEPAPER = "whitepaper"


FINETUNE_SCHEDULES: tuple[str, ...] = tuple(s.value for s in ScheduleName)


def _positive_number(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise TfquantError(
            f"{what} must be a positive finite number, got {value!r}; fix the schedule"
        )
    return float(value)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TfquantError(f"{what} must be a positive integer, got {value!r}; fix the schedule")
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSchedule:
    """How to fine-tune a QAT model.

    Attributes:
      name: Label for logs and results (``nvidia``, ``whitepaper`` or your own).
      optimizer: ``adam`` or ``sgd``.
      learning_rate: Initial learning rate.
      lr_schedule: ``cosine`` (to 0 over all fine-tuning steps) or ``constant``.
      momentum: SGD momentum (must be 0 for Adam).
      batch_size: Examples per step.
      schedule_fraction: Fraction of the original training schedule (epochs) the schedule
        fine-tunes for; :meth:`epochs_for` turns it into epochs. None: the caller decides.
      start_from_calibrated_ranges: Activation ranges must come from calibration
        (``quantize_for_training(..., calibration_data=... or initial_ranges=...)``), not
        tfmot's [-6, 6] start; :func:`~tfquant.qat.finetune` refuses a model whose
        ranges are all still [-6, 6]. Fine-tuning itself does not calibrate.
      freeze_bn_after_steps: After this many steps, batch-norm statistics freeze (plain
        BatchNormalization layers switch to their moving statistics, BN-folded layers get
        ``freeze_batch_norm()``). None: never.
      bn_correction: The whitepaper's BN correction (Sec. 3.2.2); needs BN-folded layers
        (``tfquant.algorithms.bn_fold``) in the QAT model.
    """

    name: str
    optimizer: Optimizer
    learning_rate: float
    lr_schedule: LRSchedule = LRSchedule.COSINE
    momentum: float = 0.0
    batch_size: int = 128
    schedule_fraction: float | None = None
    start_from_calibrated_ranges: bool = False
    freeze_bn_after_steps: int | None = None
    bn_correction: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TfquantError(
                f"schedule name must be a non-empty string, got {self.name!r}; name it, e.g. 'nvidia'"
            )
        object.__setattr__(self, "optimizer", Optimizer.parse(self.optimizer, what="optimizer"))
        object.__setattr__(self, "lr_schedule", LRSchedule.parse(self.lr_schedule, what="lr_schedule"))
        object.__setattr__(
            self, "learning_rate", _positive_number(self.learning_rate, "learning_rate")
        )
        object.__setattr__(self, "batch_size", _positive_int(self.batch_size, "batch_size"))
        momentum = self.momentum
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not 0 <= momentum < 1
        ):
            raise TfquantError(
                f"momentum must be a number in [0, 1), got {momentum!r}; e.g. 0.9 for sgd, "
                "0 for adam"
            )
        if momentum and self.optimizer is Optimizer.ADAM:
            raise TfquantError(
                f"momentum={momentum} applies to optimizer sgd only; set momentum=0 for adam"
            )
        object.__setattr__(self, "momentum", float(momentum))
        if self.schedule_fraction is not None:
            object.__setattr__(
                self,
                "schedule_fraction",
                _positive_number(self.schedule_fraction, "schedule_fraction"),
            )
        if self.freeze_bn_after_steps is not None:
            object.__setattr__(
                self,
                "freeze_bn_after_steps",
                _positive_int(self.freeze_bn_after_steps, "freeze_bn_after_steps"),
            )
        for flag in ("start_from_calibrated_ranges", "bn_correction"):
            if not isinstance(getattr(self, flag), bool):
                raise TfquantError(
                    f"{flag} must be true or false, got {getattr(self, flag)!r}; use a boolean"
                )

    def epochs_for(self, original_epochs: int) -> int:
        """Fine-tuning epochs: ``max(1, round(schedule_fraction · original_epochs))``.

        Raises:
          TfquantError: the schedule has no ``schedule_fraction``, or a non-positive count.
        """
        original_epochs = _positive_int(original_epochs, "original_epochs")
        if self.schedule_fraction is None:
            raise TfquantError(
                f"schedule {self.name!r} has no schedule_fraction; pass epochs to finetune directly"
            )
        return max(1, round(self.schedule_fraction * original_epochs))

    def replace(self, **changes: Any) -> "FinetuneSchedule":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with ``version``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["optimizer"] = self.optimizer.value
        out["lr_schedule"] = self.lr_schedule.value
        out["version"] = SCHEDULE_VERSION
        return out

    def to_json(self) -> str:
        """The schedule as a JSON object (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinetuneSchedule":
        """Parses :meth:`to_dict` output.

        Raises:
          TfquantError: unknown keys, a missing required key, a bad value or version.
        """
        return cls(
            **from_json_dict(
                cls, data, what="fine-tuning schedule", version_key="version",
                version=SCHEDULE_VERSION, required=("name", "optimizer", "learning_rate"),
                hint="re-create the schedule",
            )
        )

    @classmethod
    def from_json(cls, text: str) -> "FinetuneSchedule":
        """Parses :meth:`to_json` output.

        Raises:
          TfquantError: invalid JSON, or as :meth:`from_dict`.
        """
        return cls.from_dict(loads_object(text, what="fine-tuning schedule"))


def _original_lr_and_batch(original: Any) -> tuple[float, int]:
    lr = getattr(original, "learning_rate", None)
    batch = getattr(original, "batch_size", None)
    if lr is None or batch is None:
        raise TfquantError(
            f"original must describe the float training (learning_rate, batch_size), got "
            f"{type(original).__name__}; pass e.g. tfquant.models.train.DEFAULT_CONFIGS['cnn']"
        )
    return _positive_number(lr, "original learning_rate"), _positive_int(
        batch, "original batch_size"
    )


def _relative_to(original: Any, lr_fraction: float, **fields: Any) -> FinetuneSchedule:
    """A schedule at ``lr_fraction`` of ``original``'s learning rate and its batch size."""
    lr, batch = _original_lr_and_batch(original)
    return FinetuneSchedule(learning_rate=lr_fraction * lr, batch_size=batch, **fields)


def nvidia_schedule(original: Any) -> FinetuneSchedule:
    """NVIDIA's QAT schedule (Wu et al. 2020): 10% of the schedule, LR 1% of the original, cosine.

    Args:
      original: How the float model was trained: anything with ``learning_rate`` and
        ``batch_size`` (a :class:`tfquant.models.train.TrainConfig`).

    Returns:
      Adam at ``0.01 · original.learning_rate``, cosine decay to 0, the original batch size,
      ``schedule_fraction=0.1`` (see :meth:`FinetuneSchedule.epochs_for`), calibrated start.
    """
    return _relative_to(original, NVIDIA_LR_FRACTION, name="nvidia", optimizer=Optimizer.ADAM,
                        lr_schedule=LRSchedule.COSINE, schedule_fraction=NVIDIA_SCHEDULE_FRACTION,
                        start_from_calibrated_ranges=True)


def whitepaper_schedule(
    original: Any,
    *,
    freeze_bn_after_steps: int = WHITEPAPER_FREEZE_BN_AFTER_STEPS,
    bn_correction: bool = True,
) -> FinetuneSchedule:
    """The whitepaper's QAT schedule (Krishnamoorthi 2018): SGD from float, BN frozen after N steps.

    Args:
      original: How the float model was trained (``learning_rate``, ``batch_size``).
      freeze_bn_after_steps: Steps before batch-norm statistics freeze.
      bn_correction: BN correction with BN-folded layers (needs ``tfquant.algorithms.bn_fold``
        layers in the QAT model); False fine-tunes the plain (unfolded) BN layers and only
        freezes their statistics.

    Returns:
      SGD with momentum 0.9 at ``0.1 · original.learning_rate`` (constant), the original batch
      size, no calibrated start (tfmot's ranges, as the paper's TF implementation).
    """
    return _relative_to(original, WHITEPAPER_LR_FRACTION, name="whitepaper", optimizer=Optimizer.SGD,
                        lr_schedule=LRSchedule.CONSTANT, momentum=WHITEPAPER_MOMENTUM,
                        freeze_bn_after_steps=freeze_bn_after_steps, bn_correction=bn_correction)
