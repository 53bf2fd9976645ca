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
* ``schedules``  -- :class:`FinetuneSchedule` as data; NVIDIA's and the whitepaper's
                    named schedules (:class:`ScheduleName`)
* ``finetune``   -- :func:`finetune`: progress, TensorBoard, checkpoints, seed, BN freeze
* ``export``     -- :func:`export_tflite` (int8, float I/O), :func:`weight_levels`,
                    :func:`~tfquant.qat.export.stored_weight_types` (what the export stores)
* ``outputs``    -- :func:`outputs_probabilities`: logits or softmax out (the loss to train with)
* ``bn_reestimate`` -- :func:`reestimate_batch_norm`: BN statistics of the QAT graph (precise BN)
* ``bn_correction`` -- BN-folded QAT layers (:class:`BnFold`: tfmot, naive, corrected)
* ``original``   -- how the float model was trained (:func:`saved_learning_rate`)
* ``record``     -- :class:`QatRecord`, the ``.qat.json`` of every QAT .tflite
* ``pipeline``   -- :func:`run_qat`, the one QAT entry point (CLI and experiments), and its
                    stages :func:`train_qat` and :func:`export_and_compare`

Example::

    from tfquant import data, models
    from tfquant import qat
    from tfquant.models.train import DEFAULT_CONFIGS

    model = models.build("cnn")
    x_cal = data.calibration_set("fashion_mnist", 1000)
    qat_model = qat.quantize_for_training(model, weight_bits=4, calibration_data=x_cal)
    schedule = qat.nvidia_schedule(DEFAULT_CONFIGS["cnn"])
    x, y, _ = data.load_numpy("fashion_mnist", "train")
    qat.finetune(qat_model, schedule, x, y, epochs=schedule.epochs_for(8), seed=0)
    tflite = qat.export_tflite(qat_model)
    x_test, y_test, _ = data.load_numpy("fashion_mnist", "test")
    from tfquant.evaluation import fidelity
    print(fidelity.compare(qat_model, tflite, x_test, y_test).summary())
"""

from tfquant.qat.annotate import custom_objects, qat_scope, quantize_for_training
from tfquant.qat.bn_correction import BnFold
from tfquant.qat.bn_reestimate import reestimate_batch_norm
from tfquant.qat.export import WeightLevels, export_tflite, float_ops, weight_levels
from tfquant.qat.finetune import BatchNormFreezable, FinetuneResult, finetune
from tfquant.qat.original import DEFAULT_LEARNING_RATE, saved_learning_rate
from tfquant.qat.outputs import outputs_probabilities
from tfquant.qat.pipeline import (
    QatOutcome,
    TrainedQat,
    export_and_compare,
    export_run,
    run_qat,
    train_qat,
)
from tfquant.qat.ranges import (
    layer_ranges_from_tensor_ranges,
    observe_layer_ranges,
    set_activation_ranges,
    sync_weight_ranges,
)
from tfquant.qat.record import QatRecord
from tfquant.qat.registry import register_layer_config
from tfquant.qat.schedules import (
    FINETUNE_SCHEDULES,
    FinetuneSchedule,
    LRSchedule,
    Optimizer,
    ScheduleName,
    nvidia_schedule,
    whitepaper_schedule,
)
from tfquant.qat.spec import QatSpec

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "FINETUNE_SCHEDULES",
    "BatchNormFreezable",
    "BnFold",
    "FinetuneResult",
    "FinetuneSchedule",
    "LRSchedule",
    "Optimizer",
    "QatOutcome",
    "QatRecord",
    "QatSpec",
    "ScheduleName",
    "TrainedQat",
    "WeightLevels",
    "custom_objects",
    "export_and_compare",
    "export_run",
    "export_tflite",
    "finetune",
    "float_ops",
    "layer_ranges_from_tensor_ranges",
    "nvidia_schedule",
    "observe_layer_ranges",
    "outputs_probabilities",
    "qat_scope",
    "quantize_for_training",
    "reestimate_batch_norm",
    "register_layer_config",
    "run_qat",
    "saved_learning_rate",
    "set_activation_ranges",
    "sync_weight_ranges",
    "train_qat",
    "weight_levels",
    "whitepaper_schedule",
]
