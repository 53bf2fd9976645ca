"""Quantization-Guided Training (QGT; arXiv 2103.06231): a regulariser toward the b-bit grid.

The paper's claims: a regulariser during training pushes weights toward a distribution that
survives low-bit quantization, and the per-layer regularisation terms reveal "compression
bottlenecks". Its exact regulariser is not available to us; the form used here is OUR
RECONSTRUCTION (docs/methods.md, Sec. 5), the normalised distance to the symmetric b-bit grid:

    R_l = mean((W_l - Q_b(W_l))²) / Δ_l²,      loss = task loss + λ(t) · Σ_l R_l,

with Q_b the round-to-grid of :func:`tfquant.algorithms.weight_grid.round_to_grid`
(symmetric, narrow range, Δ = max|w| / (2^(b-1) - 1) per output channel, as TFLite int8
weights), Δ held constant (no gradient), so dR/dW = 2 (W - Q_b(W)) / (n Δ²) pulls each
weight toward its nearest grid point; R_l lies in [0, 1/4]. λ(t) = strength · min(1,
t / ramp_steps) ramps up linearly (t = training step, kept by :class:`QGTRamp`). Finish with
hard quantization (PTQ of the regularised model, or QAT).

Two changes vs the paper's outline (issue 9; BUILD_NOTES "QGT at 2 bits: the fix"):

* ``scale="mse"``: Δ_c is the MSE-optimal step of each channel
  (:func:`tfquant.algorithms.weight_grid.mse_scale`), recomputed from the current kernel at
  every step (no gradient), instead of max|W_c|/q_max; the max-scaled ternary grid puts
  most 2-bit weights at 0.
* the finish: at the equilibrium of task loss + λR, W - Q = -(nΔ²/2λ)·g is aligned with the
  task gradient g, so rounding it away moves every weight uphill (a tiny R, a large cost).
  For the last part of training the grid is frozen (the final rounding uses exactly that
  Δ) and λ grows geometrically (``finish_*`` of :class:`QGTRegularizer`), shrinking the
  residual and its rounding cost toward 0 while the task loss still shapes the weights.

Sizes are exact bytes of packed weights (:func:`packed_size_bytes`), not 32/b.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.weight_grid import (
    check_bits,
    check_scale,
    fake_quantize_kernel,
    kernel_of,
    round_to_grid,
    weight_scale,
)
from tfquant.algorithms.packed_size import FLOAT32_BYTES, float32_size_bytes, packed_size_bytes  # noqa: F401
from tfquant.errors import TfquantError
from tfquant.models.kernels import kernel_layout


def grid_distance(
    w: tf.Tensor | np.ndarray,
    bits: int,
    *,
    per_channel: bool = True,
    channel_axes: Sequence[int] = (-1,),
    scale: str = "max",
    step: tf.Tensor | None = None,
) -> tf.Tensor:
    """R = mean((W - Q_b(W))²) / Δ², the normalised distance of ``w`` to its b-bit grid.

    With per-channel Δ the division is per channel: R = mean_i ((w_i - Q_b(w_i)) / Δ_c(i))².
    Δ = max|w| / (2^(b-1) - 1) (symmetric, narrow range) is a constant for the gradient.
    QGT regulariser, our reconstruction (arXiv 2103.06231; see the module docstring).

    Args:
        w: A kernel.
        bits: Bit width b in [2, 16].
        per_channel: One Δ per output channel, or one per tensor.
        channel_axes: Output-channel axes of ``w``: (-1,) for Conv2D / Dense, (2, 3) for
            DepthwiseConv2D (see :func:`tfquant.algorithms.weight_grid.kernel_of`).
        scale: How Δ is computed from ``w``: ``max`` or ``mse``
            (:func:`tfquant.algorithms.weight_grid.weight_scale`).
        step: A given Δ (broadcastable to ``w``; a frozen grid) instead of one from ``w``.

    Returns:
        A float32 scalar (in [0, 1/4] for weights inside the grid's range).

    Raises:
        TfquantError: If ``bits`` is not an integer in [2, 16].
    """
    check_bits(bits)
    w = tf.convert_to_tensor(w, dtype=tf.float32)
    delta = (weight_scale(w, bits, per_channel=per_channel, channel_axes=channel_axes, scale=scale)
             if step is None else tf.stop_gradient(tf.convert_to_tensor(step, tf.float32)))
    q = tf.stop_gradient(
        round_to_grid(w, bits, per_channel=per_channel, channel_axes=channel_axes, step=delta)
    )
    return tf.reduce_mean(tf.square((w - q) / delta))


def _check_strength(strength: object) -> float:
    numeric = isinstance(strength, (int, float, np.floating, np.integer))
    if isinstance(strength, bool) or not numeric or not (
        math.isfinite(float(strength)) and float(strength) >= 0.0
    ):
        raise TfquantError(f"strength must be a finite number >= 0, got {strength!r}")
    return float(strength)


def _check_ramp_steps(ramp_steps: object) -> int:
    integer = isinstance(ramp_steps, (int, np.integer)) and not isinstance(ramp_steps, bool)
    if not integer or ramp_steps < 0:
        raise TfquantError(
            f"ramp_steps must be an integer >= 0 (0 = full strength at once), got {ramp_steps!r}"
        )
    return int(ramp_steps)


@keras.utils.register_keras_serializable(package="tfquant")
class QGTRegularizer(keras.regularizers.Regularizer):
    """λ(t) · R(W): the QGT grid-distance penalty with a linearly ramped weight.

    λ(t) = strength · min(1, t / ramp_steps) (λ = strength when ``ramp_steps`` is 0); t is
    the non-trainable ``step`` variable, which :class:`QGTRamp` advances once per training
    batch. ``get_config`` stores the arguments, not t: a deserialised regulariser starts at
    t = 0.

    Finish (not in the paper; issue 9): with ``finish_start`` set, from step ``finish_start``
    on the grid is frozen (:meth:`freeze`, called by :class:`QGTRamp`: Δ = the kernel's
    scale at that step, held to the end and used for the final rounding) and λ grows
    geometrically to ``finish_factor`` x its value over ``finish_steps`` steps:

        λ(t) = strength · min(1, t / ramp_steps) · finish_factor^clip((t - finish_start) / finish_steps, 0, 1).

    At the equilibrium of task loss + λR the residual is W - Q = -(nΔ²/2λ)·g (coherent with
    the task gradient g, so rounding costs about nΔ²‖g‖²/2λ); growing λ by ``finish_factor``
    shrinks that residual, and its rounding cost, by the same factor.

    Args:
        bits: Bit width b in [2, 16] of the target grid.
        strength: Final λ, >= 0.
        ramp_steps: Steps over which λ grows from 0 to ``strength``, >= 0.
        per_channel: Per-output-channel Δ (TFLite int8 weights) or per-tensor.
        channel_axes: Output-channel axes of the kernel it regularises.
        scale: How Δ is computed from the kernel each step: ``max`` or ``mse``
            (:func:`tfquant.algorithms.weight_grid.weight_scale`).
        finish_start: Step at which the grid freezes and λ starts to grow; None: never.
        finish_steps: Steps over which λ grows by ``finish_factor`` (>= 1).
        finish_factor: Final multiplier of λ, >= 1.
        grid_shape: Shape of Δ (the kernel's shape with 1 on the reduced axes); needed for
            a finish.

    Raises:
        TfquantError: On an invalid argument, naming it.
    """

    def __init__(
        self,
        bits: int,
        strength: float,
        ramp_steps: int = 0,
        *,
        per_channel: bool = True,
        channel_axes: Sequence[int] = (-1,),
        scale: str = "max",
        finish_start: int | None = None,
        finish_steps: int = 1,
        finish_factor: float = 1.0,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        self.bits = check_bits(bits)
        self.strength = _check_strength(strength)
        self.ramp_steps = _check_ramp_steps(ramp_steps)
        self.per_channel = bool(per_channel)
        self.channel_axes = tuple(int(a) for a in channel_axes)
        self.scale = check_scale(scale)
        if finish_start is not None:
            _check_ramp_steps(finish_start)
            if grid_shape is None:
                raise TfquantError("a QGT finish (finish_start) needs grid_shape, the shape of Δ")
        if not (_check_ramp_steps(finish_steps) >= 1 and _check_strength(finish_factor) >= 1.0):
            raise TfquantError(f"finish_steps must be >= 1 and finish_factor >= 1, got "
                               f"{finish_steps!r}, {finish_factor!r}")
        self.finish_start = None if finish_start is None else int(finish_start)
        self.finish_steps, self.finish_factor = int(finish_steps), float(finish_factor)
        self.grid_shape = None if grid_shape is None else tuple(int(d) for d in grid_shape)
        self.step = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="qgt_step")
        self.frozen = tf.Variable(False, trainable=False, name="qgt_grid_frozen")
        self.grid = (None if self.grid_shape is None else
                     tf.Variable(tf.ones(self.grid_shape), trainable=False, name="qgt_grid"))

    def current_strength(self) -> tf.Tensor:
        """λ(t) at the current ``step``."""
        lam = tf.constant(self.strength, tf.float32)
        if self.ramp_steps:
            lam = lam * tf.minimum(1.0, self.step / float(self.ramp_steps))
        if self.finish_start is not None and self.finish_factor != 1.0:
            progress = tf.clip_by_value((self.step - self.finish_start) / self.finish_steps, 0.0, 1.0)
            lam = lam * tf.pow(self.finish_factor, progress)
        return lam

    def kernel_scale(self, x: tf.Tensor) -> tf.Tensor:
        """Δ of kernel ``x``: the frozen grid once :meth:`freeze` ran, else computed from ``x``."""
        delta = weight_scale(x, self.bits, per_channel=self.per_channel,
                             channel_axes=self.channel_axes, scale=self.scale)
        return delta if self.grid is None else tf.where(self.frozen, self.grid, delta)

    def freeze(self, kernel: tf.Tensor) -> None:
        """Holds Δ at ``kernel``'s current scale from now on (the final quantization's grid)."""
        if self.grid is None:
            raise TfquantError("this QGTRegularizer has no grid_shape; it cannot freeze its grid")
        self.grid.assign(tf.reshape(weight_scale(
            kernel, self.bits, per_channel=self.per_channel, channel_axes=self.channel_axes,
            scale=self.scale), self.grid_shape))
        self.frozen.assign(True)

    def frozen_grid(self) -> np.ndarray | None:
        """The frozen Δ (shape ``grid_shape``), or None before :meth:`freeze`."""
        return self.grid.numpy() if self.grid is not None and bool(self.frozen.numpy()) else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.current_strength() * grid_distance(
            x, self.bits, per_channel=self.per_channel, channel_axes=self.channel_axes,
            step=self.kernel_scale(x),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "strength": self.strength,
            "ramp_steps": self.ramp_steps,
            "per_channel": self.per_channel,
            "channel_axes": list(self.channel_axes),
            "scale": self.scale,
            "finish_start": self.finish_start,
            "finish_steps": self.finish_steps,
            "finish_factor": self.finish_factor,
            "grid_shape": None if self.grid_shape is None else list(self.grid_shape),
        }


def _regularizer_attr(layer: keras.layers.Layer) -> str:
    return kernel_layout(type(layer)).regularizer_attr


def regularized_kernels(model: keras.Model) -> dict[str, tuple[QGTRegularizer, tf.Variable]]:
    """``{layer name: (its QGTRegularizer, its kernel)}`` for every regularised layer of ``model``."""
    found: dict[str, tuple[QGTRegularizer, tf.Variable]] = {}
    for module in (model, *model.submodules):
        if isinstance(module, keras.layers.Layer) and kernel_of(module) is not None:
            reg = getattr(module, _regularizer_attr(module), None)
            if isinstance(reg, QGTRegularizer):
                found[module.name] = (reg, kernel_of(module)[0])
    return found


def qgt_regularizers(model: keras.Model) -> list[QGTRegularizer]:
    """Every distinct :class:`QGTRegularizer` on a kernel of ``model`` (nested models too)."""
    found = {id(reg): reg for reg, _ in regularized_kernels(model).values()}
    return list(found.values())


class QGTRamp(keras.callbacks.Callback):
    """Advances the ``step`` of every :class:`QGTRegularizer` in the model once per batch.

    The regularisers see t = ``initial_step`` + number of training batches this callback
    has seen (across ``fit`` calls). With ``steps_per_execution`` > 1 Keras calls batch hooks
    once per execution, so t counts executions.

    Args:
        initial_step: t at the first batch (to resume a ramp).

    Raises:
        TfquantError: At the start of training if the model has no QGTRegularizer
            (apply :func:`apply_qgt` first).
    """

    def __init__(self, *, initial_step: int = 0) -> None:
        super().__init__()
        if isinstance(initial_step, bool) or not isinstance(initial_step, int) or initial_step < 0:
            raise TfquantError(f"initial_step must be an integer >= 0, got {initial_step!r}")
        self.step = initial_step
        self._regularizers: list[QGTRegularizer] = []
        self._kernels: list[tuple[QGTRegularizer, tf.Variable]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._kernels = list(regularized_kernels(self.model).values())
        self._regularizers = qgt_regularizers(self.model)
        if not self._regularizers:
            raise TfquantError(
                f"QGTRamp found no QGTRegularizer in model {self.model.name!r}; build the "
                "model with tfquant.algorithms.apply_qgt(model, bits, strength, ramp_steps)"
            )

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        for reg in self._regularizers:
            reg.step.assign(float(self.step))
        for reg, kernel in self._kernels:
            if reg.finish_start is not None and self.step >= reg.finish_start and not bool(reg.frozen.numpy()):
                reg.freeze(kernel)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1


def _kernel_layers(model: keras.Model, layers: Iterable[str] | None) -> list[keras.layers.Layer]:
    candidates = [layer for layer in model.layers if kernel_of(layer) is not None]
    if layers is None:
        return candidates
    wanted = list(layers)
    by_name = {layer.name: layer for layer in candidates}
    all_names = {layer.name for layer in model.layers}
    unknown = [n for n in wanted if n not in all_names]
    if unknown:
        raise TfquantError(
            f"unknown layer(s) {unknown} in model {model.name!r}; layers with kernels: "
            f"{', '.join(by_name) or 'none'}"
        )
    no_kernel = [n for n in wanted if n not in by_name]
    if no_kernel:
        raise TfquantError(
            f"layer(s) {no_kernel} have no Conv/Dense kernel to quantize; choose from: "
            f"{', '.join(by_name) or 'none'}"
        )
    return [by_name[n] for n in wanted]


def apply_qgt(
    model: keras.Model,
    bits: int,
    strength: float,
    ramp_steps: int,
    layers: Iterable[str] | None = None,
    *,
    per_channel: bool = True,
    scale: str = "max",
    finish_start: int | None = None,
    finish_steps: int = 1,
    finish_factor: float = 1.0,
) -> keras.Model:
    """A clone of ``model`` whose Conv/Dense kernels carry a :class:`QGTRegularizer`.

    Each target layer (every Dense / Conv1D-3D / DepthwiseConv2D / Conv*Transpose of the
    top-level model by default) gets its own regulariser with the kernel's output-channel
    axes, replacing any kernel regulariser it had; weights are copied. Compile the clone and
    pass a :class:`QGTRamp` callback to ``fit`` so λ ramps; Keras adds λ(t)·Σ_l R_l to the loss.
    Layers inside nested models are not regularised.

    Args:
        model: A functional or Sequential tf-keras model.
        bits: Target bit width in [2, 16].
        strength: Final λ, >= 0.
        ramp_steps: Steps for λ to reach ``strength`` (0: at once).
        layers: Names of the layers to regularise; None for all layers with kernels.
        per_channel: Per-output-channel Δ, or per-tensor.
        scale, finish_start, finish_steps, finish_factor: As :class:`QGTRegularizer`.

    Returns:
        An uncompiled clone.

    Raises:
        TfquantError: On invalid arguments, an unknown layer name, a named layer without a
            kernel, or a subclassed model.
    """
    check_bits(bits)
    _check_strength(strength)
    _check_ramp_steps(ramp_steps)
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise TfquantError(
            f"model {model.name!r} ({type(model).__name__}) is subclassed; apply_qgt needs a "
            "functional or Sequential tf-keras model (it clones the model)"
        )
    targets = {layer.name for layer in _kernel_layers(model, layers)}

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in targets:
            kernel, channel_axes = kernel_of(layer)
            shape = tuple(weight_scale(kernel, bits, per_channel=per_channel,
                                       channel_axes=channel_axes).shape)
            config[_regularizer_attr(layer)] = QGTRegularizer(
                bits, strength, ramp_steps, per_channel=per_channel, channel_axes=channel_axes,
                scale=scale, finish_start=finish_start, finish_steps=finish_steps,
                finish_factor=finish_factor, grid_shape=shape,
            )
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    source = {layer.name: layer for layer in model.layers}
    for layer in clone.layers:
        layer.set_weights(source[layer.name].get_weights())
    return clone


def _step(grid: Mapping[str, Any] | None, name: str) -> np.ndarray | None:
    """A layer's given Δ (a frozen QGT grid, ``{layer: Δ}``), or None: compute it by ``scale``."""
    return np.asarray(grid[name], np.float32) if grid and name in grid else None


def _rounded(w: np.ndarray, bits: int, per_channel: bool, axes: Sequence[int], scale: str,
             step: np.ndarray | None) -> np.ndarray:
    if step is None:
        return fake_quantize_kernel(w, bits, per_channel=per_channel, channel_axes=axes, scale=scale)
    return round_to_grid(w, bits, channel_axes=axes, step=step).numpy().astype(w.dtype)


def layer_residuals(model: keras.Model, bits: int, *, per_channel: bool = True,
                    scale: str = "max", grid: Mapping[str, Any] | None = None) -> dict[str, float]:
    """R_l (:func:`grid_distance`, Δ by ``scale`` or ``grid[layer]``) of every top-level layer with a kernel."""
    check_bits(bits)
    out = {}
    for layer in _kernel_layers(model, None):
        kernel, channel_axes = kernel_of(layer)
        out[layer.name] = float(
            grid_distance(kernel, bits, per_channel=per_channel, channel_axes=channel_axes, scale=scale,
                          step=_step(grid, layer.name))
        )
    return out


@dataclasses.dataclass(frozen=True)
class LayerBottleneck:
    """One row of :func:`bottleneck_report`.

    Attributes:
        name: Layer name.
        params: Number of kernel elements (what gets quantized).
        residual: Grid distance R_l of the kernel at the report's bits, in [0, 1/4].
        metric: ``eval_fn`` with only this layer's kernel fake-quantized.
        degradation: How much worse ``metric`` is than the float baseline (positive =
            worse; baseline - metric when higher is better, metric - baseline otherwise).
    """

    name: str
    params: int
    residual: float
    metric: float
    degradation: float


def _evaluate(eval_fn: Callable[[keras.Model], float], model: keras.Model) -> float:
    value = eval_fn(model)
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = math.nan
    if not math.isfinite(result):
        raise TfquantError(f"eval_fn returned {value!r}; it must return a finite float")
    return result


def bottleneck_report(
    model: keras.Model,
    bits: int,
    eval_fn: Callable[[keras.Model], float],
    *,
    per_channel: bool = True,
    higher_is_better: bool = True,
    layers: Iterable[str] | None = None,
    scale: str = "max",
    grid: Mapping[str, Any] | None = None,
) -> list[LayerBottleneck]:
    """Per-layer compression bottlenecks: grid residual and single-layer quantization cost.

    For each layer with a kernel, only that kernel is fake-quantized to ``bits`` (symmetric,
    narrow range, :func:`tfquant.numerics.fake_quantize`) and ``eval_fn(model)`` is
    compared with the float baseline; the kernel is restored afterwards, also on error.
    QGT's bottleneck idea (arXiv 2103.06231); the single-layer sensitivity ranking is the
    one NVIDIA's workflow uses for partial quantization (Wu et al. 2020, arXiv 2004.09602).

    Args:
        model: The model; its weights are changed temporarily.
        bits: Bit width in [2, 16].
        eval_fn: ``model -> float`` (accuracy, or a loss with ``higher_is_better=False``).
        per_channel: Per-output-channel scales, or per-tensor.
        higher_is_better: Whether a larger ``eval_fn`` value is better.
        layers: Layer names to report; None for every top-level layer with a kernel.
        scale: How each kernel's Δ is chosen (``max`` or ``mse``); ``grid``: given Δ per layer.

    Returns:
        Rows sorted by ``degradation``, worst first (ties by name).

    Raises:
        TfquantError: For invalid bits, unknown layers, or a non-finite ``eval_fn`` value.
    """
    check_bits(bits)
    targets = _kernel_layers(model, layers)
    baseline = _evaluate(eval_fn, model)
    rows = []
    for layer in targets:
        kernel, channel_axes = kernel_of(layer)
        original = kernel.numpy()
        residual = float(
            grid_distance(original, bits, per_channel=per_channel, channel_axes=channel_axes,
                          scale=scale, step=_step(grid, layer.name))
        )
        kernel.assign(_rounded(original, bits, per_channel, channel_axes, scale, _step(grid, layer.name)))
        try:
            metric = _evaluate(eval_fn, model)
        finally:
            kernel.assign(original)
        degradation = baseline - metric if higher_is_better else metric - baseline
        rows.append(
            LayerBottleneck(
                name=layer.name, params=int(original.size), residual=residual,
                metric=metric, degradation=degradation,
            )
        )
    return sorted(rows, key=lambda r: (-r.degradation, r.name))


def rounding_output_error(
    model: keras.Model, bits: int, x: np.ndarray, *, per_channel: bool = True, seed: int = 0,
    scale: str = "max", grid: Mapping[str, Any] | None = None,
) -> dict[str, tuple[float, float]]:
    """Per layer: what rounding its kernel does to its output, coherent vs random.

    With E = W - Q_b(W) and the layer's linear part y = op(x_l, W) (no bias, no activation;
    x_l = the layer's input on ``x`` in the float model): ``coherent`` = ||op(x_l, E)|| /
    ||op(x_l, W)||, and ``random`` = the same with each element of E given a random sign
    (S ∘ E, same per-weight magnitudes). R = mean(E²)/Δ² only sees |E|; a network trained to
    an equilibrium of task loss + λR keeps E proportional to minus its task gradient, so
    ``coherent`` >> ``random``: a tiny R can still cost a lot (issue 9; BUILD_NOTES).

    Returns:
      ``{layer: (coherent, random)}`` for every top-level layer with a kernel.
    """
    check_bits(bits)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, float]] = {}
    for layer in _kernel_layers(model, None):
        kernel, axes = kernel_of(layer)
        config = layer.get_config()
        config.update(use_bias=False, activation="linear", name=f"{layer.name}_linear")
        for key in [k for k in config if k.endswith("regularizer") or k.endswith("constraint")]:
            config[key] = None
        linear = layer.__class__.from_config(config)
        x_l = keras.Model(model.inputs, layer.input)(x, training=False)
        linear.build(x_l.shape)
        target, _ = kernel_of(linear)
        w = kernel.numpy()
        e = w - _rounded(w, bits, per_channel, axes, scale, _step(grid, layer.name))
        signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=e.shape)

        def norm(value: np.ndarray) -> float:
            target.assign(value)
            return float(tf.norm(linear(x_l)))

        base = norm(w)
        out[layer.name] = (norm(e) / base, norm(e * signs) / base) if base > 0 else (0.0, 0.0)
    return out


def bottleneck_fields(model: keras.Model, bits: int, eval_fn: Callable[[keras.Model], float],
                      x: np.ndarray | None = None, *, scale: str = "max",
                      grid: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`bottleneck_report` as record fields: ``layers`` in layer order, each with its
    ``rank`` (1 = the bottleneck), ``residual``, ``accuracy``, ``loss_pt`` and ``params``
    (with ``x``: also ``output_error`` / ``output_error_random``, :func:`rounding_output_error`);
    ``residual_sum``; and the float ``baseline_accuracy`` the losses are against."""
    errors = rounding_output_error(model, bits, x, scale=scale, grid=grid) if x is not None else {}
    report = bottleneck_report(model, bits, eval_fn, scale=scale, grid=grid)
    rank = {row.name: i + 1 for i, row in enumerate(report)}
    by_name = {row.name: row for row in report}
    rows = [
        {"layer": name, "params": by_name[name].params, "residual": by_name[name].residual,
         "accuracy": by_name[name].metric, "loss_pt": 100.0 * by_name[name].degradation,
         "rank": rank[name],
         **({"output_error": errors[name][0], "output_error_random": errors[name][1]}
            if name in errors else {})}
        for name in layer_residuals(model, bits, scale=scale, grid=grid)
    ]
    return {"baseline_accuracy": report[0].metric + report[0].degradation,
            "residual_sum": sum(r["residual"] for r in rows), "layers": rows}


def residual_text(residual: float) -> str:
    """A grid residual R: 4 decimals, or 2 significant digits below 0.001 (QGT drives R to ~0)."""
    return f"{residual:.4f}" if residual >= 1e-3 or residual == 0 else f"{residual:.1e}"


def bottleneck_summary(before: Mapping[str, Any], after: Mapping[str, Any] | None) -> str:
    """One sentence on a model x bits' bottlenecks: worst layer alone, largest R, before/after.

    ``before`` and ``after`` are :func:`bottleneck_fields` of the trained and the QGT model.
    The bottleneck is the layer whose quantization alone costs the most accuracy
    (rank 1); whether it is also the layer with the largest residual R says whether R
    alone would have found it.
    """

    def describe(report: Mapping[str, Any], when: str) -> str:
        rows = report["layers"]
        worst = min(rows, key=lambda r: r["rank"])
        top_r = max(rows, key=lambda r: (r["residual"], r["layer"]))
        same = ("which is also the layer with the largest R" if top_r["layer"] == worst["layer"]
                else f"while the largest R is in {top_r['layer']} ({residual_text(top_r['residual'])})")
        return (f"{when} the bottleneck is {worst['layer']} ({worst['loss_pt']:+.2f} pt alone, "
                f"R {residual_text(worst['residual'])}), {same}")

    text = describe(before, "Trained:")
    if after is not None:
        text += "; " + describe(after, "after QGT").replace("after QGT the", "after QGT, the", 1)
    return text + "."
