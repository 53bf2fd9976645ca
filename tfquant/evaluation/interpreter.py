"""A .tflite loaded for evaluation, what its delegate took, and its size on disk.

The interpreter itself is built by :func:`tfquant.tflite.interpreter.make_interpreter` (the
one place tfquant constructs one; runtimes are described there). This module (like all of
``tfquant.evaluation``) needs only ``ai_edge_litert`` and numpy, not TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from ai_edge_litert.interpreter import Interpreter

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite.interpreter import (
    DEFAULT_DELEGATE_LIBRARY,
    ModelLike,
    count_delegated_nodes,
    describe_model,
    make_interpreter,
)

__all__ = [
    "DEFAULT_DELEGATE_LIBRARY",
    "ModelLike",
    "count_delegated_nodes",
    "delegated_op_count",
    "describe_model",
    "file_size",
    "load_interpreter",
]


def file_size(path: "str | os.PathLike[str]") -> int:
    """Size of the file at ``path`` in bytes (the .tflite's on-disk size)."""
    p = Path(path)
    if not p.is_file():
        raise TfquantError(f"cannot size {str(p)!r}: no such file; check the path")
    return p.stat().st_size


def load_interpreter(
    model: ModelLike,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    delegate_path: str | None = None,
) -> Interpreter:
    """Loads ``model`` into a LiteRT interpreter for ``runtime`` and allocates its tensors.

    Args:
      model: Path to a .tflite file, or its bytes.
      runtime: ``xnnpack`` (default op resolver: XNNPACK applied), ``builtin`` (builtin
        kernels, no default delegate) or ``delegate`` (an external delegate library).
      num_threads: Interpreter threads (>= 1).
      delegate_path: Library for ``runtime='delegate'``; default ``libhexagon_interface.so``.

    Returns:
      An interpreter whose tensors are allocated (so the default delegate, if any, is applied).

    Raises:
      TfquantError: missing/corrupt file, unloadable delegate library, or a model LiteRT cannot
        prepare (e.g. an unresolved custom op).
    """
    if num_threads is None:
        raise TfquantError("num_threads must be an integer >= 1, got None")
    return make_interpreter(
        model, runtime=runtime, num_threads=num_threads, delegate_path=delegate_path, allocate=True
    )


def delegated_op_count(
    model: ModelLike,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    delegate_path: str | None = None,
) -> tuple[int, int]:
    """How many of the model's ops the runtime's delegate executes.

    Loads ``model`` with :func:`load_interpreter` (which allocates tensors, so XNNPACK is
    applied) and counts the replaced nodes with :func:`count_delegated_nodes`.

    Returns:
      ``(delegated, total)``: ops run by the delegate and ops in the main subgraph. ``builtin``
      always gives ``(0, total)``.
    """
    interpreter = load_interpreter(
        model, runtime=runtime, num_threads=num_threads, delegate_path=delegate_path
    )
    return count_delegated_nodes(interpreter)
