"""What a QAT run did, as one typed record: the ``.qat.json`` written beside every QAT .tflite.

The ``qat`` command (``OUT.qat.json``, also embedded in the .tflite's metadata) and the
whitepaper QAT experiment (``models/<model>/<cell>.qat.json``) write the same
:class:`QatRecord`; fields a run does not have are null. It round-trips through JSON
(:meth:`QatRecord.from_dict` rejects unknown keys and a newer ``version``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from tfquant.dataclass_json import from_json_dict

QAT_RECORD_VERSION = 1
_OPTIONAL_KEYS = frozenset({
    "fidelity", "bit_budget", "bit_allocation", "layer_bits", "layer_params", "mean_weight_bits",
    "allocation_history"})  # left out of the JSON when None (as they always were)


def json_ready(value: Any) -> Any:
    """A dataclass (or anything ``json`` can print with ``str`` for the rest) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatRecord:
    """One QAT run: data, quantization, fine-tuning schedule, training and checks.

    Attributes:
      model: The model (a path or ``zoo:NAME`` in the CLI, the zoo name in experiments).
      train_data, eval_data, calibration_data: Dataset specs (None: not used / not known).
      calibration_seed: Seed of the calibration images.
      input: The input contract (:class:`~tfquant.recipes.inputs.InputContract` dict) or None.
      weight_bits, activation_bits, weight_granularity: The simulated quantization.
      bn_fold: How BN was treated (:class:`~tfquant.qat.bn_correction.BnFold` value).
      epochs, seed: Of the fine-tune.
      train_examples: Examples fine-tuned on; held_out_examples: held out of them for the
        accuracy check (0 with eval data).
      num_calibration_examples: Images the initial activation ranges came from.
      finetune_recipe_choice: The schedule's name as chosen (``auto``, ``nvidia``,
        ``whitepaper``); finetune_recipe: the :class:`~tfquant.qat.FinetuneSchedule` dict
        (JSON names kept from before the schedule was called a schedule).
      original_learning_rate, learning_rate_source: The float training's LR and where it
        came from (:func:`~tfquant.qat.original.original_training`).
      from_logits: The loss took the model's output as logits.
      bn_reestimated: BatchNormalization layers re-estimated after fine-tuning.
      train_seconds: Wall time of quantize + fine-tune + export.
      finetune: The :class:`~tfquant.qat.FinetuneResult` dict.
      float_accuracy, qat_accuracy: Top-1 of the float model / the .tflite on the check data.
      accuracy_data: What the check data was (None: no check).
      warnings: One-line warnings of the run.
      fidelity: The :class:`~tfquant.evaluation.fidelity.FidelityReport` dict (None: no
        comparison).
      bit_budget: ``--bit_budget``: the average weight bits Σ n_l b_l / Σ n_l asked for (None:
        one ``weight_bits`` for every layer); ``weight_bits`` is then the widest layer's.
      bit_allocation: ``fixed``, ``oneshot`` or ``qbitopt`` (:mod:`tfquant.qat.bit_allocation`).
      layer_bits, layer_params: Layer name -> its kernel's final bits / parameter count.
      mean_weight_bits: The achieved parameter-weighted mean (equals ``bit_budget``).
      allocation_history: QBitOpt's solves (step, bits, mean_bits, changed).
      skip_layers: Layers left unquantized (``--skip_layers``): they run in float in the .tflite.
    """

    model: str | None = None
    train_data: str | None = None
    eval_data: str | None = None
    calibration_data: str | None = None
    calibration_seed: int | None = None
    input: Mapping[str, Any] | None = None
    weight_bits: int
    activation_bits: int = 8
    weight_granularity: str
    bn_fold: str = "tfmot"
    epochs: int
    seed: int
    train_examples: int
    held_out_examples: int = 0
    num_calibration_examples: int
    finetune_recipe_choice: str
    finetune_recipe: Mapping[str, Any]
    original_learning_rate: float | None = None
    learning_rate_source: str | None = None
    from_logits: bool = True
    bn_reestimated: int = 0
    train_seconds: float
    finetune: Mapping[str, Any]
    float_accuracy: float | None = None
    qat_accuracy: float | None = None
    accuracy_data: str | None = None
    warnings: tuple[str, ...] = ()
    fidelity: Mapping[str, Any] | None = None
    bit_budget: float | None = None
    bit_allocation: str | None = None
    layer_bits: Mapping[str, int] | None = None
    layer_params: Mapping[str, int] | None = None
    mean_weight_bits: float | None = None
    allocation_history: tuple[Mapping[str, Any], ...] | None = None
    skip_layers: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> "QatRecord":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with ``version``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: v for k, v in out.items() if v is not None or k not in _OPTIONAL_KEYS}
        out["warnings"] = list(self.warnings)
        out["skip_layers"] = list(self.skip_layers)
        out["version"] = QAT_RECORD_VERSION
        return json_ready(out)

    def to_json(self) -> str:
        """The record as the text of a ``.qat.json`` (sorted keys, indented, newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QatRecord":
        """Parses :meth:`to_dict` output (a ``.qat.json``).

        Raises:
          TfquantError: not a JSON object, unknown keys, a missing required key, a newer
            version.
        """
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        data = from_json_dict(cls, data, what=".qat.json", version_key="version",
                              version=QAT_RECORD_VERSION, required=required,
                              hint="re-run qat with this tfquant")
        data["warnings"] = tuple(data.get("warnings", ()))
        data["skip_layers"] = tuple(data.get("skip_layers", ()))
        return cls(**data)
