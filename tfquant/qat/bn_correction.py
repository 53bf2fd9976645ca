"""BN-folded QAT layers inside tfmot QAT models, frozen by :func:`~tfquant.qat.finetune`.

The whitepaper's batch-norm handling for QAT (Krishnamoorthi 2018, arXiv 1806.08342,
Sec. 3.2.2) lives in :mod:`tfquant.algorithms.bn_fold_qat`: a conv + BN pair becomes one
layer that fake-quantizes the *folded* kernel, either

* with the correction c = σ_B/σ (weights γW/σ use the moving σ; the output is scaled by
  1/c and biased with batch statistics until the freeze, then the moving statistics freeze
  and the layer computes the inference graph), or
* naively (``bn_correction=False``): weights γW/σ_B with the batch σ_B, so the quantized
  weights change with every batch, and statistics that never freeze.

This module connects those layers to the rest of QAT:

* :class:`FreezableFoldedConvBN` / :class:`FreezableFoldedDepthwiseConvBN` add the
  :class:`~tfquant.qat.finetune.BatchNormFreezable` hook, so a schedule's
  ``freeze_bn_after_steps`` freezes them and ``bn_correction=True`` schedules accept the model;
* their tfmot ``QuantizeConfig`` (registered with
  :func:`~tfquant.qat.register_layer_config` on import): the folded kernel is
  fake-quantized by the layer's own ``weight_quantizer``
  (:class:`tfquant.algorithms.SymmetricWeightQuantizer`: symmetric narrow range, per output
  channel or per tensor, straight-through gradient), so tfmot adds no weight quantizer; the
  output gets tfmot's activation fake quant (affine, EMA range) unless every reader is a
  ReLU / ReLU6, which TFLite fuses into the conv (the ReLU's own output quant then applies);
* :func:`quantize_folded_for_training` builds the whole thing from a float model and a
  :class:`~tfquant.qat.FinetuneSchedule`, so the layers' correction and freeze step
  are the schedule's;
* :class:`BnFold` names the three ways a QAT run can treat batch normalization.

The result is evaluated as a Keras model (its fake-quant graph is the simulation):
:func:`~tfquant.qat.export_tflite` cannot export it, because the folded kernels carry
no tfmot weight fake quant for the converter to read a weight scale from.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant.algorithms.bn_fold_qat import (
    FoldedConvBN,
    FoldedDepthwiseConvBN,
    fold_batch_norms_for_qat,
)
from tfquant.qat import configs
from tfquant.qat.annotate import quantize_for_training
from tfquant.qat.schedules import FinetuneSchedule
from tfquant.qat.registry import register_layer_config
from tfquant.qat.spec import QatSpec
from tfquant.errors import TfquantError
from tfquant.qtypes import _ParsableEnum


class BnFold(_ParsableEnum):
    """How a QAT run treats batch normalization.

    ``tfmot``: tfmot keeps each BN after its conv, trains it with batch statistics and
    fake-quantizes the unfolded kernel; the converter folds γ/σ into the per-channel scales
    at export (tfmot's default, :func:`~tfquant.qat.quantize_for_training`). ``naive`` /
    ``corrected``: BN-folded QAT layers (:func:`quantize_folded_for_training`), the two
    arms of the whitepaper's ablation (Sec. 3.2.2).
    """

    TFMOT = "tfmot"
    NAIVE = "naive"
    CORRECTED = "corrected"


def with_bn_fold(schedule: FinetuneSchedule, fold: BnFold, *, total_steps: int, folds: bool = True,
                 freeze_bn_after_steps: int | None = None) -> FinetuneSchedule:
    """``schedule`` with the BN handling of ``fold`` (what :func:`~tfquant.qat.train_qat` checks).

    ``tfmot``: unchanged (tfmot's BN layers keep the schedule's freeze). ``naive``: no
    correction, never frozen. ``corrected``: correction, frozen after ``freeze_bn_after_steps``
    steps (None: min(200, ``total_steps`` // 2), at least 1). ``folds=False`` (the model has no
    conv + BN pair) turns a folded run into plain QAT: no correction, no freeze.
    """
    from tfquant.qat.schedules import WHITEPAPER_FREEZE_BN_AFTER_STEPS

    if fold is BnFold.TFMOT:
        return schedule
    if fold is BnFold.NAIVE or not folds:
        return schedule.replace(bn_correction=False, freeze_bn_after_steps=None)
    freeze = freeze_bn_after_steps or max(1, min(WHITEPAPER_FREEZE_BN_AFTER_STEPS, total_steps // 2))
    return schedule.replace(bn_correction=True, freeze_bn_after_steps=freeze)


class _FreezeHook:
    """``freeze_batch_norm()`` for the folded layers (mixed in before the layer class)."""

    bn_correction: bool
    freeze_bn_delay: int | None

    def freeze_batch_norm(self) -> None:
        """Freezes from the next training step on: 1/c dropped, moving statistics fixed.

        Sets ``freeze_bn_delay`` to the steps taken so far (unless the layer's own delay is
        already earlier); the layer reads it when its training graph is traced, and
        :func:`~tfquant.qat.finetune` re-traces right after calling this.

        Raises:
          TfquantError: on a naive-fold layer (``bn_correction=False``), which never freezes.
        """
        if not self.bn_correction:
            raise TfquantError(
                f"layer {self.name!r} is a naive BN fold (bn_correction=False), which never "
                "freezes; fine-tune it with schedule.replace(freeze_bn_after_steps=None)"
            )
        step = int(self.step.numpy())
        if self.freeze_bn_delay is None or self.freeze_bn_delay > step:
            self.freeze_bn_delay = step


@keras.utils.register_keras_serializable(package="tfquant")
class FreezableFoldedConvBN(_FreezeHook, FoldedConvBN):
    """:class:`~tfquant.algorithms.FoldedConvBN` with the freeze hook of
    :func:`~tfquant.qat.finetune`."""


@keras.utils.register_keras_serializable(package="tfquant")
class FreezableFoldedDepthwiseConvBN(_FreezeHook, FoldedDepthwiseConvBN):
    """:class:`~tfquant.algorithms.FoldedDepthwiseConvBN` with the freeze hook of
    :func:`~tfquant.qat.finetune`."""


FREEZABLE_CLASSES: Mapping[type, type] = {
    FoldedConvBN: FreezableFoldedConvBN,
    FoldedDepthwiseConvBN: FreezableFoldedDepthwiseConvBN,
}


def _fuses_into_relu(layer: keras.layers.Layer) -> bool:
    """Every reader of the layer's output is a ReLU / ReLU6 that TFLite fuses into the conv."""
    readers = [node.outbound_layer for node in layer.outbound_nodes]
    if not readers:
        return False
    for reader in readers:
        if isinstance(reader, keras.layers.ReLU):
            c = reader.get_config()
            if (
                float(c.get("negative_slope") or 0.0) != 0.0
                or float(c.get("threshold") or 0.0) != 0.0
                or c.get("max_value") not in (None, 6, 6.0)
            ):
                return False
        elif not (
            isinstance(reader, keras.layers.Activation)
            and configs.activation_name(reader) in ("relu", "relu6")
        ):
            return False
    return True


def folded_layer_config(spec: QatSpec, layer: keras.layers.Layer) -> Any:
    """The tfmot ``QuantizeConfig`` of a folded layer: its output quant, no weight quantizer.

    :class:`~tfquant.qat.configs.PassThroughConfig` when every reader is a fusable
    ReLU / ReLU6 (TFLite quantizes only the activation's output), else
    :class:`~tfquant.qat.configs.OutputConfig` at ``spec.activation_bits``.
    """
    if _fuses_into_relu(layer):
        return configs.PassThroughConfig()
    return configs.OutputConfig(activation_bits=spec.activation_bits)


def _register_configs() -> None:
    for cls in FREEZABLE_CLASSES.values():
        register_layer_config(cls, folded_layer_config)


_register_configs()


def _make_freezable(folded: keras.Model) -> keras.Model:
    """A clone of ``folded`` with each Folded*BN layer as its freezable subclass (same weights)."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        cls = FREEZABLE_CLASSES.get(type(layer))
        if cls is None:
            return layer.__class__.from_config(layer.get_config())
        return cls.from_config(layer.get_config())

    out = keras.models.clone_model(folded, clone_function=clone)
    out.set_weights(folded.get_weights())
    return out


def folded_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The BN-folded QAT layers of a model (inside tfmot wrappers too), in layer order."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, (FoldedConvBN, FoldedDepthwiseConvBN)):
            out.append(inner)
    return out


def has_foldable_pairs(model: keras.Model) -> bool:
    """Whether ``model`` has a Conv2D / DepthwiseConv2D + BatchNormalization pair to fold
    (:func:`tfquant.algorithms.foldable_pairs` restricted to the kinds the fold replaces)."""
    from tfquant.algorithms import foldable_pairs

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return any(type(model.get_layer(p.layer)) in kinds for p in foldable_pairs(model))


def quantize_folded_for_training(
    model: keras.Model,
    schedule: FinetuneSchedule,
    *,
    spec: QatSpec = QatSpec(),
    **options: Any,
) -> keras.Model:
    """A QAT copy of ``model`` whose conv + BN pairs are BN-folded QAT layers, as ``schedule`` says.

    1. :func:`tfquant.algorithms.fold_batch_norms_for_qat`: every Conv2D / DepthwiseConv2D
       followed by a BatchNormalization becomes one folded layer whose kernel γW/σ (or
       γW/σ_B, naive) is fake-quantized to ``spec.weight_bits`` by its own
       :class:`~tfquant.algorithms.SymmetricWeightQuantizer`. ``schedule.bn_correction``
       chooses the fold: True gives the correction, frozen after
       ``schedule.freeze_bn_after_steps`` steps (None: never); False the naive fold.
    2. :func:`~tfquant.qat.quantize_for_training` on the folded model with the same
       bit widths and granularity: tfmot fake quants on every other layer (Dense kernels,
       convs without BN, activations; the folded layers get :func:`folded_layer_config`).
       Activation ranges: as there (``calibration_data`` / ``initial_ranges``, measured on
       the folded model, which in inference equals ``model``).

    Fine-tune the result with ``schedule`` (:func:`~tfquant.qat.finetune`); evaluate it
    in Keras (it does not export to TFLite, see the module docstring).

    Args:
      model: A trained float functional / Sequential tf_keras model. Not modified.
      schedule: The fine-tuning schedule; its ``bn_correction`` and
        ``freeze_bn_after_steps`` define the folded layers.
      spec: Weight bits, activation bits and weight granularity.
      **options: ``skip_layers``, ``calibration_data``, ``initial_ranges``: as
        :func:`~tfquant.qat.quantize_for_training`.

    Returns:
      The QAT ``keras.Model`` (uncompiled).

    Raises:
      TfquantError: a schedule that is not a FinetuneSchedule; a naive fold with
        ``freeze_bn_after_steps`` set (it never freezes); a model without a conv + BN pair
        to fold; and the errors of the two steps.
    """
    if not isinstance(schedule, FinetuneSchedule):
        raise TfquantError(
            f"schedule must be a FinetuneSchedule, got {type(schedule).__name__}; use "
            "whitepaper_schedule(...) or nvidia_schedule(...)"
        )
    if not schedule.bn_correction and schedule.freeze_bn_after_steps is not None:
        raise TfquantError(
            f"schedule {schedule.name!r} asks for the naive BN fold (bn_correction=False), "
            f"which never freezes, but sets freeze_bn_after_steps="
            f"{schedule.freeze_bn_after_steps}; use schedule.replace(freeze_bn_after_steps=None), "
            "or bn_correction=True"
        )
    folded = fold_batch_norms_for_qat(
        model,
        freeze_bn_delay=schedule.freeze_bn_after_steps if schedule.bn_correction else None,
        bn_correction=schedule.bn_correction,
        weight_bits=spec.weight_bits,
        per_channel=spec.per_channel,
    )
    if not folded_layers(folded):
        raise TfquantError(
            f"model {getattr(model, 'name', model)!r} has no Conv2D / DepthwiseConv2D followed "
            "by a BatchNormalization to fold; use quantize_for_training for a model without BN"
        )
    return quantize_for_training(
        _make_freezable(folded),
        weight_bits=spec.weight_bits,
        activation_bits=spec.activation_bits,
        weight_granularity=spec.weight_granularity,
        **options,
    )
