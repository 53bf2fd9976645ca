"""Which constant tensors a .tflite stores as int8 and which it left float32."""

from __future__ import annotations

from typing import Any

import numpy as np


def int8_weight_share(tflite: bytes) -> dict[str, Any]:
    """Constant tensors of rank >= 2 stored as int8 vs float32, by count and element share.

    Rank >= 2 constants are the kernels, plus e.g. ViT's attention biases (heads x dims) and
    position embedding; plain biases are rank 1. TFLite's dynamic-range mode keeps weight
    tensors under 1024 elements in float32, which this makes visible.

    Returns:
      ``int8_weight_tensors`` (count), ``float_weight_tensors`` (names of the float32 ones)
      and ``int8_weight_fraction`` (int8 elements / all elements of those tensors; 0 if none).
    """
    from tfquant.evaluation.inspect import inspect_model

    weights = [t for t in inspect_model(tflite).tensors if t.constant and len(t.shape) >= 2]
    int8 = [t for t in weights if t.dtype == "int8"]
    kept = [t for t in weights if t.dtype == "float32"]
    n_int8 = sum(int(np.prod(t.shape)) for t in int8)
    n_all = n_int8 + sum(int(np.prod(t.shape)) for t in kept)
    return {
        "int8_weight_tensors": len(int8),
        "float_weight_tensors": [t.name for t in kept],
        "int8_weight_fraction": n_int8 / n_all if n_all else 0.0,
    }


_OP_SUFFIXES = frozenset({"Conv2D", "depthwise", "MatMul", "add", "ReadVariableOp"})


def short_tensor_name(name: str) -> str:
    """A converter tensor name without the model prefix and op suffixes.

    ``mobilenet_v1/block1_dw_bn/...;mobilenet_v1/block1_dw/depthwise`` -> ``block1_dw``.
    """
    parts = name.split(";")[-1].split("/")
    return "/".join(p for p in parts[1:] if p not in _OP_SUFFIXES) or name
