"""QGT vs PTQ vs plain QAT at b-bit weights, with exact packed model sizes (issue 3, item 5).

Quantization-Guided Training (arXiv 2103.06231; our reconstruction of its regulariser is in
:mod:`tfquant.algorithms.qgt`) against the two usual ways to reach b-bit weights, on the
trained zoo models. For each model and bit width b, starting from the trained float model
with its BatchNormalizations folded into the weights first (the deployed network,
:func:`tfquant.algorithms.fold_batch_norms`; every method fine-tunes and quantizes the folded
kernels, and the sizes are those of the folded model):

* ``ptq``: every Conv / DepthwiseConv2D / Dense kernel fake-quantized to b bits, symmetric
  narrow-range per output channel, Δ_c = the MSE-optimal step (``grid_scale="mse"``, the
  default, :func:`tfquant.algorithms.weight_grid.mse_scale`) or max|W_c| / (2^(b-1) - 1)
  (``"max"``); activations float. Every method uses the same kind of grid.
* ``qat`` (plain QAT): fine-tune for ``epochs`` with every kernel replaced by Q_b(W) in the
  forward pass and the straight-through gradient dL/dW := dL/dQ_b(W)
  (:class:`tfquant.algorithms.qgt_train.WeightFakeQuantTrainer`), then hard-quantize as ``ptq``.
* ``qgt``: fine-tune the float kernels for the same steps with the same optimizer, adding
  λ(t) Σ_l R_l, R_l = mean((W_l - Q_b(W_l))²)/Δ_l², λ ramped linearly from 0 to
  ``qgt_strength[b]`` over the first ``qgt_ramp_fraction`` of the steps
  (:func:`tfquant.algorithms.apply_qgt`, :class:`~tfquant.algorithms.QGTRamp`); for the
  last ``qgt_finish_fraction`` of the steps the grid is frozen and λ grows by
  ``qgt_finish_factor`` (issue 9: removes the residual that is coherent with the task
  gradient); then hard-quantize on that frozen grid.
* ``size``: exact bytes with every kernel packed at b bits plus one float32 scale per
  output channel and every other weight float32
  (:func:`tfquant.algorithms.packed_size_bytes`), against all weights float32.
* ``bottleneck_float`` / ``bottleneck_qgt``: per layer, the grid residual R_l and the
  accuracy lost when only that layer is quantized to b bits
  (:func:`tfquant.algorithms.bottleneck_report`), before and after QGT.
* ``qgt_tflite`` (optional): the hard-quantized QGT model converted to an int8 .tflite;
  its int8 weights hold at most 2^b - 1 distinct values per channel (checked and recorded).
  This model also has int8 activations, so it is compared with ``qgt_a8_sim``, its
  simulation (b-bit weights, 8-bit activations), not with the weight-only cells.

Every accuracy except ``qgt_tflite`` is measured in TensorFlow (``executed_in: sim``;
sub-8-bit weights have no TFLite kernel, ``shared/docs/methods.md``, "Where TFLite stops").
Fine-tuning follows the zoo's training (:mod:`tfquant.models.train`): Adam, the
model's batch size, softmax cross-entropy on logits, on the first 55,000 training images,
with a cosine decay from ``learning_rate_scale`` x the model's training peak LR to 0. Each
fine-tune starts from ``keras.utils.set_random_seed(seed)``, so a cell does not depend on
which cells ran before it (a resumed run trains what it trains as a fresh one would).

The experiment is a :class:`tfquant.study.Study`: one typed record (:class:`QgtRecord`) per
model x bits x cell is appended to ``results.jsonl`` as soon as it is measured; the
fine-tuned weights are kept in ``models/<model>/w<b>_<method>.h5``, so an interrupted run
resumes without re-training. ``results.md`` is rewritten from the records at the end, with
whether QGT >= plain QAT >= PTQ held at each bit width: one claim per bit width
(:func:`claims`, data), evaluated on them (:func:`findings`).
"""

from tfquant.experiments.qgt.cells import *  # noqa: F401,F403  (the cells as data: cells.__all__)
from tfquant.experiments.qgt.cells import __all__ as _CELLS_ALL
from tfquant.experiments.qgt.measure import QgtStudy, run_qgt_study
from tfquant.experiments.qgt.report import bottleneck_summary, claim, findings, results_markdown
from tfquant.study import RESULTS_MD, Verdict

HELD, NOT_HELD, PARTLY, NOT_TESTED = (v.value for v in Verdict)

__all__ = [
    *_CELLS_ALL,
    "HELD", "NOT_HELD", "NOT_TESTED", "PARTLY", "RESULTS_MD", "QgtStudy",
    "bottleneck_summary", "claim", "findings", "results_markdown",
    "run_qgt_study",
]
