"""Session fixtures for the outside-the-zoo tests: a user's data files and a user's models.

Everything is built once per session under one ``tmp_path_factory`` folder:

* ``train.npz`` (x, y: 1497 digits), ``calib.npz`` (ONLY x: 256 images, no labels),
  ``test.npz`` (x, y: 300 digits), all float32 16x16x1 in [0, 1];
* ``gray_labelled/<class>/*.png`` (the 300 test digits) and ``gray_flat/*.png`` (the 256
  calibration images, no class folders), and the same at 32x32 RGB (``rgb_labelled``,
  ``rgb_flat``) for the 3-channel models;
* the models of :mod:`tests.outside_zoo.builders`, trained for seconds, saved as ``.keras``
  with their optimizer (plus ``se_cnn_no_opt.keras``, saved without one);
* ``my_layers.py``, the user's file defining the custom layer.

:func:`tests.outside_zoo.helpers.cli` runs ``tfquant.cli.main`` in process and captures what
it prints; ``convert_once`` / ``evaluate_once`` cache CLI runs so tests share them, and
``float_accuracy`` holds each trained model's Keras accuracy on the 300 test digits.

"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tests.outside_zoo import builders as B
from tests.outside_zoo.helpers import Run, cli, read_json


# --------------------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outside_zoo")


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    return B.digits_splits()


@pytest.fixture(scope="session")
def calib_x(digits: dict[str, np.ndarray]) -> np.ndarray:
    """256 training images (a user's unlabelled calibration set)."""
    pick = np.random.default_rng(1).choice(len(digits["x_train"]), B.N_CALIB, replace=False)
    return digits["x_train"][np.sort(pick)]


@pytest.fixture(scope="session")
def files(work: Path, digits: dict[str, np.ndarray], calib_x: np.ndarray) -> dict[str, Path]:
    """The user's data files and folders (see the module docstring)."""
    paths = {
        "train": work / "train.npz",
        "calib": work / "calib.npz",
        "test": work / "test.npz",
    }
    np.savez(paths["train"], x=digits["x_train"], y=digits["y_train"])
    np.savez(paths["calib"], x=calib_x)  # no labels, as users usually have
    np.savez(paths["test"], x=digits["x_test"], y=digits["y_test"])
    paths["gray_labelled"] = B.write_pngs(digits["x_test"], digits["y_test"], work / "gray_labelled")
    paths["gray_flat"] = B.write_pngs(calib_x, None, work / "gray_flat")
    paths["rgb_labelled"] = B.write_pngs(B.to_rgb(digits["x_test"]), digits["y_test"], work / "rgb_labelled")
    paths["rgb_flat"] = B.write_pngs(B.to_rgb(calib_x), None, work / "rgb_flat")
    paths["calib_rgb"] = work / "calib_rgb.npz"
    np.savez(paths["calib_rgb"], x=B.to_rgb(calib_x))
    paths["test_rgb"] = work / "test_rgb.npz"
    np.savez(paths["test_rgb"], x=B.to_rgb(digits["x_test"]), y=digits["y_test"])
    return paths


# ------------------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def my_layers_py(work: Path) -> Path:
    path = work / "my_layers.py"
    path.write_text(B.MY_LAYERS_SOURCE)
    return path


EPOCHS = {"se_cnn": 12, "dw_block": 12, "layernorm": 5, "softmax": 5, "custom": 5}


@pytest.fixture(scope="session")
def float_accuracy() -> dict[str, float]:
    """Keras float accuracy on the 300 test digits, by model name (filled as models train)."""
    return {}


def _train_and_save(
    name: str, build: Callable[[], Any], work: Path, digits: dict[str, np.ndarray],
    float_accuracy: dict[str, float],
) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = B.train(build(), digits["x_train"], digits["y_train"], EPOCHS[name])
    float_accuracy[name] = B.keras_accuracy(model, digits["x_test"], digits["y_test"])
    path = work / f"{name}.keras"
    model.save(path)  # with its optimizer, as model.save does by default
    return path


@pytest.fixture(scope="session")
def se_cnn(work: Path, digits: dict[str, np.ndarray], float_accuracy: dict[str, float]) -> Path:
    return _train_and_save("se_cnn", B.build_se_cnn, work, digits, float_accuracy)


@pytest.fixture(scope="session")
def se_cnn_no_opt(work: Path, se_cnn: Path) -> Path:
    """The same trained SE-CNN saved without its optimizer (no LR recorded)."""
    import tensorflow as tf

    model = tf.keras.models.load_model(se_cnn, compile=False)  # not compiled: no optimizer saved
    path = work / "se_cnn_no_opt.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def dw_block(work: Path, digits: dict[str, np.ndarray], float_accuracy: dict[str, float]) -> Path:
    return _train_and_save("dw_block", B.build_dw_block, work, digits, float_accuracy)


@pytest.fixture(scope="session")
def layernorm(work: Path, digits: dict[str, np.ndarray], float_accuracy: dict[str, float]) -> Path:
    return _train_and_save("layernorm", B.build_layernorm, work, digits, float_accuracy)


@pytest.fixture(scope="session")
def softmax(work: Path, digits: dict[str, np.ndarray], float_accuracy: dict[str, float]) -> Path:
    return _train_and_save("softmax", B.build_softmax, work, digits, float_accuracy)


@pytest.fixture(scope="session")
def custom(
    work: Path, digits: dict[str, np.ndarray], my_layers_py: Path, float_accuracy: dict[str, float]
) -> Path:
    my_layers = B.load_my_layers(my_layers_py)
    return _train_and_save("custom", lambda: B.build_custom(my_layers), work, digits, float_accuracy)


@pytest.fixture(scope="session")
def mnv2(work: Path) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    path = work / "mnv2.keras"
    B.build_mnv2().save(path)
    return path


@pytest.fixture(scope="session")
def contract(work: Path, digits: dict[str, np.ndarray], float_accuracy: dict[str, float]) -> Path:
    """Trained on 32x32x3 digits in [-1, 1]: only the mobilenet_v2 input contract suits it.

    ``float_accuracy`` gets ``contract`` (fed [-1, 1], as trained) and ``contract_fed_0_1``
    (fed the raw [0, 1] pixels): the gap shows whether a contract was applied.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    x = B.to_rgb(digits["x_train"]) * 2.0 - 1.0
    model = B.train(B.build_contract(), x, digits["y_train"], 5)
    x_test = B.to_rgb(digits["x_test"])
    float_accuracy["contract"] = B.keras_accuracy(model, x_test * 2.0 - 1.0, digits["y_test"])
    float_accuracy["contract_fed_0_1"] = B.keras_accuracy(model, x_test, digits["y_test"])
    path = work / "contract.keras"
    model.save(path)
    return path


# -------------------------------------------------------------------------------- conversions


@pytest.fixture(scope="session")
def convert_once(work: Path, files: dict[str, Path], my_layers_py: Path) -> Callable[..., Run]:
    """``convert_once(model_path, mode, *extra_flags)``: the CLI convert run, cached by flags.

    Uses the documented default flags: int8 / int16x8 get ``--calibration_data npz:calib.npz``
    (the 3-channel models: ``npz:calib_rgb.npz``) unless ``calibration`` names another source,
    and no ``--num_calibration_examples``; fp32 / fp16 / dynamic get no calibration data; the
    custom-layer model gets ``--custom_objects my_layers.py``. The output path is
    ``run.argv[-1]``.
    """
    cache: dict[tuple[str, ...], Run] = {}
    out_dir = work / "converted"
    out_dir.mkdir(exist_ok=True)

    def convert(model: Path, mode: str, *extra: str, calibration: str | None = None) -> Run:
        rgb = model.stem in ("mnv2", "contract")
        if calibration is None and mode in ("int8", "int16x8"):
            calibration = f"npz:{files['calib_rgb' if rgb else 'calib']}"
        key = (str(model), mode, str(calibration), *extra)
        if key not in cache:
            tag = "_".join(p.strip("-").replace("/", "").replace(":", "")[-24:] for p in (mode, *extra))
            tag += "_folder" if calibration and calibration.startswith("folder:") else ""
            out = out_dir / f"{model.stem}_{tag}.tflite"
            argv = ["convert", "--model", str(model), "--mode", mode]
            if calibration:
                argv += ["--calibration_data", calibration]
            if model.stem == "custom":
                argv += ["--custom_objects", str(my_layers_py)]
            cache[key] = cli(*argv, *extra, "--out", str(out))
        return cache[key]

    return convert


@pytest.fixture(scope="session")
def evaluate_once(work: Path) -> Callable[..., dict[str, Any]]:
    """``evaluate_once(tflite, dataset, *extra_flags)``: the CLI evaluate --output JSON, cached."""
    cache: dict[tuple[str, ...], dict[str, Any]] = {}
    out_dir = work / "evaluated"
    out_dir.mkdir(exist_ok=True)

    def evaluate(tflite: Path, dataset: str, *extra: str) -> dict[str, Any]:
        key = (str(tflite), dataset, *extra)
        if key not in cache:
            out = out_dir / f"eval_{len(cache)}.json"
            run = cli("evaluate", "--tflite", str(tflite), "--dataset", dataset, *extra,
                      "--output", str(out))
            assert run.rc == 0, run.explain()
            result = read_json(out)
            result["_run"] = run
            cache[key] = result
        return cache[key]

    return evaluate
