"""The calibrator interface: statistics in, a per-tensor range out.

A calibrator never runs the model. :func:`tfquant.calibration.collect_statistics` makes one
pass of the float model over the calibration set and keeps, per tensor, a
:class:`~tfquant.calibration.statistics.TensorStatistics` (min/max, moving-average min/max,
moments, a histogram of |x|); every calibrator then chooses a range from those numbers alone,
so N calibrators cost one forward pass plus N cheap searches.

Design as in torch.ao.quantization's observers and NVIDIA pytorch-quantization's ``calib/``:
one small class per method, each with its maths in the docstring, one registry
(:mod:`tfquant.calibration.registry`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from tfquant.calibration.statistics import TensorStatistics


@dataclasses.dataclass(frozen=True)
class Range:
    """A calibrated activation range [lo, hi] (float, lo <= 0 <= hi is not required)."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        assert self.lo <= self.hi, (self.lo, self.hi)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantTarget:
    """What the range is for.

    Attributes:
      bits: bit width of the activation integers (8 for int8, 16 for int16x8).
      symmetric: the runtime uses z = 0 (int16x8 always; int8 when asked), so the range is
        [-amax, amax] (for a non-negative tensor the integers below 0 go unused).
    """

    bits: int = 8
    symmetric: bool = False


class Calibrator(abc.ABC):
    """Chooses a tensor's range from its statistics."""

    name: ClassVar[str]

    @abc.abstractmethod
    def compute_range(self, stats: "TensorStatistics", target: QuantTarget) -> Range:
        """Returns the range to quantize the tensor with."""

    def describe(self) -> str:
        """The calibrator with its options, as recorded next to each range (e.g. ``percentile 99.99``)."""
        return self.name


def clip_to_observed(stats: "TensorStatistics", amax: float) -> Range:
    """The range [-amax, amax] intersected with what the tensor actually took, [min, max].

    Histogram calibrators search a bound ``amax`` on |x|. A one-sided tensor (min >= 0, e.g.
    after ReLU) gets [0, min(amax, max)]; a two-sided one [max(min, -amax), min(max, amax)],
    so an affine int8 range spends no integers on values that never occur.
    """
    amax = float(amax)
    assert amax >= 0.0, amax
    return Range(max(float(stats.min), -amax), min(float(stats.max), amax))
