"""Moved to :mod:`tfquant.tflite.runtime_check` (the TFLite boundary); kept as an alias."""

from tfquant.tflite.runtime_check import NO_INT16_KERNEL, check_runs, int16_ops_without_kernel

__all__ = ["NO_INT16_KERNEL", "check_runs", "int16_ops_without_kernel"]
