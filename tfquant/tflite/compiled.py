"""LiteRT's CompiledModel API (``ai_edge_litert.compiled_model``) behind the evaluator's runtime.

The CompiledModel API is LiteRT's successor to the Interpreter on devices: a model compiled
for a set of hardware accelerators (CPU: XNNPACK; GPU: ML Drift over OpenCL / WebGPU; NPU:
a vendor dispatch library, e.g. Qualcomm's, which replaces the Hexagon delegate), run on
``TensorBuffer`` s. :class:`CompiledRunner` wraps one so that tfquant's evaluator (which
drives an Interpreter: ``get_input_details``, ``set_tensor``, ``invoke``, ``get_tensor``)
runs it unchanged, so accuracy and latency are measured exactly as for the Interpreter.

* ``compiled_cpu``: ``HardwareAccelerator.CPU`` with ``CpuOptions(num_threads)``.
* ``compiled_gpu`` / ``compiled_npu``: that accelerator with the CPU as fallback for ops it
  does not take. Where no GPU / NPU accelerator loads (this x86 machine has no WebGPU
  device and no NPU dispatch library), LiteRT refuses to compile and the error is one line.

Tensor details (name, dtype, quantization, shape signature) come from the flatbuffer through
a builtin Interpreter that is never allocated. The batch size is the model's own: resizing
a CompiledModel's input is refused here (in ai-edge-litert 2.3.0 the output buffers keep
their old size after ``resize_input_tensor``), so the evaluator falls back to the model's
batch, as it does for any model that refuses a resize.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.cpu_options import CpuOptions
from ai_edge_litert.hardware_accelerator import HardwareAccelerator
from ai_edge_litert.options import Options

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime

_ACCELERATORS = {
    Runtime.COMPILED_CPU: HardwareAccelerator.CPU,
    Runtime.COMPILED_GPU: HardwareAccelerator.GPU | HardwareAccelerator.CPU,
    Runtime.COMPILED_NPU: HardwareAccelerator.NPU | HardwareAccelerator.CPU,
}
_WHAT = {
    Runtime.COMPILED_GPU: "a GPU accelerator (LiteRT's OpenCL / WebGPU GPU library and a GPU)",
    Runtime.COMPILED_NPU: "an NPU accelerator (a vendor dispatch library, e.g. Qualcomm's, on its phone)",
}


class CompiledRunner:
    """A CompiledModel with the part of the Interpreter API the evaluator uses."""

    def __init__(self, model: Any, details: tuple[list[dict], list[dict]], runtime: Runtime) -> None:
        self._model = model
        self._inputs, self._outputs = details
        self.runtime = runtime
        self._in = model.create_input_buffers(0)
        self._out = model.create_output_buffers(0)
        self._position = {d["index"]: k for k, d in enumerate(self._inputs)}
        self._position.update({d["index"]: k for k, d in enumerate(self._outputs)})

    @property
    def fully_accelerated(self) -> bool:
        """Every op runs on the requested accelerator (no CPU fallback)."""
        return bool(self._model.is_fully_accelerated())

    def get_input_details(self) -> list[dict]:
        return [dict(d) for d in self._inputs]

    def get_output_details(self) -> list[dict]:
        return [dict(d) for d in self._outputs]

    def resize_tensor_input(self, index: int, shape: list[int], strict: bool = False) -> None:
        current = [int(d) for d in self._inputs[self._position[index]]["shape"]]
        if list(shape) != current:
            raise ValueError(f"the CompiledModel runs at its own input shape {current}")

    def allocate_tensors(self) -> None:
        """Buffers are created with the model; nothing to do."""

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._in[self._position[index]].write(np.ascontiguousarray(value))

    def invoke(self) -> None:
        self._model.run_by_index(0, self._in, self._out)

    def get_tensor(self, index: int) -> np.ndarray:
        details = self._outputs[self._position[index]]
        shape = tuple(int(d) for d in details["shape"])
        return self._out[self._position[index]].read(int(np.prod(shape)), details["dtype"]).reshape(shape)

    def tensor_shape(self, index: int) -> tuple[int, ...]:
        for d in (*self._inputs, *self._outputs):
            if d["index"] == index:
                return tuple(int(v) for v in d["shape"])
        raise KeyError(index)


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def make_compiled(
    data: bytes, runtime: Runtime, *, details: tuple[list[dict], list[dict]], num_threads: int | None,
    label: str,
) -> CompiledRunner:
    """Compiles ``data`` for ``runtime`` (a ``compiled_*`` runtime); TfquantError if it cannot.

    ``details``: the model's input and output tensor details (from an Interpreter).
    """
    options = Options(
        hardware_accelerators=_ACCELERATORS[runtime], cpu_options=CpuOptions(num_threads=num_threads or 0)
    )
    try:
        model = CompiledModel.from_buffer(data, options=options)
    except (RuntimeError, ValueError) as e:
        if runtime is Runtime.COMPILED_CPU:
            raise TfquantError(f"LiteRT's CompiledModel cannot compile {label} for the CPU ({_one_line(e)})") from None
        raise TfquantError(
            f"--runtime {runtime.value}: LiteRT found no usable {_WHAT[runtime]} on this machine "
            f"({_one_line(e, 120)}); use --runtime compiled_cpu here, or run on the phone with "
            "'python -m tfquant benchmark --runtime gpu|npu'"
        ) from None
    return CompiledRunner(model, details, runtime)
