"""Does a converted int16x8 model actually run in the installed LiteRT?

The converter (TF 2.21) and the runtime (ai-edge-litert 2.3.0) disagree about int16x8:
the converter emits some ops with int16 inputs for which LiteRT has no kernel. Keras
``LayerNormalization`` is the important case: it lowers to ``SQUARED_DIFFERENCE``, which
the converter quantizes to int16 even with the strict ops set, but whose LiteRT kernel only
takes float32/int32. A single such op raises ``RuntimeError`` at ``invoke()``; inside the
full LayerNorm graph the interpreter *aborts the process* (SIGABRT) instead, which would kill
an evaluation job. :func:`tfquant.convert.convert` therefore rewrites the usual Keras
LayerNormalization (last axis, center and scale) without SQUARED_DIFFERENCE before an
int16x8 conversion (:mod:`tfquant.convert.rewrites`); these checks remain the safety net for
what it does not rewrite (other LayerNormalizations, non-Keras SavedModels, raw ops). Two
checks run after every int16x8 conversion:

1. :func:`int16_ops_without_kernel` -- a static scan for ops known to lack an int16 kernel
   (names the op even when the runtime would abort without a message);
2. :func:`check_runs` -- one ``invoke()`` on zeros in a child process (about 0.5 s), so a
   crash becomes an error message instead of killing the caller. It also catches kernels
   that refuse to prepare, e.g. an int16 conv with a fused ReLU6 whose output scale is so
   small (~1e-9, seen in random-init MobileNets whose activations vanish with depth) that
   6 / scale overflows int32 ("no_integer_overflow_from_quantization was not true").

int8, fp16 and dynamic models of the model zoo (random init) all ran, so only int16x8 pays
for the child process. The child runs a self-contained script (LiteRT and numpy only, so it
works wherever the interpreter is installed, whether or not tfquant is importable there).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from tfquant.errors import TfquantError
from tfquant.tflite import flatbuffer

# Ops the TF 2.21 converter emits with int16 activations although ai-edge-litert 2.3.0 has no
# int16 kernel for them (found by converting and invoking single-layer models; the survey is
# tabled in tfquant/convert/converter.py).
NO_INT16_KERNEL = frozenset({"SQUARED_DIFFERENCE"})

_SMOKE_RUN = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
interpreter.invoke()
"""
_SMOKE_TIMEOUT_S = 300


def int16_ops_without_kernel(tflite: bytes) -> list[str]:
    """Names of ops in ``tflite`` that take an int16 tensor but have no int16 LiteRT kernel."""
    model = flatbuffer.read(tflite)
    found: set[str] = set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            name = flatbuffer.op_name(model, op)
            if name not in NO_INT16_KERNEL:
                continue
            inputs = [subgraph.tensors[i] for i in op.inputs if i >= 0]
            if any(t.type == schema.TensorType.INT16 for t in inputs):
                found.add(name)
    return sorted(found)


def _runtime_message(stderr: str) -> str:
    """The interpreter's own error line from a child's stderr, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("RuntimeError:", "ValueError:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "no message"


def check_runs(tflite: bytes, *, what: str) -> None:
    """Runs one ``invoke()`` of ``tflite`` on zero inputs in a child process.

    Args:
      tflite: the model.
      what: how to name the model in the error, e.g. ``"the int16x8 model"``.

    Raises:
      TfquantError: the interpreter raised or crashed.
    """
    with tempfile.TemporaryDirectory(prefix="tfquant_check_") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _SMOKE_RUN, str(path)],
                capture_output=True,
                text=True,
                timeout=_SMOKE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise TfquantError(
                f"{what} did not finish one inference in {_SMOKE_TIMEOUT_S} s in LiteRT; use "
                "mode int8 instead"
            ) from None
    if proc.returncode == 0:
        return
    if proc.returncode < 0:
        try:
            cause = f"the interpreter crashed ({signal.Signals(-proc.returncode).name})"
        except ValueError:
            cause = f"the interpreter crashed (signal {-proc.returncode})"
    else:
        cause = " ".join(_runtime_message(proc.stderr).split())
    if "no_integer_overflow_from_quantization" in cause:
        fix = (
            "an activation range is nearly zero (activations that vanish through the network, "
            "as in untrained weights), so check the weights and calibration data, or use mode "
            "int8"
        )
    else:
        fix = "use mode int8, or replace the op in the model"
    raise TfquantError(f"{what} converted but does not run in LiteRT: {cause}; {fix}")
