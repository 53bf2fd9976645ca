"""tfmot internals that tfquant's QAT uses, re-exported from one place.

``tensorflow_model_optimization`` 0.8 exports ``quantize_apply``, ``QuantizeWrapper``,
``QuantizeConfig`` and the quantizers publicly, but not what a custom quantization scheme
needs. Each re-export below, and why tfquant needs it:

* ``quantize_annotate``: the annotate wrapper's module (``QuantizeAnnotate`` class, to find
  the layers a user annotated before ``quantize_apply``);
* ``quantize_layer``: ``QuantizeLayer``, the input fake quant that ``quantize_apply``
  inserts (its range is initialised from calibration and read back at export);
* ``quantize_layout_transform``, ``quantize_registry``, ``quantize_scheme``: the base
  classes of a scheme (``QuantizeScheme`` = layout transform + registry), so tfquant's
  scheme can keep tfmot's graph rewrites while choosing its own quantizers;
* ``default_8bit_quantize_scheme``: tfmot's 8-bit scheme, the one tfquant extends;
* ``default_n_bit_quantize_layout_transform``: the n-bit scheme's layout transform (BN
  folding and activation fusions at any bit width).

A tfmot upgrade that moves these breaks only this module.
"""

from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_annotate,
    quantize_layer,
    quantize_layout_transform,
    quantize_registry,
    quantize_scheme,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_scheme,
)
from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
    default_n_bit_quantize_layout_transform,
)

__all__ = [
    "default_8bit_quantize_scheme",
    "default_n_bit_quantize_layout_transform",
    "quantize_annotate",
    "quantize_layer",
    "quantize_layout_transform",
    "quantize_registry",
    "quantize_scheme",
]
