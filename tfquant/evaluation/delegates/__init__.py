"""Would a delegate take each op of a .tflite? Predicted from the flatbuffer alone.

``check(tflite, delegate)`` reads the main subgraph (:func:`tfquant.tflite.op_graph.read_ops`)
and applies the delegate's rules to each op, giving per op either "delegated" or the reason it
stays on the CPU (op type, tensor types, per-channel / per-tensor, int16, shapes, version).

Delegates and where their rules come from:

* ``xnnpack`` (:mod:`.xnnpack`): the op and type support of LiteRT 2.3.0's XNNPACK delegate as
  its ``xnnpack_delegate.cc`` implements it, checked against what the interpreter actually
  delegates (``tests/evaluation/test_delegate_check.py`` counts the ops inside XNNPACK's
  partitions at run time and compares them op by op).
* ``gpu`` (:mod:`.gpu`): the GPU delegate's documented op list ("GPU delegates for LiteRT",
  supported ops and versions), quantized models via its quantized-model support.
* ``hexagon`` (:mod:`.hexagon`): the Hexagon delegate's README (8-bit only, ops and their
  constraints as ``IsNodeSupportedByHexagon`` checks them).
* ``nnapi`` (:mod:`.nnapi`): the NNAPI operation list (first Android API level of each op
  and of each operand type), for a target API level (default 30, Android 11).

Only ``xnnpack`` can be checked on this machine; the others are documented rules, each tested
on a synthetic op.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from tfquant.errors import TfquantError
from tfquant.evaluation.delegates import gpu, hexagon, nnapi, xnnpack
from tfquant.qtypes import TargetDelegate
from tfquant.tflite.op_graph import OpNode, read_ops

Rule = Callable[[OpNode, list[OpNode]], "str | None"]
"""A delegate's rule: ``None`` if it takes the op, else why not (one short phrase)."""


@dataclasses.dataclass(frozen=True)
class OpVerdict:
    """One op's verdict: ``reason`` is empty when the delegate takes it."""

    index: int
    op: str
    version: int
    delegated: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class DelegateReport:
    """Per-op verdicts of one delegate on one model."""

    delegate: TargetDelegate
    ops: tuple[OpVerdict, ...]

    @property
    def delegated_ops(self) -> int:
        return sum(v.delegated for v in self.ops)

    @property
    def total_ops(self) -> int:
        return len(self.ops)

    def summary(self) -> str:
        """``xnnpack: N of M ops delegated``."""
        return f"{self.delegate.value}: {self.delegated_ops} of {self.total_ops} ops delegated"

    def to_dict(self) -> dict:
        return {
            "delegate": self.delegate.value,
            "delegated_ops": self.delegated_ops,
            "total_ops": self.total_ops,
            "ops": [dataclasses.asdict(v) for v in self.ops],
        }


def _rules(delegate: TargetDelegate) -> Rule:
    return {
        TargetDelegate.XNNPACK: xnnpack.rule,
        TargetDelegate.GPU: gpu.rule,
        TargetDelegate.HEXAGON: hexagon.rule,
        TargetDelegate.NNAPI: nnapi.rule,
    }[delegate]


def check_ops(ops: list[OpNode], delegate: TargetDelegate | str) -> DelegateReport:
    """Applies ``delegate``'s rules to ``ops`` (see :func:`check`)."""
    delegate = TargetDelegate.parse(delegate, what="delegate")
    rule = _rules(delegate)
    reasons = [rule(op, ops) for op in ops]
    if delegate is TargetDelegate.XNNPACK:
        reasons = xnnpack.settle_fp16_dequantize(ops, reasons)
    return DelegateReport(delegate, tuple(
        OpVerdict(op.index, op.op, op.version, reason is None, reason or "")
        for op, reason in zip(ops, reasons)
    ))


def check(tflite: bytes, delegate: TargetDelegate | str) -> DelegateReport:
    """Predicts, op by op, what ``delegate`` would take of the model ``tflite`` (its bytes).

    Raises:
      TfquantError: not a TFLite model, or an unknown delegate.
    """
    ops = read_ops(tflite)
    if not ops:
        raise TfquantError("the model has no ops in its main subgraph; re-export it")
    return check_ops(ops, delegate)

