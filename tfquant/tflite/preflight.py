"""Pre-flight: a .tflite from disk runs once in a child process before this process trusts it.

A malformed model (truncated, bit-flipped, zeroed, or built to attack the runtime) usually
makes LiteRT raise (the flatbuffer verifier, a kernel's Prepare); but some corruptions pass
the verifier and then make the native interpreter abort, segfault, hang or allocate without
bound, which would kill or freeze the whole command or experiment. :func:`preflight` loads the
model, lists its tensors and ops (what ``inspect`` reads), allocates it and runs one
``invoke()`` on zero inputs (builtin kernels and XNNPACK) in a child process under a time limit
and a memory limit (the machine's RAM); a child
killed by a signal, stopped by the timeout or out of memory becomes a :class:`TfquantError`.
A Python-level error in the child (``ValueError`` from the verifier, ``RuntimeError`` from a
kernel) is left to the caller, whose own interpreter raises the same error and turns it into
its usual message.

The child is a self-contained script that imports ``ai_edge_litert`` and numpy only (no
TensorFlow, no tfquant): about 0.4 s on an idle machine. A model that passed is remembered by
its sha256 (per process and on disk, see :func:`preflight`), so each model pays once.
``TFQUANT_PREFLIGHT_TIMEOUT`` (seconds, default 120) sets the time limit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tfquant.errors import TfquantError

TIMEOUT_ENV = "TFQUANT_PREFLIGHT_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0
_CHILD = r"""
import resource, sys
limit = int(sys.argv[2])
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
raised = False
for resolver in ("BUILTIN_WITHOUT_DEFAULT_DELEGATES", "AUTO"):  # builtin kernels, then XNNPACK
    interpreter = None
    try:
        interpreter = Interpreter(model_path=sys.argv[1], num_threads=1,
                                  experimental_op_resolver_type=getattr(OpResolverType, resolver))
        interpreter.get_tensor_details()
        interpreter._get_ops_details()
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            if np.dtype(d["dtype"]).kind in "biuf":
                interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interpreter.invoke()
        for d in interpreter.get_output_details():
            interpreter.get_tensor(d["index"])
    except MemoryError:
        sys.exit(4)
    except Exception:
        raised = True
    del interpreter
sys.exit(3 if raised else 0)
"""
_EXIT_PY_ERROR, _EXIT_NO_MEMORY = 3, 4
_passed: set[str] = set()
CACHE_ENV = "TFQUANT_CACHE_DIR"


def _marker(digest: str) -> Path | None:
    """The on-disk note that ``digest`` passed with this LiteRT (shared by worker processes)."""
    try:
        import importlib.metadata

        version = importlib.metadata.version("ai-edge-litert")
    except Exception:  # noqa: BLE001  no version, no shared cache
        return None
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tfquant")
    return Path(root) / "preflight" / f"{digest}.litert-{version}"


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise TfquantError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def _memory_limit() -> int:
    """The child's address-space limit: the machine's RAM (more would only thrash), 0: none."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 0


def preflight(data: bytes, *, label: str) -> None:
    """Runs ``data`` (a .tflite) once in a child process; raises if the interpreter dies there.

    The child loads, allocates and invokes the model with the builtin kernels and with XNNPACK
    (the runtimes tfquant evaluates on). A model that passed is remembered by its sha256, in
    this process and in ``$TFQUANT_CACHE_DIR/preflight/`` (default ``~/.cache/tfquant``; one
    empty file per model and LiteRT version), so worker processes and reruns skip the child.

    Args:
      data: the model's bytes.
      label: how the error names the model (its path).

    Raises:
      TfquantError: the child was killed by a signal (abort, segfault), ran out of memory, or
        did not finish within the time limit.
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest in _passed:
        return
    marker = _marker(digest)
    if marker is not None and marker.exists():
        _passed.add(digest)
        return
    timeout = _timeout()
    fix = "re-export it with 'python -m tfquant convert' (the file is corrupt or not a model tfquant made)"
    with tempfile.TemporaryDirectory(prefix="tfquant_preflight_") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(path), str(_memory_limit())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise TfquantError(
                f"{label}: the LiteRT interpreter did not load and run it once within {timeout:.0f} s "
                f"(a hang); {fix}, or raise {TIMEOUT_ENV} for a very large model"
            ) from None
        except OSError as e:
            raise TfquantError(f"cannot start the interpreter check for {label} ({e.strerror})") from None
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise TfquantError(f"{label}: the LiteRT interpreter crashed on it ({sig}); {fix}")
    if proc.returncode == _EXIT_NO_MEMORY:
        raise TfquantError(f"{label}: the LiteRT interpreter ran out of memory loading it; {fix}")
    if proc.returncode not in (0, _EXIT_PY_ERROR):
        raise TfquantError(f"{label}: the LiteRT interpreter check failed (exit {proc.returncode}); {fix}")
    # 0: it ran; 3: LiteRT raised, and the caller's own interpreter raises the same, with its message.
    _passed.add(digest)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a read-only home: the check simply runs again in the next process
