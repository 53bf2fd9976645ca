"""Which kernel a Keras layer has, and which of its axes are output channels: the one source.

Output channels are what a per-channel weight scale runs over (TFLite: one scale per output
channel, Krishnamoorthi 2018, arXiv 1806.08342, Sec. 2.2). Keras stores the kernels as

==================================  ======================  ==============  ================
layer (``isinstance``)              kernel attribute        shape           channel axes
==================================  ======================  ==============  ================
Dense                               ``kernel``              (in, out)       (-1,)
Conv1D / Conv2D / Conv3D            ``kernel``              (..., in, out)  (-1,)
DepthwiseConv2D                     ``depthwise_kernel``    (kh, kw, C, M)  (2, 3): channel
                                                                            c·M + m, TFLite's
                                                                            (1, kh, kw, C·M)
                                                                            axis 3
Conv1D/2D/3DTranspose               ``kernel``              (..., out, in)  (-2,)
SeparableConv1D/2D                  (two kernels)           --              None
==================================  ======================  ==============  ================

Separable convolutions have a depthwise and a pointwise kernel and no single "kernel", so
:func:`layer_kernel` returns None for them (TFLite itself splits them into DEPTHWISE_CONV_2D +
CONV_2D); so it does for wrappers, unbuilt layers and layers without a kernel.

The same channels in a converted .tflite (axis 0 of CONV_2D / FULLY_CONNECTED /
TRANSPOSE_CONV weights, axis 3 of DEPTHWISE_CONV_2D's) are
:data:`tfquant.tflite.flatbuffer.WEIGHT_CHANNEL_AXIS`, the flatbuffer side of this table.

Each user decides *which* kinds it quantizes (the simulation leaves transposed convolutions
float, QAT registers exact classes): they filter on :attr:`KernelInfo.kind`, never on their
own axis table.
"""

from __future__ import annotations

import dataclasses
import enum

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

L = keras.layers


class KernelKind(str, enum.Enum):
    """The layout of a kernel (the values are QAT's ``kernel_layout`` strings)."""

    CONV = "conv"  # (..., in, out)
    DEPTHWISE = "depthwise"  # (kh, kw, C, M)
    DENSE = "dense"  # (in, out)
    TRANSPOSE = "transpose"  # (..., out, in)


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Where a layer class keeps its kernel and which kernel axes are output channels.

    Attributes:
      attr: Attribute holding the kernel variable (``kernel``, ``depthwise_kernel``).
      kind: The kernel's layout.
      channel_axes: Output-channel axes of the kernel (negative = from the end); the output
        channel index is the row-major flattening of these axes.
      regularizer_attr: Attribute of the kernel's regularizer.
    """

    attr: str
    kind: KernelKind
    channel_axes: tuple[int, ...]
    regularizer_attr: str


_DEPTHWISE = KernelLayout("depthwise_kernel", KernelKind.DEPTHWISE, (2, 3), "depthwise_regularizer")
_TRANSPOSE = KernelLayout("kernel", KernelKind.TRANSPOSE, (-2,), "kernel_regularizer")
_CONV = KernelLayout("kernel", KernelKind.CONV, (-1,), "kernel_regularizer")
_DENSE = KernelLayout("kernel", KernelKind.DENSE, (-1,), "kernel_regularizer")


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    """The kernel of one built layer (see :func:`layer_kernel`).

    Attributes:
      variable: The kernel variable.
      layout: Its :class:`KernelLayout`.
    """

    variable: tf.Variable
    layout: KernelLayout

    @property
    def kind(self) -> KernelKind:
        return self.layout.kind

    @property
    def channel_axes(self) -> tuple[int, ...]:
        return self.layout.channel_axes


# Most specific first: DepthwiseConv2D and Conv*Transpose subclass Conv2D in tf-keras, and
# SeparableConv* subclass Conv.
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_PLAIN_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)


def kernel_layout(layer_class: type) -> KernelLayout | None:
    """The :class:`KernelLayout` of layers of ``layer_class`` (subclasses included), or None."""
    if not isinstance(layer_class, type):
        return None
    if issubclass(layer_class, L.DepthwiseConv2D):
        return _DEPTHWISE
    if issubclass(layer_class, _TRANSPOSED):
        return _TRANSPOSE
    if issubclass(layer_class, _SEPARABLE):
        return None
    if issubclass(layer_class, _PLAIN_CONV):
        return _CONV
    if issubclass(layer_class, L.Dense):
        return _DENSE
    return None


def layer_kernel(layer: object) -> KernelInfo | None:
    """The kernel of a built ``layer`` and its output-channel axes, or None.

    None for unbuilt layers, separable convolutions, wrappers and layers without a kernel
    (see the module docstring for the table).
    """
    layout = kernel_layout(type(layer))
    if layout is None or not getattr(layer, "built", False):
        return None
    return KernelInfo(variable=getattr(layer, layout.attr), layout=layout)


def activation_channel_axis(layer: keras.layers.Layer) -> int:
    """The positive axis of ``layer``'s *output* that holds its output channels.

    Dense: the last axis; convolutions: 1 with ``data_format="channels_first"``, else the
    last. (A BatchNormalization folds into the layer only when its ``axis`` is this one.)
    """
    rank = len(layer.output_shape)
    if isinstance(layer, L.Dense):
        return rank - 1
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else rank - 1
