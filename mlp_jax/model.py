"""The multi-layer perceptron, a flax linen module. It takes raw uint8 images and converts and
normalises them itself, inside the compiled step, so the training set stays on the device as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlp_jax.augment import augment_images
from mlp_jax.config import Augmentation, Config

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid, "gelu": nn.gelu}


class MLP(nn.Module):
    """images uint8[B, *image_shape] (or float in [0, 1]) -> logits float32[B, num_classes].

    `hidden_sizes=()` is the lectures' one-layer softmax classifier (template matching). `mean`
    and `std` normalise in [0, 1] pixel units. In training mode, `augmentations` change the images
    first (keys from the "augment" rng stream) and `input_dropout_rate` drops pixels to black.
    Otherwise `test_flip=True` averages the logits of each image [B, H, W, C] and of its mirror
    image (--tta flip). `dtype` is the Dense layers' compute dtype (bfloat16: mixed precision);
    params and logits stay float32.
    """

    hidden_sizes: Sequence[int]
    num_classes: int
    activation: str = "relu"
    dropout_rate: float = 0.0
    use_bias: bool = True
    mean: float = 0.0
    std: float = 1.0
    augmentations: tuple[Augmentation, ...] = ()
    dtype: str = "float32"
    input_dropout_rate: float = 0.0
    test_flip: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        if train and self.augmentations:
            images = augment_images(self.make_rng("augment"), images, self.augmentations)
        mirrored = not train and self.test_flip
        if mirrored:  # one forward pass over [images; mirror images], averaged below
            if images.ndim != 4:  # research code may pass flat images: mirroring needs rows
                raise ValueError(f"test_flip needs images [B, H, W, C], got {images.shape}")
            images = jnp.concatenate([images, images[:, :, ::-1]])
        x = images.reshape((images.shape[0], -1))  # flatten any image shape: [B, H*W*C]
        if jnp.issubdtype(x.dtype, jnp.integer):
            x = x.astype(jnp.float32) / 255.0
        if self.input_dropout_rate > 0:  # before normalising: a dropped pixel is black
            drop_pixels = nn.Dropout(self.input_dropout_rate, name="input_dropout")
            x = drop_pixels(x, deterministic=not train)
        x = (x - self.mean) / self.std
        activation = ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden_sizes):
            dense = nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype, name=f"hidden_{i}")
            x = activation(dense(x))
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        output = nn.Dense(self.num_classes, use_bias=self.use_bias, dtype=self.dtype, name="output")
        logits = output(x).astype(jnp.float32)  # the loss and softmax in float32
        if mirrored:
            logits = logits.reshape(2, -1, self.num_classes).mean(axis=0)
        return logits


def layer_sizes(input_size: int, model: MLP) -> list[int]:
    """[input, *hidden, classes], e.g. [784, 512, 256, 128, 64, 10]."""
    return [input_size, *model.hidden_sizes, model.num_classes]


def count_params(params) -> int:
    """The number of scalars in `params` (any pytree of arrays)."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def mlp_from_config(config: Config, num_classes: int, mean: float = 0.0, std: float = 1.0) -> MLP:
    """The MLP that `config` describes; `mean`/`std` are used only with --normalize standardize."""
    if config.normalize == "scale":
        mean, std = 0.0, 1.0
    elif config.normalize == "none":  # undo the / 255: the net sees 0..255
        mean, std = 0.0, 1.0 / 255.0
    return MLP(
        hidden_sizes=config.hidden_sizes_for(num_classes),
        num_classes=num_classes,
        activation=config.activation,
        dropout_rate=config.dropout,
        use_bias=config.bias,
        mean=float(mean),
        std=float(std),
        augmentations=config.augmentations,
        input_dropout_rate=config.input_dropout,
        test_flip=config.tta == "flip",
        dtype=config.dtype,
    )


def summary(model: MLP, image_shape: Sequence[int]) -> str:
    """flax's table of the model for one uint8 image (each layer's shapes and parameters, and the
    total), as plain text without terminal colours."""
    sample = jnp.zeros((1, *image_shape), jnp.uint8)
    console = {"width": 100, "force_terminal": False}
    table = nn.tabulate(model, jax.random.PRNGKey(0), console_kwargs=console)(sample, train=False)
    return "\n".join(line.rstrip() for line in table.strip("\n").splitlines())
