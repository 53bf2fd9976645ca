"""The input contract: how an image in [0, 1] becomes what the model expects.

Every dataset source delivers images scaled to [0, 1] (``npz`` arrays are taken as already
scaled). A model may expect something else: keras.applications MobileNetV2 wants [-1, 1],
ResNet50 wants Caffe-style BGR with the ImageNet mean subtracted in 0..255 units,
EfficientNet rescales inside the model and wants raw 0..255 pixels. The contract states it
as data::

    x_model[..., c] = (x01[..., order][..., c] - mean[c]) / std[c]

with ``order`` the identity for ``rgb`` and the channel reversal for ``bgr``, and ``mean`` /
``std`` given per *model* channel (after the reordering) in [0, 1] units. The presets are
keras.applications' ``imagenet_utils.preprocess_input`` modes written in that form
(tf-keras 2.21, ``tf_keras/src/applications/imagenet_utils.py``):

=============  =====================================  ==========================================
preset         keras.applications families            contract (x01 in [0, 1])
=============  =====================================  ==========================================
``none``       (no preprocessing; the default)        x01
``tf``         MobileNet, MobileNetV2, InceptionV3,   (x01 - 0.5) / 0.5, i.e. [-1, 1]
               InceptionResNetV2, Xception, NASNet,
               ResNetV2
``caffe``      ResNet50/101/152, VGG16/19             BGR, (x01 - m/255) / (1/255),
                                                      m = (103.939, 116.779, 123.68)
``torch``      DenseNet                               (x01 - (0.485, 0.456, 0.406))
                                                      / (0.229, 0.224, 0.225)
``raw255``     EfficientNet(V2), MobileNetV3,         x01 · 255: these models rescale inside
               ConvNeXt, RegNet, ResNetRS             (their preprocess_input is a pass-through)
=============  =====================================  ==========================================

Family names (``mobilenet_v2``, ``resnet50``, ``densenet``, ``efficientnet``, ...) are
accepted as aliases of their preset (:data:`PRESET_ALIASES`). The recipe records the
contract (:class:`tfquant.recipes.Recipe` field ``input``); calibration, QAT and evaluation
apply it, and ``evaluate`` applies the one recorded in a model unless told otherwise.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from tfquant.dataclass_json import from_json_dict
from tfquant.errors import TfquantError

CHANNEL_ORDERS = ("rgb", "bgr")

_CAFFE_MEAN_255 = (103.939, 116.779, 123.68)  # BGR, keras imagenet_utils (mode "caffe")
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class InputContract:
    """Per-channel ``(x01[..., order] - mean) / std`` applied to images in [0, 1].

    Attributes:
      mean: one value for all channels or one per model channel, in [0, 1] units
        (e.g. ImageNet's ``(0.485, 0.456, 0.406)``).
      std: one positive value for all channels or one per model channel
        (e.g. ``(0.229, 0.224, 0.225)``; ``1/255`` scales [0, 1] to [0, 255]).
      channel_order: ``rgb`` (as loaded) or ``bgr`` (channels reversed before mean/std).
      preset: the preset name this contract came from, for provenance; ``None`` for
        explicit values.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "rgb"
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise TfquantError(
                f"input std must be positive, got {self.std}; pass e.g. std=(0.229, 0.224, 0.225)"
            )
        if self.channel_order not in CHANNEL_ORDERS:
            raise TfquantError(
                f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}"
            )
        if self.preset is not None and not isinstance(self.preset, str):
            raise TfquantError(f"preset must be a name or None, got {self.preset!r}")

    @property
    def is_identity(self) -> bool:
        """True if the contract leaves [0, 1] images unchanged."""
        return (
            self.channel_order == "rgb"
            and all(m == 0.0 for m in self.mean)
            and all(s == 1.0 for s in self.std)
        )

    def check_channels(self, channels: int) -> None:
        """Raises TfquantError unless mean/std have 1 or ``channels`` values (and BGR has 3)."""
        if self.channel_order == "bgr" and channels != 3:
            raise TfquantError(
                f"channel order bgr needs 3-channel images, got {channels} channel(s); "
                "use a preset without BGR (e.g. --preprocess tf) or RGB images"
            )
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise TfquantError(
                    f"input {label} has {len(values)} values but the images have "
                    f"{channels} channels; give 1 or {channels} values"
                )

    def apply_np(self, x: np.ndarray) -> np.ndarray:
        """Returns the model input for [0, 1] images ``x`` (NHWC) as a new float32 array."""
        self.check_channels(x.shape[-1])
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32)

    def apply_tf(self, x: Any) -> Any:
        """Returns the model input for a float32 HWC or NHWC tensor in [0, 1]."""
        import tensorflow as tf

        if self.channel_order == "bgr":
            x = tf.reverse(x, axis=[-1])
        return (x - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def describe(self) -> str:
        """One line for logs, e.g. ``preset tf: (x - 0.5) / 0.5``."""
        order = "BGR, " if self.channel_order == "bgr" else ""
        body = f"{order}(x - {_fmt(self.mean)}) / {_fmt(self.std)}"
        return f"preset {self.preset}: {body}" if self.preset else body

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists for mean/std)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
            "preset": self.preset,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InputContract":
        """Parses :meth:`to_dict` output; unknown keys are rejected.

        Raises:
          TfquantError: not an object, unknown keys, or bad values.
        """
        return cls(**from_json_dict(cls, data, what="input contract"))


def _floats(values: Sequence[float] | float, label: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TfquantError(
            f"input {label} must be numbers, got {values!r}; pass e.g. {label}=(0.5,)"
        ) from None
    if not out or not all(math.isfinite(v) for v in out):
        raise TfquantError(f"input {label} must be 1 or C finite numbers, got {values!r}")
    return out


def _fmt(values: tuple[float, ...]) -> str:
    text = ", ".join(f"{v:.6g}" for v in values)
    return text if len(values) == 1 else f"({text})"


PRESETS: dict[str, InputContract] = {
    "none": InputContract(preset="none"),
    "tf": InputContract(mean=(0.5,), std=(0.5,), preset="tf"),
    "caffe": InputContract(
        mean=tuple(m / 255.0 for m in _CAFFE_MEAN_255),
        std=(1.0 / 255.0,),
        channel_order="bgr",
        preset="caffe",
    ),
    "torch": InputContract(mean=_TORCH_MEAN, std=_TORCH_STD, preset="torch"),
    "raw255": InputContract(mean=(0.0,), std=(1.0 / 255.0,), preset="raw255"),
}
"""The keras.applications ``preprocess_input`` modes as contracts (see the module table)."""

PRESET_ALIASES: dict[str, str] = {
    # mode "tf": [-1, 1]
    "mobilenet": "tf",
    "mobilenet_v1": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "nasnet": "tf",
    "resnet_v2": "tf",
    # mode "caffe": BGR, ImageNet mean in 0..255 units
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    # mode "torch": ImageNet mean / std
    "densenet": "torch",
    # preprocessing inside the model: raw 0..255 pixels
    "efficientnet": "raw255",
    "efficientnet_v2": "raw255",
    "mobilenet_v3": "raw255",
    "convnext": "raw255",
    "regnet": "raw255",
    "resnet_rs": "raw255",
}
"""keras.applications family (module) names -> their preset."""


def preset_names() -> list[str]:
    """Every accepted ``--preprocess`` name: presets and family aliases, sorted."""
    return sorted(set(PRESETS) | set(PRESET_ALIASES))


def from_preset(name: str) -> InputContract:
    """The contract of a preset or keras.applications family name (case-insensitive).

    The returned contract's ``preset`` is the name as given (lower case), so the recipe
    records what the user asked for.

    Raises:
      TfquantError: unknown name (the message lists the accepted ones).
    """
    key = str(name).strip().lower().replace("-", "_")
    base = PRESET_ALIASES.get(key, key)
    if base not in PRESETS:
        raise TfquantError(
            f"unknown --preprocess {name!r}; choose one of {', '.join(preset_names())} "
            "(or pass --input_mean / --input_std)"
        )
    return dataclasses.replace(PRESETS[base], preset=key)


def resolve(
    *,
    preset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> InputContract | None:
    """The contract from command-line style options, or None when none was given.

    A preset and explicit mean/std are exclusive; with only one of mean/std the other is
    the identity's (mean 0, std 1).

    Raises:
      TfquantError: preset together with mean/std, an unknown preset, bad numbers.
    """
    if preset is not None and (mean is not None or std is not None):
        raise TfquantError(
            "pass either --preprocess or --input_mean/--input_std, not both "
            "(a preset fixes mean, std and channel order)"
        )
    if preset is not None:
        return from_preset(preset)
    if mean is None and std is None:
        return None
    return InputContract(mean=tuple(mean) if mean is not None else (0.0,),
                         std=tuple(std) if std is not None else (1.0,))


# Lower-cased keras.applications model-name prefixes (``model.name``) -> family alias, for
# the hint printed when such a model is converted with no input contract.
_MODEL_NAME_FAMILIES: tuple[tuple[str, str], ...] = (
    ("mobilenetv2", "mobilenet_v2"),
    ("mobilenetv3", "mobilenet_v3"),
    ("mobilenet", "mobilenet"),
    ("efficientnetv2", "efficientnet_v2"),
    ("efficientnet", "efficientnet"),
    ("convnext", "convnext"),
    ("regnet", "regnet"),
    ("resnet-rs", "resnet_rs"),
    ("resnetrs", "resnet_rs"),
    ("resnet50v2", "resnet_v2"),
    ("resnet101v2", "resnet_v2"),
    ("resnet152v2", "resnet_v2"),
    ("resnet", "resnet"),
    ("densenet", "densenet"),
    ("inception_resnet_v2", "inception_resnet_v2"),
    ("inception_v3", "inception_v3"),
    ("xception", "xception"),
    ("nasnet", "nasnet"),
    ("vgg16", "vgg16"),
    ("vgg19", "vgg19"),
)


def guess_family(model_name: str) -> str | None:
    """The keras.applications family a model name suggests (``mobilenetv2_1.00_224`` ->
    ``mobilenet_v2``), or None. Used only for a hint, never to change what runs."""
    name = str(model_name).lower()
    for prefix, family in _MODEL_NAME_FAMILIES:
        if name.startswith(prefix):
            return family
    return None
