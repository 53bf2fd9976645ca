"""Keras / SavedModel -> .tflite bytes, as a :class:`~tfquant.recipes.Recipe` says.

Mode mapping (the converter settings are made in :mod:`tfquant.convert.options` and applied
by :mod:`tfquant.tflite.converter`, the only code that drives ``tf.lite.TFLiteConverter``):

=========  ==============================================================================
fp32       plain conversion.
fp16       ``optimizations=[DEFAULT]``, ``target_spec.supported_types=[float16]``: float16
           weights, dequantized to float32 at load.
dynamic    ``optimizations=[DEFAULT]``, no representative dataset: int8 weights, float
           activations. The converter leaves weight tensors with fewer than 1024 elements
           in float32.
int8       ``optimizations=[DEFAULT]``, ``representative_dataset``,
           ``supported_ops=[TFLITE_BUILTINS_INT8]`` (strict: no float fallback). int32
           bias. io_dtype int8 -> int8 input/output tensors, else float32 I/O with
           QUANTIZE/DEQUANTIZE at the edges.
int16x8    ``supported_ops=[EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]``
           only (strict, see below): int16 symmetric activations, int8 weights, int64
           bias. io_dtype int16 -> int16 input/output tensors. A Keras model's
           LayerNormalization layers (last axis, center and scale on) are first replaced
           by :class:`~tfquant.convert.rewrites.DecomposedLayerNormalization`, and its
           hard-swish Multiply layers (MobileNetV3) by
           :class:`~tfquant.convert.rewrites.DecomposedHardSwish`, both exact in float
           (see below).
=========  ==============================================================================

Weight granularity per_tensor sets ``converter._experimental_disable_per_channel = True``
(present in TF 2.21). Read back from the flatbuffer it makes every CONV_2D and
FULLY_CONNECTED weight single-scale in dynamic, int8 and int16x8 alike; the separate
``_experimental_disable_per_channel_quantization_for_dense_layers`` only affects
FULLY_CONNECTED (convs stay per-channel), so it is not needed. Inspect granularity *before*
``allocate_tensors()``: on allocation LiteRT rewrites per-tensor params to one copy per
channel for the hybrid (dynamic) conv kernel and for int8 FULLY_CONNECTED under the default
XNNPACK delegate.

Dynamic per-tensor depthwise weights: the hybrid DEPTHWISE_CONV_2D kernel of ai-edge-litert
2.3.0 indexes the weight scales by output channel even when the tensor has a single scale:
the converter writes it on quantized_dimension 0, which passes the kernel's size check
(``scales == dims[quantized_dimension]``, and a depthwise filter is (1, H, W, C)), and the
kernel then reads C scales, past the end of the array, so a dynamic-range model with per-tensor depthwise weights
outputs garbage (one DepthwiseConv2D 3x3x128: relative error ~1e32; zoo MobileNets at
chance). ``convert()`` therefore stores such a tensor's one scale once per channel
(:func:`tfquant.tflite.flatbuffer.replicate_per_tensor_scales`): the same integers and the
same scale for every channel, so the quantization is still per-tensor, and the model runs
the per-channel hybrid path correctly. The conv and fully-connected hybrid kernels handle
one scale (LiteRT expands it at allocation) and are left as written.

int16x8 is strict, whatever the recipe: no ``TFLITE_BUILTINS`` float fallback, so a model
labelled int16x8 is int16 end to end (a recipe cannot record which ops fell back, and a
float island would make the int16x8 numbers meaningless). An op the converter cannot
quantize to 16x8 (e.g. ``POW``) raises :class:`TfquantError` naming it.

int16x8 support in the TF 2.21 converter + ai-edge-litert 2.3.0 runtime, found by converting
single-layer Keras models with the strict ops set (20 calibration examples) and invoking
them once (in brackets: max |error| / max |Keras output| on one random input):

* converts to int16 and runs: CONV_2D (3.7e-3), DEPTHWISE_CONV_2D (3.8e-3),
  FULLY_CONNECTED 2-D (3.0e-3) and 3-D (1.7e-3), ADD (1.7e-3), SUB (5.3e-3), MUL (3.9e-3),
  MEAN (GlobalAveragePooling 6.4e-5, last axis 7.6e-5), ReLU / ReLU6 fused into the conv
  (4.6e-3), RELU, MAX_POOL_2D (2.1e-5), AVERAGE_POOL_2D (8.3e-5), SOFTMAX (2.2e-3),
  GELU exact and tanh (one GELU op; 6.7e-5, 8.6e-5), TANH (8.9e-5), LOGISTIC (3.2e-5),
  RSQRT (1.3e-3), BATCH_MATMUL of two activations (2.8e-5), TRANSPOSE (2.2e-5),
  CONCATENATION (2.8e-3), FILL (7.1e-5); Keras MultiHeadAttention as a whole
  (FULLY_CONNECTED, BATCH_MATMUL, SOFTMAX, TRANSPOSE, RESHAPE; 5.7e-3).
* rejected by the converter: POW ("Quantization to 16x8-bit not yet supported for op:
  'POW'"), HARD_SWISH (the converter fuses ``x * relu6(x + 3) * (1/6)`` into it; the
  hard-swish rewrite below avoids the fusion). (A bare ``tf.math.erf`` is no TFLite
  builtin in any mode.)
* accepted by the converter but **no int16 kernel** in LiteRT: SQUARED_DIFFERENCE
  ("SquaredDifference only supports FLOAT32 and INT32"), hence Keras LayerNormalization,
  whose int16 graph aborts the interpreter process (SIGABRT) in ``invoke()``. Adding the
  ``TFLITE_BUILTINS`` fallback set does not help: the converter still makes it int16.
  :mod:`tfquant.tflite.runtime_check` turns this into a TfquantError.

LayerNormalization rewrite (int16x8 only). Because of that missing kernel, ``convert()``
in mode int16x8 clones a Keras model whose LayerNormalization layers normalize over the last
axis with ``center`` and ``scale`` on, replacing each by
:class:`~tfquant.convert.rewrites.DecomposedLayerNormalization` with the same trained
gamma / beta: ``d = x - mean(x)``, ``y = d · rsqrt(mean(d · d) + ε) · γ + β`` (means over
the last axis). That is the same function -- the rewrite is exact in float (zoo ViT logits
within 5.4e-6 of the original's) -- written with MEAN, SUB, MUL, RSQRT and ADD, which have
int16 kernels; it exists only because LiteRT has no int16 SQUARED_DIFFERENCE kernel. The
caller's model is not modified. Zoo ViT (88.22% float), 1000 calibration images: int16x8
88.23% top-1 on the 10,000 Fashion-MNIST test images, int8 (Keras LayerNorm, no rewrite)
88.00%. As everywhere, ranges come from calibration: the RSQRT output's range is set by
the smallest per-token variance seen, and an input with a smaller one saturates it (a
few ~10% output errors on out-of-distribution random inputs, in int8 too). Not rewritten,
so still stopped by the runtime check: other LayerNormalizations
(several or leading axes, center or scale off, subclasses of the layer), layers inside
subclassed models, and SavedModels that Keras did not write (they convert from their
signature, not from Keras layers). The other modes convert the model as given.

Hard-swish rewrite (int16x8 only). keras.applications MobileNetV3 computes hard-swish as
``Multiply([x, ReLU(6)(x + 3) * (1/6)])``; the converter fuses it into HARD_SWISH, which it
cannot quantize to 16x8. :func:`~tfquant.convert.rewrites.decompose_hard_swish` replaces the
Multiply by ``(x * (1/6)) * relu6(x + 3)``, the same product associated differently (float
outputs of MobileNetV3Small equal to rounding), which lowers to ADD (fused RELU6), MUL, MUL.
:func:`~tfquant.convert.rewrites.int16x8_rewrites` lists the layers both rewrites replace.

Calibration examples are fed in batches (see :mod:`tfquant.convert.representative`).
The recipe becomes converter settings in :mod:`tfquant.convert.options`; the converter
itself runs in :mod:`tfquant.tflite.converter`, which captures its own logging (C++ stderr
lines, Python warnings) and uses it only to explain failures, so the library prints nothing.
"""

from __future__ import annotations

import os

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.convert import calibrated, representative, rewrites
from tfquant.convert.custom_objects import CustomObjectsSpec
from tfquant.convert.metadata import embed_recipe, embed_rewrites
from tfquant.convert.options import check_int16x8_runs, run_converter
from tfquant.convert.source import Source, check_recipe, load_source
from tfquant.progress import stage
from tfquant.qtypes import Granularity, Mode
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer

__all__ = ["check_int16x8_runs", "convert", "run_converter"]


def convert(
    model: "tf.keras.Model | str | os.PathLike[str]",
    recipe: Recipe,
    *,
    calibration_data: np.ndarray | None = None,
    custom_objects: CustomObjectsSpec = None,
) -> bytes:
    """Converts a float model to .tflite bytes as ``recipe`` says, with the recipe embedded.

    Args:
      model: a Keras model, or a path: ``.keras`` / ``.h5`` file or SavedModel directory. A
        SavedModel not written by Keras converts from its ``serving_default`` signature.
      recipe: how to convert (mode, weight granularity, I/O dtype, calibration provenance).
        In mode int16x8 a Keras model's LayerNormalization layers are first replaced, in a
        clone, by an exact decomposition without SQUARED_DIFFERENCE (see the module
        docstring); ``model`` itself is not modified.
      calibration_data: float32 inputs of shape (N, *model_input_shape), preprocessed like
        the training data; required for int8 and int16x8 (N must equal
        ``recipe.num_calibration_examples``), ignored by the other modes. Fed to the
        calibrator in batches of up to 100, which gives the same min/max ranges as one
        example at a time.
      custom_objects: the custom layers of a Keras file ``model`` (a dict, a .py file or a
        module name, as :func:`tfquant.convert.load_model` takes); unused for a Keras model.

    Returns:
      The .tflite flatbuffer, whose metadata entry ``tfquant_recipe`` holds
      ``recipe.to_json()`` (read it back with :func:`tfquant.convert.read_recipe`).

    Raises:
      TfquantError: bad model/path, bad calibration data, the converter rejected the
        model (the message names the op and what to try), an int16x8 model does not run
        in LiteRT, or a model to rewrite for int16x8 has a layer that cannot be cloned.
    """
    check_recipe(recipe)
    source = load_source(model, custom_objects=custom_objects)
    if recipe.layer_rules:  # per-layer precision: AI Edge Quantizer (tfquant/convert/mixed.py)
        from tfquant.convert import mixed

        loaded = source.keras_model if source.keras_model is not None else model
        return mixed.convert_mixed(loaded, recipe, calibration_data=calibration_data)
    if recipe.calibrator is not None:
        loaded = source.keras_model if source.keras_model is not None else model
        tflite = calibrated.convert_calibrated(loaded, recipe, calibration_data=calibration_data)
        return _record_rewrites(tflite, source, recipe)
    dataset = None
    if recipe.mode.needs_calibration:
        x = representative.validate_calibration_data(
            calibration_data, recipe, source.input_shape(), source.input_dtype()
        )
        dataset = representative.representative_dataset(
            x,
            batch_dim=source.input_shape()[0],
            batch_size=representative.CALIBRATION_BATCH_SIZE,
        )
    with stage(f"convert ({recipe.mode})"):
        tflite = run_converter(source, recipe, dataset)
    if recipe.mode is Mode.DYNAMIC and recipe.weight_granularity is Granularity.PER_TENSOR:
        # LiteRT's hybrid depthwise kernel reads one weight scale per channel; give it that
        # many copies of the per-tensor scale (same numbers; see the module docstring).
        tflite, _ = flatbuffer.replicate_per_tensor_scales(tflite, "DEPTHWISE_CONV_2D")
    if recipe.mode is Mode.INT16X8:
        with stage("int16x8 runtime check"):
            check_int16x8_runs(tflite)
    return _record_rewrites(embed_recipe(tflite, recipe), source, recipe)


def _record_rewrites(tflite: bytes, source: Source, recipe: Recipe) -> bytes:
    """Embeds which layers the int16x8 rewrites replaced (``tfquant_rewrites``), if any."""
    if recipe.mode is not Mode.INT16X8 or source.keras_model is None:
        return tflite
    done = rewrites.int16x8_rewrites(source.keras_model)
    return embed_rewrites(tflite, done) if done else tflite
