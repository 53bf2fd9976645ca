"""The whitepaper's post-training quantization tables on the zoo, each cell tflite or sim.

Krishnamoorthi 2018 ("Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv 1806.08342), the PTQ-only tables on our models. One column per
:data:`CELLS` entry; every cell is either measured in the LiteRT interpreter
(``executed_in: tflite``) or in TensorFlow's fake-quant simulation (``executed_in: sim``,
:mod:`tfquant.simulation`), never a mix:

* Table A, 8-bit weight-only PTQ: float; asymmetric per-layer; symmetric per-channel;
  asymmetric per-channel (all sim), plus TFLite's dynamic-range model (tflite) beside them.
* Table B, 8-bit weights + activations: int8 per-channel and per-layer weights (tflite),
  each next to its simulation (a sim-vs-tflite sanity check of the simulator).
* Table C, 4-bit weights, 8-bit activations: per-layer and per-channel (sim).
* Table D, 4-bit activations, 8-bit weights (W8A4, sim).
* The spread of the per-channel weight ranges after BN folding, per model
  (:func:`tfquant.evaluation.weight_spread.weight_range_spread`), which decides whether one
  scale per layer can work.

The paper's "per-layer" is a per-tensor weight granularity (:attr:`Granularity.PER_TENSOR`):
cell names say ``per_tensor``, the tables say "per-layer (per-tensor)".

Table A's symmetric per-channel weight-only cell is simulated because TFLite's dynamic mode
is not weight-only quantization (small kernels stay float, hybrid kernels quantize their
inputs on the fly); the dynamic model is shown beside it (see Table A's note).

Everything is evaluated on the whole test split unless ``limit`` is set; the int8 cells and
the simulated cells with activations use the same calibration images. Cells: model x
:data:`CELLS`, plus one :data:`SPREAD` cell per model; run and resumed by
:func:`tfquant.study.run_study` into ``<results_dir>/<run_name>/whitepaper_ptq/``. The paper's
findings are :data:`CLAIMS` (data), checked from the records in results.md.
"""

from tfquant.experiments.whitepaper_ptq.cells import (CELLS, COLLAPSE_PT, EXECUTED_IN_TFLITE, EXPERIMENT, FLOAT,
                                                      LARGE_SPREAD, MIN_RANK_CORRELATION, NAME, NEAR_FLOAT_PT,
                                                      RENAMED_CELLS, SIM_TFLITE_PT, SIZES, SPREAD, TIE_PT, Cell,
                                                      SpreadRecord, WhitepaperPtqCell, WhitepaperPtqConfig,
                                                      WhitepaperPtqRecord)
from tfquant.experiments.whitepaper_ptq.claims import CLAIMS, findings, spread_claim
from tfquant.experiments.whitepaper_ptq.measure import WhitepaperPtq, run_whitepaper_ptq
from tfquant.experiments.whitepaper_ptq.report import results_markdown

__all__ = [
    "CELLS", "CLAIMS", "COLLAPSE_PT", "Cell", "EXECUTED_IN_TFLITE", "EXPERIMENT", "FLOAT", "LARGE_SPREAD",
    "MIN_RANK_CORRELATION", "NAME", "NEAR_FLOAT_PT", "RENAMED_CELLS", "SIM_TFLITE_PT", "SIZES", "SPREAD",
    "SpreadRecord", "TIE_PT", "WhitepaperPtq", "WhitepaperPtqCell", "WhitepaperPtqConfig", "WhitepaperPtqRecord",
    "findings", "results_markdown", "run_whitepaper_ptq", "spread_claim",
]
