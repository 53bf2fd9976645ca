"""Tiny Vision Transformer (Dosovitskiy et al., 2021, arXiv:2010.11929), pre-LN blocks."""

from __future__ import annotations

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras
from tf_keras import layers

from tfquant.errors import TfquantError
from tfquant.models.layers import AddPositionEmbedding

PATCH_SIZE = 7
EMBED_DIM = 64
DEPTH = 4
NUM_HEADS = 4
MLP_DIM = 128


def build_vit(
    *, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Builds a tiny pre-LN ViT that outputs logits.

    Patch embedding conv(64, kernel=stride=7) -> (4*4=16 tokens, 64) -> + learned position
    embedding -> 4 blocks of [x + MHA(LN(x)), x + MLP(LN(x))] with 4 heads of size 16
    (softmax attention) and an MLP 64 -> 128 (GELU, erf form) -> 64 -> LN -> mean over
    tokens -> dense(num_classes). Only standard Keras 2 layers plus
    :class:`~tfquant.models.layers.AddPositionEmbedding`.

    Args:
        input_shape: ``(height, width, channels)``; height and width divisible by 7.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"vit"``.

    Raises:
        TfquantError: If the image size is not divisible by the patch size.
    """
    height, width, _ = input_shape
    if height % PATCH_SIZE or width % PATCH_SIZE:
        raise TfquantError(
            f"vit needs height and width divisible by the patch size {PATCH_SIZE}, got "
            f"input_shape={tuple(input_shape)}; resize or pad the images"
        )
    tokens = (height // PATCH_SIZE) * (width // PATCH_SIZE)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(EMBED_DIM, PATCH_SIZE, strides=PATCH_SIZE, name="patch_embed")(inputs)
    x = layers.Reshape((tokens, EMBED_DIM), name="tokens")(x)
    x = AddPositionEmbedding(name="pos_embed")(x)
    for i in range(1, DEPTH + 1):
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln1")(x)
        y = layers.MultiHeadAttention(
            num_heads=NUM_HEADS, key_dim=EMBED_DIM // NUM_HEADS, name=f"block{i}_mha"
        )(y, y)
        x = layers.Add(name=f"block{i}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln2")(x)
        y = layers.Dense(MLP_DIM, activation="gelu", name=f"block{i}_mlp1")(y)
        y = layers.Dense(EMBED_DIM, name=f"block{i}_mlp2")(y)
        x = layers.Add(name=f"block{i}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="token_mean")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vit")
