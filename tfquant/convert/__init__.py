"""Keras / SavedModel -> .tflite, as a :class:`~tfquant.recipes.Recipe` says.

The recipe-level stage of conversion; the converter itself (and the flatbuffer, and every
private TF / LiteRT API) is driven only by :mod:`tfquant.tflite`. Modules, in pipeline order:

* ``loading``         -- .keras / .h5 / SavedModel -> Keras model
* ``custom_objects``  -- custom layers for loading: a user's .py file / module / dict, and
                         the keras.applications layers (always registered)
* ``source``          -- the model to convert, loaded once (Keras or non-Keras SavedModel)
* ``representative``  -- calibration-data checks and the batched representative dataset
* ``rewrites``        -- exact Keras model rewrites before conversion (int16x8 LayerNorm,
                         hard-swish)
* ``options``         -- recipe -> converter settings; runs :mod:`tfquant.tflite.converter`
* ``converter``       -- :func:`convert`: recipe -> .tflite bytes (the mode table is there)
* ``calibrated``      -- tfquant calibrators' ranges into int8 / int16x8 models (calibrate
                         once, export one model per calibrator)
* ``metadata``        -- tfquant's metadata entries: recipe, ranges, rewrites, QAT record
* ``artifacts``       -- ``OUT.tflite`` + ``OUT.recipe.json``, written atomically
* ``runtime_check``   -- alias of :mod:`tfquant.tflite.runtime_check`

Example::

    from tfquant import convert, variant
    recipe = variant("int8_per_channel").replace(num_calibration_examples=len(x_cal))
    tflite = convert.convert(model, recipe, calibration_data=x_cal)
    convert.save(tflite, "out/cnn_int8.tflite", recipe)
    assert convert.read_recipe("out/cnn_int8.tflite") == recipe
"""

from tfquant.convert.artifacts import convert_and_save, save
from tfquant.convert.converter import convert
from tfquant.convert.custom_objects import load_custom_objects
from tfquant.convert.loading import load_model
from tfquant.convert.metadata import (
    METADATA_NAME,
    QAT_METADATA_NAME,
    RANGES_METADATA_NAME,
    REWRITES_METADATA_NAME,
    read_input_contract,
    read_ranges,
    read_recipe,
    read_rewrites,
)

__all__ = [
    "METADATA_NAME",
    "QAT_METADATA_NAME",
    "RANGES_METADATA_NAME",
    "REWRITES_METADATA_NAME",
    "convert",
    "convert_and_save",
    "load_custom_objects",
    "load_model",
    "read_input_contract",
    "read_ranges",
    "read_recipe",
    "read_rewrites",
    "save",
]
