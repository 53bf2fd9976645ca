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

The ``QuantizeWrapper`` keeps its fake quantizers in private attributes (no public
accessor in tfmot 0.8); range initialisation, export checks and the Keras-vs-TFLite comparison
need them, through the functions below:

* :func:`weight_quantizers`: ``(weight, quantizer, quantizer_vars)`` per quantized weight;
* :func:`activation_quantizers`: the wrapped activations (``QuantizeAwareActivation``);
* :func:`activation_range_vars`: an activation's pre- / post-activation range variables;
* :func:`output_quantizers` / :func:`output_quantizer_vars`: the output fake quant.

A tfmot upgrade that moves these breaks only this module.
"""

from __future__ import annotations

from typing import Any

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



def weight_quantizers(wrapper: Any) -> list[tuple[Any, Any, Any]]:
    """``(weight, quantizer, quantizer_vars)`` of each weight a ``QuantizeWrapper`` quantizes."""
    return list(wrapper._weight_vars)  # noqa: SLF001


def activation_quantizers(wrapper: Any) -> list[Any]:
    """The ``QuantizeAwareActivation`` objects of a ``QuantizeWrapper`` (none for other layers)."""
    return list(getattr(wrapper, "_quantize_activations", ()))


def activation_range_vars(activation: Any, which: str) -> Any | None:
    """``which`` = ``"pre"`` or ``"post"``: the activation's range variables, or None."""
    if which not in ("pre", "post"):
        raise ValueError(f"which must be 'pre' or 'post', not {which!r}")
    return getattr(activation, f"_{which}_activation_vars", None)


def output_quantizers(wrapper: Any) -> list[Any]:
    """The output fake quantizers of a ``QuantizeWrapper`` (empty when it has none)."""
    return list(wrapper._output_quantizers)  # noqa: SLF001


def output_quantizer_vars(wrapper: Any) -> Any:
    """The range variables of a ``QuantizeWrapper``'s output quantizer."""
    return wrapper._output_quantizer_vars  # noqa: SLF001


__all__ = [
    "activation_quantizers",
    "activation_range_vars",
    "output_quantizer_vars",
    "output_quantizers",
    "weight_quantizers",
    "default_8bit_quantize_scheme",
    "default_n_bit_quantize_layout_transform",
    "quantize_annotate",
    "quantize_layer",
    "quantize_layout_transform",
    "quantize_registry",
    "quantize_scheme",
]
