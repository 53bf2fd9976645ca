"""Per-layer precision rules: which layers / ops run int8, int16x8 or float.

A recipe with ``layer_rules`` describes a *mixed* model. The recipe's ``mode`` (int8 or
int16x8) is the precision of every op no rule matches; each :class:`LayerRule` then
overrides the precision (and optionally the activation calibrator) of the ops it matches.
As in AI Edge Quantizer's recipes (methods.md section 6), rules are an ordered list and the
**last matching rule wins**.

A rule matches an op when both of its selectors match (an unset selector matches all):

* ``layers``: a regular expression, ``re.fullmatch``-ed against the op's Keras layer name
  (the layer the op's output tensor belongs to, e.g. ``conv1``) and against the op's output
  tensor name (e.g. ``model/conv1/Relu;model/conv1/Conv2D``); either match counts.
* ``op_type``: the TFLite builtin op name (``CONV_2D``, ``FULLY_CONNECTED``, ``ADD``, ...).

Precisions: ``int8`` (int8 weights, int8 affine activations), ``int16x8`` (int8 weights,
int16 symmetric activations), ``float`` (the op stays float32; the quantizer inserts
QUANTIZE / DEQUANTIZE where precisions meet).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from tfquant.dataclass_json import from_json_dict, to_json_dict
from tfquant.errors import TfquantError
from tfquant.qtypes import Calibration, _ParsableEnum, check_percentile


class Precision(_ParsableEnum):
    """The precision of one op in a mixed model."""

    INT8 = "int8"
    INT16X8 = "int16x8"
    FLOAT = "float"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerRule:
    """One per-layer precision rule (see the module docstring).

    Attributes:
      precision: int8, int16x8 or float for the matched ops.
      layers: regular expression over the Keras layer name or the op's output tensor name
        (``re.fullmatch``); ``None`` matches every op.
      op_type: TFLite builtin op name (e.g. ``CONV_2D``); ``None`` matches every op type.
      calibrator: activation calibrator for the matched ops' output tensors (``None``: the
        recipe's ``calibrator``).
      percentile: for ``calibrator`` percentile (default: the recipe's, else 99.99).
    """

    precision: Precision
    layers: str | None = None
    op_type: str | None = None
    calibrator: Calibration | None = None
    percentile: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision, what="layer precision"))
        if self.layers is not None:
            if not isinstance(self.layers, str) or not self.layers:
                raise TfquantError(f"layer rule 'layers' must be a non-empty regex, got {self.layers!r}")
            try:
                re.compile(self.layers)
            except re.error as e:
                raise TfquantError(
                    f"layer rule 'layers' {self.layers!r} is not a valid regular expression ({e}); "
                    "fix the pattern (it is matched with re.fullmatch)"
                ) from None
        if self.op_type is not None:
            if not isinstance(self.op_type, str) or not re.fullmatch(r"[A-Z0-9_]+", self.op_type.upper()):
                raise TfquantError(
                    f"layer rule op_type must be a TFLite op name such as CONV_2D, got {self.op_type!r}"
                )
            object.__setattr__(self, "op_type", self.op_type.upper())
        if self.calibrator is not None:
            object.__setattr__(self, "calibrator", Calibration.parse(self.calibrator, what="calibrator"))
        if self.percentile is not None:
            if self.calibrator is not Calibration.PERCENTILE:
                raise TfquantError("a layer rule's percentile needs calibrator percentile; drop it")
            object.__setattr__(self, "percentile", check_percentile(self.percentile, what="percentile"))
        if self.precision is Precision.FLOAT and self.calibrator is not None:
            raise TfquantError("a float layer rule has no activation ranges; drop its calibrator")

    def matches(self, layer: str | None, tensor: str, op_type: str) -> bool:
        """Whether this rule selects an op with Keras ``layer`` name, output ``tensor`` name
        and TFLite ``op_type``."""
        if self.op_type is not None and self.op_type != op_type:
            return False
        if self.layers is None:
            return True
        return any(n is not None and re.fullmatch(self.layers, n) for n in (layer, tensor))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in to_json_dict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerRule":
        return cls(**from_json_dict(cls, d, what="layer rule", required=("precision",)))


def parse_rules(rules: object) -> tuple[LayerRule, ...]:
    """``rules`` (LayerRule objects or their JSON dicts) as a tuple of :class:`LayerRule`."""
    if rules is None:
        return ()
    if isinstance(rules, (str, bytes, Mapping)) or not hasattr(rules, "__iter__"):
        raise TfquantError(f"layer_rules must be a list of rules, got {type(rules).__name__}")
    out = []
    for r in rules:
        if isinstance(r, LayerRule):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(LayerRule.from_dict(r))
        else:
            raise TfquantError(f"a layer rule must be an object with 'precision', got {r!r}")
    return tuple(out)


def precision_of(
    rules: tuple[LayerRule, ...], base: Precision, layer: str | None, tensor: str, op_type: str
) -> tuple[Precision, LayerRule | None]:
    """The precision the rules give one op (last match wins) and the rule that decided."""
    chosen: LayerRule | None = None
    for rule in rules:
        if rule.matches(layer, tensor, op_type):
            chosen = rule
    return (chosen.precision if chosen else base), chosen
