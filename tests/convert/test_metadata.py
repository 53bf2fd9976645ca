"""The recipe embedded in the flatbuffer, and save() writing model + recipe atomically."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, recipe, run_tflite
from tfquant import convert
from tfquant.convert import metadata
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, IODType, Mode
from tfquant.recipes import Recipe


def _plain_tflite(model: Any, int8_calibration: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([x[None]] for x in int8_calibration)
    with warnings.catch_warnings():  # the converter's own "statistics ... expected" warning
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


@pytest.fixture(scope="module")
def plain(cnn: Any) -> bytes:
    """The CNN converted by TFLiteConverter directly, without a recipe."""
    return _plain_tflite(cnn)


@pytest.fixture(scope="module")
def plain_int8(cnn: Any, cal_data: np.ndarray) -> bytes:
    """The CNN converted to int8 by TFLiteConverter directly, without a recipe."""
    return _plain_tflite(cnn, cal_data[:20])


@pytest.mark.parametrize(
    "r",
    [
        recipe(mode=Mode.FP32),
        recipe(mode=Mode.INT8, weight_granularity=Granularity.PER_TENSOR, io_dtype=IODType.INT8),
    ],
    ids=["fp32", "int8_per_tensor_io_int8"],
)
def test_read_recipe_round_trips_from_bytes_and_path(
    converted: Callable, r: Any, tmp_path: Path
) -> None:
    tflite = converted(r)
    assert convert.read_recipe(tflite) == r
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite)
    assert convert.read_recipe(str(path)) == r
    assert convert.read_recipe(path) == r


def test_model_without_recipe_reads_none(plain: bytes) -> None:
    assert convert.read_recipe(plain) is None


@pytest.mark.parametrize("which", ["plain", "plain_int8"])
def test_embedding_keeps_outputs_identical(which: str, request: pytest.FixtureRequest) -> None:
    from tfquant.tflite import flatbuffer

    original = request.getfixturevalue(which)
    r = recipe(mode=Mode.FP32, calibration_data="unit-test")
    tagged = metadata.embed_recipe(original, r)
    x = np.random.default_rng(5).standard_normal((16, *INPUT_SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(tagged, x), run_tflite(original, x))
    assert convert.read_recipe(tagged) == r
    names = [flatbuffer.name(m.name) for m in flatbuffer.read(tagged).metadata]
    assert names.count(metadata.METADATA_NAME) == 1
    assert "min_runtime_version" in names  # the converter's own entries survive


def test_embedding_twice_replaces_the_entry(plain: bytes) -> None:
    first = metadata.embed_recipe(plain, recipe(mode=Mode.FP32))
    second = metadata.embed_recipe(first, recipe(mode=Mode.FP16))
    assert convert.read_recipe(second) == recipe(mode=Mode.FP16)


def test_read_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match=r"does not exist"):
        convert.read_recipe(str(tmp_path / "missing.tflite"))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(TfquantError, match=r"not a TFLite flatbuffer"):
        convert.read_recipe(str(junk))
    with pytest.raises(TfquantError, match=r"must be the bytes"):
        convert.read_recipe(12345)  # type: ignore[arg-type]
    truncated = b"\x08\x00\x00\x00TFL3" + b"\xff" * 40  # right identifier, garbage tables
    with pytest.raises(TfquantError, match=r"corrupt \(its flatbuffer does not parse"):
        convert.read_recipe(truncated)


def test_read_recipe_rejects_an_invalid_embedded_recipe(plain: bytes) -> None:
    class Bad:
        def to_json(self) -> str:
            return json.dumps({"mode": "int8", "bogus": 1})

    tagged = metadata.embed_recipe(plain, Bad())  # type: ignore[arg-type]
    with pytest.raises(TfquantError, match=r"unknown recipe key"):
        convert.read_recipe(tagged)


def test_save_writes_model_and_recipe(converted: Callable, tmp_path: Path) -> None:
    r = recipe(mode=Mode.INT8)
    tflite = converted(r)
    out = convert.save(tflite, str(tmp_path / "sub" / "cnn_int8.tflite"), r)
    assert out == tmp_path / "sub" / "cnn_int8.tflite"
    assert out.read_bytes() == tflite
    side = tmp_path / "sub" / "cnn_int8.recipe.json"
    assert side.read_text() == r.to_json()
    assert Recipe.from_json(side.read_text()) == r == convert.read_recipe(out)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "cnn_int8.recipe.json",
        "cnn_int8.tflite",
    ]


def test_save_leaves_nothing_when_the_out_dir_is_a_file(
    converted: Callable, tmp_path: Path
) -> None:
    r = recipe(mode=Mode.FP32)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(TfquantError, match=r"could not write .*writable directory"):
        convert.save(converted(r), str(blocker / "m.tflite"), r)
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_save_removes_the_recipe_when_the_model_rename_fails(
    converted: Callable, tmp_path: Path
) -> None:
    r = recipe(mode=Mode.FP32)
    (tmp_path / "m.tflite").mkdir()  # os.replace(file, dir) fails after the recipe is written
    with pytest.raises(TfquantError, match=r"could not write"):
        convert.save(converted(r), str(tmp_path / "m.tflite"), r)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    assert list((tmp_path / "m.tflite").iterdir()) == []


def test_save_rejects_bad_arguments(converted: Callable, tmp_path: Path) -> None:
    r = recipe(mode=Mode.FP32)
    tflite = converted(r)
    with pytest.raises(TfquantError, match=r"must end in \.tflite"):
        convert.save(tflite, str(tmp_path / "m.bin"), r)
    with pytest.raises(TfquantError, match=r"differs from the one embedded"):
        convert.save(tflite, str(tmp_path / "m.tflite"), recipe(mode=Mode.FP16))
    with pytest.raises(TfquantError, match=r"not a TFLite flatbuffer"):
        convert.save(b"garbage!garbage!", str(tmp_path / "m.tflite"), r)
    with pytest.raises(TfquantError, match=r"recipe must be a tfquant Recipe"):
        convert.save(tflite, str(tmp_path / "m.tflite"), {"mode": "fp32"})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
