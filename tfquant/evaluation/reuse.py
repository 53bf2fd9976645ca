"""Accuracy measured once per run: a log of (what was computed, on what) -> accuracy.

The main job's experiments evaluate some identical models: nvidia_calibration's
``converter`` columns and ``float`` are, byte for byte, ptq_zoo's ``int8_per_channel``,
``int16x8`` and ``fp32`` models (same recipe, same calibration set), run over the same test
split in the same runtime. Each experiment appends the accuracies it measures to one log in
the run folder (``<results_dir>/<run_name>/accuracy_log.jsonl``), and looks a model up there
before evaluating it.

The key is everything the accuracy depends on: the model's
:func:`~tfquant.tflite.flatbuffer.computation_fingerprint` (ops, tensors, weights, scales;
not its metadata), the runtime, the interpreter threads, the requested batch size and a
SHA-256 of the evaluation inputs and labels. Equal keys mean the interpreter runs the same
kernels on the same bytes, so the logits, and the accuracy, are the same; a changed model,
data set or setting is a new key, never a stale hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tfquant.evaluation.accuracy import AccuracyResult
from tfquant.tflite.flatbuffer import computation_fingerprint, model_bytes

LOG_NAME = "accuracy_log.jsonl"


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the evaluation inputs and labels (dtype, shape and bytes of both)."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def fingerprint(tflite: str | os.PathLike[str] | bytes) -> str:
    """:func:`~tfquant.tflite.flatbuffer.computation_fingerprint` of a .tflite path or bytes."""
    return computation_fingerprint(model_bytes(tflite))


class AccuracyLog:
    """The run's accuracy log (see the module docstring).

    Args:
      path: The log file (``<run folder>/accuracy_log.jsonl``); created on the first ``put``.
      x, y: The evaluation set every entry is about.
      runtime, threads, batch_size: The evaluation settings every entry is about.
    """

    def __init__(self, path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray, *,
                 runtime: str, threads: int, batch_size: int) -> None:
        self.path = Path(path)
        self._settings = {"data": data_digest(x, y), "threads": int(threads), "batch_size": int(batch_size)}
        self._runtime = str(runtime)

    def key(self, fingerprint: str, runtime: str | None = None) -> str:
        """The entry key of a model with ``fingerprint`` (:func:`fingerprint`) under
        ``runtime`` (default: the log's)."""
        fields = {**self._settings, "runtime": str(runtime or self._runtime), "model": fingerprint}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> AccuracyResult | None:
        """The accuracy logged under ``key``, or None (a torn last line is skipped)."""
        if not self.path.exists():
            return None
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("key") == key:
                return AccuracyResult(**entry["result"])
        return None

    def put(self, key: str, result: AccuracyResult) -> None:
        """Appends one entry (one line, one write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "result": dataclasses.asdict(result)}, sort_keys=True) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
