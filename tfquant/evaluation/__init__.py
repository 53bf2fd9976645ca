"""Evaluation: run a .tflite in the LiteRT interpreter and measure it.

Accuracy (:func:`evaluate_accuracy`, :func:`predict`), single-image latency
(:func:`measure_latency`), contents (:func:`inspect_model`, :func:`format_report`), how much
a delegate runs (:func:`delegated_op_count`), size (:func:`file_size`) and result tables
(:func:`markdown_table`). Imports ``ai_edge_litert`` and numpy only, never TensorFlow.
"""

from tfquant.evaluation.accuracy import AccuracyResult, convert_and_evaluate, evaluate_accuracy, predict
from tfquant.evaluation.inspect import (
    ModelReport,
    TensorInfo,
    computation_fingerprint,
    format_activation_ranges,
    format_report,
    inspect_model,
)
from tfquant.evaluation.interpreter import (
    ModelLike,
    count_delegated_nodes,
    delegated_op_count,
    file_size,
    load_interpreter,
)
from tfquant.evaluation.latency import LatencyResult, measure_latency
from tfquant.evaluation.report import markdown_table, text_table
from tfquant.evaluation.sharded import Evaluator, evaluate_accuracy_sharded

__all__ = [
    "AccuracyResult",
    "Evaluator",
    "convert_and_evaluate",
    "LatencyResult",
    "ModelLike",
    "ModelReport",
    "TensorInfo",
    "computation_fingerprint",
    "count_delegated_nodes",
    "delegated_op_count",
    "evaluate_accuracy",
    "evaluate_accuracy_sharded",
    "file_size",
    "format_activation_ranges",
    "format_report",
    "inspect_model",
    "load_interpreter",
    "markdown_table",
    "measure_latency",
    "predict",
    "text_table",
]
