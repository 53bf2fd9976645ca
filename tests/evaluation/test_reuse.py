"""The run's accuracy log: a logged accuracy is found only for the same model, data and settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfquant.evaluation import evaluate_accuracy
from tfquant.evaluation.reuse import AccuracyLog, fingerprint


def _log(path: Path, tiny, **kw) -> AccuracyLog:
    settings = {"runtime": "xnnpack", "threads": 1, "batch_size": 64, **kw}
    x, y = settings.pop("x", tiny.x), settings.pop("y", tiny.y)
    return AccuracyLog(path, x, y, **settings)


def test_logged_accuracy_is_the_measured_one_and_keys_cover_what_it_depends_on(tmp_path, tiny) -> None:
    path = tmp_path / "run" / "accuracy_log.jsonl"
    log = _log(path, tiny)
    fp32, int8 = fingerprint(tiny.fp32), fingerprint(tiny.int8)
    assert fp32 == fingerprint(tiny.fp32.read_bytes()) and fp32 != int8
    assert log.get(log.key(fp32)) is None and not path.exists()
    measured = evaluate_accuracy(str(tiny.fp32), tiny.x, tiny.y, batch_size=64, num_threads=1)
    log.put(log.key(fp32), measured)
    with open(path, "a") as f:
        f.write('{"key": "torn')  # a half-written last line is skipped
    again = _log(path, tiny)  # another experiment of the run, same settings
    assert again.get(again.key(fp32)) == measured
    assert again.get(again.key(int8)) is None
    assert again.get(again.key(fp32, "builtin")) is None
    y = tiny.y.copy()
    y[0] = (y[0] + 1) % 10
    for other in (_log(path, tiny, threads=2), _log(path, tiny, batch_size=32), _log(path, tiny, y=y),
                  _log(path, tiny, x=np.ascontiguousarray(tiny.x[::-1]))):
        assert other.get(other.key(fp32)) is None
