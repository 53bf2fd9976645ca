"""Process environment that must be set before TensorFlow is imported.

tfmot 0.8 works with Keras 2 only, which TensorFlow 2.16+ provides through the ``tf-keras``
package when ``TF_USE_LEGACY_KERAS=1`` is set *before* the first ``import tensorflow``.
Every tfquant module that imports TensorFlow imports this module first.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
