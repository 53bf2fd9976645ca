"""Standard TFLite metadata (convert --labels): written with MediaPipe's writers, read back with
MediaPipe's MetadataDisplayer, beside tfquant's own recipe; shown by inspect.

MediaPipe comes from requirements-nodeps.txt (run_all.sh installs it); without it these tests
fail at import, on purpose: a skipped round trip would hide that metadata is untested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, NUM_CLASSES, recipe
from tfquant.errors import TfquantError
from tfquant.recipes.inputs import InputContract

import cv2  # noqa: F401  (MediaPipe's package imports it; installed from requirements-nodeps.txt)
from mediapipe.tasks.python.metadata import metadata as _mediapipe_metadata  # noqa: F401

LABELS = tuple(f"class_{i}" for i in range(NUM_CLASSES))


def _displayer(tflite: bytes) -> Any:
    from mediapipe.tasks.python.metadata import metadata

    return metadata.MetadataDisplayer.with_model_buffer(bytearray(tflite))


def test_round_trip_with_mediapipe_reader(converted: Callable[..., bytes]) -> None:
    from tfquant.convert import read_recipe
    from tfquant.convert.standard_metadata import add_classifier_metadata

    r = recipe(mode="fp32", input=InputContract(mean=(0.5,), std=(0.25,)))
    tflite = add_classifier_metadata(converted(r), r, labels=LABELS, name="cnn", version="7", description="a test")
    d = _displayer(tflite)
    md = json.loads(d.get_metadata_json())
    assert (md["name"], md["version"], md["description"]) == ("cnn", "7", "a test")
    norm = md["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]
    assert norm["options_type"] == "NormalizationOptions"
    assert norm["options"]["mean"] == [pytest.approx(127.5)] and norm["options"]["std"] == [pytest.approx(63.75)]
    assert d.get_packed_associated_file_list() == ["labels.txt"]
    assert d.get_associated_file_buffer("labels.txt").decode().splitlines() == list(LABELS)
    assert md["min_parser_version"]
    assert read_recipe(tflite) == r  # tfquant's own entry kept beside TFLITE_METADATA


def test_normalisation_matches_the_recipe_contract(converted: Callable[..., bytes]) -> None:
    """Feeding (pixel - mean) / std of the metadata equals the recipe's (x01 - m) / s."""
    from tfquant.convert.standard_metadata import normalization_255

    contract = InputContract(mean=(0.485,), std=(0.229,))
    mean, std = normalization_255(recipe(mode="fp32", input=contract), 1)
    pixel = np.arange(256.0)
    np.testing.assert_allclose((pixel - mean[0]) / std[0], (pixel / 255 - 0.485) / 0.229, rtol=1e-12)
    assert normalization_255(recipe(mode="fp32"), 3) == ((0.0,), (255.0,))  # one value: all channels


def test_int8_input_quantization_is_recorded(converted: Callable[..., bytes]) -> None:
    from tfquant.convert.standard_metadata import add_classifier_metadata
    from tfquant.tflite.metadata import classifier_io

    r = recipe(mode="int8", io_dtype="int8")
    base = converted(r)
    scale, zero_point = classifier_io(base).input_quantization
    tflite = add_classifier_metadata(base, r, labels=LABELS, name="cnn")
    md = json.loads(_displayer(tflite).get_metadata_json())
    description = md["subgraph_metadata"][0]["input_tensor_metadata"][0]["description"]
    assert f"scale {scale:.9g}, zero_point {zero_point}" in description
    from tfquant.evaluation.interpreter import load_interpreter

    x = np.random.default_rng(0).uniform(0, 1, (1, *INPUT_SHAPE)).astype(np.float32)
    outs = []
    for model in (base, tflite):  # the appended metadata and zip change nothing the interpreter runs
        it = load_interpreter(model)
        it.set_tensor(it.get_input_details()[0]["index"], np.round(x / scale + zero_point).astype(np.int8))
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_label_count_must_match_the_output(converted: Callable[..., bytes]) -> None:
    from tfquant.convert.standard_metadata import add_classifier_metadata

    r = recipe(mode="fp32")
    with pytest.raises(TfquantError, match="3 labels but the model outputs 10 classes"):
        add_classifier_metadata(converted(r), r, labels=("a", "b", "c"), name="cnn")


def test_convert_labels_and_inspect_cli(cnn: Any, cal_data: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfquant.cli import main

    model = tmp_path / "cnn.keras"
    cnn.save(model)
    np.savez(tmp_path / "cal.npz", x=np.clip(cal_data, 0, 1))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "cnn_int8.tflite"
    assert main(["convert", "--model", str(model), "--mode", "int8", "--io_dtype", "int8",
                 "--calibration_data", f"npz:{tmp_path / 'cal.npz'}", "--preprocess", "tf",
                 "--labels", str(tmp_path / "labels.txt"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.startswith("standard TFLite metadata:"))
    assert "name 'cnn_int8'" in line and "labels.txt: 10 labels (class_0" in line
    assert "(pixel - [127.5]) / [127.5]" in line and "zero_point" in line
    assert main(["inspect", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["standard_metadata"]["labels"] == list(LABELS) and record["recipe"]["io_dtype"] == "int8"
    (tmp_path / "bad.txt").write_text("a\n\nb\n")
    assert main(["convert", "--model", str(model), "--mode", "fp32", "--labels", str(tmp_path / "bad.txt"),
                 "--out", str(tmp_path / "x.tflite")]) == 2
    assert "empty lines" in capsys.readouterr().err and not (tmp_path / "x.tflite").exists()
