"""Per-layer weight bit widths in QAT under an exact budget: ``fixed``, ``oneshot``, ``qbitopt``.

The QAT model (tfmot, :func:`tfquant.qat.quantize_for_training`) gets one weight bit width
per Conv / DepthwiseConv2D / Dense kernel, b_l in {2..8}, with the parameter-weighted mean
Σ n_l b_l / Σ n_l equal to the budget B (:func:`tfquant.algorithms.bit_budget.solve_allocation`,
an exact multiple-choice knapsack DP):

* ``fixed``   -- every layer at B bits (B a whole bit width);
* ``oneshot`` -- one allocation from the float model's sensitivities before QAT (HAWQ-style:
  a single sensitivity measurement, then fixed bits);
* ``qbitopt`` -- QBitOpt (Peters et al. 2023, arXiv 2307.04535; OUR RECONSTRUCTION, methods.md
  Sec. 4): start at the uniform allocation, keep an EMA (decay 0.9 per probe) of each layer's
  F_l = Σ (∂L/∂w)² of its latent float kernel, measured on a random training batch every
  ``probe_every`` steps *during* training, re-solve every ``resolve_every`` steps, and freeze
  the allocation for the last ``1 - freeze_fraction`` of the steps (default: the last 20%).

Expected loss increase, solved for: Ω_l(b) = F_l · Δ_l(b)² / 24 with Δ_l(b) = a_l / (2^(b-1)-1)
(:mod:`tfquant.algorithms.bit_budget`). When a layer's bits change, its tfmot weight fake
quant (``LastValueQuantizer``, range = the kernel's own max, so it rescales with the new b)
gets the new ``num_bits`` and Keras re-traces the training step. The export is the usual
int8 .tflite: the converter stores each kernel as int8 values on its own b_l-bit grid.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.bit_budget import (
    Allocation, cost_table, solve_allocation, uniform_allocation)
from tfquant.algorithms.weight_grid import kernel_of, reduce_axes
from tfquant.errors import TfquantError
from tfquant.qat.configs import WeightLayerConfig
from tfquant.tflite import tfmot_internals


class BitAllocation(str, enum.Enum):
    """How per-layer weight bits are chosen under ``--bit_budget``."""

    FIXED = "fixed"
    ONESHOT = "oneshot"
    QBITOPT = "qbitopt"

    @classmethod
    def parse(cls, value: "BitAllocation | str") -> "BitAllocation":
        try:
            return cls(getattr(value, "value", value))
        except ValueError:
            raise TfquantError(
                f"bit allocation must be one of {[m.value for m in cls]}, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
    """One fake-quantized kernel of a QAT model: its layer name, variable, quantizer, config."""

    name: str
    variable: tf.Variable
    quantizer: Any
    config: WeightLayerConfig
    params: int
    channel_axes: tuple[int, ...]


def quantized_kernels(qat_model: keras.Model) -> list[QuantizedKernel]:
    """Every kernel of ``qat_model`` with a weight fake quant of our registry (layer order)."""
    out = []
    for layer in qat_model.layers:
        config = getattr(layer, "quantize_config", None)
        if not isinstance(config, WeightLayerConfig):
            continue
        inner = layer.layer
        found = kernel_of(inner)
        for weight, quantizer, _ in tfmot_internals.weight_quantizers(layer):
            if quantizer is config.weight_quantizer:
                axes = found[1] if found is not None else (-1,)
                out.append(QuantizedKernel(inner.name, weight, quantizer, config,
                                           int(np.prod(weight.shape)), tuple(axes)))
    return out


def set_layer_bits(qat_model: keras.Model, bits: Mapping[str, int]) -> bool:
    """Sets each named kernel's weight fake-quant bits; returns whether anything changed.

    The caller re-traces (``make_train_function(force=True)``) when training continues.
    """
    changed = False
    for k in quantized_kernels(qat_model):
        if k.name in bits and k.quantizer.num_bits != int(bits[k.name]):
            k.quantizer.num_bits = int(bits[k.name])
            k.config.weight_bits = int(bits[k.name])
            changed = True
    return changed


def layer_bits(qat_model: keras.Model) -> dict[str, int]:
    """Layer name -> the weight bits its fake quant simulates."""
    return {k.name: int(k.quantizer.num_bits) for k in quantized_kernels(qat_model)}


def amax_squared(kernel: np.ndarray, channel_axes: Sequence[int]) -> float:
    """a² = mean over output channels of max|W_c|² (the squared symmetric range)."""
    w = np.abs(np.asarray(kernel))
    amax = np.max(w, axis=reduce_axes(w.ndim, channel_axes))
    return float(np.mean(np.square(amax)))


def gradient_sensitivities(
    model: keras.Model, variables: Mapping[str, tf.Variable], x: np.ndarray, y: np.ndarray, *,
    from_logits: bool, batch_size: int = 128, batches: int = 4, seed: int = 0,
) -> dict[str, float]:
    """F_l = mean over ``batches`` random batches of Σ (∂L/∂w)² of each named variable.

    L = sparse categorical cross-entropy of ``model`` (inference mode: no range updates, no
    dropout) on the batch; gradients reach a QAT model's latent float kernels through the
    fake quant's straight-through estimator.
    """
    rng = np.random.default_rng(seed)
    names = list(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    total = dict.fromkeys(names, 0.0)
    for _ in range(batches):
        idx = np.sort(rng.choice(len(x), size=min(batch_size, len(x)), replace=False))
        with tf.GradientTape() as tape:
            loss = loss_fn(y[idx], model(x[idx], training=False))
        grads = tape.gradient(loss, [variables[n] for n in names])
        for n, g in zip(names, grads):
            total[n] += 0.0 if g is None else float(tf.reduce_sum(tf.square(g)))
    return {n: v / batches for n, v in total.items()}


def allocate(params: Mapping[str, int], fisher: Mapping[str, float], amax_sq: Mapping[str, float],
             budget: float) -> Allocation:
    """:func:`solve_allocation` on Ω_l(b) = F_l Δ_l(b)²/24."""
    return solve_allocation(params, cost_table(fisher, amax_sq), budget)


def oneshot_allocation(float_model: keras.Model, x: np.ndarray, y: np.ndarray, budget: float, *,
                       from_logits: bool, seed: int = 0, batches: int = 8) -> Allocation:
    """One allocation from the float model's gradient sensitivities (HAWQ-style, before QAT)."""
    found = {layer.name: kernel_of(layer) for layer in float_model.layers}
    found = {n: f for n, f in found.items() if f is not None}
    fisher = gradient_sensitivities(float_model, {n: f[0] for n, f in found.items()}, x, y,
                                    from_logits=from_logits, batches=batches, seed=seed)
    params = {n: int(np.prod(f[0].shape)) for n, f in found.items()}
    amax = {n: amax_squared(f[0].numpy(), f[1]) for n, f in found.items()}
    return allocate(params, fisher, amax, budget)


class QBitOptCallback(keras.callbacks.Callback):
    """Re-allocates the QAT model's per-layer weight bits during training (QBitOpt).

    Every ``probe_every`` steps: F_l <- decay·F_l + (1-decay)·Σ(∂L/∂w)² on one random
    training batch (bias-corrected EMA). Every ``resolve_every`` steps up to
    ``freeze_fraction`` of ``total_steps``: solve the exact budget problem and, if the
    allocation changed, set the fake quants' bits and re-trace the training step. After the
    freeze point the allocation stays. ``history`` lists every solve (step, bits, mean).

    Args:
      qat_model: The QAT model (its kernels already at the starting allocation).
      x, y: Training data to probe gradients on.
      budget: Average bits B.
      total_steps: Steps of the whole fine-tune.
      from_logits: The loss takes logits.
      resolve_every, probe_every: In steps (defaults: total/8 and total/40, >= 1).
      freeze_fraction: Fraction of the steps after which the allocation is frozen.
      seed: Seed of the probe batches.
    """

    def __init__(self, qat_model: keras.Model, x: np.ndarray, y: np.ndarray, *, budget: float,
                 total_steps: int, from_logits: bool, resolve_every: int | None = None,
                 probe_every: int | None = None, freeze_fraction: float = 0.8, decay: float = 0.9,
                 batch_size: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.kernels = quantized_kernels(qat_model)
        self.x, self.y = np.asarray(x, np.float32), np.asarray(y)
        self.budget, self.from_logits = budget, from_logits
        self.resolve_every = resolve_every or max(1, total_steps // 8)
        self.probe_every = probe_every or max(1, total_steps // 40)
        self.freeze_step = int(freeze_fraction * total_steps)
        self.decay, self.batch_size = decay, batch_size
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.probes = 0
        self.fisher = {k.name: 0.0 for k in self.kernels}
        self.history: list[dict[str, Any]] = []
        self.frozen_at: int | None = None

    def _probe(self) -> None:
        f = gradient_sensitivities(self.model, {k.name: k.variable for k in self.kernels}, self.x,
                                   self.y, from_logits=self.from_logits, batch_size=self.batch_size,
                                   batches=1, seed=int(self.rng.integers(2**31)))
        for n, v in f.items():
            self.fisher[n] = self.decay * self.fisher[n] + (1 - self.decay) * v
        self.probes += 1

    def solve(self) -> Allocation:
        """The allocation for the current (bias-corrected) sensitivities and kernels."""
        scale = 1.0 / (1.0 - self.decay ** max(1, self.probes))
        fisher = {n: v * scale for n, v in self.fisher.items()}
        params = {k.name: k.params for k in self.kernels}
        amax = {k.name: amax_squared(k.variable.numpy(), k.channel_axes) for k in self.kernels}
        return allocate(params, fisher, amax, self.budget)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.step += 1
        if self.step % self.probe_every == 0:
            self._probe()
        if self.step > self.freeze_step:
            if self.frozen_at is None:
                self.frozen_at = self.step
            return
        if self.step % self.resolve_every == 0 and self.probes:
            alloc = self.solve()
            changed = set_layer_bits(self.model, alloc.bits)
            self.history.append({"step": self.step, "bits": dict(alloc.bits),
                                 "mean_bits": alloc.mean_bits, "changed": changed})
            if changed:
                self.model.make_train_function(force=True)


def start_allocation(qat_model: keras.Model, budget: float) -> Allocation:
    """QBitOpt's start: uniform B bits, or (fractional B) the allocation with equal F_l."""
    kernels = quantized_kernels(qat_model)
    params = {k.name: k.params for k in kernels}
    if float(budget).is_integer():
        return uniform_allocation(params, budget)
    amax = {k.name: amax_squared(k.variable.numpy(), k.channel_axes) for k in kernels}
    return allocate(params, dict.fromkeys(params, 1.0), amax, budget)


class BitAllocationPlan:
    """What :func:`tfquant.qat.run_qat` does with ``bit_budget`` / ``bit_allocation``.

    ``prepare(...)`` is :func:`~tfquant.qat.pipeline.train_qat`'s hook: it sets the starting
    allocation on the fresh QAT model and returns the QBitOpt callback (``qbitopt`` only);
    ``record_fields`` gives the :class:`~tfquant.qat.QatRecord` fields of the run.

    Raises:
      TfquantError: an unknown allocation, a budget outside [2, 8], ``fixed`` with a
        fractional budget.
    """

    annotation_bits = 4  # any b < 8 selects the n-bit scheme whose fake quants we re-bit

    def __init__(self, budget: float, allocation: "BitAllocation | str", *, seed: int = 0) -> None:
        from tfquant.algorithms.bit_budget import check_budget

        self.budget = check_budget(budget)
        self.allocation = BitAllocation.parse(allocation)
        if self.allocation is BitAllocation.FIXED:
            uniform_allocation({"any": 1}, self.budget)  # validates: a whole bit width
        self.seed = seed
        self.callback: QBitOptCallback | None = None
        self.initial: Allocation | None = None

    @property
    def name(self) -> str:
        return self.allocation.value

    def prepare(self, float_model: keras.Model, x: np.ndarray, y: np.ndarray, total_steps: int):
        """The ``prepare`` hook of :func:`~tfquant.qat.pipeline.train_qat`."""

        def hook(qat_model: keras.Model, from_logits: bool) -> list[keras.callbacks.Callback]:
            kernels = quantized_kernels(qat_model)
            if not kernels:
                raise TfquantError(
                    f"model {qat_model.name!r} has no Conv/Dense kernel with a weight fake quant; "
                    "--bit_budget needs at least one")
            params = {k.name: k.params for k in kernels}
            if self.allocation is BitAllocation.FIXED:
                self.initial = uniform_allocation(params, self.budget)
            elif self.allocation is BitAllocation.ONESHOT:
                alloc = oneshot_allocation(float_model, np.asarray(x, np.float32), np.asarray(y),
                                           self.budget, from_logits=from_logits, seed=self.seed)
                missing = set(params) - set(alloc.bits)
                if missing:
                    raise TfquantError(f"no float kernel for QAT layer(s) {sorted(missing)}")
                self.initial = alloc
            else:
                self.initial = start_allocation(qat_model, self.budget)
            set_layer_bits(qat_model, self.initial.bits)
            if self.allocation is not BitAllocation.QBITOPT:
                return []
            self.callback = QBitOptCallback(qat_model, x, y, budget=self.budget,
                                            total_steps=total_steps, from_logits=from_logits,
                                            seed=self.seed)
            return [self.callback]

        return hook

    def record_fields(self, qat_model: keras.Model) -> dict[str, Any]:
        """QatRecord fields: the final per-layer bits, their mean, QBitOpt's history."""
        kernels = quantized_kernels(qat_model)
        bits = {k.name: int(k.quantizer.num_bits) for k in kernels}
        params = {k.name: k.params for k in kernels}
        mean = sum(bits[n] * params[n] for n in bits) / sum(params.values())
        history = None
        if self.callback is not None:
            history = tuple([{"step": 0, "bits": dict(self.initial.bits),
                              "mean_bits": self.initial.mean_bits, "changed": True},
                             *self.callback.history])
        return {"bit_budget": self.budget, "bit_allocation": self.name, "layer_bits": bits,
                "layer_params": params, "mean_weight_bits": mean, "allocation_history": history,
                "weight_bits": max(bits.values())}
