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

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from tfquant.calibration.statistics import TensorStatistics


@dataclasses.dataclass(frozen=True)
class Range:
    """A calibrated activation range [lo, hi] (float, lo <= 0 <= hi is not required).

    ``note`` says why a calibrator did not use its own choice (see :func:`clip_to_observed`).
    """

    lo: float
    hi: float
    note: str | None = None

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


MAX_SATURATED_FRACTION = 0.5
"""A histogram calibrator's clip that saturates more of the tensor's values than this is
rejected (see :func:`clip_to_observed`)."""


def clip_to_observed(stats: "TensorStatistics", amax: float) -> Range:
    """The range [-amax, amax] intersected with what the tensor actually took, [min, max].

    Histogram calibrators search a bound ``amax`` on |x|. A one-sided tensor (min >= 0, e.g.
    after ReLU) gets [min, min(amax, max)]; a two-sided one [max(min, -amax), min(max, amax)],
    so an affine int8 range spends no integers on values that never occur.

    Guard: the searches assume mass near 0 (NVIDIA's setting: post-ReLU and zero-centred
    activations). On a tensor that stays away from 0 -- e.g. a LayerNorm's rsqrt(var + ε),
    all in [0.53, 1.45] in the zoo ViT -- the KL search finds KL = 0 at the first cut that
    covers the smallest value (P and Q both collapse to one bin) and would squeeze every
    value into one integer (the ViT's int8 accuracy fell from 88% to 72%). So when the clip
    would saturate more than :data:`MAX_SATURATED_FRACTION` of the values (counted on the
    histogram), the tensor keeps its observed [min, max] and the returned range's ``note``
    says so; the exported model records every such fallback.
    """
    amax = float(amax)
    assert amax >= 0.0, amax
    h = stats.histogram
    if h.total and h.upper > 0.0:
        first_saturated = int(np.ceil(amax / h.width)) if h.width > 0 else h.num_bins
        saturated = float(h.counts[min(first_saturated, h.num_bins):].sum()) / h.total
        if saturated > MAX_SATURATED_FRACTION:
            return Range(
                float(stats.min), float(stats.max),
                note=f"kept [min, max]: the clip at {amax:.4g} would saturate {saturated:.0%} of the values",
            )
    return Range(max(float(stats.min), -amax), min(float(stats.max), amax))
