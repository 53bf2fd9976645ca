"""Hostile and broken files never crash, hang or half-write (issue 10, item 8).

Truncated, bit-flipped and zeroed .tflite files (mutations of real models made here),
malformed recipe JSON and malformed .npz files go into ``inspect``, ``evaluate`` and
``convert --recipe``; every call must exit 0, or 2 with exactly one ``error:`` line on stderr
(fd 2, so native LiteRT messages count too), and leave no output file behind when it fails.
A native crash of the interpreter would kill this test process: the pre-flight child process
(:mod:`tfquant.tflite.preflight`) is what keeps it alive.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.cli import main
from tfquant.errors import TfquantError

FAST = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextlib.contextmanager
def captured_fds() -> Iterator[dict[str, str]]:
    """Captures fd 1 and fd 2 (Python's and native writes) into the yielded dict."""
    out: dict[str, str] = {}
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    sys.stdout.flush()
    sys.stderr.flush()
    old_streams = sys.stdout, sys.stderr
    try:
        for fd in (1, 2):
            os.dup2(files[fd].fileno(), fd)
        sys.stdout, sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(1), "wb")), io.TextIOWrapper(os.fdopen(os.dup(2), "wb"))
        yield out
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout.close()
        sys.stderr.close()
        sys.stdout, sys.stderr = old_streams
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            files[fd].seek(0)
            out["stdout" if fd == 1 else "stderr"] = files[fd].read().decode("utf-8", "replace")
            files[fd].close()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    with captured_fds() as out:
        rc = main(argv)
    return rc, out["stdout"], out["stderr"]


def assert_clean_outcome(rc: int, stderr: str, *outputs: Path) -> None:
    """Exit 0, or exit 2 with one ``error:`` line and none of ``outputs`` written."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), stderr
    if rc == 0:
        assert not any(line.startswith("error") for line in lines), stderr
        return
    assert rc == 2, (rc, stderr)
    # One error line, the last; before it only tfquant's own progress lines (one per stage).
    assert lines and lines[-1].startswith("error: "), stderr
    assert all(line.startswith(("evaluate ", "calibrat", "convert")) for line in lines[:-1]), stderr
    for path in outputs:
        assert not path.exists(), f"{path} was written by a failed command"
    folder = outputs[0].parent if outputs else None
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".")] if folder and folder.exists() else []
    assert not leftovers, leftovers  # no temporary of an atomic write


@pytest.fixture(scope="module", autouse=True)
def _own_preflight_cache(tmp_path_factory) -> Iterator[None]:
    """The pre-flight's on-disk notes of passed models go to a folder of this module's."""
    from tfquant.tflite import preflight

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(preflight.CACHE_ENV, str(tmp_path_factory.mktemp("preflight_cache")))
        yield


class _Real(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "<the tiny models and data>"


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Any]:
    """A tiny conv model as float and int8 .tflite (with the recipe and ranges embedded), and
    a matching labelled .npz."""
    import tensorflow as tf

    from tfquant import api

    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.DepthwiseConv2D(3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    folder = tmp_path_factory.mktemp("hostile")
    npz = folder / "data.npz"
    np.savez(npz, x=x, y=y)
    models = {}
    for mode in ("fp32", "int8"):
        result = api.quantize(model, mode=mode, calibration_data=x if mode == "int8" else None,
                              out=folder / f"{mode}.tflite", note=None)
        models[mode] = result.tflite
    keras_path = folder / "model.keras"
    model.save(keras_path)
    recipe = json.loads((folder / "int8.recipe.json").read_text())
    return _Real(models=models, npz=npz, x=x, y=y, keras=keras_path, recipe=recipe, folder=folder)


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "zero"]), label="kind")
    b = bytearray(raw)
    if kind == "truncate":
        return bytes(b[:data.draw(st.integers(0, len(b) - 1), label="keep")])
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            pos = data.draw(st.integers(0, len(b) - 1), label="pos")
            b[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        return bytes(b)
    pos = data.draw(st.integers(0, len(b) - 1), label="pos")
    n = data.draw(st.integers(1, 256), label="n")
    b[pos:pos + n] = bytes(len(b[pos:pos + n]))
    return bytes(b)


@FAST
@given(data=st.data())
def test_mutated_models_into_inspect_and_evaluate_exit_cleanly(real, data):
    raw = mutate(data, real["models"][data.draw(st.sampled_from(["fp32", "int8"]), label="model")])
    command = data.draw(st.sampled_from(["inspect", "inspect --json", "evaluate xnnpack", "evaluate builtin"]),
                        label="command")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(raw)
        out = Path(tmp) / "out" / "result.json"
        if command.startswith("inspect"):
            argv = ["inspect", str(path)] + (["--json"] if "json" in command else [])
        else:
            argv = ["evaluate", "--tflite", str(path), "--dataset", f"npz:{real['npz']}", "--latency_runs", "2",
                    "--runtime", command.split()[1], "--output", str(out)]
        rc, stdout, stderr = run_cli(argv)
        assert_clean_outcome(rc, stderr, out)
        if rc == 0 and command == "inspect --json":
            json.loads(stdout)
        if rc == 0 and command.startswith("evaluate"):
            assert 0.0 <= json.loads(out.read_text())["accuracy"] <= 1.0


def test_unmutated_models_still_pass_the_same_checks(real, tmp_path):
    for mode, raw in real["models"].items():
        path = tmp_path / f"{mode}.tflite"
        path.write_bytes(raw)
        assert run_cli(["inspect", str(path)])[0] == 0
        rc, _, stderr = run_cli(["evaluate", "--tflite", str(path), "--dataset", f"npz:{real['npz']}",
                                 "--latency_runs", "0", "--output", str(tmp_path / f"{mode}.json")])
        assert rc == 0, stderr


def test_a_model_that_crashes_the_interpreter_is_an_error_not_a_dead_process(tmp_path, monkeypatch):
    """The pre-flight child dies of a signal (here: the child script aborts itself, standing in
    for a native crash); the command reports it on one line and this process lives on."""
    from tfquant.tflite import flatbuffer, preflight

    monkeypatch.setattr(preflight, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(preflight, "_passed", set())
    monkeypatch.setenv(preflight.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer.one_op_model())
    rc, _, stderr = run_cli(["inspect", str(path)])
    assert rc == 2 and stderr.strip().startswith("error: ") and "SIGSEGV" in stderr
    assert len(stderr.strip().splitlines()) == 1
    monkeypatch.setattr(preflight, "_CHILD", "import time; time.sleep(30)")
    monkeypatch.setenv(preflight.TIMEOUT_ENV, "1")
    with pytest.raises(TfquantError, match="within 1 s"):
        preflight.preflight(b"hang", label="m.tflite")


RECIPE_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                           st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON_VALUES = st.recursive(RECIPE_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_malformed_recipe_json_is_a_recipe_or_a_tfquant_error(data):
    """``Recipe.from_json`` (what ``convert --recipe`` reads first) on byte-level mutations and on
    well-formed JSON with wrong values: a Recipe or a TfquantError, nothing else."""
    from tfquant.recipes import Recipe

    base = {"mode": "int8", "weight_granularity": "per_channel", "calibrator": "percentile", "percentile": 99.9,
            "num_calibration_examples": 100, "calibration_seed": 0, "io_dtype": "float32"}
    how = data.draw(st.sampled_from(["bytes", "value", "whole"]))
    if how == "bytes":
        text = json.dumps(base).encode()
        b = bytearray(text[:data.draw(st.integers(0, len(text)))])
        for _ in range(data.draw(st.integers(0, 4))):
            if b:
                b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        text = b.decode("utf-8", "replace")
    elif how == "value":
        d = dict(base)
        d[data.draw(st.sampled_from(sorted(base) + ["unknown_field"]))] = data.draw(JSON_VALUES)
        text = json.dumps(d)
    else:
        text = json.dumps(data.draw(JSON_VALUES))
    try:
        recipe = Recipe.from_json(text)
    except TfquantError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(recipe, Recipe)


@pytest.mark.parametrize("text", [
    "", "{", "[1, 2]", "null", '{"mode": "int8"', '{"mode": "int9"}', '{"mode": "int8", "percentile": "high"}',
    '{"mode": "int8", "num_calibration_examples": -5}', '{"mode": "int8", "num_calibration_examples": 1e400}',
    '{"mode": "int8", "calibration_seed": NaN}', '{"mode": ' + "[" * 5000 + "]" * 5000 + "}", "\x00\xff\xfe",
])
def test_malformed_recipe_files_into_convert_exit_2_with_one_line_and_no_output(real, tmp_path, text):
    recipe = tmp_path / "bad.recipe.json"
    recipe.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    out = tmp_path / "out" / "m.tflite"
    rc, _, stderr = run_cli(["convert", "--model", str(real["keras"]), "--recipe", str(recipe),
                             "--calibration_data", f"npz:{real['npz']}", "--out", str(out)])
    assert rc == 2
    assert_clean_outcome(rc, stderr, out, out.with_suffix(".recipe.json"))
    assert "unexpected" not in stderr  # each of these has its own message naming the problem


def _npz_variants(real: dict[str, Any], folder: Path) -> Iterator[tuple[str, bytes]]:
    good = real["npz"].read_bytes()
    yield "truncated", good[: len(good) // 2]
    yield "zeroed", bytes(len(good))
    b = bytearray(good)
    for pos in range(40, len(b), max(1, len(b) // 7)):
        b[pos] ^= 0x5A
    yield "bit-flipped", bytes(b)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=real["x"], y=real["y"])
    c = bytearray(buf.getvalue())
    c[len(c) // 3] ^= 0xFF
    yield "compressed, bit-flipped", bytes(c)
    for name, arrays in {
        "labels as floats": dict(x=real["x"], y=real["y"] + 0.5),
        "3-d images": dict(x=real["x"][..., 0], y=real["y"]),
        "NaN images": dict(x=np.full_like(real["x"], np.nan), y=real["y"]),
        "no labels": dict(x=real["x"]),
        "fewer labels": dict(x=real["x"], y=real["y"][:3]),
        "wrong image size": dict(x=real["x"][:, :4, :4], y=real["y"]),
        "object array": dict(x=np.array([{"a": 1}], dtype=object), y=real["y"]),
    }.items():
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        yield name, buf.getvalue()
    yield "not an npz", b"PK\x03\x04" + os.urandom(200)


def test_malformed_npz_into_evaluate_and_convert_exit_2_with_one_line_and_no_output(real, tmp_path):
    fp32 = tmp_path / "fp32.tflite"
    fp32.write_bytes(real["models"]["fp32"])
    for name, raw in _npz_variants(real, tmp_path):
        npz = tmp_path / "bad.npz"
        npz.write_bytes(raw)
        out = tmp_path / "out" / "r.json"
        rc, _, stderr = run_cli(["evaluate", "--tflite", str(fp32), "--dataset", f"npz:{npz}", "--latency_runs", "0",
                                 "--output", str(out)])
        assert rc == 2, (name, stderr)
        assert_clean_outcome(rc, stderr, out)
        assert "unexpected" not in stderr, (name, stderr)
        if name in ("truncated", "bit-flipped", "NaN images", "object array"):
            model_out = tmp_path / "out" / "m.tflite"
            rc, _, stderr = run_cli(["convert", "--model", str(real["keras"]), "--mode", "int8",
                                     "--calibration_data", f"npz:{npz}", "--out", str(model_out)])
            assert rc == 2, (name, stderr)
            assert_clean_outcome(rc, stderr, model_out, model_out.with_suffix(".recipe.json"))
