"""Batched execution of a single-input, single-output classifier in LiteRT.

The batch dimension of the input is resized once per distinct batch size
(``resize_tensor_input`` + ``allocate_tensors``), so a dataset of N examples in batches of B
costs at most two allocations (B, and N mod B for the last partial batch). If the model
refuses a resize (a fixed batch it cannot leave, a delegate without dynamic shapes), the
runner falls back to the model's own batch size, pads the last batch, and records why.

Quantized inputs (int8/int16/uint8) are quantized with the model's input scale and zero
point, ``q = clamp(round(x / Δ) + z)`` (:func:`tfquant.numerics.quantize`); quantized outputs
are dequantized, ``x = (q - z) · Δ`` (:func:`tfquant.numerics.dequantize`). uint8 tensors use
the signed grid shifted by 128: ``q_u8 = q_s8 + 128`` with ``z_s8 = z_u8 - 128``, which is the
same clamp/round on [0, 255].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfquant.errors import TfquantError
from tfquant.numerics import QuantParams, dequantize, quantize
from tfquant.tflite.interpreter import tensor_shape

_QUANTIZED_BITS = {np.dtype(np.int8): 8, np.dtype(np.uint8): 8, np.dtype(np.int16): 16}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
# Unquantized integer inputs (token ids of a text model): fed the float examples rounded.
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


@dataclasses.dataclass(frozen=True)
class TensorIO:
    """How numpy data maps onto one model input or output tensor.

    Attributes:
      index: Tensor index in the interpreter.
      name: Tensor name.
      dtype: The tensor's numpy dtype.
      shape_signature: Shape with -1 for dynamic dimensions.
      params: Per-tensor quantization parameters on the signed grid (``None``: float tensor).
      offset: Added to the signed-grid integers to get the stored ones (128 for uint8, else 0).
    """

    index: int
    name: str
    dtype: np.dtype
    shape_signature: tuple[int, ...]
    params: QuantParams | None
    offset: int

    @classmethod
    def from_details(cls, details: dict[str, Any], *, role: str, label: str) -> "TensorIO":
        dtype = np.dtype(details["dtype"])
        qp = details["quantization_parameters"]
        scales = np.asarray(qp["scales"], dtype=np.float64)
        zero_points = np.asarray(qp["zero_points"], dtype=np.int64)
        signature = tuple(int(d) for d in details["shape_signature"])
        params, offset = None, 0
        if dtype in _QUANTIZED_BITS:
            if scales.size != 1:
                raise TfquantError(
                    f"{role} {details['name']!r} of {label} is {dtype.name} with {scales.size} "
                    "scales; the evaluator needs one per-tensor scale and zero point: re-export "
                    "with float32 or per-tensor quantized I/O"
                )
            offset = 128 if dtype == np.uint8 else 0
            params = QuantParams(
                scale=scales.reshape(()), zero_point=(zero_points - offset).reshape(()),
                bits=_QUANTIZED_BITS[dtype],
            )
        elif dtype not in _FLOAT_DTYPES and not (role == "input" and dtype in _INDEX_DTYPES):
            raise TfquantError(
                f"{role} {details['name']!r} of {label} has dtype {dtype.name}; the evaluator "
                "handles float32/float16, quantized int8/uint8/int16 and (inputs) int32/int64 "
                "index tensors: re-export the model with one of those I/O types"
            )
        return cls(
            index=int(details["index"]), name=str(details["name"]), dtype=dtype,
            shape_signature=signature, params=params, offset=offset,
        )

    def to_tensor(self, x: np.ndarray) -> np.ndarray:
        """Float examples -> what the tensor stores (cast, or quantized with Δ and z)."""
        if self.params is None:
            if self.dtype in _INDEX_DTYPES and x.dtype != self.dtype:
                return np.rint(x).astype(self.dtype)  # token ids stored as floats
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        q = quantize(x, self.params)
        if self.offset:
            q += self.offset
        return q.astype(self.dtype)

    def from_tensor(self, t: np.ndarray) -> np.ndarray:
        """What the tensor stores -> float32 values (dequantized with Δ and z)."""
        if self.params is None:
            return t if t.dtype == np.float32 else t.astype(np.float32)
        q = t.astype(np.int64)
        if self.offset:
            q -= self.offset
        return dequantize(q, self.params).astype(np.float32)


class _ResizeRefused(Exception):
    """The model (or its delegate) cannot run at the requested batch size."""


class BatchRunner:
    """Runs float examples through an interpreter in batches and returns float outputs.

    Internal engine of :func:`tfquant.evaluation.predict` and
    :func:`tfquant.evaluation.evaluate_accuracy`; it owns the interpreter's input shape while
    it runs.
    """

    def __init__(self, interpreter: Interpreter, *, label: str) -> None:
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TfquantError(
                f"{label} has {len(inputs)} input(s) and {len(outputs)} output(s); the evaluator "
                "runs classifiers with exactly one input and one output"
            )
        self._interpreter = interpreter
        self._label = label
        self.input = TensorIO.from_details(inputs[0], role="input", label=label)
        self.output = TensorIO.from_details(outputs[0], role="output", label=label)
        self._shape = tuple(int(d) for d in inputs[0]["shape"])
        if len(self._shape) < 1:
            raise TfquantError(
                f"{label} has a scalar input; the evaluator needs a batch dimension: re-export the "
                "model with an input of shape (batch, ...)"
            )
        self._native_batch = self._shape[0]
        self.fallback_reason: str | None = None

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Per-example input shape the model declares (-1 for dynamic dimensions)."""
        return self.input.shape_signature[1:]

    @property
    def native_batch(self) -> int:
        """Batch size of the input as loaded (1 for a dynamic batch dimension)."""
        return self._native_batch

    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output tensor at the current allocation."""
        return tensor_shape(self._interpreter, self.output.index)

    def check_examples(self, x: Any, *, name: str = "x") -> np.ndarray:
        """Validates a float batch of examples against the model input; returns it C-contiguous."""
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0:
            raise TfquantError(f"{name} is empty (shape {x.shape}); pass at least one example")
        if not np.issubdtype(x.dtype, np.floating):
            raise TfquantError(
                f"{name} has dtype {x.dtype}; pass float images preprocessed as in training "
                "(e.g. x.astype('float32') / 255): quantized model inputs are computed from the "
                "model's input scale and zero point"
            )
        expected = self.example_shape
        got = tuple(x.shape[1:])
        if len(got) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, got)):
            shown = tuple("?" if d == -1 else d for d in expected)
            raise TfquantError(
                f"{name} has per-example shape {got} but {self._label} expects {shown} (NHWC, "
                f"input {self.input.name!r}); evaluate it on data of that shape (e.g. "
                "--image_size or a dataset with that many channels) or re-export the model for "
                f"{got}"
            )
        return np.ascontiguousarray(x)

    def _resize(self, shape: tuple[int, ...]) -> None:
        interpreter = self._interpreter
        try:
            interpreter.resize_tensor_input(self.input.index, list(shape), strict=False)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            self._shape = ()
            raise _ResizeRefused(" ".join(str(e).split())[:200]) from None
        self._shape = shape
        out = self.output_shape()
        if not out or out[0] != shape[0]:
            raise _ResizeRefused(f"output batch is {out[0] if out else 'missing'}, not {shape[0]}")

    def _use_batch(self, n: int, example_shape: tuple[int, ...]) -> int:
        """Allocates for ``n`` examples if the model allows it; returns the allocated batch."""
        target = (n, *example_shape)
        if target == self._shape:
            return n
        if self.fallback_reason is None:
            try:
                self._resize(target)
                return n
            except _ResizeRefused as e:
                self.fallback_reason = (
                    f"batch {n} refused ({e}); ran at the model's batch {self._native_batch}"
                )
        native = (self._native_batch, *example_shape)
        if native != self._shape:
            try:
                self._resize(native)
            except _ResizeRefused as e:
                raise TfquantError(
                    f"{self._label} cannot run at its own batch size {self._native_batch} "
                    f"after a refused resize ({e}); {self.fallback_reason}"
                ) from None
        return self._native_batch

    def invoke(self, xb: np.ndarray) -> np.ndarray:
        """Runs one batch whose shape equals the allocated input shape; returns float32 output."""
        interpreter = self._interpreter
        interpreter.set_tensor(self.input.index, self.input.to_tensor(xb))
        try:
            interpreter.invoke()
        except (RuntimeError, ValueError) as e:
            raise TfquantError(
                f"LiteRT failed to run {self._label} ({' '.join(str(e).split())[:200]}); "
                "check the model with 'python -m tfquant inspect' or try --runtime builtin"
            ) from None
        return self.output.from_tensor(interpreter.get_tensor(self.output.index))

    def prepare(self, x: np.ndarray, batch_size: int) -> int:
        """Allocates for the first batch of ``x``; returns the batch size allocated."""
        return self._use_batch(min(batch_size, len(x)), tuple(x.shape[1:]))

    def run(self, x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Yields float32 outputs for consecutive batches of ``x`` (validated by check_examples)."""
        n = len(x)
        example_shape = tuple(x.shape[1:])
        step = min(batch_size, n)
        start = 0
        while start < n:
            allocated = self._use_batch(min(step, n - start), example_shape)
            take = min(allocated, n - start)
            xb = x[start:start + take]
            if take < allocated:  # only after a fallback: pad the last batch to the fixed size
                pad = np.zeros((allocated - take, *example_shape), dtype=x.dtype)
                xb = np.concatenate([xb, pad])
            yield self.invoke(xb)[:take]
            start += take


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TfquantError(f"batch_size must be an integer >= 1, got {batch_size!r}")
