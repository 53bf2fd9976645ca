"""results.md of the whitepaper QAT tables: the tables from the cell list, notes, claims."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from tfquant.experiments.whitepaper_qat import cells as wq
from tfquant.experiments.whitepaper_qat.claims import findings
from tfquant.simulation.spec import EXECUTED_IN_SIM
from tfquant.study import (Footnotes, accuracy_text, cell_table, claims_section, header, image_pt, section,
                           test_images, where_ran)

_PAPER_ROWS: Mapping[str, Sequence[Mapping[str, str]]] = MappingProxyType({
    "B": (
        {"model": "paper: MobileNet-v1 (ImageNet)", wq.FLOAT: "0.709", "ptq_w4a8_per_channel": "0.001-0.02",
         "qat_w4a8_per_channel": "0.65"},
        {"model": "paper: ResNet-v1-50 (ImageNet)", wq.FLOAT: "0.752", "qat_w4a8_per_channel": "0.732"},
    ),
    "C": ({"model": "paper: MobileNet-v1 (ImageNet)", wq.FLOAT: "0.709", "ptq_w8a4_per_channel": "0.48",
           "qat_w8a4_per_channel": "0.64", "qat_w4a8_per_channel_sim": "0.65"},),
})

_TABLE_NOTES = MappingProxyType({
    "A": ("Symmetric int8 weights, affine per-tensor int8 activations. PTQ: the converter "
          "calibrated on the calibration images. QAT: tfmot's default 8-bit scheme started "
          "from max-calibrated activation ranges on the same images, fine-tuned with NVIDIA's "
          "schedule, exported with `export_tflite` (every op int8). `agreement` = top-1 "
          "agreement of the QAT Keras model with its .tflite on the test images, `QAT Keras` "
          "= the QAT Keras model's own accuracy. tfmot fake-quantizes the *unfolded* kernels "
          "(per channel; per tensor for depthwise and dense kernels in its default scheme) and "
          "keeps the BN layers, whose γ/σ the converter folds into the per-channel scales."),
    "B": ("Symmetric narrow-range 4-bit weights (15 levels, the grid QAT trains on), affine "
          "per-tensor 8-bit activations. PTQ runs in the simulation (max ranges, BN folded). "
          "QAT per-channel: tfmot with our 4-bit configs (unfolded kernels, per-channel "
          "depthwise too), exported; `stored` = how the flatbuffer stores the conv / dense "
          "kernels (INT4: packed 4-bit, which LiteRT runs). QAT per-layer: one scale per "
          "*folded* kernel needs the BN-folded QAT layers (correction + freeze, NVIDIA's "
          "schedule otherwise; plain tfmot QAT on a model without BN), which the converter "
          "cannot export, so it is the QAT Keras model (sim). tfmot itself cannot do it: a "
          "per-tensor scale cannot absorb a BatchNormalization, and folding BN for inference "
          "first leaves each conv read directly by a ReLU layer, whose weight fake quant "
          "tfmot's `LayerReLUQuantize` transform silently replaces by a no-op."),
    "C": ("4-bit affine per-tensor activations run only in simulation: PTQ W8A4 in "
          "`tfquant.simulation` (max ranges), QAT W8A4 and W4A8 as the QAT Keras models "
          "(tfmot fake quants, EMA ranges from calibrated starts). QAT W4A8 is the Keras "
          "side of Table B's QAT per-channel run, evaluated on the same images. `start` = "
          "the QAT Keras model before fine-tuning (calibrated ranges, float weights on the "
          "grid: a PTQ model in tfmot's placement of fake quants)."),
    "D": ("BN-folded QAT layers (`tfquant.qat.bn_correction` over "
          "`tfquant.algorithms.bn_fold_qat`): each conv + BN pair is one layer that "
          "fake-quantizes its folded kernel with its own symmetric per-channel quantizer "
          "(straight-through gradient); tfmot fake-quantizes the other kernels and the "
          "activations. Naive: weights γW/σ_B with batch statistics, no correction, "
          "statistics never frozen. Correction + freeze: weights γW/σ with the moving σ, "
          "output scaled by σ/σ_B until the freeze, then the moving statistics freeze "
          "(`freeze` = the step it froze after). Both arms fine-tune with the whitepaper's schedule (SGD, "
          "momentum 0.9, constant 10% of the original learning rate) from the same "
          "calibrated activation ranges, and are evaluated as Keras models (sim). "
          "`start` = the Keras accuracy before fine-tuning (identical for both arms: in "
          "inference both folds compute conv(x, Q(γW/σ)) + β - γμ/σ)."),
})


def _shown(field: str, fmt: str) -> Callable[[Mapping[str, Any]], str]:
    """A record's ``field`` formatted with ``fmt`` ("" when the record lacks it)."""
    return lambda r: fmt.format(r[field]) if r.get(field) is not None else ""


def _storage(r: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(r.get("weight_storage", {}).items()))


_START = _shown("keras_accuracy_before_finetune", "{:.4f} (sim)")
_EXTRA_COLUMNS: Mapping[str, Sequence[tuple[str, str, str, Callable[[Mapping[str, Any]], str]]]] = (
    MappingProxyType({
        "A": (("keras_w8", "QAT Keras", "qat_w8a8_per_channel", _shown("keras_accuracy", "{:.4f} (sim)")),
              ("agree_w8", "agreement", "qat_w8a8_per_channel", _shown("agreement", "{:.4f}"))),
        "B": (("agree_w4", "agreement", "qat_w4a8_per_channel", _shown("agreement", "{:.4f}")),
              ("stored_w4", "stored", "qat_w4a8_per_channel", _storage)),
        "C": (("start_a4", "QAT W8A4 start", "qat_w8a4_per_channel", _START),
              ("start_w4", "QAT W4A8 start", "qat_w4a8_per_channel_sim", _START)),
        "D": (("start_w8", "start W8", "qat_w8a8_naive_fold", _START),
              ("start_w4", "start W4", "qat_w4a8_naive_fold", _START),
              ("freeze_w8", "freeze W8", "qat_w8a8_bn_corrected", _shown("bn_frozen_at_step", "step {}")),
              ("freeze_w4", "freeze W4", "qat_w4a8_bn_corrected", _shown("bn_frozen_at_step", "step {}"))),
    }))
"""Per table: (column key, heading, the cell whose record it reads, how to show it)."""


def results_markdown(records: Sequence[Mapping[str, Any]], config: wq.WhitepaperQatConfig) -> str:
    """Tables A-D, what ran where, the ViT note and the findings, from ``records``."""
    by_key = {(r["model"], r["cell"]): r for r in records}
    n_test = test_images(config.limit)
    n_train = config.train_examples or wq.ZOO_TRAIN_EXAMPLES
    epochs = ("NVIDIA's 10% of the original schedule (1 epoch for every zoo model)"
              if config.epochs is None else f"{config.epochs} epoch(s)")
    lines = header(
        f"Whitepaper QAT tables on the zoo ({config.dataset})",
        "Krishnamoorthi 2018 (arXiv 1806.08342), the tables that need quantization-aware "
        f"training. Top-1 accuracy on {n_test}. Every cell says where it ran: `(tflite)` = a "
        f".tflite in the LiteRT interpreter ({config.runtime.value}); `(sim)` = fake "
        "quantization in TensorFlow (PTQ: `tfquant.simulation` on the BN-folded model; QAT: "
        "the QAT Keras model itself). `float` is the fp32 .tflite. Fine-tuning: "
        f"{epochs} on the first {n_train} training images, batch 128, seed {config.seed}; "
        "NVIDIA's schedule (Adam, 1% of the original learning rate, cosine decay, from "
        "calibrated activation ranges) except in Table D. Calibration: "
        f"{config.num_calibration_examples} training images (seed {config.calibration_seed}). "
        "Rows starting with `paper:` are the whitepaper's ImageNet numbers.")
    notes = Footnotes()
    for table, heading in wq.TABLES.items():
        names = [n for n in config.cells if wq.CELLS[n].table == table]
        if not names:
            continue
        if table != "A" and wq.FLOAT in config.cells:
            names = [wq.FLOAT, *names]
        extras = [e for e in _EXTRA_COLUMNS.get(table, ()) if e[2] in names]
        headers = {"model": "model", **{n: wq.CELLS[n].title for n in names},
                   **{key: title for key, title, _, _ in extras}}
        extra = {key: (source, show) for key, _, source, show in extras}

        def text(model: str, column: str) -> str | None:
            if column in extra:
                source, show = extra[column]
                r = by_key.get((model, source))
                ok = r is not None and "error" not in r and wq.NOT_APPLICABLE not in r
                return show(r) if ok else None
            r = by_key.get((model, column))
            if r is not None and wq.NOT_APPLICABLE in r:
                return "n/a (no BN)"
            return accuracy_text(r, notes, f"{model} / {column}")

        lines += cell_table(title=heading, note=_TABLE_NOTES[table], rows=config.models,
                            columns=[*names, *extra], headers=headers, text=text,
                            paper_rows=_PAPER_ROWS.get(table, ()))
    lines += section("What ran where") + _where_lines(records, config)
    lines += claims_section(
        "Did the paper's findings hold?",
        f"Computed from the records above; pt = accuracy points against the model's float "
        f"cell. Thresholds: 8-bit QAT near float <= {wq.QAT_NEAR_FLOAT_PT:g} pt; 4-bit QAT "
        f"'recovers most' = wins back >= {100 * wq.RECOVERED_FRACTION:g}% of a PTQ loss of "
        f">= {wq.MIN_PTQ_LOSS_PT:g} pt; ties within {wq.TIE_PT:g} pt; export agreement >= "
        f"{100 * wq.MIN_AGREEMENT:g}%. On {n_test}, one test image is "
        f"{image_pt(config.limit)} pt; fine-tuning from one seed, so differences of a few tenths of a point "
        "between QAT cells are within run-to-run noise.", findings(records, config.models))
    lines += notes.lines()
    return "\n".join(lines) + "\n"


def _where_lines(records: Sequence[Mapping[str, Any]], config: wq.WhitepaperQatConfig) -> list[str]:
    lines = where_ran({n: wq.CELLS[n] for n in config.cells}, {
        wq.EXECUTED_IN_TFLITE: (
            f"LiteRT interpreter, {config.runtime.value}",
            "Each .tflite is under `models/<model>/` with its `.recipe.json` (PTQ: the quantization "
            "recipe) or `.qat.json` (QAT: the run, the fine-tuning schedule, epochs, images, seed, "
            "the fidelity check)."),
        EXECUTED_IN_SIM: (
            "fake quantization in TensorFlow",
            "4-bit activations have no TFLite kernels, sub-8-bit PTQ weights are simulated on the "
            "same grid the QAT models train on, and the BN-folded QAT layers carry no weight fake "
            "quant the converter could read (methods.md, 'Where TFLite stops')."),
    })
    for r in records:
        if r.get("cell") == wq.WRAP_CHECK and not r.get("wrappable", True):
            lines.append(f"- **{r['model']}** is not in these tables: tfmot cannot wrap it for QAT. "
                         f"`quantize_for_training` says: {r['reason']}")
    return lines
