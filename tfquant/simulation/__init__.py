"""Simulated quantization: fake-quant evaluation in TensorFlow for what TFLite cannot run.

TFLite executes int8 (symmetric per-channel weights, affine per-tensor activations) and
int16x8; asymmetric weights, sub-8-bit weights or activations and per-channel activations
run only here, as fake quantization of a float Keras model (``shared/docs/methods.md``,
"Where TFLite stops"). Every result from this package says ``executed_in="sim"``.

BN folding is :func:`tfquant.algorithms.bn_fold.fold_batch_norms`. Modules, in pipeline
order:

* ``spec``         -- :class:`SimSpec` (what to quantize, frozen data) and :class:`SimResult`
* ``graph``        -- walk and rebuild a functional Keras model with edits
* ``weights``      -- static per-channel / per-tensor weight fake-quantization
* ``activations``  -- where TFLite quantizes, calibrated ranges, the :class:`FakeQuant` layer
* ``simulate``     -- :func:`simulate` (the fake-quantized clone) and :func:`evaluate`

Example::

    from tfquant import data, models, simulation
    x_cal = data.calibration_set("fashion_mnist", 1000, seed=0)
    x, y, _ = data.load_numpy("fashion_mnist", "test")
    spec = simulation.SimSpec(weight_bits=4, activation_bits=8)
    result = simulation.evaluate(models.build("mobilenet_v1"), spec, x, y, calibration_data=x_cal)
    print(result.accuracy, result.executed_in)  # ... sim

``SimSpec()`` is TFLite's int8 scheme; its simulation agrees with the LiteRT int8 model
on >= 99% of top-1 predictions (``tests/simulation/test_sim_vs_tflite.py``).
"""

from tfquant.simulation.activations import FakeQuant
from tfquant.simulation.simulate import evaluate, evaluate_fields, float_weight_layers, predict, simulate
from tfquant.simulation.spec import TFLITE_INT8, SimResult, SimSpec, WeightScheme

__all__ = [
    "FakeQuant",
    "SimResult",
    "SimSpec",
    "TFLITE_INT8",
    "WeightScheme",
    "evaluate", "evaluate_fields",
    "float_weight_layers",
    "predict",
    "simulate",
]
