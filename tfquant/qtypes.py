"""The project's vocabulary: enums and small frozen value types.

No other module spells these as bare strings; parse user text with ``<Enum>.parse``, which
names the allowed values when it fails.
"""

from __future__ import annotations

import enum
import math
import numbers
from typing import TypeVar

from tfquant.errors import TfquantError

_E = TypeVar("_E", bound="_ParsableEnum")


class _ParsableEnum(str, enum.Enum):
    """A string enum whose ``parse`` gives a user-facing error for unknown values."""

    @classmethod
    def parse(cls: type[_E], value: "str | _E", *, what: str | None = None) -> _E:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            label = what or cls.__name__
            raise TfquantError(
                f"unknown {label} {value!r}; choose one of: {allowed}"
            ) from None

    def __str__(self) -> str:
        return self.value


class Mode(_ParsableEnum):
    """What the TFLite converter produces.

    fp32: float model. fp16: float16 weights (dequantized at load). dynamic: int8 weights,
    float activations (dynamic-range quantization). int8: full-integer int8 (per-tensor
    affine activations, symmetric weights). int16x8: int16 symmetric activations, int8
    weights (runs on reference kernels on x86).
    """

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_calibration(self) -> bool:
        return self in (Mode.INT8, Mode.INT16X8)


class Granularity(_ParsableEnum):
    """Weight quantization granularity (activations are always per-tensor in TFLite).

    per_channel: one scale per output channel of the kernel (the channel axes of
    :func:`tfquant.models.kernels.layer_kernel`). per_tensor: one scale for the whole kernel;
    the whitepaper (Krishnamoorthi 2018) calls this "per-layer", and so do its table cells.
    """

    PER_CHANNEL = "per_channel"
    PER_TENSOR = "per_tensor"


class IODType(_ParsableEnum):
    """Dtype of the model's input and output tensors."""

    FLOAT32 = "float32"
    INT8 = "int8"
    INT16 = "int16"


class Runtime(_ParsableEnum):
    """How the LiteRT interpreter executes a model.

    xnnpack: the default delegate (XNNPACK) applied by the interpreter. builtin: the builtin
    (optimized and reference) kernels, no default delegate. delegate: an external delegate
    library such as Hexagon's ``libhexagon_interface.so``. compiled_cpu / compiled_gpu /
    compiled_npu: LiteRT's CompiledModel API (``ai_edge_litert.compiled_model``) on that
    hardware accelerator (see :mod:`tfquant.tflite.compiled`).
    """

    XNNPACK = "xnnpack"
    BUILTIN = "builtin"
    DELEGATE = "delegate"
    COMPILED_CPU = "compiled_cpu"
    COMPILED_GPU = "compiled_gpu"
    COMPILED_NPU = "compiled_npu"

    @property
    def compiled(self) -> bool:
        """Runs through LiteRT's CompiledModel API, not the Interpreter."""
        return self.value.startswith("compiled_")


class TargetDelegate(_ParsableEnum):
    """An on-device LiteRT delegate whose op support ``tfquant check`` predicts."""

    XNNPACK = "xnnpack"
    GPU = "gpu"
    HEXAGON = "hexagon"
    NNAPI = "nnapi"


class DeviceRuntime(_ParsableEnum):
    """What ``tfquant benchmark`` runs on the phone: a delegate, or LiteRT's NPU path."""

    XNNPACK = "xnnpack"
    GPU = "gpu"
    HEXAGON = "hexagon"
    NNAPI = "nnapi"
    NPU = "npu"


class Calibration(_ParsableEnum):
    """How an activation tensor's range is chosen from calibration statistics.

    max: observed [min, max] (what the TFLite converter does by itself). moving_average:
    EMA of per-batch min/max. percentile: the |x| percentile. entropy: TensorRT's KL
    procedure. mse: the range minimising the quantization MSE. aciq: analytical clipping
    (Laplace or Gaussian prior). See :mod:`tfquant.calibration`.
    """

    MAX = "max"
    MOVING_AVERAGE = "moving_average"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"
    ACIQ = "aciq"


class WeightCalibration(_ParsableEnum):
    """How a weight tensor's per-channel (or per-tensor) bound amax is chosen.

    max: max|w| (TFLite's default). percentile: the |w| percentile. mse: the bound
    minimising the 8-bit quantization MSE. Weights beyond amax are clipped before
    quantization, so the stored scale is amax / 127.
    """

    MAX = "max"
    PERCENTILE = "percentile"
    MSE = "mse"


class AciqPrior(_ParsableEnum):
    """The distribution ACIQ assumes for a tensor (Banner et al. 2019).

    laplace: Laplace(μ, b), b estimated as E|x - μ|. gaussian: N(μ, σ²), σ the standard
    deviation. See :mod:`tfquant.calibration.aciq` for the clipping values.
    """

    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


class ActivationScheme(_ParsableEnum):
    """Activation quantization: affine (zero point z) or symmetric (z = 0).

    int8 supports both; int16x8 activations are always symmetric in TFLite.
    """

    AFFINE = "affine"
    SYMMETRIC = "symmetric"


class WeightScheme(_ParsableEnum):
    """Weight quantization scheme.

    symmetric: z = 0, Δ = amax / (2^(b-1) - 1), narrow range [-(2^(b-1) - 1), 2^(b-1) - 1]
    (TFLite's int8 weights). asymmetric: affine over [min(w), max(w)] widened to contain 0,
    2^b levels (simulation only).
    """

    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


class Optimizer(_ParsableEnum):
    """The QAT fine-tuning optimizer: ``adam`` or ``sgd`` (with momentum)."""

    ADAM = "adam"
    SGD = "sgd"


class LRSchedule(_ParsableEnum):
    """``cosine``: decay from the initial rate to 0 over the whole fine-tune; ``constant``."""

    COSINE = "cosine"
    CONSTANT = "constant"


class WeightBitAllocation(_ParsableEnum):
    """How int8 models spread ``weight_bits`` over the output channels of each weight.

    uniform: every channel on the ``weight_bits`` grid. aciq: 2^M_c ∝ α_c^(2/3), mean
    exactly ``weight_bits`` per tensor (Banner et al. 2019; see
    :mod:`tfquant.algorithms.aciq_allocation`).
    """

    UNIFORM = "uniform"
    ACIQ = "aciq"


class BiasCorrection(_ParsableEnum):
    """What weight bias correction restores per output channel after quantization.

    none; mean: the expected output shift is folded into the bias; mean_std: also the
    weights' spread, through the channel's scale; sequential: mean, with each layer's input
    expectation taken from the model whose upstream layers are already quantized and
    corrected (one calibration pass per layer; see
    :mod:`tfquant.algorithms.bias_correction`).
    """

    NONE = "none"
    MEAN = "mean"
    MEAN_STD = "mean_std"
    SEQUENTIAL = "sequential"


DEFAULT_PERCENTILE = 99.99
"""p of :attr:`Calibration.PERCENTILE` when none is given (calibrators, recipes, the
simulation, weight bounds)."""


def check_percentile(percentile: object, *, what: str = "percentile") -> float:
    """``percentile`` as a float if it is a number in (0, 100]; the one validation of p.

    Raises:
      TfquantError: not a number (bools and strings included), NaN, or outside (0, 100];
        the message calls it ``what``.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real):
        raise TfquantError(f"{what} must be a number in (0, 100], got {percentile!r}; e.g. 99.99")
    p = float(percentile)
    if not (0.0 < p <= 100.0) or math.isnan(p):
        raise TfquantError(f"{what} must be in (0, 100], got {percentile!r}; e.g. 99.99")
    return p


MIN_WEIGHT_BITS = 2
"""Fewest bits of a weight channel stored in int8: 3 levels {-Δ, 0, Δ} on the narrow
symmetric grid (1 bit would leave only 0)."""
MAX_WEIGHT_BITS = 8
"""Most bits of a weight channel: the int8 storage."""


def check_weight_bits(bits: object, *, what: str = "weight_bits") -> int:
    """Returns ``bits`` as an int if it is an integer in [2, 8].

    Raises:
      TfquantError: otherwise, naming the value and the allowed range.
    """
    import numbers

    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not (
        MIN_WEIGHT_BITS <= int(bits) <= MAX_WEIGHT_BITS
    ):
        raise TfquantError(
            f"{what} must be an integer in [{MIN_WEIGHT_BITS}, {MAX_WEIGHT_BITS}] (weights are "
            f"stored in int8 on a b-bit grid), got {bits!r}"
        )
    return int(bits)
