"""Quantization maths (pure numpy)."""

from tfquant.numerics.affine import (
    QuantParams,
    affine_params,
    dequantize,
    fake_quantize,
    quantize,
    symmetric_params,
)

__all__ = ["QuantParams", "affine_params", "dequantize", "fake_quantize", "quantize", "symmetric_params"]
