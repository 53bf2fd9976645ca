"""Which keras.applications families convert and run, in which mode (not part of the tests).

One representative per family (:data:`tfquant.models.keras_apps.APPLICATION_FAMILIES`), random
weights with batch-norm statistics set from 32 random images (so activations neither vanish
nor explode, as in a trained network; ``set_batch_norm_statistics``), the smallest input each
accepts (32 px; 71 for Xception, 75 for the Inceptions), 10 classes. Each model is saved as
``.keras`` and loaded back with :func:`tfquant.convert.load_model` (the path a user takes),
then converted in every mode with a few calibration images (the family's
``preprocess_input`` of uniform [0, 255] pixels) and run in the LiteRT interpreter (builtin
kernels) on a few more. A cell (family x mode) is ``ok`` with the conversion time, size,
top-1 agreement with the Keras model and max |tflite - keras| / max |keras|, or the one-line
error tfquant raised. One :class:`KerasAppsCoverageRecord` per cell, run and resumed by
:func:`tfquant.study.run_study` into ``<results_dir>/<run_name>/keras_apps_coverage/``.

Unlike the other studies, a failed cell is measured again only with ``retry_errors``: most
failures here are the finding (a family that does not load or convert), and deterministic.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study import Record, RecordSet, Study, load_records, run_study

NAME = "keras_apps_coverage"
MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
OK = "ok"
ERROR = "error"
BATCH_NORM_IMAGES = 32  # random images that set each family's batch-norm statistics


SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "full": MappingProxyType({}),
    "smoke": MappingProxyType({"families": ("MobileNet",), "modes": ("fp32", "int8")}),
})
"""Named sizes: ``full`` (every family and mode) and ``smoke`` (what the tests run)."""


def _families() -> Mapping[str, Any]:
    from tfquant.models.keras_apps import APPLICATION_FAMILIES

    return APPLICATION_FAMILIES


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasAppsCoverageConfig:
    """What the study runs.

    Attributes:
      families: keras.applications constructors (rows); default all of them.
      modes: Conversion modes (columns).
      size: Input height/width; None: each family's minimum.
      num_classes: Output logits.
      num_calibration_examples, num_test_examples: Random images for calibration and for the
        comparison with the Keras model.
      retry_errors: Measure cells whose last record is an error again.
    """

    families: tuple[str, ...] = ()
    modes: tuple[str, ...] = MODES
    size: int | None = None
    num_classes: int = 10
    num_calibration_examples: int = 8
    num_test_examples: int = 16
    retry_errors: bool = False

    def __post_init__(self) -> None:
        known = _families()
        object.__setattr__(self, "families", tuple(self.families) or tuple(known))
        object.__setattr__(self, "modes", tuple(self.modes))
        for family in self.families:
            if family not in known:
                raise TfquantError(f"unknown family {family!r}; choose from: {', '.join(known)}")
        for mode in self.modes:
            if mode not in MODES:
                raise TfquantError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")

    @classmethod
    def of_size(cls, name: str, **overrides: Any) -> "KerasAppsCoverageConfig":
        """The config of size ``name`` (:data:`SIZES`), with ``overrides`` applied."""
        if name not in SIZES:
            raise TfquantError(f"unknown size {name!r}; choose from: {', '.join(SIZES)}")
        return cls(**{**SIZES[name], **overrides})

    def input_size(self, family: str) -> int:
        """The family's input height/width: ``size``, else the smallest the family accepts."""
        return self.size or _families()[family].min_size

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share (families and modes only choose cells)."""
        return {
            "experiment": NAME,
            "size": self.size,
            "num_classes": self.num_classes,
            "num_calibration_examples": self.num_calibration_examples,
            "num_test_examples": self.num_test_examples,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasAppsCoverageCell:
    """One cell: ``family`` converted in ``mode``."""

    family: str
    mode: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.mode)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasAppsCoverageRecord(Record):
    """What one cell measured (field names are the results.jsonl keys).

    ``status`` is ``ok`` or ``error`` (then ``error`` holds the message and
    ``convert_seconds`` the time until it was raised, 0 when the model did not load).
    """

    family: str
    mode: str
    size: int
    status: str
    convert_seconds: float
    size_kib: float | None = None
    top1_agreement: float | None = None
    rel_max_error: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.mode)


def images(family: str, n: int, size: int, seed: int) -> Any:
    """``n`` random images: the family's ``preprocess_input`` of uniform [0, 255] pixels."""
    import numpy as np

    from tfquant.models.keras_apps import application_preprocess

    pixels = np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    return np.asarray(application_preprocess(family)(pixels), dtype=np.float32)


def convert_and_compare(model: Any, mode: str, x_cal: Any, x_test: Any, ref: Any) -> dict[str, Any]:
    """Converts ``model`` in ``mode`` and compares the .tflite's outputs with ``ref`` (Keras's).

    Returns:
      The ok record's measured fields.

    Raises:
      TfquantError: the conversion failed, or LiteRT could not run the model.
    """
    import numpy as np

    from tfquant import convert
    from tfquant.evaluation.accuracy import predict
    from tfquant.recipes import Recipe

    recipe = Recipe(mode=mode, num_calibration_examples=len(x_cal))
    start = time.perf_counter()
    tflite = convert.convert(model, recipe, calibration_data=x_cal)
    seconds = time.perf_counter() - start
    try:
        out = predict(tflite, x_test, batch_size=len(x_test), runtime="builtin")
    except TfquantError:
        raise
    except Exception as e:  # the interpreter's own RuntimeError / ValueError
        raise TfquantError(f"LiteRT could not run the {mode} model: {' '.join(str(e).split())[:200]}") from None
    scale = float(np.abs(ref).max()) or 1.0
    return {
        "status": OK,
        "convert_seconds": round(seconds, 1),
        "size_kib": round(len(tflite) / 1024, 1),
        "top1_agreement": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
        "rel_max_error": float(np.abs(out - ref).max() / scale),
    }


def load_application(config: KerasAppsCoverageConfig, family: str) -> Any:
    """Builds ``family``, sets its BN statistics, saves it as .keras and loads it back as a user would.

    Raises:
      TfquantError: :func:`tfquant.convert.load_model` could not load the saved file.
    """
    import tf_keras as keras

    from tfquant import convert
    from tfquant.models.keras_apps import build_application, set_batch_norm_statistics

    size = config.input_size(family)
    keras.backend.clear_session()
    with tempfile.TemporaryDirectory(prefix="tfquant_apps_") as tmp:
        path = Path(tmp) / f"{family}.keras"
        built = build_application(family, size=size, num_classes=config.num_classes)
        set_batch_norm_statistics(built, images(family, BATCH_NORM_IMAGES, size, seed=2))
        built.save(path)
        keras.backend.clear_session()
        return convert.load_model(path)


class KerasAppsCoverage(Study[KerasAppsCoverageCell, KerasAppsCoverageRecord]):
    """The coverage study (see the module docstring); ``out`` is its run folder."""

    name = NAME
    record_type = KerasAppsCoverageRecord

    def __init__(self, config: KerasAppsCoverageConfig, out: Path) -> None:
        self.config, self.out = config, out

    def fingerprint(self) -> Mapping[str, Any]:
        return self.config.fingerprint()

    def cells(self) -> list[KerasAppsCoverageCell]:
        return [KerasAppsCoverageCell(family=f, mode=m) for f in self.config.families for m in self.config.modes]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def measure(
        self, todo: Sequence[KerasAppsCoverageCell], log: Callable[[str], None]
    ) -> Iterator[KerasAppsCoverageRecord]:
        config = self.config
        if not config.retry_errors:
            failed = {r.key for r in load_records(self, self.out) if r.failed}
            todo = [c for c in todo if c.key not in failed]
        for family in config.families:
            modes = [c.mode for c in todo if c.family == family]
            if not modes:
                continue
            size = config.input_size(family)
            log(f"{family} ({size} px): {', '.join(modes)}")
            load_error = None
            try:
                model = load_application(config, family)
            except TfquantError as e:
                load_error = str(e)
            if load_error is None:
                x_cal = images(family, config.num_calibration_examples, size, seed=0)
                x_test = images(family, config.num_test_examples, size, seed=1)
                ref = model(x_test, training=False).numpy()
            for mode in modes:
                base = {"family": family, "mode": mode, "size": size}
                start = time.perf_counter()
                if load_error is not None:
                    record = KerasAppsCoverageRecord(**base, status=ERROR, error=load_error, convert_seconds=0.0)
                else:
                    try:
                        record = KerasAppsCoverageRecord(**base, **convert_and_compare(model, mode, x_cal, x_test, ref))
                    except TfquantError as e:
                        record = KerasAppsCoverageRecord(
                            **base, status=ERROR, error=str(e), convert_seconds=round(time.perf_counter() - start, 1)
                        )
                log(f"  {mode}: {record.status} {record.error or ''}".rstrip())
                yield record


def run_keras_apps_coverage(
    config: KerasAppsCoverageConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run."""
    out = Path(out_dir)
    return run_study(KerasAppsCoverage(config, out), out, log=log)


LEGEND = (
    "ok: converted and ran in LiteRT (builtin kernels); s = conversion time (int16x8 "
    "includes its runtime check); agree = top-1 agreement with the Keras model and err = "
    "max |tflite - keras| / max |keras| on random images (counts in config.json). Not a "
    "measure of quantization quality: these random-weight networks amplify small "
    "perturbations (even dynamic, weights only, disagrees) and the few calibration images "
    "do not cover the test images' ranges. Read the ok / error coverage."
)


def cell_text(r: KerasAppsCoverageRecord | None) -> str:
    """A cell of the table: ``ok`` with time, agreement and error, or the error; empty when not run."""
    if r is None:
        return ""
    if not r.failed:
        return f"ok {r.convert_seconds:.0f} s, agree {r.top1_agreement:.2f}, err {r.rel_max_error:.1e}"
    return f"**{ERROR}** ({r.convert_seconds:.0f} s): {r.error}"


def results_markdown(records: RecordSet, config: KerasAppsCoverageConfig) -> str:
    """One row per family, one column per mode: the configured cells and any other recorded ones."""
    recorded = list(records)
    families = [f for f in _families() if f in config.families or any(r.family == f for r in recorded)]
    modes = [m for m in MODES if m in config.modes or any(r.mode == m for r in recorded)]
    lines = ["| family | size | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for family in families:
        by_mode = {m: records.get((family, m)) for m in modes}
        sizes = [r.size for r in by_mode.values() if r is not None]
        size = str(sizes[-1]) if sizes else str(config.input_size(family))
        cells = [cell_text(by_mode[m]).replace("|", "\\|") for m in modes]
        lines.append(f"| {family} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + LEGEND + "\n"
