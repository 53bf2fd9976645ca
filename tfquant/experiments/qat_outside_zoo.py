"""QAT on small user-like models and data outside the zoo (issue 13), before and after.

Two datasets made offline, neither Fashion-MNIST:

* ``digits`` -- scikit-learn's bundled UCI handwritten digits (1797 8x8 images, values 0..16,
  ``sklearn.datasets.load_digits``), scaled to [0, 1] and resized to 16x16 (bilinear), 10
  classes; a stratified split of 1297 train / 500 test;
* ``shapes`` -- procedurally drawn 24x24 RGB images of six shape classes (disc, ring, square,
  outline square, horizontal bar, vertical bar) of random size, position and colour on a
  noisy background (Gaussian noise σ 0.2), 6 classes, 1800 train / 600 test (numpy, seed 0).

Three small user-like models, trained briefly in float with Adam (as users do):

* ``se_resnet`` -- conv + BN + ReLU stem, a residual block, a squeeze-and-excitation gate
  (global pool, Dense, sigmoid, Multiply), logits; saved as .keras WITH its optimizer;
* ``ds_block`` -- depthwise-separable blocks with BN and ReLU6, ending in a softmax; saved
  as .keras with its optimizer;
* ``plain`` -- conv + ReLU, pooling, Dense, logits, no BN; saved as .keras WITHOUT the
  optimizer (so the default learning rate applies).

For each (dataset, model) the study writes ``train.npz``, ``calib.npz`` (256 images, ``x``
only), ``test.npz`` and the float ``.keras`` model under ``data/<dataset>/`` of its folder,
then each cell (dataset x model x weight bits x fine-tuning schedule) runs
:func:`tfquant.qat.run_qat` with ``epochs`` (the documented command's 2) and measures the
exported .tflite in the LiteRT interpreter (:func:`tfquant.evaluation.evaluate_accuracy`) on
the test split: today's schedule ``nvidia`` (before) against the default ``auto`` (after).
One :class:`QatOutsideZooRecord` per cell, run and resumed by :func:`tfquant.study.run_study`
into ``<results_dir>/<run_name>/qat_outside_zoo/``; the findings are :data:`CLAIMS`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import _env  # noqa: F401  (before TensorFlow)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant import progress as _progress
from tfquant import training
from tfquant.errors import TfquantError
from tfquant.qat.bn_reestimate import reestimate_batch_norm
from tfquant.study import (Claim, ClaimResult, Compare, Footnotes, Record, RecordSet, Study, claims_markdown,
                           evaluate_claims, run_study)

NAME = "qat_outside_zoo"
L = keras.layers

FLOAT_LR = 1e-3  # Keras Adam's default: what a user who writes optimizer="adam" trains with
FLOAT_BATCH = 32  # 41 steps per digits epoch: BN moving statistics converge (momentum 0.99)
NUM_CALIBRATION = 256


def digits(seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UCI digits scaled to [0, 1], resized to ``size``x``size``; (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    if size != 8:
        x = tf.image.resize(x, (size, size), method="bilinear").numpy().astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=500, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def _draw_shape(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    img = rng.uniform(0.0, 0.4, (size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(size * 0.12, size * 0.3)
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    box = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    if label == 0:  # disc
        mask = d <= r
    elif label == 1:  # ring
        mask = (d <= r) & (d >= r * 0.6)
    elif label == 2:  # filled square
        mask = box <= r
    elif label == 3:  # outline square
        mask = (box <= r) & (box >= r * 0.6)
    elif label == 4:  # horizontal bar
        mask = (np.abs(yy - cy) <= r * 0.3) & (np.abs(xx - cx) <= r)
    else:  # vertical bar
        mask = (np.abs(xx - cx) <= r * 0.3) & (np.abs(yy - cy) <= r)
    img[mask] = colour
    img += rng.normal(0.0, 0.2, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def shapes(
    seed: int = 0, size: int = 24, n_train: int = 1800, n_test: int = 600
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Six procedurally drawn shape classes, RGB in [0, 1]; (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = np.arange(n) % 6
    rng.shuffle(y)
    x = np.stack([_draw_shape(rng, int(label), size) for label in y])
    return x[:n_train], y[:n_train].astype(np.int64), x[n_train:], y[n_train:].astype(np.int64)


DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {
    "digits": digits,
    "shapes": shapes,
}


def se_resnet(input_shape: tuple[int, ...], classes: int) -> keras.Model:
    """Residual CNN with BN and a squeeze-and-excitation gate; logits out."""
    inp = keras.Input(input_shape)
    h = L.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = L.ReLU()(L.BatchNormalization()(h))
    r = L.Conv2D(16, 3, padding="same", use_bias=False)(h)
    r = L.ReLU()(L.BatchNormalization()(r))
    r = L.Conv2D(16, 3, padding="same", use_bias=False)(r)
    r = L.BatchNormalization()(r)
    se = L.GlobalAveragePooling2D()(r)
    se = L.Dense(4, activation="relu")(se)
    se = L.Dense(16, activation="sigmoid")(se)
    r = L.Multiply()([r, L.Reshape((1, 1, 16))(se)])
    h = L.ReLU()(L.Add()([h, r]))
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(32, 3, padding="same", use_bias=False)(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(classes)(h), name="se_resnet")


def ds_block(input_shape: tuple[int, ...], classes: int) -> keras.Model:
    """Depthwise-separable blocks with BN and ReLU6; ends in a softmax."""
    inp = keras.Input(input_shape)
    h = L.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    for filters, stride in ((32, 2), (32, 1), (64, 2)):
        h = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
        h = L.Conv2D(filters, 1, use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(classes, activation="softmax")(h), name="ds_block")


def plain(input_shape: tuple[int, ...], classes: int) -> keras.Model:
    """Conv + ReLU, pooling, Dense; no BN; logits out."""
    inp = keras.Input(input_shape)
    h = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)
    h = L.Dense(64, activation="relu")(h)
    return keras.Model(inp, L.Dense(classes)(h), name="plain")


MODELS: dict[str, Callable[[tuple[int, ...], int], keras.Model]] = {
    "se_resnet": se_resnet,
    "ds_block": ds_block,
    "plain": plain,
}
SAVE_OPTIMIZER = {"se_resnet": True, "ds_block": True, "plain": False}


def train_float(
    model: keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int
) -> keras.Model:
    """Trains the float model as a user would: Adam at :data:`FLOAT_LR`, the loss matching the
    output, seeded shuffles (through the one training loop, :func:`tfquant.training.fit`)."""
    softmax_out = getattr(model.layers[-1], "activation", None) is keras.activations.softmax
    training.fit(
        model, x, y, epochs=epochs, batch_size=FLOAT_BATCH, seed=seed,
        optimizer=keras.optimizers.Adam(FLOAT_LR),
        loss=training.sparse_cross_entropy(from_logits=not softmax_out),
        progress=training.EpochLog(label="float", epochs=epochs, log=None),
    )
    return model


def prepare(
    dataset: str, model_name: str, folder: Path, *, float_epochs: int, seed: int
) -> dict[str, Any]:
    """Writes ``model.keras`` and the train / calib / test npz files into ``folder`` (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model_name}.keras"
    if not (folder / "test.npz").exists():
        x_tr, y_tr, x_te, y_te = DATASETS[dataset](seed)
        rng = np.random.default_rng(seed)
        cal = x_tr[rng.choice(len(x_tr), NUM_CALIBRATION, replace=False)]
        np.savez(folder / "train.npz", x=x_tr, y=y_tr)
        np.savez(folder / "calib.npz", x=cal)
        np.savez(folder / "test.npz", x=x_te, y=y_te)
    if not path.exists():
        with np.load(folder / "train.npz") as f:
            x_tr, y_tr = f["x"], f["y"]
        model = MODELS[model_name](x_tr.shape[1:], int(y_tr.max()) + 1)
        train_float(model, x_tr, y_tr, epochs=float_epochs, seed=seed)
        # A briefly trained model's moving BN statistics lag its weights (momentum 0.99 over a
        # few hundred steps at a constant LR: digits se_resnet 0.82 in inference vs 0.99 in
        # training mode); set them to their population values, as a converged model's are, so
        # that float is a strong baseline.
        reestimate_batch_norm(model, x_tr)
        if not SAVE_OPTIMIZER[model_name]:  # .keras has no include_optimizer: save an uncompiled copy
            bare = MODELS[model_name](x_tr.shape[1:], int(y_tr.max()) + 1)
            bare.set_weights(model.get_weights())
            model = bare
        model.save(path)
    return {"model": path, "train": folder / "train.npz", "calib": folder / "calib.npz",
            "test": folder / "test.npz"}


def qat_cell(files: Mapping[str, Any], *, bits: int, recipe: str, epochs: int, seed: int) -> dict[str, Any]:
    """One QAT run through run_qat as the documented CLI command makes it (no eval data: the
    far-below-float check runs on held-out training data; LR from the saved optimizer, else
    the default); the .tflite measured in LiteRT on the test split.

    Returns:
      The record's measured fields.

    Raises:
      TfquantError: run_qat or the evaluation failed.
    """
    from tfquant import qat
    from tfquant.evaluation import evaluate_accuracy

    with np.load(files["train"]) as f:
        x_tr, y_tr = f["x"], f["y"]
    with np.load(files["calib"]) as f:
        x_cal = f["x"]
    with np.load(files["test"]) as f:
        x_te, y_te = f["x"], f["y"]
    model = keras.models.load_model(files["model"], compile=False)
    float_acc = float(np.mean(np.argmax(model.predict(x_te, verbose=0), -1) == y_te))
    start = time.perf_counter()
    outcome = qat.run_qat(
        model, x_tr, y_tr, x_cal, weight_bits=bits, epochs=epochs, seed=seed,
        model_path=files["model"], finetune_schedule=recipe, verbose=False,
    )
    seconds = time.perf_counter() - start
    acc = evaluate_accuracy(outcome.tflite, x_te, y_te).accuracy
    rec = outcome.record.to_dict()
    return {
        "float_acc": round(float_acc, 4),
        "qat_tflite_acc": round(float(acc), 4),
        "delta_points": round(100 * (acc - float_acc), 1),
        "steps": rec["finetune"]["steps"],
        "seconds": round(seconds, 1),
        "learning_rate": rec["finetune_recipe"]["learning_rate"],
        "learning_rate_source": rec["learning_rate_source"],
        "batch_size": rec["finetune_recipe"]["batch_size"],
        "bn_reestimated": rec["bn_reestimated"],
        "from_logits": rec["from_logits"],
        "warnings": rec["warnings"],
    }


SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "full": MappingProxyType({}),
    "smoke": MappingProxyType({"datasets": ("digits",), "models": ("se_resnet",), "bits": (4,)}),
})
"""Named sizes: ``full`` (every dataset, model and bit width) and ``smoke`` (one of each, 4 bits)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatOutsideZooConfig:
    """What the study runs.

    Attributes:
      datasets, models: Of :data:`DATASETS` and :data:`MODELS`.
      bits: Weight bits.
      recipes: Fine-tuning schedules (``finetune_schedule`` of run_qat; ``nvidia`` = before).
      epochs: QAT epochs; float_epochs: float training epochs.
      seed: Seed of the data split, float training and QAT.
    """

    datasets: tuple[str, ...] = tuple(DATASETS)
    models: tuple[str, ...] = tuple(MODELS)
    bits: tuple[int, ...] = (8, 4)
    recipes: tuple[str, ...] = ("nvidia", "auto")
    epochs: int = 2
    float_epochs: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        from tfquant.qat.schedules import ScheduleName

        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        object.__setattr__(self, "recipes", tuple(ScheduleName.parse(r, what="schedule").value for r in self.recipes))
        for name in self.datasets:
            if name not in DATASETS:
                raise TfquantError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
        for name in self.models:
            if name not in MODELS:
                raise TfquantError(f"unknown model {name!r}; choose from {sorted(MODELS)}")

    @classmethod
    def of_size(cls, name: str, **overrides: Any) -> "QatOutsideZooConfig":
        """The config of size ``name`` (:data:`SIZES`), with ``overrides`` applied."""
        if name not in SIZES:
            raise TfquantError(f"unknown size {name!r}; choose from: {', '.join(SIZES)}")
        return cls(**{**SIZES[name], **overrides})

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share (datasets, models, bits and schedules only choose cells)."""
        return {"experiment": NAME, "epochs": self.epochs, "float_epochs": self.float_epochs, "seed": self.seed}


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatOutsideZooCell:
    """One cell: ``model`` on ``dataset``, QAT at ``bits`` with schedule ``recipe``."""

    dataset: str
    model: str
    bits: int
    recipe: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.dataset, self.model, self.bits, self.recipe)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatOutsideZooRecord(Record):
    """What one cell measured (field names are the results.jsonl keys); accuracies on the test
    split, ``delta_points`` = 100 x (qat_tflite_acc - float_acc), the rest from run_qat's record."""

    dataset: str
    model: str
    bits: int
    recipe: str
    float_acc: float | None = None
    qat_tflite_acc: float | None = None
    delta_points: float | None = None
    steps: int | None = None
    seconds: float | None = None
    learning_rate: float | None = None
    learning_rate_source: str | None = None
    batch_size: int | None = None
    bn_reestimated: int | None = None
    from_logits: bool | None = None
    warnings: list[str] | None = None

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.dataset, self.model, self.bits, self.recipe)


FLOAT = "float"


def cell_name(bits: int, recipe: str) -> str:
    """The claims' name of a QAT cell within its (dataset, model) group, e.g. ``4bit_auto``."""
    return f"{bits}bit_{recipe}"


CLAIMS = (
    Claim(
        claim="4-bit QAT with `auto` ends within 0.5 pt of float or above it",
        paper="issue 13 (BUILD_NOTES): `auto` within 0.5 points of float or above it in all 13 4-bit runs",
        compares=(Compare(a=cell_name(4, "auto"), b=FLOAT, op=">=", threshold=-0.5),),
    ),
    Claim(
        claim="at 4 bits `auto` is at least as accurate as `nvidia` (the schedule before)",
        paper="issue 13 (BUILD_NOTES): nvidia -> auto raised every 4-bit row or left it equal",
        compares=(Compare(a=cell_name(4, "auto"), b=cell_name(4, "nvidia"), op=">=", threshold=0.0),),
    ),
    Claim(
        claim="at 8 bits `auto` (NVIDIA's LR plus BN re-estimation) is at most 0.4 pt below `nvidia`",
        paper="issue 13 (BUILD_NOTES): at 8 bits `auto` and `nvidia` within 0.4 points of each other",
        compares=(Compare(a=cell_name(8, "auto"), b=cell_name(8, "nvidia"), op=">=", threshold=-0.4),),
    ),
)
"""The findings the experiment states, tested per (dataset, model) on the .tflite accuracies."""


def claim_results(records: RecordSet) -> list[ClaimResult]:
    """:data:`CLAIMS` on the records: group = ``dataset model``, cells = float and ``<bits>bit_<recipe>``."""
    values: dict[tuple[str, str], float] = {}
    groups: list[str] = []
    for r in sorted(records, key=_row_order):
        if r.failed:
            continue
        group = f"{r.dataset} {r.model}"
        if group not in groups:
            groups.append(group)
        values[(group, FLOAT)] = r.float_acc
        values[(group, cell_name(r.bits, r.recipe))] = r.qat_tflite_acc
    return evaluate_claims(CLAIMS, values, groups)


class QatOutsideZoo(Study[QatOutsideZooCell, QatOutsideZooRecord]):
    """The study (see the module docstring); ``out`` is its folder (data and models under ``data/``)."""

    name = NAME
    record_type = QatOutsideZooRecord

    def __init__(self, config: QatOutsideZooConfig, out: Path) -> None:
        self.config, self.out = config, out

    def fingerprint(self) -> Mapping[str, Any]:
        return self.config.fingerprint()

    def cells(self) -> list[QatOutsideZooCell]:
        c = self.config
        return [QatOutsideZooCell(dataset=d, model=m, bits=b, recipe=r)
                for d in c.datasets for m in c.models for b in c.bits for r in c.recipes]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config, self.cells())

    def measure(self, todo: Sequence[QatOutsideZooCell], log: Callable[[str], None]) -> Iterator[QatOutsideZooRecord]:
        c = self.config
        for dataset in c.datasets:
            for model_name in c.models:
                cells = [cell for cell in todo if (cell.dataset, cell.model) == (dataset, model_name)]
                if not cells:
                    continue
                files = prepare(dataset, model_name, self.out / "data" / dataset,
                                float_epochs=c.float_epochs, seed=c.seed)
                for cell in cells:
                    base = dict(dataset=dataset, model=model_name, bits=cell.bits, recipe=cell.recipe)
                    try:
                        record = QatOutsideZooRecord(**base, **qat_cell(
                            files, bits=cell.bits, recipe=cell.recipe, epochs=c.epochs, seed=c.seed))
                    except TfquantError as e:
                        record = QatOutsideZooRecord(**base, error=str(e))
                    log(f"{dataset} {model_name} {cell.bits}-bit {cell.recipe}: " + (
                        f"failed: {record.error}" if record.failed
                        else f"float {record.float_acc:.4f} -> .tflite {record.qat_tflite_acc:.4f}"))
                    yield record


def run_qat_outside_zoo(
    config: QatOutsideZooConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run."""
    out = Path(out_dir)
    return run_study(QatOutsideZoo(config, out), out, log=log)


COLUMNS = ("dataset", "model", "bits", "recipe", "float_acc", "qat_tflite_acc", "delta_points",
           "steps", "batch_size", "learning_rate", "bn_reestimated", "seconds")


def _row_order(r: Any) -> tuple[str, str, int, str]:
    return (r.dataset, r.model, -r.bits, r.recipe)


def results_markdown(records: RecordSet, config: QatOutsideZooConfig, cells: Sequence[QatOutsideZooCell]) -> str:
    """The table (one row per cell, configured or recorded: dataset, model, bits desc, schedule) and the claims."""
    from tfquant.evaluation.report import markdown_table

    notes = Footnotes()
    rows = []
    keyed = {c.key: c for c in cells} | {r.key: r for r in records}
    for item in sorted(keyed.values(), key=_row_order):
        r = records.get(item.key)
        row: dict[str, Any] = {"dataset": item.dataset, "model": item.model, "bits": item.bits, "recipe": item.recipe}
        if r is not None and r.failed:
            row["qat_tflite_acc"] = notes.failed(f"{r.dataset} / {r.model} / {r.bits} bits / {r.recipe}", r.error)
        elif r is not None:
            row.update({c: getattr(r, c) for c in COLUMNS[4:]})
        rows.append(row)
    lines = [
        f"QAT outside the zoo, --epochs {config.epochs}, seed {config.seed}; accuracy of the .tflite in LiteRT on "
        "the test split; delta in points vs float",
        "",
        markdown_table(rows, list(COLUMNS),
                       floatfmt={"learning_rate": ".2g", "delta_points": "+.1f", "seconds": ".1f"}).rstrip("\n"),
    ]
    lines += notes.lines()
    lines += ["", "## Claims", "", *claims_markdown(claim_results(records))]
    return "\n".join(lines) + "\n"
