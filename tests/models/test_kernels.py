"""layer_kernel: every kernel's channel axes are the axes its output channels come from."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

from tf_keras import layers

from tfquant.algorithms import kernel_of
from tfquant.models.kernels import KernelKind, activation_channel_axis, kernel_layout, layer_kernel
from tfquant.simulation import weights as sim_weights

# (layer, input shape without batch, kind): one of each kernel-carrying kind, in != out channels.
CASES = [
    (lambda: layers.Dense(5, use_bias=False), (3,), KernelKind.DENSE),
    (lambda: layers.Conv1D(5, 2, use_bias=False), (4, 3), KernelKind.CONV),
    (lambda: layers.Conv2D(5, 2, use_bias=False), (4, 4, 3), KernelKind.CONV),
    (lambda: layers.Conv3D(5, 2, use_bias=False), (3, 3, 3, 3), KernelKind.CONV),
    (lambda: layers.DepthwiseConv2D(2, depth_multiplier=2, use_bias=False), (4, 4, 3), KernelKind.DEPTHWISE),
    (lambda: layers.Conv1DTranspose(5, 2, use_bias=False), (4, 3), KernelKind.TRANSPOSE),
    (lambda: layers.Conv2DTranspose(5, 2, use_bias=False), (4, 4, 3), KernelKind.TRANSPOSE),
    (lambda: layers.Conv3DTranspose(5, 2, use_bias=False), (3, 3, 3, 3), KernelKind.TRANSPOSE),
]


@pytest.mark.parametrize("make, shape, kind", CASES, ids=lambda v: getattr(v, "value", None))
def test_channel_axes_select_exactly_one_output_channel(make, shape, kind) -> None:
    layer = make()
    layer.build((None, *shape))
    info = layer_kernel(layer)
    assert info is not None and info.kind is kind
    kernel = info.variable.numpy()
    rank = kernel.ndim
    axes = [a % rank for a in info.channel_axes]
    channel_shape = [kernel.shape[a] for a in axes]
    x = np.ones((1, *shape), np.float32)
    out_channels = layer(x).shape[-1]
    assert int(np.prod(channel_shape)) == out_channels
    for k in range(out_channels):
        # A kernel that is 1 on flattened output channel k (row-major over the channel axes)
        # and 0 elsewhere must give an output that is non-zero on channel k only.
        index = np.unravel_index(k, channel_shape)
        w = np.zeros_like(kernel)
        slicer = [slice(None)] * rank
        for a, i in zip(axes, index):
            slicer[a] = i
        w[tuple(slicer)] = 1.0
        layer.set_weights([w])
        y = np.asarray(layer(x)).reshape(-1, out_channels)
        nonzero = np.flatnonzero(np.abs(y).sum(axis=0))
        np.testing.assert_array_equal(nonzero, [k])


def test_layers_without_a_single_kernel_have_none() -> None:
    sep = layers.SeparableConv2D(3, 1)
    sep.build((None, 5, 5, 2))
    bn = layers.BatchNormalization()
    bn.build((None, 3))
    assert layer_kernel(sep) is None
    assert layer_kernel(bn) is None
    assert layer_kernel(layers.Dense(3)) is None  # not built
    assert layer_kernel("not a layer") is None
    assert kernel_layout(layers.SeparableConv1D) is None


def test_regularizer_attribute_exists_on_the_layer() -> None:
    for make, shape, _ in CASES:
        layer = make()
        layout = kernel_layout(type(layer))
        assert hasattr(layer, layout.regularizer_attr), (type(layer).__name__, layout)
        assert hasattr(layer, layout.attr) is False or layout.attr  # attr set once built
        layer.build((None, *shape))
        assert getattr(layer, layout.attr) is layer_kernel(layer).variable


def test_every_user_agrees_with_layer_kernel() -> None:
    """The algorithms' pair view and the simulation's index view are the same knowledge."""
    for make, shape, kind in CASES:
        layer = make()
        layer.build((None, *shape))
        info = layer_kernel(layer)
        variable, axes = kernel_of(layer)
        assert variable is info.variable and axes == info.channel_axes
        sim = sim_weights.quantized_kernel_index(layer)
        if kind is KernelKind.TRANSPOSE:
            assert sim is None  # the simulation leaves transposed convolutions float
        else:
            assert layer.get_weights()[sim[0]].shape == info.variable.shape and sim[1] == axes


def test_qat_registry_takes_its_kernel_layouts_from_layer_kernel() -> None:
    from tfquant.qat import registry

    for cls, (attr, layout) in registry._WEIGHT_LAYERS.items():  # noqa: SLF001
        assert (attr, layout) == (kernel_layout(cls).attr, kernel_layout(cls).kind.value)
    assert registry._WEIGHT_LAYERS[layers.DepthwiseConv2D] == ("depthwise_kernel", "depthwise")  # noqa: SLF001


@pytest.mark.parametrize(
    "layer, shape, axis",
    [
        (layers.Dense(4), (None, 3), 1),
        (layers.Conv2D(4, 1), (None, 5, 5, 3), 3),
        (layers.Conv2D(4, 1, data_format="channels_first"), (None, 3, 5, 5), 1),
    ],
)
def test_activation_channel_axis(layer, shape, axis) -> None:
    from tf_keras import Input, Model

    inp = Input(batch_shape=shape)
    Model(inp, layer(inp))
    assert activation_channel_axis(layer) == axis
