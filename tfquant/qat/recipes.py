"""QAT fine-tuning recipes as data: optimizer, learning rate, schedule, BN handling.

A :class:`FinetuneRecipe` is a frozen value that round-trips through JSON (unknown keys are
rejected), kept apart from :func:`tfquant.qat.finetune`, which applies it. Two
presets, defined relative to how the float model was trained
(:class:`tfquant.models.train.TrainConfig`):

* :func:`nvidia_recipe` -- Wu, Judd, Zhang, Isaev, Micikevicius 2020 ("Integer Quantization
  for Deep Learning Inference", arXiv 2004.09602, Sec. 5 and Appendix A): start from the
  best calibrated model (activation ranges from calibration), fine-tune for about 10% of the
  original schedule, initial learning rate 1% of the original, cosine decay; same optimizer
  family as the original training (Adam for the zoo).
* :func:`whitepaper_recipe` -- Krishnamoorthi 2018 ("Quantizing deep convolutional networks
  for efficient inference: A whitepaper", arXiv 1806.08342, Sec. 3.2 and 4): fine-tune from
  the float checkpoint with SGD; batch-norm correction with folded weights (Sec. 3.2.2) and
  batch-norm statistics frozen after ``freeze_bn_after_steps`` steps. The paper fixes no
  learning rate for our models; ours -- momentum 0.9, a constant 10% of the original (Adam)
  peak learning rate -- is our choice.

BN correction itself lives in the BN-folded training layer of ``tfquant.algorithms.bn_fold``
(not in this package): a recipe with ``bn_correction=True`` needs a QAT model built with
those layers, and :func:`~tfquant.qat.finetune` checks that (see
:class:`~tfquant.qat.finetune.BatchNormFreezable` for the hook it calls).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from tfquant.errors import TfquantError
from tfquant.qtypes import LRSchedule, Optimizer

RECIPE_VERSION = 1
NVIDIA_SCHEDULE_FRACTION = 0.1
NVIDIA_LR_FRACTION = 0.01
WHITEPAPER_LR_FRACTION = 0.1
WHITEPAPER_MOMENTUM = 0.9
WHITEPAPER_FREEZE_BN_AFTER_STEPS = 200


def _positive_number(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise TfquantError(
            f"{what} must be a positive finite number, got {value!r}; fix the recipe"
        )
    return float(value)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TfquantError(f"{what} must be a positive integer, got {value!r}; fix the recipe")
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    """How to fine-tune a QAT model.

    Attributes:
      name: Label for logs and results (``nvidia``, ``whitepaper`` or your own).
      optimizer: ``adam`` or ``sgd``.
      learning_rate: Initial learning rate.
      lr_schedule: ``cosine`` (to 0 over all fine-tuning steps) or ``constant``.
      momentum: SGD momentum (must be 0 for Adam).
      batch_size: Examples per step.
      schedule_fraction: Fraction of the original training schedule (epochs) the recipe
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
                f"recipe name must be a non-empty string, got {self.name!r}; name it, e.g. 'nvidia'"
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
          TfquantError: the recipe has no ``schedule_fraction``, or a non-positive count.
        """
        original_epochs = _positive_int(original_epochs, "original_epochs")
        if self.schedule_fraction is None:
            raise TfquantError(
                f"recipe {self.name!r} has no schedule_fraction; pass epochs to finetune directly"
            )
        return max(1, round(self.schedule_fraction * original_epochs))

    def replace(self, **changes: Any) -> "FinetuneRecipe":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with ``version``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["optimizer"] = self.optimizer.value
        out["lr_schedule"] = self.lr_schedule.value
        out["version"] = RECIPE_VERSION
        return out

    def to_json(self) -> str:
        """The recipe as a JSON object (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinetuneRecipe":
        """Parses :meth:`to_dict` output.

        Raises:
          TfquantError: unknown keys, a missing required key, a bad value or version.
        """
        if not isinstance(data, Mapping):
            raise TfquantError(
                f"a fine-tuning recipe must be a JSON object, got {type(data).__name__}; pass "
                "FinetuneRecipe.to_dict() output"
            )
        data = dict(data)
        version = data.pop("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise TfquantError(
                f"fine-tuning recipe version {version!r} is not supported (this tfquant reads "
                f"version {RECIPE_VERSION}); re-create the recipe"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise TfquantError(
                f"unknown fine-tuning recipe keys {unknown}; allowed: {', '.join(sorted(fields))}"
            )
        missing = sorted(f for f in ("name", "optimizer", "learning_rate") if f not in data)
        if missing:
            raise TfquantError(f"fine-tuning recipe is missing {missing}; add them")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "FinetuneRecipe":
        """Parses :meth:`to_json` output.

        Raises:
          TfquantError: invalid JSON, or as :meth:`from_dict`.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TfquantError(
                f"fine-tuning recipe is not valid JSON ({e}); fix the file"
            ) from None
        return cls.from_dict(data)


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


def nvidia_recipe(original: Any) -> FinetuneRecipe:
    """NVIDIA's QAT recipe (Wu et al. 2020): 10% of the schedule, LR 1% of the original, cosine.

    Args:
      original: How the float model was trained: anything with ``learning_rate`` and
        ``batch_size`` (a :class:`tfquant.models.train.TrainConfig`).

    Returns:
      Adam at ``0.01 · original.learning_rate``, cosine decay to 0, the original batch size,
      ``schedule_fraction=0.1`` (see :meth:`FinetuneRecipe.epochs_for`), calibrated start.
    """
    lr, batch = _original_lr_and_batch(original)
    return FinetuneRecipe(
        name="nvidia",
        optimizer=Optimizer.ADAM,
        learning_rate=NVIDIA_LR_FRACTION * lr,
        lr_schedule=LRSchedule.COSINE,
        batch_size=batch,
        schedule_fraction=NVIDIA_SCHEDULE_FRACTION,
        start_from_calibrated_ranges=True,
    )


def whitepaper_recipe(
    original: Any,
    *,
    freeze_bn_after_steps: int = WHITEPAPER_FREEZE_BN_AFTER_STEPS,
    bn_correction: bool = True,
) -> FinetuneRecipe:
    """The whitepaper's QAT recipe (Krishnamoorthi 2018): SGD from float, BN frozen after N steps.

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
    lr, batch = _original_lr_and_batch(original)
    return FinetuneRecipe(
        name="whitepaper",
        optimizer=Optimizer.SGD,
        learning_rate=WHITEPAPER_LR_FRACTION * lr,
        lr_schedule=LRSchedule.CONSTANT,
        momentum=WHITEPAPER_MOMENTUM,
        batch_size=batch,
        freeze_bn_after_steps=freeze_bn_after_steps,
        bn_correction=bn_correction,
    )
