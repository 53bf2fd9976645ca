"""Loading a .tflite into the LiteRT interpreter, and what its delegate took.

Runtimes (:class:`tfquant.qtypes.Runtime`):

* ``xnnpack``: the default op resolver; LiteRT applies its default delegate (XNNPACK) lazily,
  on the first ``allocate_tensors()``.
* ``builtin``: ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``: the builtin optimized
  kernels, no delegate at all.
* ``delegate``: an external delegate library (default ``libhexagon_interface.so``) loaded with
  ``load_delegate``; ops it does not take run on the builtin kernels (default delegates are
  disabled so that :func:`delegated_op_count` counts the external delegate alone).

This module (like all of ``tfquant.evaluation``) needs only ``ai_edge_litert`` and numpy, not
TensorFlow.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Union

from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime

ModelLike = Union[str, "os.PathLike[str]", bytes]
"""A model: a path to a .tflite file, or the flatbuffer's bytes."""

DEFAULT_DELEGATE_LIBRARY = "libhexagon_interface.so"
_REEXPORT = "re-export it with 'python -m tfquant convert'"
# Name LiteRT gives a node that a delegate created to replace a partition of the graph.
_DELEGATE_NODE_NAME = "DELEGATE"


def describe_model(model: ModelLike) -> str:
    """A short label for messages: the path, or ``<N bytes of flatbuffer>``."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<{len(model)} bytes of flatbuffer>"
    return repr(os.fspath(model))


def _read_model(model: ModelLike) -> bytes:
    """Returns the flatbuffer bytes of ``model``, or raises a TfquantError naming the problem."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise TfquantError(f"{describe_model(model)} is not a valid .tflite model (empty); {_REEXPORT}")
        return data
    if not isinstance(model, (str, os.PathLike)):
        raise TfquantError(
            f"model must be a .tflite path or the model's bytes, got {type(model).__name__}"
        )
    path = Path(model)
    if not path.exists():
        raise TfquantError(
            f"model file {str(path)!r} does not exist; check the path or create it with "
            "'python -m tfquant convert'"
        )
    if not path.is_file():
        raise TfquantError(f"model path {str(path)!r} is not a file; pass the path of a .tflite file")
    data = path.read_bytes()
    if not data:
        raise TfquantError(f"{str(path)!r} is not a valid .tflite model (the file is empty); {_REEXPORT}")
    return data


def file_size(path: "str | os.PathLike[str]") -> int:
    """Size of the file at ``path`` in bytes (the .tflite's on-disk size)."""
    p = Path(path)
    if not p.is_file():
        raise TfquantError(f"cannot size {str(p)!r}: no such file; check the path")
    return p.stat().st_size


def _check_delegate_library(library: str) -> None:
    """Raises a TfquantError unless ``library`` is loadable and exports the delegate plugin API.

    Checked with ctypes first because a failed ``load_delegate`` leaves a half-built
    ``Delegate`` whose finalizer prints a traceback to stderr.
    """
    hint = (
        "the Hexagon delegate (libhexagon_interface.so) only exists on Qualcomm Android devices "
        "with a Hexagon DSP: run the model on the device via adb with LiteRT's benchmark_model "
        "(--use_hexagon=true), or evaluate here with --runtime xnnpack or builtin"
    )
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        raise TfquantError(f"cannot load delegate library {library!r} ({e}); {hint}") from None
    missing = [
        sym for sym in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
        if not hasattr(lib, sym)
    ]
    if missing:
        raise TfquantError(
            f"{library!r} is not a LiteRT external delegate (it does not export "
            f"{', '.join(missing)}); {hint}"
        )


def _check_threads(num_threads: int) -> None:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise TfquantError(f"num_threads must be an integer >= 1, got {num_threads!r}")


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
    runtime = Runtime.parse(runtime, what="runtime")
    _check_threads(num_threads)
    if delegate_path is not None and runtime is not Runtime.DELEGATE:
        raise TfquantError(
            f"delegate_path={delegate_path!r} is only used with runtime 'delegate', not {runtime.value!r}; "
            "drop --delegate_path or pass --runtime delegate"
        )
    data = _read_model(model)
    label = describe_model(model)
    delegates = []
    if runtime is Runtime.DELEGATE:
        library = delegate_path or DEFAULT_DELEGATE_LIBRARY
        _check_delegate_library(library)
        try:
            delegates = [load_delegate(library)]
        except (ValueError, RuntimeError, OSError) as e:
            raise TfquantError(
                f"delegate library {library!r} failed to create its delegate ({_one_line(e)}); "
                "the Hexagon delegate only runs on Qualcomm Android devices: run on the device via "
                "adb with benchmark_model, or use --runtime xnnpack or builtin"
            ) from None
    resolver = OpResolverType.AUTO if runtime is Runtime.XNNPACK else (
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        interpreter = Interpreter(
            model_content=data,
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
            experimental_delegates=delegates or None,
        )
    except ValueError as e:
        raise TfquantError(f"{label} is not a valid .tflite model ({_one_line(e)}); {_REEXPORT}") from None
    try:
        interpreter.allocate_tensors()
    except RuntimeError as e:
        raise TfquantError(
            f"LiteRT cannot prepare {label} with runtime {runtime.value!r} ({_one_line(e)}); "
            f"{_REEXPORT} using TFLite builtin ops only"
        ) from None
    return interpreter


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _covered_nodes(
    interpreter: Interpreter, delegate_node: int, producer: dict[int, int]
) -> set[int]:
    """Original nodes that ``delegate_node`` replaced, rebuilt from its inputs and outputs.

    A delegate node's inputs are exactly the tensors that enter its partition (activations
    and constants) and its outputs the tensors that leave it, so walking back from the outputs
    through their producers (``producer``: tensor -> original node), stopping at the
    partition's inputs, visits exactly the replaced nodes.
    """
    wrapper = interpreter._interpreter  # noqa: SLF001  (no public node API in LiteRT)
    boundary = {int(t) for t in wrapper.NodeInputs(delegate_node)}
    covered: set[int] = set()
    stack = [int(t) for t in wrapper.NodeOutputs(delegate_node)]
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if t in seen or t in boundary or t < 0:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or node in covered:
            continue
        covered.add(node)
        stack.extend(int(u) for u in wrapper.NodeInputs(node))
    return covered


def count_delegated_nodes(interpreter: Interpreter) -> tuple[int, int]:
    """``(ops taken by delegates, total ops)`` of an allocated interpreter's main subgraph.

    LiteRT keeps the model's original nodes 0..M-1 when a delegate partitions the graph and
    appends one node per delegated partition (named ``DELEGATE``); the execution plan then
    runs the appended nodes instead of the replaced ones. The replaced nodes are recovered from
    each appended node's boundary tensors (see :func:`_covered_nodes`).
    """
    wrapper = interpreter._interpreter  # noqa: SLF001
    n_nodes = wrapper.NumNodes()
    names = [wrapper.NodeName(i) for i in range(n_nodes)]
    del wrapper
    # Delegate nodes are appended after all of the model's nodes.
    first_delegate = next(
        (i for i, name in enumerate(names) if name == _DELEGATE_NODE_NAME), n_nodes
    )
    n_original = first_delegate
    wrapper = interpreter._interpreter  # noqa: SLF001
    producer = {int(t): node for node in range(n_original) for t in wrapper.NodeOutputs(node)}
    del wrapper
    taken: set[int] = set()
    for node in range(first_delegate, n_nodes):
        taken |= _covered_nodes(interpreter, node, producer)
    return len(taken), n_original


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
