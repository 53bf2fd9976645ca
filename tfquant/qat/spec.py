"""What a QAT model simulates: weight bits, activation bits, weight granularity.

:class:`QatSpec` is the one value the quantizers, quantize configs and registry are built
from. Its numbers follow Krishnamoorthi 2018 ("Quantizing deep convolutional networks for
efficient inference: A whitepaper", arXiv 1806.08342), Sec. 2:

* weights: symmetric, narrow range, N = 2^b levels, q in [-(N/2 - 1), N/2 - 1]
  ([-127, 127] at 8 bits, [-7, 7] at 4 bits, [-1, 1] at 2 bits), one scale per output
  channel or one per tensor, range = the kernel's current min/max (tfmot
  ``LastValueQuantizer``);
* activations: affine (asymmetric), per tensor, q in [0, N - 1] around a zero point, range
  = exponential moving average (decay 0.999) of per-batch min/max (tfmot
  ``MovingAverageQuantizer``).

TFLite executes 8-bit activations only. Sub-8-bit activations are simulation-only: the QAT
Keras model models them, :func:`tfquant.qat.export_tflite` refuses them. Sub-8-bit
weights do export: as int8 values on the b-bit grid.
"""

from __future__ import annotations

import dataclasses

from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity

WEIGHT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
ACTIVATION_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
TFLITE_ACTIVATION_BITS = 8


def _check_bits(value: object, what: str, allowed: tuple[int, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise TfquantError(
            f"{what} must be an integer in [{allowed[0]}, {allowed[-1]}], got {value!r}; tfmot "
            "fake quantization supports 2..8 bits (e.g. 8, 4 or 2)"
        )
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatSpec:
    """The quantization a QAT model simulates.

    Attributes:
      weight_bits: b of the symmetric narrow-range weight grid (2..8).
      activation_bits: b of the affine per-tensor activation grid (2..8; only 8 runs in
        TFLite, fewer is simulation-only).
      weight_granularity: one weight scale per output channel (TFLite's int8 default) or
        one per tensor. Dense and Conv2DTranspose kernels are always per tensor (the
        converter rejects a per-channel fake quant on them, see
        :mod:`tfquant.qat.quantizers`).
    """

    weight_bits: int = 8
    activation_bits: int = 8
    weight_granularity: Granularity = Granularity.PER_CHANNEL

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "weight_bits", _check_bits(self.weight_bits, "weight_bits", WEIGHT_BITS)
        )
        object.__setattr__(
            self,
            "activation_bits",
            _check_bits(self.activation_bits, "activation_bits", ACTIVATION_BITS),
        )
        object.__setattr__(
            self,
            "weight_granularity",
            Granularity.parse(self.weight_granularity, what="weight granularity"),
        )

    @property
    def per_channel(self) -> bool:
        """One weight scale per output channel."""
        return self.weight_granularity is Granularity.PER_CHANNEL

    @property
    def is_tfmot_default(self) -> bool:
        """8-bit weights per channel and 8-bit activations: tfmot's default 8-bit scheme."""
        return self.weight_bits == 8 and self.activation_bits == 8 and self.per_channel

    @property
    def exportable(self) -> bool:
        """TFLite can run it: 8-bit activations (weights of any b export on the b-bit grid)."""
        return self.activation_bits == TFLITE_ACTIVATION_BITS

    @property
    def name(self) -> str:
        """E.g. ``w4a8_per_channel``."""
        return f"w{self.weight_bits}a{self.activation_bits}_{self.weight_granularity.value}"
