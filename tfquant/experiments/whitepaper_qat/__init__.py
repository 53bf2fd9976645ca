"""The whitepaper's quantization-aware-training tables on the zoo, each cell tflite or sim.

Krishnamoorthi 2018 ("Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv 1806.08342), the tables that need QAT, on the zoo models tfmot can wrap
(cnn, mobilenet_v1, mobilenet_v2, resnet; the ViT is not wrappable, see :data:`WRAP_CHECK`).
Every cell is measured either in the LiteRT interpreter (``executed_in: tflite``) or in
TensorFlow fake quantization (``executed_in: sim``), never a mix:

* Table A, 8 bits: float; PTQ int8 per-channel (tflite); QAT int8 per-channel, exported
  with :func:`tfquant.qat.export_tflite` (tflite), with the QAT Keras model's top-1
  agreement with its .tflite (:func:`tfquant.evaluation.fidelity.compare`).
* Table B, 4-bit weights / 8-bit activations: PTQ per-layer and per-channel (sim,
  :mod:`tfquant.simulation`, symmetric narrow-range weights: the grid QAT trains on); QAT
  per-channel (tflite: the converter stores 4-bit per-channel QAT kernels as INT4 and
  LiteRT runs them; the agreement is recorded) and QAT per-layer (sim). Per-layer weights
  must carry one scale for the *folded* kernel γW/σ, which tfmot's BN handling cannot do
  (a per-tensor scale cannot absorb a BatchNormalization, and inference-folding BN first
  leaves a Conv2D followed by a ReLU layer, whose weight fake quant tfmot's
  ``LayerReLUQuantize`` transform replaces by a no-op), so per-layer QAT uses the BN-folded
  QAT layers with correction + freeze; those do not export, hence sim.
* Table C, low-bit activations: PTQ W8A4 (sim); QAT W8A4 and QAT W4A8 (sim: the QAT Keras
  model itself, whose fake-quant graph is the simulation; TFLite has no 4-bit activation
  kernels). The W4A8 QAT cell is the Keras side of Table B's exported QAT per-channel run.
* Table D, BN folding ablation (models with conv + BN pairs): QAT with the naive fold
  (weights folded with batch statistics, no correction, no freeze) vs the whitepaper's
  correction + freeze after N steps, each at 8-bit and 4-bit weights
  (:mod:`tfquant.qat.bn_correction`: the BN-folded layers of
  :mod:`tfquant.algorithms.bn_fold_qat` fake-quantize their folded kernels with their own
  ``weight_quantizer``; tfmot fake-quantizes everything else). Evaluated as Keras models
  (sim): the folded kernels carry no tfmot weight fake quant, so they do not export.

Every QAT cell runs the QAT package's own stages (:func:`tfquant.qat.train_qat`,
:func:`tfquant.qat.export_and_compare`: what ``python -m tfquant qat`` runs) and writes the
same ``.qat.json`` (:class:`tfquant.qat.QatRecord`). Fine-tuning: Tables A-C use NVIDIA's
schedule (:func:`tfquant.qat.nvidia_schedule`: Adam at 1% of the original learning rate,
cosine decay, 10% of the original schedule = 1 epoch for every zoo model, from calibrated
activation ranges); Table D the whitepaper's (:func:`tfquant.qat.whitepaper_schedule`:
SGD with momentum from the float checkpoint) for the same number of epochs, so the two arms
differ only in the fold. ``train_examples`` caps the training images per epoch (the
default and the short and smoke sizes fine-tune on a prefix of the zoo's 55,000 training
images; the ``full`` size on all of them). Before fine-tuning, every QAT model is checked
to fake-quantize every kernel (:func:`tfquant.qat.annotate.float_kernels`; since
:func:`~tfquant.qat.quantize_for_training` raises on a kernel left in float, this is
a second guard); one that does not is recorded as an error rather than measured under a
label it does not deserve.

The experiment is a :class:`tfquant.study.Study`: one typed record
(:class:`WhitepaperQatRecord`) per model x cell, appended to ``results.jsonl`` as soon as it
is measured, so an interrupted run resumes; ``results.md`` is rewritten from the records at
the end, with a "Did the paper's findings hold?" section: the claims (:data:`CLAIMS`, data)
evaluated on them (:func:`findings`).
"""


from tfquant.experiments.whitepaper_qat.cells import *  # noqa: F401,F403  (the cells as data: cells.__all__)
from tfquant.experiments.whitepaper_qat.cells import __all__ as _CELLS_ALL
from tfquant.experiments.whitepaper_qat.claims import BN_CLAIM, CLAIMS, findings
from tfquant.experiments.whitepaper_qat.measure import WhitepaperQat, run_whitepaper_qat
from tfquant.experiments.whitepaper_qat.report import results_markdown
from tfquant.qat.bn_correction import BnFold
from tfquant.qat.schedules import ScheduleName
from tfquant.study import RESULTS_MD, Verdict

HELD, NOT_HELD, PARTLY, NOT_TESTED = (v.value for v in Verdict)

__all__ = [
    *_CELLS_ALL,
    "BN_CLAIM", "CLAIMS", "HELD", "NOT_HELD", "NOT_TESTED", "PARTLY", "RESULTS_MD", "BnFold",
    "ScheduleName", "WhitepaperQat", "findings", "results_markdown", "run_whitepaper_qat",
]
