"""Quiet start-up of TensorFlow and LiteRT: no CUDA / oneDNN notices on a CPU-only machine.

What TensorFlow 2.21 + ai-edge-litert 2.3 write to file descriptor 2 on a machine without a
GPU, and when (found by marking stderr around each step of a CLI run):

* ``import tensorflow``: ``WARNING: All log messages before absl::InitializeLog() is called
  are written to STDERR``, ``I... port.cc] oneDNN custom operations are on ...`` and
  ``I... cudart_stub.cc] Could not find cuda drivers on your machine, GPU will not be used``
  (twice: two shared libraries log before absl is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
  does not apply to them).
* The **first device enumeration** -- the first eager op, ``tf.Variable`` (building a Keras
  model), ``tf.config.list_physical_devices``, the converter -- not the import: XLA's CUDA
  platform calls ``cuInit`` once per process and logs ``E... cuda_platform.cc] failed call
  to cuInit: ... UNKNOWN ERROR (303)`` at ERROR level (303: the CUDA stub could not load
  ``libcuda.so.1``, i.e. there is no driver). ``CUDA_VISIBLE_DEVICES=""`` / ``-1`` do not
  prevent the call; ``TF_CPP_MIN_LOG_LEVEL=3`` would, but it also hides every real C++ error.
  This is why muting fd 2 around ``import tensorflow`` alone left the line at the end of every
  CLI command.
* The first LiteRT interpreter that applies the default delegate: ``INFO: Created TensorFlow
  Lite XNNPACK delegate for CPU.`` (logged once per process).

:func:`import_tensorflow` therefore imports TensorFlow, enumerates its devices (so ``cuInit``
happens now, once) and creates one XNNPACK delegate on a one-op model, all inside
:func:`filtered_stderr`: fd 2 goes to a temporary file for the duration, and afterwards every
line is written back to the real stderr **except** the known start-up notices
(:func:`is_startup_line`). Python warnings, tracebacks and any other C++ line pass through
unchanged and in order. The cuInit failure is dropped only when no CUDA driver can be loaded
(on a machine with a driver it means something real). Enumerating physical devices does not
initialise the eager context, so ``tf.config`` threading / visible-device settings still work
afterwards.

``TFQUANT_QUIET=0`` turns the filter off (everything is shown) for debugging. A process that
dies *inside* the window (e.g. an abort in TensorFlow's C++ start-up) loses what it wrote
there: rerun with ``TFQUANT_QUIET=0`` to see it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

ENV_VAR = "TFQUANT_QUIET"

# absl / TF C++ log prefix: severity letter, MMDD, time (before absl::InitializeLog the clock
# reads 00:00:<epoch seconds>), thread id, file:line]
_ABSL_PREFIX = r"[IWE]\d{4} [\d:.]+\s+\d+ [\w.\-/]+:\d+\] "
_STARTUP = re.compile(
    r"^(?:"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|" + _ABSL_PREFIX + r"(?:"
    r"oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine, GPU will not be used"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|Could not load dynamic library 'lib(?:cudart|cuda|cudnn|cublas|nvinfer)[\w.]*'"
    r"|Ignore above cudart dlerror if you do not have a GPU set up on your machine"
    r")"
    r")"
)
_CUINIT = re.compile(r"^" + _ABSL_PREFIX + r"failed call to cuInit")

_done = False
_litert_warm = False


def enabled() -> bool:
    """Whether start-up notices are filtered (``TFQUANT_QUIET`` is not ``0``/``false``/``off``)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def has_cuda_driver() -> bool:
    """Whether the NVIDIA driver library (``libcuda.so.1`` / ``nvcuda.dll``) can be loaded."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def is_startup_line(line: str, *, cuda_driver: bool = False) -> bool:
    """Whether ``line`` is a known TensorFlow / CUDA / LiteRT start-up notice to drop.

    Args:
      line: one line of stderr, without or with its newline.
      cuda_driver: whether a CUDA driver is present; if so a cuInit failure is a real error
        and is kept.
    """
    line = line.rstrip("\r\n")
    if _STARTUP.match(line):
        return True
    return not cuda_driver and bool(_CUINIT.match(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Routes fd 2 to a temporary file for the block, then replays it minus start-up notices.

    Everything written to fd 2 in the block (C++ logging, ``sys.stderr``, Python warnings) is
    kept in order; only lines matching :func:`is_startup_line` are dropped. With
    ``TFQUANT_QUIET=0``, or when fd 2 cannot be duplicated, nothing is redirected.
    """
    if not enabled():
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (e.g. a daemon): nothing to keep quiet
        yield
        return
    sink = tempfile.TemporaryFile(mode="w+b")
    try:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            driver = has_cuda_driver() if "cuInit" in text else False
            kept = "".join(
                line for line in text.splitlines(keepends=True)
                if not is_startup_line(line, cuda_driver=driver)
            )
            if kept:
                os.write(2, kept.encode("utf-8"))
    finally:
        os.close(saved)
        sink.close()


def _one_op_model() -> bytes:
    """A float32 RELU on a (1,) tensor as a .tflite flatbuffer (to create the delegate once)."""
    from tfquant.tflite.flatbuffer import one_op_model

    return one_op_model()


def warm_up_litert() -> None:
    """Creates LiteRT's default XNNPACK delegate once, with its start-up notice filtered.

    Needs only ``ai_edge_litert`` (no TensorFlow): spawned evaluation workers call it.
    """
    global _litert_warm
    if _litert_warm:
        return
    _litert_warm = True
    with filtered_stderr():
        try:
            from tfquant.tflite.interpreter import make_interpreter

            make_interpreter(_one_op_model(), allocate=True)
        except Exception:  # a broken LiteRT install fails later, where it is used, with its message
            pass


def import_tensorflow() -> None:
    """Imports TensorFlow and initialises its devices and LiteRT, without start-up notices.

    Idempotent; call it first thing in an entry point (the CLI's ``main``, each experiment
    script) before anything imports TensorFlow. Also sets the ``tensorflow`` Python logger to
    WARNING when nobody has set its level (INFO chatter hidden, warnings kept, once each). A real import failure still raises
    ImportError, and whatever else was written to stderr meanwhile is shown.
    """
    global _done
    if _done:
        return
    _done = True
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # XLA's CUDA platform calls cuInit here, once
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.level == logging.NOTSET:
        # Under absl's app.run the root logger is at INFO, so TensorFlow's Python INFO chatter
        # (SavedModel export steps, "Using new converter", ...) would fill experiment logs;
        # its warnings and errors still show. A level the user set is left alone.
        tf_logger.setLevel(logging.WARNING)
    if tf_logger.handlers:
        # TensorFlow gave its logger a handler of its own (the root logger had none at import);
        # absl's app.run then adds one to the root, and every warning would print twice.
        tf_logger.propagate = False
    warm_up_litert()
    _absl_warnings_only()


def _absl_warnings_only() -> None:
    """Keeps absl logging at WARNING unless ``--verbosity`` is given on the command line.

    absl's ``app.run`` lowers an unset ``--verbosity`` to INFO, which shows TensorFlow's
    internal INFO chatter (SavedModel export steps, "Using new converter") in every experiment
    script that calls TensorFlow directly. Marking the flag as set (to absl's own default,
    WARNING) stops that; ``--verbosity 0`` still turns INFO on.
    """
    from absl import flags

    if flags.FLAGS["verbosity"].using_default_value:
        flags.FLAGS.verbosity = -1  # absl's WARNING
