"""Data augmentation on the device: random shifts, mirror images and erased squares, in the step.

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
        else:
            images = {"shift": random_shift, "erase": random_erase}[name](op_key, images, size)
    return images


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image by (dy, dx), each uniform in -max_shift .. max_shift; zeros fill in.

    out[i, j] = images[i - dy, j - dx] where that is inside the image, else 0 (black).
    """
    _, height, width, channels = images.shape
    offsets = jax.random.randint(key, (images.shape[0], 2), -max_shift, max_shift + 1)
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))

    def one(image: jax.Array, offset: jax.Array) -> jax.Array:
        start = (max_shift - offset[0], max_shift - offset[1], 0)
        return jax.lax.dynamic_slice(image, start, (height, width, channels))

    return jax.vmap(one)(padded, offsets)


def random_erase(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """With probability 1/2, set a size x size square of each image to 0, at a uniform position.

    Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020) with a fixed
    square: the square lies wholly inside the image, its top-left corner uniform over the
    (H - size + 1) x (W - size + 1) places it can take; a side longer than the image's is cut
    to the image's (the whole image is erased).
    """
    batch, height, width, _ = images.shape
    size = min(size, height, width)
    erase_key, row_key, col_key = jax.random.split(key, 3)
    erase = jax.random.bernoulli(erase_key, 0.5, (batch, 1, 1, 1))
    top = jax.random.randint(row_key, (batch, 1, 1, 1), 0, height - size + 1)
    left = jax.random.randint(col_key, (batch, 1, 1, 1), 0, width - size + 1)
    rows = jnp.arange(height)[None, :, None, None]
    cols = jnp.arange(width)[None, None, :, None]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(erase & inside, jnp.zeros((), images.dtype), images)
