"""results.md of the whitepaper PTQ tables: Tables A-D from the cell list, the spread, the claims."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from tfquant.experiments.whitepaper_ptq.cells import CELLS, EXECUTED_IN_TFLITE, FLOAT, SPREAD, WhitepaperPtqConfig
from tfquant.experiments.whitepaper_ptq.claims import claims_header, findings
from tfquant.simulation.spec import EXECUTED_IN_SIM
from tfquant.study import (Footnotes, RecordSet, accuracy_text, cell_table, claims_section, header, section,
                           test_images, where_ran)

_PAPER_ROWS: Mapping[str, Sequence[Mapping[str, str]]] = MappingProxyType({
    "A": (
        {"model": "paper: MobileNet-v1 (ImageNet)", FLOAT: "0.709", "w8_asym_per_tensor": "0.001",
         "w8_sym_per_channel": "0.591", "w8_asym_per_channel": "0.704"},
        {"model": "paper: ResNet-v1-50 (ImageNet)", FLOAT: "0.752", "w8_asym_per_tensor": "0.75"},
    ),
    "D": ({"model": "paper: MobileNet-v1 (ImageNet)", FLOAT: "0.709", "w8a4_per_channel": "0.48"},),
})

_TABLE_TITLES = MappingProxyType({
    "A": "Table A: 8-bit weight-only PTQ (activations float)",
    "B": "Table B: 8-bit weights and 8-bit activations, PTQ",
    "C": "Table C: 4-bit weights, 8-bit activations, PTQ",
    "D": "Table D: low-bit activations, PTQ",
})

_TABLE_NOTES = MappingProxyType({
    "A": ("Weights quantized after BN folding, activations float. The whitepaper's three "
          "columns run in the simulation (weight-only, every Conv/Dense kernel). `TFLite "
          "dynamic range` is what TFLite deploys for 'int8 weights, float activations' and is "
          "*not* the same experiment: the converter keeps weight tensors under 1024 elements "
          "in float32 (`dynamic: int8 share` = the share of the elements of rank >= 2 "
          "constants it stored as int8, and how many such tensors stayed float), and its hybrid kernels quantize their "
          "float inputs to int8 on the fly (a range per batch), i.e. activations are "
          "quantized too."),
    "B": ("Symmetric narrow-range int8 weights (TFLite's grid), affine per-tensor int8 "
          "activations calibrated by min/max on the same calibration images in both "
          "backends. `per-layer` = one weight scale per tensor (`weight_granularity "
          "per_tensor`; every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED weight is "
          "single-scale in the .tflite). Each tflite column is followed by its simulation."),
    "C": ("Asymmetric (affine, 16 levels) weights as in the paper's PTQ tables; `sym "
          "per-channel` is the narrow-range symmetric grid (15 levels) that TFLite / tfmot "
          "QAT use, as the PTQ reference for the QAT tables. Activations: affine per-tensor "
          "8-bit, min/max. The 4-bit QAT per-channel row is in the QAT tables."),
    "D": ("8-bit symmetric per-channel weights, 4-bit affine per-tensor activations "
          "(min/max ranges) at every tensor TFLite would quantize. The paper's W8A4 and W4A8 "
          "QAT rows are in the QAT tables."),
})


_EXTRA_COLUMNS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "A": {"dynamic_int8": "dynamic: int8 share (float tensors)"},
    "B": {"sim_gap": "max abs(sim - tflite) pt"},
    "C": {"qat": "QAT per-channel"},
    "D": {"qat_w8a4": "W8A4 QAT", "qat_w4a8": "W4A8 QAT"},
})


def _extra_text(records: RecordSet, model: str, column: str) -> str | None:
    """Table A's dynamic-range share, Table B's sim-vs-tflite gap, C/D's pointers to the QAT tables."""
    if column == "dynamic_int8":
        dyn = records.ok((model, "w8_dynamic_range"))
        return None if dyn is None else (f"{100 * dyn.int8_weight_fraction:.1f}% "
                                         f"({len(dyn.float_weight_tensors)} float)")
    if column == "sim_gap":
        acc = records.values("accuracy")
        gaps = [abs(acc[(model, c)] - acc[(model, c + "_sim")]) for c in ("w8a8_per_channel", "w8a8_per_tensor")
                if (model, c) in acc and (model, c + "_sim") in acc]
        return f"{100 * max(gaps):.2f}" if gaps else None
    return "QAT tables"


def _spread_lines(records: RecordSet, models: Sequence[str], notes: Footnotes) -> list[str]:
    from tfquant.evaluation import markdown_table

    rows = []
    for model in models:
        r = records.get((model, SPREAD))
        if r is None:
            continue
        if r.failed:
            rows.append({"model": model, "layers": notes.failed(f"{model} / {SPREAD}", r.error)})
            continue
        rows.append({"model": model, "layers": r.layers, "median": f"{r.median_ratio:.2f}",
                     "max": f"{r.max_ratio:.2f} ({r.max_ratio_layer})",
                     "w8": f"{r.zeroed_channels_w8} / {r.channels}", "w4": f"{r.zeroed_channels_w4} / {r.channels}"})
    if not rows:
        return []
    return [markdown_table(rows, ["model", "layers", "median", "max", "w8", "w4"],
                           headers={"median": "median s", "max": "max s (layer)", "w8": "zeroed at W8",
                                    "w4": "zeroed at W4"}).rstrip("\n")]


def results_markdown(records: RecordSet, config: WhitepaperPtqConfig) -> str:
    """Tables A-D, the spread table, what ran where, and the claims, from ``records``."""
    n_test = test_images(config.limit)
    lines = header(
        f"Whitepaper PTQ tables on the zoo ({config.dataset})",
        "Krishnamoorthi 2018 (arXiv 1806.08342), post-training quantization only. Top-1 accuracy "
        f"on {n_test}. Every cell says where it ran: `(tflite)` = the .tflite in the LiteRT "
        f"interpreter ({config.runtime.value}, {config.threads} thread(s)); `(sim)` = fake "
        "quantization of the BN-folded Keras model in TensorFlow (`tfquant.simulation`). "
        f"Calibration: {config.num_calibration_examples} training images (seed "
        f"{config.calibration_seed}), shared by the int8 .tflite files and the simulated "
        "activations. `float` is the fp32 .tflite. Rows starting with `paper:` are the "
        "whitepaper's ImageNet numbers for comparison. The paper's per-layer weights are one "
        "scale per tensor (cells `*_per_tensor`, `weight_granularity per_tensor`).")
    notes = Footnotes()
    for table, title in _TABLE_TITLES.items():
        names = [FLOAT] + [n for n, c in CELLS.items() if c.table == table and n != FLOAT]
        headers = {"model": "model", **{n: CELLS[n].title + (" [sim]" if n.endswith("_sim") else "") for n in names},
                   **_EXTRA_COLUMNS[table]}

        def text(model: str, column: str) -> str | None:
            if column in CELLS:
                return accuracy_text(records.get((model, column)), notes, f"{model} / {column}")
            return _extra_text(records, model, column)

        lines += cell_table(title=title, note=_TABLE_NOTES[table], rows=config.models,
                            columns=[*names, *_EXTRA_COLUMNS[table]], headers=headers, text=text,
                            paper_rows=_PAPER_ROWS.get(table, ()))
    lines += section("Per-channel weight-range spread after BN folding", _SPREAD_NOTE)
    lines += _spread_lines(records, config.models, notes)
    lines += section("What ran where") + _where_lines(records, config)
    lines += claims_section("Did the paper's findings hold?", claims_header(config.limit),
                            findings(records, config.models))
    return "\n".join(lines + notes.lines()) + "\n"


_SPREAD_NOTE = (
    "Per layer, s = max_k r_k / min_k r_k with r_k = max|W_k| of output channel k "
    "after BN folding (`per_channel_weight_ranges`; Conv/Depthwise/Dense kernels, "
    "so not ViT's attention projections). `zeroed at W8/W4` = channels a symmetric "
    "per-layer grid rounds to all zeros (r_k < Δ/2, Δ = max_k r_k / (2^(b-1) - 1)), "
    "out of all channels. The whitepaper's MobileNets on ImageNet have ratios of "
    "orders of magnitude (>= 100).")


def _where_lines(records: RecordSet, config: WhitepaperPtqConfig) -> list[str]:
    from tfquant.evaluation.weight_storage import short_tensor_name

    lines = where_ran(CELLS, {
        EXECUTED_IN_TFLITE: (f"LiteRT interpreter, {config.runtime.value}",
                             "Each .tflite and its recipe are under `models/<model>/`."),
        EXECUTED_IN_SIM: ("TensorFlow fake quantization, `tfquant.simulation`",
                          "Asymmetric weights, 4-bit weights or activations and weight-only quantization with "
                          "every kernel quantized have no TFLite kernel (methods.md, 'Where TFLite stops'). The "
                          "simulation quantizes Conv, DepthwiseConv2D and Dense kernels and fake-quantizes every "
                          "tensor TFLite would quantize (see `tfquant.simulation.activations`)."),
    })
    float_layers: dict[str, set[str]] = {}
    for r in records:
        if not r.failed and getattr(r, "executed_in", None) == EXECUTED_IN_SIM and r.float_weight_layers:
            float_layers.setdefault(r.model, set()).update(r.float_weight_layers)
    for model, names in sorted(float_layers.items()):
        lines.append(
            f"- {model}: the sim cells leave the weights of {len(names)} layer(s) float "
            f"({', '.join(sorted(names))}); the int8 .tflite quantizes them, so for this "
            "model the sim and tflite cells of Table B do not quantize the same weights.")
    dyn = [r for r in records if r.cell == "w8_dynamic_range" and not r.failed]
    if dyn:
        parts = [f"{r.model} {100 * r.int8_weight_fraction:.1f}% int8, float: "
                 f"{', '.join(short_tensor_name(n) for n in r.float_weight_tensors) or 'none'}" for r in dyn]
        lines.append("- `w8_dynamic_range` (tflite, mode dynamic), elements of rank >= 2 "
                     "constants stored int8 and the tensors left float32 (rank >= 2 constants include "
                     "attention biases, heads x dims, and position embeddings, not only "
                     "kernels): " + "; ".join(parts) + ". "
                     "Small kernels (< 1024 elements) stay float and the hybrid kernels "
                     "quantize activations per batch, so this column is not the whitepaper's "
                     "weight-only experiment; `w8_sym_per_channel` (sim) is.")
    return lines
