"""The one place a LiteRT ``Interpreter`` is constructed, and its private graph queries.

Runtimes (:class:`tfquant.qtypes.Runtime`), as :func:`make_interpreter` builds them:

* ``xnnpack``: the default op resolver (``OpResolverType.AUTO``); LiteRT applies its
  default delegate (XNNPACK) lazily, on the first ``allocate_tensors()``.
* ``builtin``: ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``: the builtin optimized
  kernels, no delegate at all.
* ``delegate``: an external delegate library (default ``libhexagon_interface.so``) loaded with
  ``load_delegate``; ops it does not take run on the builtin kernels (default delegates are
  disabled so that :func:`count_delegated_nodes` counts the external delegate alone).
* ``compiled_cpu`` / ``compiled_gpu`` / ``compiled_npu``: LiteRT's CompiledModel API on that
  accelerator, wrapped like an interpreter (:mod:`tfquant.tflite.compiled`).

Private LiteRT API used here, and why: the Python ``Interpreter`` exposes no node graph
(names, inputs, outputs of the execution plan's nodes) and no op list, so
:func:`node_names`, :func:`count_delegated_nodes` and :func:`ops_details` read the wrapped
C++ interpreter (``interpreter._interpreter``) and ``Interpreter._get_ops_details``;
:func:`tensor_shape` uses the wrapper's ``TensorSize``, which returns the shape without the
data copy ``get_tensor`` makes. LiteRT 2.3.0 has no public alternative for any of them.

Needs only ``ai_edge_litert`` and numpy, never TensorFlow.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Union

from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.tflite.preflight import preflight

ModelLike = Union[str, "os.PathLike[str]", bytes]
"""A model: a path to a .tflite file, or the flatbuffer's bytes."""

DEFAULT_DELEGATE_LIBRARY = "libhexagon_interface.so"
REEXPORT = "re-export it with 'python -m tfquant convert'"
# Name LiteRT gives a node that a delegate created to replace a partition of the graph.
_DELEGATE_NODE_NAME = "DELEGATE"
_RESOLVER = {
    Runtime.XNNPACK: OpResolverType.AUTO,
    Runtime.BUILTIN: OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    Runtime.DELEGATE: OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def one_line(e: BaseException, limit: int = 300) -> str:
    """``e``'s message on one line, cut at ``limit`` characters."""
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def describe_model(model: ModelLike) -> str:
    """A short label for messages: the path, or ``<N bytes of flatbuffer>``."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<{len(model)} bytes of flatbuffer>"
    return repr(os.fspath(model))


def read_model(model: ModelLike) -> bytes:
    """Returns the flatbuffer bytes of ``model``, or raises a TfquantError naming the problem."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise TfquantError(f"{describe_model(model)} is not a valid .tflite model (empty); {REEXPORT}")
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
        raise TfquantError(f"{str(path)!r} is not a valid .tflite model (the file is empty); {REEXPORT}")
    return data


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


def _delegates(runtime: Runtime, delegate_path: str | None) -> list[Any]:
    """The external delegate of ``runtime='delegate'``, loaded; else no delegate."""
    if runtime is not Runtime.DELEGATE:
        return []
    library = delegate_path or DEFAULT_DELEGATE_LIBRARY
    _check_delegate_library(library)
    try:
        return [load_delegate(library)]
    except (ValueError, RuntimeError, OSError) as e:
        raise TfquantError(
            f"delegate library {library!r} failed to create its delegate ({one_line(e)}); "
            "the Hexagon delegate only runs on Qualcomm Android devices: run on the device via "
            "adb with benchmark_model, or use --runtime xnnpack or builtin"
        ) from None


def make_interpreter(
    model: ModelLike,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int | None = None,
    delegate_path: str | None = None,
    preserve_all_tensors: bool = False,
    allocate: bool = False,
    label: str | None = None,
    check: bool | None = None,
) -> Interpreter:
    """Builds a LiteRT interpreter for ``model`` on ``runtime``.

    Args:
      model: Path to a .tflite file, or its bytes.
      runtime: ``xnnpack`` (default op resolver: XNNPACK applied at allocation), ``builtin``
        (builtin kernels, no default delegate) or ``delegate`` (an external delegate library).
      num_threads: Interpreter threads (>= 1); ``None`` leaves LiteRT's default.
      delegate_path: Library for ``runtime='delegate'``; default ``libhexagon_interface.so``.
      preserve_all_tensors: keep every intermediate tensor readable after ``invoke()``
        (``experimental_preserve_all_tensors``; slower, for layer-by-layer diffs).
      allocate: call ``allocate_tensors()`` (which applies the default delegate, if any).
      label: how errors name the model (default: its path, or ``<N bytes of flatbuffer>``).
      check: first run the model once in a child process (:func:`~tfquant.tflite.preflight.preflight`),
        so that a malformed model that crashes or hangs the native interpreter becomes an
        error instead of killing this process; default: for a model read from a file (bytes
        in memory come from this process's own converter).

    Returns:
      The interpreter (tensors allocated if ``allocate``).

    Raises:
      TfquantError: missing/corrupt file, bad thread count, unloadable delegate library, or
        (with ``allocate``) a model LiteRT cannot prepare (e.g. an unresolved custom op).
    """
    runtime = Runtime.parse(runtime, what="runtime")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise TfquantError(f"num_threads must be an integer >= 1, got {num_threads!r}")
    if delegate_path is not None and runtime is not Runtime.DELEGATE:
        raise TfquantError(
            f"delegate_path={delegate_path!r} is only used with runtime 'delegate', not {runtime.value!r}; "
            "drop --delegate_path or pass --runtime delegate"
        )
    data = read_model(model)
    label = label or describe_model(model)
    if check if check is not None else not isinstance(model, (bytes, bytearray, memoryview)):
        preflight(data, label=label)
    if runtime.compiled:  # LiteRT's CompiledModel API, wrapped like an interpreter
        from tfquant.tflite.compiled import make_compiled

        if preserve_all_tensors:
            raise TfquantError(f"--runtime {runtime.value} cannot keep intermediate tensors; use xnnpack or builtin")
        plain = make_interpreter(data, runtime=Runtime.BUILTIN, label=label)  # tensor details only
        details = (plain.get_input_details(), plain.get_output_details())
        return make_compiled(data, runtime, details=details, num_threads=num_threads, label=label)  # type: ignore[return-value]
    delegates = _delegates(runtime, delegate_path)
    try:
        interpreter = Interpreter(
            model_content=data,
            num_threads=num_threads,
            experimental_op_resolver_type=_RESOLVER[runtime],
            experimental_delegates=delegates or None,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )
    except ValueError as e:
        raise TfquantError(f"{label} is not a valid .tflite model ({one_line(e)}); {REEXPORT}") from None
    if allocate:
        try:
            interpreter.allocate_tensors()
        except RuntimeError as e:
            raise TfquantError(
                f"LiteRT cannot prepare {label} with runtime {runtime.value!r} ({one_line(e)}); "
                f"{REEXPORT} using TFLite builtin ops only"
            ) from None
    return interpreter


def node_names(interpreter: Interpreter) -> tuple[str, ...]:
    """Names of the main subgraph's nodes in execution-plan order (op names, ``DELEGATE``)."""
    wrapper = interpreter._interpreter  # noqa: SLF001  (no public node API in LiteRT)
    return tuple(str(wrapper.NodeName(i)) for i in range(wrapper.NumNodes()))


def ops_details(interpreter: Interpreter) -> list[dict[str, Any]]:
    """Each op of the model: ``{"index", "op_name", "inputs", "outputs"}`` (tensor indices)."""
    return interpreter._get_ops_details()  # noqa: SLF001  (no public op API in LiteRT)


def tensor_shape(interpreter: Interpreter, index: int) -> tuple[int, ...]:
    """Current shape of tensor ``index`` (no copy of its data, unlike ``get_tensor``)."""
    if hasattr(interpreter, "tensor_shape"):  # a CompiledRunner (tfquant.tflite.compiled)
        return interpreter.tensor_shape(index)
    wrapper = interpreter._interpreter  # noqa: SLF001  (cheap shape query)
    return tuple(int(d) for d in wrapper.TensorSize(index, 0))


def _covered_nodes(wrapper: Any, delegate_node: int, producer: dict[int, int]) -> set[int]:
    """Original nodes that ``delegate_node`` replaced, rebuilt from its inputs and outputs.

    A delegate node's inputs are exactly the tensors that enter its partition (activations
    and constants) and its outputs the tensors that leave it, so walking back from the outputs
    through their producers (``producer``: tensor -> original node), stopping at the
    partition's inputs, visits exactly the replaced nodes.
    """
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

    See :func:`delegated_nodes`.
    """
    taken, total = delegated_nodes(interpreter)
    return len(taken), total


def delegated_nodes(interpreter: Interpreter) -> tuple[frozenset[int], int]:
    """``(indices of the ops taken by delegates, total ops)`` of an allocated interpreter.

    LiteRT keeps the model's original nodes 0..M-1 when a delegate partitions the graph and
    appends one node per delegated partition (named ``DELEGATE``); the execution plan then
    runs the appended nodes instead of the replaced ones. The replaced nodes are recovered from
    each appended node's boundary tensors (see :func:`_covered_nodes`).
    """
    names = node_names(interpreter)
    n_nodes = len(names)
    # Delegate nodes are appended after all of the model's nodes.
    first_delegate = next(
        (i for i, name in enumerate(names) if name == _DELEGATE_NODE_NAME), n_nodes
    )
    wrapper = interpreter._interpreter  # noqa: SLF001  (no public node API in LiteRT)
    producer = {int(t): node for node in range(first_delegate) for t in wrapper.NodeOutputs(node)}
    taken: set[int] = set()
    for node in range(first_delegate, n_nodes):
        taken |= _covered_nodes(wrapper, node, producer)
    return frozenset(taken), first_delegate
