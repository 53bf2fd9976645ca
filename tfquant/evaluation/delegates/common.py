"""Helpers shared by the delegates' rules."""

from __future__ import annotations

from tfquant.tflite.op_graph import Operand, OpNode


def activations(op: OpNode) -> list[Operand]:
    """The op's non-constant operands (inputs and outputs)."""
    return [t for t in (*op.inputs, *op.outputs) if not t.constant]


def fused_activation(op: OpNode) -> str:
    """The op's fused activation (``NONE``, ``RELU``, ``RELU6``, ...)."""
    return str(op.options.get("fusedActivationFunction", "NONE"))
