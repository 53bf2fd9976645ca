"""Banner et al.'s 4-bit PTQ study on the CNN zoo: ACIQ clipping, per-channel bit allocation and
bias correction, alone and together, at W8A4, W4A8 and W4A4.

Banner, Nahshan, Soudry 2019 ("Post-training 4-bit quantization of convolutional networks
for rapid-deployment", arXiv 1810.05723; ``shared/docs/methods.md`` Sec. 3). Rows (methods):

* ``naive``: per-channel max weights on the b-bit grid, max (min/max) activation ranges;
* ``aciq``: ACIQ activation clipping (Laplace prior, α* for the activation bit width);
* ``allocation``: ACIQ per-channel weight bit allocation (2^b_c ∝ α_c^(2/3), mean b);
* ``bias_correction``: the weights' per-channel mean (and spread) restored;
* ``all``: the three together;
* ``sigma2``: activations clipped at a fixed mean ± 2σ (the paper's weak baseline).

Columns (configs): W8A4 and W4A4 run in simulation (TFLite has no 4-bit activations; cells
marked ``sim``: :func:`tfquant.simulation.simulate` on the BN-folded model with the same
per-channel weight grids, :mod:`tfquant.simulation.low_bit`); W4A8 runs as real int8
.tflite models in the LiteRT interpreter (:mod:`tfquant.convert.low_bit`), exported from one
calibration per model. At 8-bit weights the allocation is a no-op (every channel already
has the 8 bits int8 holds). Float = the fp32 .tflite.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.qtypes import BiasCorrection, Mode
from tfquant.recipes import Recipe
from tfquant.study import Footnotes, Record, RecordSet, Study, header, run_study
from tfquant.study.claims import Aggregate, Claim, Compare, claims_section, evaluate_claims, listed_claim
from tfquant.study.settings import ZooStudySettings

NAME = "aciq"
FLOAT = "float"
CNN_ZOO: tuple[str, ...] = ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet")
"""The convolutional zoo models (the ViT has no per-channel conv weights to allocate)."""

ROWS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "naive": {"activations": "max", "allocation": "uniform", "bias": False},
    "aciq": {"activations": "aciq", "allocation": "uniform", "bias": False},
    "allocation": {"activations": "max", "allocation": "aciq", "bias": False},
    "bias_correction": {"activations": "max", "allocation": "uniform", "bias": True},
    "all": {"activations": "aciq", "allocation": "aciq", "bias": True},
    "sigma2": {"activations": "sigma2", "allocation": "uniform", "bias": False},
})
"""Row -> activation ranges, weight bit allocation, bias correction on/off."""

CONFIGS: Mapping[str, tuple[int, int]] = MappingProxyType({"W8A4": (8, 4), "W4A8": (4, 8), "W4A4": (4, 4)})
"""Config -> (weight bits, activation bits)."""

GOAL_PT = 3.0
"""Issue 9's accuracy goal: W4A8 with all three within 3 points of float on every CNN."""


def executed_in(config: str) -> str:
    """``tflite`` for 8-bit activations (int8 models run), ``sim`` below."""
    return "tflite" if CONFIGS[config][1] == 8 else "sim"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AciqConfig(ZooStudySettings):
    """What the study runs: zoo settings plus configs, rows and the bias correction used."""

    configs: tuple[str, ...] = tuple(CONFIGS)
    rows: tuple[str, ...] = tuple(ROWS)
    bias_correction: BiasCorrection = BiasCorrection.MEAN_STD

    def __post_init__(self) -> None:
        bad = [c for c in self.configs if c not in CONFIGS] + [r for r in self.rows if r not in ROWS]
        if bad:
            raise TfquantError(f"unknown config/row {bad}; configs: {', '.join(CONFIGS)}; rows: {', '.join(ROWS)}")
        object.__setattr__(self, "bias_correction", BiasCorrection.parse(self.bias_correction, what="bias correction"))
        if self.bias_correction is BiasCorrection.SEQUENTIAL and any(executed_in(c) == "sim" for c in self.configs):
            raise TfquantError("bias correction sequential runs in the interpreter only; use --configs W4A8")
        super().__post_init__()

    def recipe(self, row: str, weight_bits: int) -> Recipe:
        """The int8 recipe of ``row`` (``sigma2`` records calibrator max; its ranges come from
        the fixed-2σ calibrator passed to the export and named in the ranges metadata)."""
        spec = ROWS[row]
        return Recipe(
            mode=Mode.INT8, calibrator="aciq" if spec["activations"] == "aciq" else "max",
            num_calibration_examples=self.num_calibration_examples, calibration_seed=self.calibration_seed,
            calibration_data=self.dataset, weight_bits=weight_bits, weight_bit_allocation=spec["allocation"],
            bias_correction=self.bias_correction if spec["bias"] else BiasCorrection.NONE,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AciqCell:
    model: str
    config: str
    row: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.config, self.row)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AciqRecord(Record):
    """One cell (results.jsonl keys). ``mean_bits``: parameter-weighted mean weight bit width
    actually stored; ``channel_bits_range``: [fewest, most] bits of any channel."""

    experiment: str
    model: str
    config: str
    row: str
    executed_in: str
    accuracy: float | None = None
    n_examples: int | None = None
    mean_bits: float | None = None
    channel_bits_range: list[int] | None = None
    tflite_path: str | None = None
    recipe: dict[str, Any] | None = None
    seconds: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.config, self.row)


def _bits_summary(bits: Mapping[str, Sequence[int]], sizes: Mapping[str, int]) -> tuple[float, list[int]]:
    """Parameter-weighted mean bit width and [min, max] over channels."""
    total = sum(sizes[n] * len(b) for n, b in bits.items())
    weighted = sum(sizes[n] * sum(b) for n, b in bits.items())
    flat = [x for b in bits.values() for x in b]
    return (weighted / total if total else 8.0), [min(flat), max(flat)]


class AciqStudy(Study[AciqCell, AciqRecord]):
    name = NAME
    record_type = AciqRecord

    def __init__(self, config: AciqConfig, out: Path) -> None:
        self.config, self.out = config, out

    def fingerprint(self) -> Mapping[str, Any]:
        from tfquant import models

        return {"config": self.config.to_dict(),
                "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in self.config.models}}

    def cells(self) -> list[AciqCell]:
        out = []
        for m in self.config.models:
            out.append(AciqCell(model=m, config=FLOAT, row=FLOAT))
            out += [AciqCell(model=m, config=c, row=r) for c in self.config.configs for r in self.config.rows]
        return out

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def measure(self, todo: Sequence[AciqCell], log: Callable[[str], None]) -> Iterator[AciqRecord]:
        from tfquant import data, models

        config = self.config
        keys = {c.key for c in todo}
        x_test, y_test, _ = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
        x_cal = data.calibration_set(config.dataset, config.num_calibration_examples,
                                     seed=config.calibration_seed, data_dir=config.data_dir)
        log(f"test set: {len(x_test)} examples; calibration: {len(x_cal)} images")
        for name in _progress.progress(config.models, desc="ACIQ study", unit="model"):
            model = models.build(name)
            base = {"experiment": NAME, "model": name}
            if (name, FLOAT, FLOAT) in keys:
                yield self._float(model, base, x_test, y_test, log)
            for cfg in config.configs:
                rows = [r for r in config.rows if (name, cfg, r) in keys]
                if not rows:
                    continue
                cells = (self._tflite_cells if executed_in(cfg) == "tflite" else self._sim_cells)
                yield from cells(model, base, cfg, rows, x_cal, x_test, y_test, log)

    def _float(self, model: Any, base: dict, x: Any, y: Any, log: Callable[[str], None]) -> AciqRecord:
        from tfquant import convert
        from tfquant.evaluation import evaluate_accuracy

        path = self.out / "models" / base["model"] / "fp32.tflite"
        recipe = Recipe(mode=Mode.FP32)
        convert.save(convert.convert(model, recipe), str(path), recipe)
        acc = evaluate_accuracy(str(path), x, y, num_threads=self.config.threads, batch_size=self.config.batch_size)
        log(f"{base['model']:>14} float {acc.accuracy:.4f}")
        return AciqRecord(**base, config=FLOAT, row=FLOAT, executed_in="tflite", accuracy=acc.accuracy,
                          n_examples=acc.n_examples, tflite_path=str(path), recipe=recipe.to_dict())

    def _tflite_cells(self, model: Any, base: dict, cfg: str, rows: list[str], x_cal: Any, x: Any, y: Any,
                      log: Callable[[str], None]) -> Iterator[AciqRecord]:
        from tfquant import convert
        from tfquant.calibration.sigma import FixedSigmaCalibrator
        from tfquant.convert import calibrated as calibrated_mod
        from tfquant.evaluation import evaluate_accuracy
        from tfquant.tflite import flatbuffer

        weight_bits = CONFIGS[cfg][0]
        calibrated = calibrated_mod.calibrate(model, self.config.recipe("naive", weight_bits), calibration_data=x_cal)
        for row in rows:
            start = time.perf_counter()
            recipe = self.config.recipe(row, weight_bits)
            rec = {**base, "config": cfg, "row": row, "executed_in": "tflite"}
            try:
                sigma = FixedSigmaCalibrator(k=2.0) if ROWS[row]["activations"] == "sigma2" else None
                tflite = calibrated_mod.export(calibrated, recipe, calibrator=sigma)
                recipe = convert.read_recipe(tflite)
                path = self.out / "models" / base["model"] / f"{cfg}_{row}.tflite"
                convert.save(tflite, str(path), recipe)
                acc = evaluate_accuracy(tflite, x, y, num_threads=self.config.threads,
                                        batch_size=self.config.batch_size)
            except TfquantError as e:
                log(f"{base['model']:>14} {cfg} {row:<16} failed: {e}")
                yield AciqRecord(**rec, error=str(e))
                continue
            sizes = {w.tensor: int(_prod(w.shape)) // max(1, w.shape[w.channel_axis])
                     for w in flatbuffer.weight_tensors(tflite)}
            mean_bits, span = _bits_summary(recipe.channel_bits or {}, sizes)
            log(f"{base['model']:>14} {cfg} {row:<16} top-1 {acc.accuracy:.4f} (tflite, {mean_bits:.3f} bits)")
            yield AciqRecord(**rec, accuracy=acc.accuracy, n_examples=acc.n_examples, mean_bits=round(mean_bits, 6),
                             channel_bits_range=span, tflite_path=str(path), recipe=recipe.to_dict(),
                             seconds=round(time.perf_counter() - start, 2))

    def _sim_cells(self, model: Any, base: dict, cfg: str, rows: list[str], x_cal: Any, x: Any, y: Any,
                   log: Callable[[str], None]) -> Iterator[AciqRecord]:
        import numpy as np

        from tfquant.algorithms.bn_fold import fold_batch_norms
        from tfquant.calibration.aciq import AciqCalibrator
        from tfquant.calibration.sigma import FixedSigmaCalibrator
        from tfquant.simulation import SimSpec, predict, simulate
        from tfquant.simulation.low_bit import kernel_edit

        weight_bits, activation_bits = CONFIGS[cfg]
        folded = fold_batch_norms(model)
        spec = SimSpec(weight_bits=weight_bits, activation_bits=activation_bits, fold_bn=False)
        for row in rows:
            start = time.perf_counter()
            r = ROWS[row]
            rec = {**base, "config": cfg, "row": row, "executed_in": "sim"}
            calibrator = {"max": None, "aciq": AciqCalibrator(prior="laplace"),
                          "sigma2": FixedSigmaCalibrator(k=2.0)}[r["activations"]]
            edit, bits = kernel_edit(folded, x_cal, weight_bits=weight_bits, allocation=r["allocation"],
                                     bias_correction=self.config.bias_correction if r["bias"] else "none")
            sim = simulate(folded, spec, calibration_data=x_cal, activation_calibrator=calibrator, kernel_edit=edit)
            logits = predict(sim, x, batch_size=self.config.batch_size)
            n_correct = int(np.count_nonzero(logits.argmax(axis=1) == np.asarray(y).reshape(-1)))
            sizes = {layer.name: int(np.prod(layer.get_weights()[0].shape)) // max(1, len(b))
                     for layer in folded.layers if (b := bits.get(layer.name))}
            mean_bits, span = _bits_summary(bits, sizes)
            accuracy = n_correct / len(x)
            log(f"{base['model']:>14} {cfg} {row:<16} top-1 {accuracy:.4f} (sim, {mean_bits:.3f} bits)")
            yield AciqRecord(**rec, accuracy=accuracy, n_examples=len(x), mean_bits=round(mean_bits, 6),
                             channel_bits_range=span, seconds=round(time.perf_counter() - start, 2))


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def run_aciq(config: AciqConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run."""
    out = Path(out_dir)
    return run_study(AciqStudy(config, out), out, log=log)


# The paper's findings, as data (pt of top-1 against the same model's cells).
CLAIMS: tuple[Claim, ...] = (
    Claim(claim="at 4-bit activations ACIQ clipping beats max ranges (W4A4, sim)",
          paper="ResNet-50 W4A4: ACIQ is the largest single gain over naive (62.0 -> 71.4 per-tensor ACIQ)",
          compares=(Compare(a="W4A4/aciq", b="W4A4/naive", op=">", threshold=0.0, text="{a:.4f} vs {b:.4f}"),), aggregate=Aggregate.GRADED),
    Claim(claim="at 4-bit activations ACIQ beats a fixed 2σ clip (W4A4, sim)",
          paper="ResNet-50 W4A4: fixed 2σ clipping 15.4 vs ACIQ 71.4",
          compares=(Compare(a="W4A4/aciq", b="W4A4/sigma2", op=">", threshold=0.0, text="{a:.4f} vs {b:.4f}"),), aggregate=Aggregate.GRADED),
    Claim(claim="bit allocation helps at 4-bit weights (W4A8, tflite)",
          paper="Inception-v3 W4A8: 38.4 -> 61.4 with bit allocation",
          compares=(Compare(a="W4A8/allocation", b="W4A8/naive", op=">=", threshold=0.0,
                            text="{a:.4f} vs {b:.4f}"),), aggregate=Aggregate.GRADED),
    Claim(claim="bias correction helps at 4-bit weights (W4A8, tflite)",
          paper="Inception-v3 W4A8: 38.4 -> 59.5 with bias correction",
          compares=(Compare(a="W4A8/bias_correction", b="W4A8/naive", op=">=", threshold=0.0,
                            text="{a:.4f} vs {b:.4f}"),), aggregate=Aggregate.GRADED),
    Claim(claim="the three methods stack: all >= each alone (W4A4, sim)",
          paper="ResNet-50 W4A4: all three 73.8 vs naive 62.0 (float 76.1)",
          compares=tuple(Compare(a="W4A4/all", b=f"W4A4/{r}", op=">=", threshold=-0.2, text=f"all - {r} {{pt:+.2f}} pt")
                         for r in ("aciq", "allocation", "bias_correction")), aggregate=Aggregate.GRADED),
)


def findings(records: RecordSet, config: AciqConfig) -> list[Any]:
    values = {(r.model, f"{r.config}/{r.row}"): r.accuracy for r in records if not r.failed and r.accuracy is not None}
    out = evaluate_claims(CLAIMS, values, list(config.models))
    items = []
    for m in config.models:
        f, a = values.get((m, f"{FLOAT}/{FLOAT}")), values.get((m, "W4A8/all"))
        if f is None or a is None:
            items.append((m, None, "not measured"))
        else:
            pt = 100 * (a - f)
            items.append((m, pt >= -GOAL_PT, f"{a:.4f} vs float {f:.4f} ({pt:+.2f} pt)"))
    out.append(listed_claim(f"(issue 9 goal) W4A8 with ACIQ + allocation + bias correction within "
                            f"{GOAL_PT:g} pt of float on every CNN, in the interpreter",
                            "ResNet-50 W4A8-class results within ~1-3 pt of float", items))
    return out


def results_markdown(records: RecordSet, config: AciqConfig) -> str:
    from tfquant.evaluation import markdown_table

    limit = "the whole test split" if config.limit is None else f"the first {config.limit} test images"
    lines = header(
        f"ACIQ, per-channel bit allocation and bias correction ({config.dataset})",
        f"Top-1 accuracy on {limit}; calibration: {config.num_calibration_examples} training images (seed "
        f"{config.calibration_seed}). W4A8 cells ran as int8 .tflite models in the LiteRT interpreter "
        "(`tflite`: each output channel on its own b-bit grid inside int8, per-channel scales); W8A4 and "
        "W4A4 cells ran in simulation (`sim`: TFLite has no 4-bit activations). Bias correction: "
        f"`{config.bias_correction}`. Weights: symmetric per-channel, α = max|w| per channel; activations "
        "affine per-tensor. `[lo-hi]`: fewest and most bits of any channel (the parameter-weighted mean is "
        "the config's weight bits in every cell).")
    notes = Footnotes()
    for cfg in config.configs:
        rows = []
        for row in config.rows:
            line: dict[str, Any] = {"method": row}
            for m in config.models:
                r = records.get((m, cfg, row))
                if r is None:
                    continue
                if r.failed:
                    line[m] = notes.failed(f"{m} / {cfg} / {row}", r.error)
                    continue
                span = r.channel_bits_range or []
                extra = f" [{span[0]}-{span[1]}]" if span and span[0] != span[1] else ""
                line[m] = f"{r.accuracy:.4f}{extra} {r.executed_in}"
            rows.append(line)
        fl = {"method": FLOAT}
        for m in config.models:
            f = records.ok((m, FLOAT, FLOAT))
            if f is not None:
                fl[m] = f"{f.accuracy:.4f} tflite"
        lines += ["", f"## {cfg} ({executed_in(cfg)})", "",
                  markdown_table([fl, *rows], ["method", *config.models]).rstrip("\n")]
    lines += claims_section(
        "Findings vs the paper",
        "Computed from the records above (pt = top-1 points; held on every model, partly on some, "
        "did not hold on none). The paper's numbers are ImageNet (ResNet-50, Inception-v3); ours are "
        "Fashion-MNIST models a few hundred KB in size, whose 4-bit-weight loss (W4A8 naive vs float "
        "above) leaves allocation and bias correction little to recover; why each claim went as it did: BUILD_NOTES.md, \"ACIQ bit "
        "allocation and bias correction (issue 9)\".",
        findings(records, config))
    return "\n".join(lines + notes.lines()) + "\n"
