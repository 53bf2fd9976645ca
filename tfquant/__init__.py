"""tfquant: TensorFlow / LiteRT quantization conversion and evaluation.

The verbs (:mod:`tfquant.api`, the same functions the CLI calls)::

    import tfquant
    tfquant.quantize("my.keras", mode="int8", calibration_data="npz:calib.npz", out="m.tflite")
    tfquant.evaluate("m.tflite", "npz:test.npz")["accuracy"]
    print(tfquant.inspect("m.tflite"))
"""

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)
from tfquant.api import evaluate, inspect, load_model, quantize
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, IODType, Mode, Runtime
from tfquant.recipes import VARIANTS, Recipe, variant
from tfquant.recipes.inputs import InputContract

__all__ = [
    "InputContract",
    "Granularity",
    "IODType",
    "Mode",
    "Recipe",
    "Runtime",
    "TfquantError",
    "VARIANTS",
    "evaluate",
    "inspect",
    "load_model",
    "quantize",
    "variant",
]
__version__ = "0.1.0"
