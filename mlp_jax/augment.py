"""Data augmentation on the device: random shifts, mirror images, erased squares and elastic
distortions. Pure functions of (key, images): the model calls them in training mode with a key
derived from the step, so the training set stays uint8 on the device and runs stay reproducible.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from mlp_jax.config import Augmentation


def augment_images(
    key: jax.Array, images: jax.Array, augmentations: tuple[Augmentation, ...]
) -> jax.Array:
    """images [B, H, W, C] (any dtype) -> the same shape and dtype, each image changed at random.

    `augmentations` is `Config.augmentations`, e.g. (("flip", 0), ("shift", 2)); they are applied
    in that order, each with its own key folded from `key`.
    """
    operations = {"shift": random_shift, "erase": random_erase, "elastic": random_elastic}
    for index, (name, *sizes) in enumerate(augmentations):
        op_key = jax.random.fold_in(key, index)
        flip = name == "flip"  # ("flip", 0): its 0 is no size
        images = random_flip(op_key, images) if flip else operations[name](op_key, images, *sizes)
    return images


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image by (dy, dx), each uniform in -max_shift .. max_shift: out[i, j] =
    images[i - dy, j - dx] where that is inside the image, else 0 (black)."""
    _, height, width, channels = images.shape
    offsets = jax.random.randint(key, (images.shape[0], 2), -max_shift, max_shift + 1)
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))

    def one(image: jax.Array, offset: jax.Array) -> jax.Array:
        start = (max_shift - offset[0], max_shift - offset[1], 0)
        return jax.lax.dynamic_slice(image, start, (height, width, channels))

    return jax.vmap(one)(padded, offsets)


def random_erase(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """With probability 1/2, set a size x size square of each image to 0, at a uniform position:
    random erasing (Zhong et al., AAAI 2020) with a fixed square wholly inside the image (a side
    longer than the image's is cut to it)."""
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


def random_elastic(key: jax.Array, images: jax.Array, alpha: float, sigma: float) -> jax.Array:
    """Simard et al. 2003's elastic distortion, a new field for each image: uniform(-1, 1)
    displacements per pixel, smoothed by a Gaussian of std `sigma` pixels, scaled by `alpha`;
    each pixel is read (bilinearly) from where its displacement points, black outside the image.
    Integer images are rounded back to their dtype. The Gaussian is two small matmuls, not
    dm_pix.elastic_deformation, whose depthwise convolution was ~16x slower on a 2-core CPU.
    """
    batch, height, width, channels = images.shape
    noise = jax.random.uniform(key, (batch, 2, height, width), minval=-1.0, maxval=1.0)
    blur_rows, blur_cols = _gaussian(height, sigma), _gaussian(width, sigma)
    field = alpha * jnp.einsum("bkhw,hu,wv->bkuv", noise, blur_rows, blur_cols)
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    where = jnp.stack([rows, cols]).astype(jnp.float32) + field  # [B, 2, H, W]: (row, col)

    def one(image: jax.Array, at: jax.Array) -> jax.Array:
        read = functools.partial(map_coordinates, coordinates=[at[0], at[1]], order=1)
        return jnp.stack([read(image[..., c], mode="constant") for c in range(channels)], -1)

    moved = jax.vmap(one)(images.astype(jnp.float32), where)
    if jnp.issubdtype(images.dtype, jnp.integer):
        limits = jnp.iinfo(images.dtype)
        moved = jnp.clip(jnp.round(moved), limits.min, limits.max)
    return moved.astype(images.dtype)


def _gaussian(size: int, sigma: float) -> jax.Array:
    """G[i, j] = the weight of j in the Gaussian blur at i (zeros beyond the edges)."""
    offsets = jnp.arange(-size + 1, size, dtype=jnp.float32)
    norm = jnp.exp(-(offsets**2) / (2 * sigma**2)).sum()
    index = jnp.arange(size, dtype=jnp.float32)
    return jnp.exp(-((index[:, None] - index[None, :]) ** 2) / (2 * sigma**2)) / norm
