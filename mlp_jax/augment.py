"""Data augmentation on the device: random shifts and mirror images of a batch, inside the step.

Pure functions of (key, images): the model calls them in training mode with a key derived from
the step, so the training set stays uint8 on the device and a run stays reproducible bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlp_jax.config import Augmentation


def augment_images(
    key: jax.Array, images: jax.Array, augmentations: tuple[Augmentation, ...]
) -> jax.Array:
    """images [B, H, W, C] (any dtype) -> the same shape and dtype, each image changed at random.

    `augmentations` is `Config.augmentations`, e.g. (("flip", 0), ("shift", 2)); they are applied
    in that order, each with its own key folded from `key`.
    """
    for index, (name, size) in enumerate(augmentations):
        op_key = jax.random.fold_in(key, index)
        if name == "flip":
            images = random_flip(op_key, images)
        elif name == "shift":
            images = random_shift(op_key, images, size)
        else:  # Config.validate stops this first
            raise ValueError(f"unknown augmentation {name!r}")
    return images


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image by (dy, dx), each uniform in -max_shift .. max_shift; zeros fill in.

    out[i, j] = images[i - dy, j - dx] where that is inside the image, else 0 (black).
    """
    if max_shift == 0:
        return images
    _, height, width, channels = images.shape
    offsets = jax.random.randint(key, (images.shape[0], 2), -max_shift, max_shift + 1)
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))

    def one(image: jax.Array, offset: jax.Array) -> jax.Array:
        start = (max_shift - offset[0], max_shift - offset[1], 0)
        return jax.lax.dynamic_slice(image, start, (height, width, channels))

    return jax.vmap(one)(padded, offsets)
