"""runtime='delegate' with a minimal external delegate library built here (needs a C compiler).

The library implements LiteRT's external delegate plugin API
(tflite_plugin_create_delegate / tflite_plugin_destroy_delegate). Its delegate claims no ops,
so the graph runs on the builtin kernels: (0, total) delegated ops and the same logits as
runtime='builtin'. A second library's create function fails, as a real Hexagon library does
without a DSP.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels
from tfquant.errors import TfquantError
from tfquant.evaluation import delegated_op_count, evaluate_accuracy, predict

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
typedef struct Delegate {
  void* data_;
  int (*Prepare)(void* context, struct Delegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} Delegate;
static int prepare(void* context, Delegate* delegate) { return 0; /* kTfLiteOk, no ops taken */ }
Delegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                        void (*report_error)(const char*)) {
#ifdef FAIL
  report_error("no DSP found");
  return NULL;
#else
  Delegate* d = (Delegate*)calloc(1, sizeof(Delegate));
  d->Prepare = prepare;
  return d;
#endif
}
void tflite_plugin_destroy_delegate(Delegate* d) { free(d); }
"""


def _build(tmp: Path, name: str, *defines: str) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a test delegate library")
    source = tmp / "delegate.c"
    source.write_text(_SOURCE)
    lib = tmp / name
    subprocess.run([compiler, "-shared", "-fPIC", *defines, "-o", str(lib), str(source)], check=True)
    return str(lib)


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("delegate")
    return {"ok": _build(tmp, "libnoop_delegate.so"), "fail": _build(tmp, "libfail_delegate.so", "-DFAIL")}


def test_external_delegate_runs_and_takes_no_ops(tiny: TinyModels, libs: dict[str, str]) -> None:
    total = delegated_op_count(tiny.int8_io, runtime="builtin")[1]
    assert delegated_op_count(tiny.int8_io, runtime="delegate", delegate_path=libs["ok"]) == (0, total)
    np.testing.assert_array_equal(
        predict(tiny.int8_io, tiny.x[:50], runtime="delegate", delegate_path=libs["ok"]),
        predict(tiny.int8_io, tiny.x[:50], runtime="builtin"),
    )
    result = evaluate_accuracy(tiny.int8_io, tiny.x, tiny.y, runtime="delegate", delegate_path=libs["ok"])
    assert result.n_examples == 300 and result.accuracy > 0.5


def test_delegate_whose_create_fails(tiny: TinyModels, libs: dict[str, str]) -> None:
    with pytest.raises(TfquantError, match=r"libfail_delegate.so' failed to create its delegate \(.*no DSP found\).*Qualcomm Android"):
        predict(tiny.int8_io, tiny.x[:2], runtime="delegate", delegate_path=libs["fail"])
