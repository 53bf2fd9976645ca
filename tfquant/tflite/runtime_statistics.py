"""Tensor values read inside LiteRT, where they are produced (LiteRT's C API, through ctypes).

The statistics pass used to make every gathered tensor a model output: outputs cannot share
the memory arena, so on the zoo ViT (187 tensors, 67 MB a batch of 100) the exposed model
alone cost 1.8x the plain forward pass. Here each gathered tensor gets a *tap* instead
(:func:`tfquant.tflite.flatbuffer.with_taps`): a CUSTOM op ``TFQ_STATS_<k>`` placed right
after the op that produces tensor k, with that tensor as its only input and no output. The
memory planner keeps the tensor alive only until the tap has run (it is the tensor's last
reader or sits right after it), so the arena is the plain model's plus nothing, and the tap
reads the values while they are still in cache.

The Python ``Interpreter`` cannot register a custom op, but ``libLiteRt.so`` (shipped in
``ai_edge_litert``) exports LiteRT's C API, whose ``CompiledModel`` takes custom op kernels
as options (``LiteRtAddCustomOpKernelOption``, ``litert/c/litert_custom_op_kernel.h``).
LiteRT's custom-op dispatcher (``litert/runtime/custom_op_dispatcher.cc``) hands the kernel
a ``LiteRtTensorBuffer`` *attached to the TFLite tensor's own data* (no copy); the ``Run``
callback here wraps that memory as a numpy array and calls the observer of tap k. The model
runs with ``kernel_mode = "builtin"`` (LiteRT's optimized builtin kernels, no XNNPACK: the
same kernels, hence the same values, as the Interpreter's ``BUILTIN`` runtime).

The model's own outputs are dropped (the taps are its results): LiteRT 2.3.0's CompiledModel
sizes output buffers before a resized input's shapes have propagated to them (the ViT's
logits stayed [1, 10] after a resize to 100: "Custom allocation is too small"), and a model
without outputs needs none. The environment registers only the CPU accelerator (no GPU /
NPU library probing) and sets LiteRT's process-wide log level to errors (its start-up
INFO / WARNING lines are not printed; ``TFQUANT_QUIET=0`` keeps them).

Structures and enums are LiteRT 2.x's C headers (``litert_layout.h``,
``litert_model_types.h``: a 72-byte ``LiteRtRankedTensorType``; ``litert_any.h``,
``litert_environment_options.h``, ``litert_custom_op_kernel.h``), checked against
ai-edge-litert 2.3.0 (tests/tflite/test_runtime_statistics.py: the values a tap sees equal
the Interpreter's bit for bit; ``kernel_mode = "delegate"`` instead would not).
:func:`available` says whether the library and every function used here load; callers fall
back to the output path when they do not.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_uint, c_void_p
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tfquant import _quiet
from tfquant.errors import TfquantError
from tfquant.tflite.flatbuffer_edit import with_taps

ENABLED = os.environ.get("TFQUANT_TAPS", "1") != "0"
"""False when ``TFQUANT_TAPS=0``: callers then gather from model outputs (the fallback path)."""
CUSTOM_CODE = "TFQ_STATS_"
"""Custom code prefix of the taps: tap k is ``TFQ_STATS_<k>``."""
_ALIGNMENT = 64  # LITERT_HOST_MEMORY_BUFFER_ALIGNMENT
_MAX_RANK = 8  # LITERT_TENSOR_MAX_RANK
_OK, _RUNTIME_FAILURE = 0, 3  # LiteRtStatus
_CPU = 1  # kLiteRtHwAcceleratorCpu
_HOST_MEMORY = 1  # kLiteRtTensorBufferTypeHostMemory
CPU_OPTIONS = 'kernel_mode = "builtin"\nnum_threads = {num_threads}\n'
"""LiteRT's CPU options as its TOML payload (identifier ``xnnpack``, litert_cpu_options.cc)."""
_DTYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8}
"""LiteRtElementType -> numpy dtype (the types a model input or a tapped tensor can have here)."""
_NUMPY = {k: np.dtype(v) for k, v in _DTYPES.items()}


class _Layout(ctypes.Structure):
    _fields_ = [
        ("rank", c_uint, 7),
        ("has_strides", c_uint, 1),
        ("dimensions", ctypes.c_int32 * _MAX_RANK),
        ("strides", ctypes.c_uint32 * _MAX_RANK),
    ]


class _TensorType(ctypes.Structure):
    _fields_ = [("element_type", c_int), ("layout", _Layout)]


class _TapInfo(ctypes.Structure):
    """What the two getters write about a tapped tensor: its address, then its type (80 bytes,
    read back at once as the key of the tap's cached numpy view)."""

    _fields_ = [("address", c_void_p), ("type", _TensorType)]


_GETTER = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)
"""The tensor buffer getters called with plain addresses (~0.25 µs a call less than through
``argtypes`` with ``byref``)."""


_INIT = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_OUTPUT_LAYOUTS = ctypes.CFUNCTYPE(c_int, c_void_p, c_size_t, POINTER(_Layout), c_size_t, POINTER(_Layout))
_RUN = ctypes.CFUNCTYPE(c_int, c_void_p, c_size_t, POINTER(c_void_p), c_size_t, POINTER(c_void_p))
_DESTROY = ctypes.CFUNCTYPE(c_int, c_void_p)
_FREE_PAYLOAD = ctypes.CFUNCTYPE(None, c_void_p)


class _Any(ctypes.Structure):  # LiteRtAny (litert_any.h), an int member of its union
    _fields_ = [("type", c_int), ("int_value", ctypes.c_int64)]


class _EnvOption(ctypes.Structure):  # LiteRtEnvOption (litert_environment_options.h)
    _fields_ = [("tag", c_int), ("value", _Any)]


_ANY_INT = 2  # kLiteRtAnyTypeInt
_ENV_AUTO_REGISTER, _ENV_MIN_LOG_SEVERITY = 24, 25  # kLiteRtEnvOptionTag...
_LOG_ERROR = 3  # kLiteRtLogSeverityError


class _CustomOpKernel(ctypes.Structure):  # LiteRtCustomOpKernel
    _fields_ = [("Init", _INIT), ("GetOutputLayouts", _OUTPUT_LAYOUTS), ("Run", _RUN), ("Destroy", _DESTROY)]


_P = c_void_p
_SIGNATURES = {
    "LiteRtCreateEnvironment": (c_int, POINTER(_EnvOption), POINTER(_P)),
    "LiteRtDestroyEnvironment": (_P,),
    "LiteRtCreateModelFromBuffer": (_P, _P, c_size_t, POINTER(_P)),
    "LiteRtDestroyModel": (_P,),
    "LiteRtGetModelSignature": (_P, c_size_t, POINTER(_P)),
    "LiteRtGetNumSignatureInputs": (_P, POINTER(c_size_t)),
    "LiteRtGetSignatureInputTensorByIndex": (_P, c_size_t, POINTER(_P)),
    "LiteRtGetRankedTensorType": (_P, POINTER(_TensorType)),
    "LiteRtCreateOptions": (POINTER(_P),),
    "LiteRtDestroyOptions": (_P,),
    "LiteRtSetOptionsHardwareAccelerators": (_P, c_int),
    "LiteRtCreateOpaqueOptions": (c_char_p, _P, _FREE_PAYLOAD, POINTER(_P)),
    "LiteRtAddOpaqueOptions": (_P, _P),
    "LiteRtAddCustomOpKernelOption": (_P, c_char_p, c_int, POINTER(_CustomOpKernel), _P),
    "LiteRtCreateCompiledModel": (_P, _P, _P, POINTER(_P)),
    "LiteRtDestroyCompiledModel": (_P,),
    "LiteRtCompiledModelResizeInputTensorNonStrict": (_P, c_size_t, c_size_t, POINTER(c_int), c_size_t),
    "LiteRtCreateTensorBufferFromHostMemory": (POINTER(_TensorType), _P, c_size_t, _P, POINTER(_P)),
    "LiteRtDestroyTensorBuffer": (_P,),
    "LiteRtGetTensorBufferHostMemory": (_P, POINTER(_P)),
    "LiteRtGetTensorBufferTensorType": (_P, POINTER(_TensorType)),
    "LiteRtRunCompiledModel": (_P, c_size_t, c_size_t, POINTER(_P), c_size_t, POINTER(_P)),
}
_VOID = {"LiteRtDestroyEnvironment", "LiteRtDestroyModel", "LiteRtDestroyOptions",
         "LiteRtDestroyCompiledModel", "LiteRtDestroyTensorBuffer"}


def library_path() -> Path:
    """``libLiteRt.so`` of the installed ai_edge_litert."""
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).parent / "libLiteRt.so"


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    for fn, argtypes in _SIGNATURES.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = list(argtypes), (None if fn in _VOID else c_int)
    return lib


class LiteRtError(TfquantError):
    """LiteRT's C API refused a call (the model, its shape, the options): not the observers."""


def available() -> str | None:
    """None when taps can run (LiteRT's C API loads with every function used here and
    ``TFQUANT_TAPS`` is not 0), else why not."""
    if not ENABLED:
        return "TFQUANT_TAPS=0"
    try:
        _lib()
    except (OSError, AttributeError, ImportError) as e:
        return f"LiteRT's C API does not load ({' '.join(str(e).split())[:160]})"
    return None


def _check(status: int, what: str) -> None:
    if status != _OK:
        raise LiteRtError(f"LiteRT's C API failed to {what} (status {status})")


_memory = ctypes.pythonapi.PyMemoryView_FromMemory
_memory.argtypes, _memory.restype = [c_void_p, ctypes.c_ssize_t, c_int], ctypes.py_object
_READ, _WRITE = 0x100, 0x200  # PyBUF_READ, PyBUF_WRITE


def _aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zeroed C-contiguous array whose data starts on a 64-byte boundary."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + _ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


class TappedModel:
    """A float model compiled by LiteRT's CompiledModel (CPU, builtin kernels) whose tensor
    ``indices[k]`` is handed to ``observers[k]`` in every :meth:`run`, as a read-only numpy
    view of LiteRT's own memory, valid only during the call (copy what must outlive it).

    Args:
      tflite: the model (single input, first axis the batch), as bytes or as read by
        :func:`tfquant.tflite.flatbuffer.read` (then edited in place: the taps are added).
      indices: main-subgraph tensor indices to observe.
      observers: one callable per index, called once per run with that tensor's values.
      num_threads: CPU threads of the builtin kernels.

    Raises:
      TfquantError: the C API does not load, or LiteRT refuses the model.
    """

    def __init__(
        self, tflite: bytes | Any, indices: Sequence[int], observers: Sequence[Callable[[np.ndarray], None]],
        *, num_threads: int = 1,
    ) -> None:
        if len(indices) != len(observers):
            raise ValueError("one observer per tensor index")
        why = available()
        if why:
            raise LiteRtError(f"{why}; gather statistics from model outputs instead")
        self._lib = lib = _lib()
        self._observers = list(observers)
        self._host_memory = _GETTER(("LiteRtGetTensorBufferHostMemory", lib))
        self._tensor_type = _GETTER(("LiteRtGetTensorBufferTensorType", lib))
        self._info = _TapInfo()
        self._info_raw = (ctypes.c_char * ctypes.sizeof(_TapInfo)).from_buffer(self._info)
        self._info_address = ctypes.addressof(self._info)
        self._type_address = self._info_address + _TapInfo.type.offset
        self._views: list[tuple[bytes, np.ndarray] | None] = [None] * len(self._observers)
        self._error: BaseException | None = None
        self._data = with_taps(tflite, list(indices), CUSTOM_CODE)  # outlives the model
        self._env, self._model, self._options, self._compiled = _P(), _P(), _P(), _P()
        self._buffer, self._input, self._batch_shape = _P(), None, None
        # Only the CPU accelerator (no GPU / NPU library probing); only LiteRT's errors on
        # stderr unless TFQUANT_QUIET=0.
        options = [(_ENV_AUTO_REGISTER, _CPU)] + ([(_ENV_MIN_LOG_SEVERITY, _LOG_ERROR)] if _quiet.enabled() else [])
        env_options = (_EnvOption * len(options))(*(_EnvOption(tag, _Any(_ANY_INT, v)) for tag, v in options))
        _check(lib.LiteRtCreateEnvironment(len(options), env_options, byref(self._env)), "create an environment")
        _check(
            lib.LiteRtCreateModelFromBuffer(self._env, self._data, len(self._data), byref(self._model)),
            "read the model",
        )
        _check(lib.LiteRtCreateOptions(byref(self._options)), "create options")
        _check(lib.LiteRtSetOptionsHardwareAccelerators(self._options, _CPU), "select the CPU")
        self._payload = ctypes.create_string_buffer(CPU_OPTIONS.format(num_threads=int(num_threads)).encode())
        self._free_payload = _FREE_PAYLOAD(lambda _: None)  # the payload is owned here
        cpu = _P()
        _check(
            lib.LiteRtCreateOpaqueOptions(b"xnnpack", ctypes.cast(self._payload, _P), self._free_payload, byref(cpu)),
            "create CPU options",
        )
        _check(lib.LiteRtAddOpaqueOptions(self._options, cpu), "add CPU options")
        self._kernel = _CustomOpKernel(
            _INIT(lambda *_: _OK), _OUTPUT_LAYOUTS(lambda *_: _OK), _RUN(self._run_tap), _DESTROY(lambda *_: _OK)
        )
        for k in range(len(indices)):
            _check(
                lib.LiteRtAddCustomOpKernelOption(
                    self._options, f"{CUSTOM_CODE}{k}".encode(), 1, byref(self._kernel), _P(k + 1)
                ),
                "register a tap",
            )
        _check(
            lib.LiteRtCreateCompiledModel(self._env, self._model, self._options, byref(self._compiled)),
            "compile the tapped model",
        )
        signature, tensor, self._input_type = _P(), _P(), _TensorType()
        _check(lib.LiteRtGetModelSignature(self._model, 0, byref(signature)), "read the signature")
        count = c_size_t()
        _check(lib.LiteRtGetNumSignatureInputs(signature, byref(count)), "count the inputs")
        self.num_inputs = count.value
        """Inputs of the model's first signature (:meth:`run` feeds the first)."""
        _check(lib.LiteRtGetSignatureInputTensorByIndex(signature, 0, byref(tensor)), "find the input")
        _check(lib.LiteRtGetRankedTensorType(tensor, byref(self._input_type)), "read the input type")
        if self._input_type.element_type not in _DTYPES:
            raise LiteRtError(f"the model input has LiteRT element type {self._input_type.element_type}")

    def _run_tap(self, user_data: int, num_inputs: int, inputs: Any, *_: object) -> int:
        """The taps' Run: tensor buffer -> numpy view -> observer (errors kept for :meth:`run`).

        Called ~10^3-10^4 times a pass. LiteRT hands a new tensor buffer every time, but the
        memory it wraps sits at the same arena address from one run to the next (one batch
        shape; 186 of the zoo ViT's 187 tapped tensors): so the numpy view of tap k is made
        once and kept with its key, the 80 bytes (address, element type, shape) the two getters
        write, and used again while the key is the same (a byte compare). The ctypes arguments
        are made once (one model runs on one thread: they are never shared)."""
        if self._error is not None:
            return _RUNTIME_FAILURE
        try:
            k = user_data - 1
            buffer = inputs[0]
            if self._host_memory(buffer, self._info_address) or self._tensor_type(buffer, self._type_address):
                raise LiteRtError(f"LiteRT's C API failed to map tapped tensor {k}")
            key = self._info_raw.raw
            cached = self._views[k]
            if cached is None or cached[0] != key:
                cached = self._views[k] = (key, self._view(k))
            self._observers[k](cached[1])
        except BaseException as e:  # noqa: BLE001 -- re-raised by run(); nothing may cross the C frame
            self._error = e
            return _RUNTIME_FAILURE
        return _OK

    def _view(self, k: int) -> np.ndarray:
        """A read-only numpy view of the memory that the getters just described (tap ``k``)."""
        t = self._info.type
        dtype = _NUMPY.get(t.element_type)
        if dtype is None:
            raise LiteRtError(f"tapped tensor {k} has LiteRT element type {t.element_type}")
        shape = tuple(t.layout.dimensions[: t.layout.rank])
        view = np.frombuffer(_memory(self._info.address or 0, math.prod(shape) * dtype.itemsize, _READ), dtype)
        return view.reshape(shape)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Resizes the input to ``shape`` and wraps a 64-byte aligned host array as its buffer."""
        lib = self._lib
        self._release_buffer()
        dims = (c_int * len(shape))(*shape)
        _check(
            lib.LiteRtCompiledModelResizeInputTensorNonStrict(self._compiled, 0, 0, dims, len(shape)),
            f"resize the input to {shape}",
        )
        t = self._input_type
        t.layout.rank, t.layout.has_strides = len(shape), 0
        for d, v in enumerate(shape):
            t.layout.dimensions[d] = v
        array = _aligned(shape, np.dtype(_DTYPES[t.element_type]))
        buffer = _P()
        _check(
            lib.LiteRtCreateTensorBufferFromHostMemory(
                byref(t), array.ctypes.data, max(array.nbytes, 1), None, byref(buffer)
            ),
            "wrap the input buffer",
        )
        self._input, self._buffer, self._batch_shape = array, buffer, shape

    def run(self, batch: np.ndarray) -> None:
        """Runs the model on ``batch``; every observer sees its tensor once.

        Raises:
          TfquantError: LiteRT cannot run the model on this shape.
          Whatever an observer raised (the first one; the later taps of that run are skipped).
        """
        shape = tuple(int(d) for d in batch.shape)
        if shape != self._batch_shape:
            self._allocate(shape)
        np.copyto(self._input, batch, casting="same_kind")
        buffers = (_P * 1)(self._buffer)
        status = self._lib.LiteRtRunCompiledModel(self._compiled, 0, 1, buffers, 0, None)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        _check(status, f"run the tapped model on a batch of shape {shape}")

    def _release_buffer(self) -> None:
        if self._buffer:
            self._lib.LiteRtDestroyTensorBuffer(self._buffer)
        self._buffer, self._input, self._batch_shape = _P(), None, None

    def close(self) -> None:
        """Frees LiteRT's objects (also done when the object is collected)."""
        if getattr(self, "_lib", None) is None:
            return
        self._release_buffer()
        self._views = [None] * len(getattr(self, "_views", ()))  # views of the arena, about to be freed
        lib, self._lib = self._lib, None
        if self._compiled:
            lib.LiteRtDestroyCompiledModel(self._compiled)
        if self._options:
            lib.LiteRtDestroyOptions(self._options)
        if self._model:
            lib.LiteRtDestroyModel(self._model)
        if self._env:
            lib.LiteRtDestroyEnvironment(self._env)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- at interpreter exit ctypes / numpy may be gone
            pass

    def __enter__(self) -> "TappedModel":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
