"""Quantization-aware training through tfmot, and its int8 .tflite export.

Modules, in pipeline order:

* ``spec``       -- :class:`QatSpec`: weight bits, activation bits, weight granularity
* ``quantizers`` -- the fake quantizers (tfmot LastValue / MovingAverage; per-channel
                    depthwise)
* ``configs``    -- our tfmot ``QuantizeConfig``\\ s (weights + activation, output, pass-through)
* ``tfop``       -- TF-op lambda layers bound into a layer tfmot can rebuild
* ``registry``   -- layer class -> config for a spec, the ``register_layer_config`` hook, the
                    scheme (tfmot's n-bit layout transforms + our registry)
* ``ranges``     -- weight ranges from the kernels, activation ranges from calibration
* ``annotate``   -- :func:`quantize_for_training`: annotate + apply (+ unsupported-layer errors)
* ``recipes``    -- :class:`FinetuneRecipe` as data; NVIDIA's and the whitepaper's presets
* ``finetune``   -- :func:`finetune`: progress, TensorBoard, checkpoints, seed, BN freeze
* ``export``     -- :func:`export_tflite` (int8, float I/O) and :func:`weight_levels`
* ``outputs``    -- :func:`outputs_probabilities`: logits or softmax out (the loss to train with)
* ``bn_reestimate`` -- :func:`reestimate_batch_norm`: BN statistics of the QAT graph (precise BN)
* ``pipeline``   -- :func:`run_qat`, the CLI's whole flow (recipe ``auto``, warning when far
                    below float) and :func:`saved_learning_rate`

Example::

    from tfquant import data, models
    from tfquant import qat
    from tfquant.models.train import DEFAULT_CONFIGS

    model = models.build("cnn")
    x_cal = data.calibration_set("fashion_mnist", 1000)
    qat_model = qat.quantize_for_training(model, weight_bits=4, calibration_data=x_cal)
    recipe = qat.nvidia_recipe(DEFAULT_CONFIGS["cnn"])
    x, y, _ = data.load_numpy("fashion_mnist", "train")
    qat.finetune(qat_model, recipe, x, y, epochs=recipe.epochs_for(8), seed=0)
    tflite = qat.export_tflite(qat_model)
    x_test, y_test, _ = data.load_numpy("fashion_mnist", "test")
    print(fidelity.compare(qat_model, tflite, x_test, y_test).summary())
"""

from tfquant.qat.bn_reestimate import reestimate_batch_norm
from tfquant.qat.outputs import outputs_probabilities
from tfquant.qat.annotate import custom_objects, qat_scope, quantize_for_training
from tfquant.qat.export import WeightLevels, export_tflite, float_ops, weight_levels
from tfquant.qat.finetune import BatchNormFreezable, FinetuneResult, finetune
from tfquant.qat.pipeline import (
    DEFAULT_LEARNING_RATE,
    FINETUNE_RECIPES,
    QatOutcome,
    run_qat,
    saved_learning_rate,
)
from tfquant.qat.ranges import (
    layer_ranges_from_tensor_ranges,
    observe_layer_ranges,
    set_activation_ranges,
    sync_weight_ranges,
)
from tfquant.qat.recipes import (
    FinetuneRecipe,
    LRSchedule,
    Optimizer,
    nvidia_recipe,
    whitepaper_recipe,
)
from tfquant.qat.registry import register_layer_config
from tfquant.qat.spec import QatSpec

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "FINETUNE_RECIPES",
    "QatOutcome",
    "outputs_probabilities",
    "reestimate_batch_norm",
    "run_qat",
    "saved_learning_rate",
    "BatchNormFreezable",
    "FinetuneRecipe",
    "FinetuneResult",
    "LRSchedule",
    "Optimizer",
    "QatSpec",
    "WeightLevels",
    "custom_objects",
    "export_tflite",
    "finetune",
    "float_ops",
    "layer_ranges_from_tensor_ranges",
    "nvidia_recipe",
    "observe_layer_ranges",
    "qat_scope",
    "quantize_for_training",
    "register_layer_config",
    "set_activation_ranges",
    "sync_weight_ranges",
    "weight_levels",
    "whitepaper_recipe",
]
