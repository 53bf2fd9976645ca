"""Weight-space algorithms: BN folding (inference and QAT) and Quantization-Guided Training.

* :mod:`~tfquant.algorithms.bn_fold`: fold BatchNormalization into Conv2D / DepthwiseConv2D /
  Dense for inference; per-channel weight ranges after folding (Krishnamoorthi 2018).
* :mod:`~tfquant.algorithms.bn_fold_qat`: Keras layers that fold BN during QAT with the
  whitepaper's correction and freeze, or the naive fold.
* :mod:`~tfquant.algorithms.qgt`: the QGT grid regulariser, its ramp, bottleneck report and
  exact packed model sizes.
* :mod:`~tfquant.algorithms.weight_grid`: kernels, output-channel axes and the symmetric
  b-bit weight grid in TensorFlow (scales from :mod:`tfquant.numerics`).
"""

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)
from tfquant.algorithms.bn_fold import (
    FoldPair,
    fold_batch_norms,
    fold_kernel_and_bias,
    foldable_pairs,
    per_channel_weight_ranges,
)
from tfquant.algorithms.bn_fold_qat import (
    FoldedConvBN,
    FoldedDepthwiseConvBN,
    fold_batch_norms_for_qat,
)
from tfquant.algorithms.qgt import (
    LayerBottleneck,
    QGTRamp,
    QGTRegularizer,
    apply_qgt,
    bottleneck_report,
    float32_size_bytes,
    grid_distance,
    layer_residuals,
    packed_size_bytes,
    qgt_regularizers,
)
from tfquant.algorithms.weight_grid import SymmetricWeightQuantizer, kernel_of, round_to_grid

__all__ = [
    "FoldPair",
    "FoldedConvBN",
    "FoldedDepthwiseConvBN",
    "LayerBottleneck",
    "QGTRamp",
    "QGTRegularizer",
    "SymmetricWeightQuantizer",
    "apply_qgt",
    "bottleneck_report",
    "float32_size_bytes",
    "fold_batch_norms",
    "fold_batch_norms_for_qat",
    "fold_kernel_and_bias",
    "foldable_pairs",
    "grid_distance",
    "kernel_of",
    "layer_residuals",
    "packed_size_bytes",
    "per_channel_weight_ranges",
    "qgt_regularizers",
    "round_to_grid",
]
