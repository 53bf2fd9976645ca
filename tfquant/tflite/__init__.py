"""The TFLite boundary: the only code that touches the converter, the interpreter, the
flatbuffer, or a private TensorFlow / LiteRT / tfmot / tf-keras API.

A TF, LiteRT, tfmot or tf-keras upgrade is checked here and nowhere else
(``tests/test_architecture.py`` fails when a private API or ``Interpreter(`` appears outside
this package). Modules:

* ``interpreter``      -- :func:`~tfquant.tflite.interpreter.make_interpreter`, the one
                          interpreter factory (runtime: xnnpack / builtin / external
                          delegate, threads, preserve-all-tensors), and the node / op queries
                          LiteRT keeps private (delegated-op count, op list, node names).
                          A new runtime or delegate goes here.
* ``flatbuffer``       -- the one .tflite reader / writer: ops, tensors, weights with their
                          channel axis, metadata entries, fingerprint.
* ``converter``        -- the one ``TFLiteConverter`` call (options, captured output, one-line
                          errors) and the converter's quantize-only step.
* ``runtime_check``    -- does an int16x8 model run in the installed LiteRT (child process)?
* ``runtime_statistics`` -- taps: tensors read inside LiteRT's CompiledModel where they are
                          produced (LiteRT's C API via ctypes), for the statistics pass.
* ``tfmot_internals``  -- the tfmot internals QAT's custom scheme needs, re-exported.
* ``keras_internals``  -- the ``tf_keras.src`` functions tfquant needs, one function each.

Importing the package imports nothing; ``interpreter`` and ``flatbuffer`` need no TensorFlow
(evaluation uses them without it), ``converter`` does.
"""
