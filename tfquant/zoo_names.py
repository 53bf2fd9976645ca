"""The zoo's model names, importable without TensorFlow.

The experiment scripts check their flags against these before they import TensorFlow (a bad
flag fails in well under a second); :mod:`tfquant.models` builds the models.
"""

from __future__ import annotations

ZOO: tuple[str, ...] = ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet", "vit")
"""Every zoo model, in table order."""

QAT_ZOO: tuple[str, ...] = ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet")
"""The zoo models tfmot can wrap for quantization-aware training."""

UNWRAPPABLE_ZOO: tuple[str, ...] = ("vit",)
"""The zoo models tfmot cannot wrap (attention, LayerNormalization and the position embedding
have no quantize config)."""
