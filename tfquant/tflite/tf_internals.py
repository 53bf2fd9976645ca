"""TensorFlow internals (``tensorflow.python``) that tfquant uses, re-exported from one place.

* ``is_op_determinism_enabled`` / ``disable_op_determinism``: TF 2.21 has a public switch
  to turn deterministic ops on (``tf.config.experimental.enable_op_determinism``) but no
  public getter and no switch off; :func:`tfquant.training.seeding.deterministic_ops` needs
  both to restore the caller's setting.
"""

from tensorflow.python.framework.config import disable_op_determinism, is_op_determinism_enabled

__all__ = ["disable_op_determinism", "is_op_determinism_enabled"]
