"""tfquant: TensorFlow / LiteRT quantization conversion and evaluation."""

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, IODType, Mode, Runtime
from tfquant.recipes import VARIANTS, Recipe, variant

__all__ = [
    "Granularity",
    "IODType",
    "Mode",
    "Recipe",
    "Runtime",
    "TfquantError",
    "VARIANTS",
    "variant",
]
__version__ = "0.1.0"
