"""augment.py: shifts, flips, erasing and elastic distortions change images as specified,
reproducibly, per step."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_jax import Config, ConfigError
from mlp_jax.augment import (
    augment_images,
    random_elastic,
    random_erase,
    random_flip,
    random_shift,
)
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.steps import create_train_state, train_step


def _images(n, size=9, seed=0):
    """uint8[n, size, size, 1], every pixel non-zero: a zero in the output can only be fill."""
    return np.random.default_rng(seed).integers(1, 256, (n, size, size, 1), dtype=np.uint8)


def _shifted(image, dy, dx):
    """Reference: out[i, j] = image[i - dy, j - dx] inside the image, else 0."""
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    for i, j in itertools.product(range(height), range(width)):
        if 0 <= i - dy < height and 0 <= j - dx < width:
            out[i, j] = image[i - dy, j - dx]
    return out


def test_shift_moves_content_by_at_most_k_pixels_with_zero_fill():
    k = 2
    images = _images(300)
    shifted = np.asarray(random_shift(jax.random.PRNGKey(0), jnp.asarray(images), k))
    assert shifted.dtype == np.uint8 and shifted.shape == images.shape
    offsets = set()
    for image, out in zip(images, shifted, strict=True):
        matches = [
            (dy, dx)
            for dy, dx in itertools.product(range(-k, k + 1), repeat=2)
            if np.array_equal(out, _shifted(image, dy, dx))
        ]
        assert len(matches) == 1, "each output is the input moved by one (dy, dx), zeros filled in"
        offsets.add(matches[0])
    assert offsets == set(itertools.product(range(-k, k + 1), repeat=2))  # all 25 drawn


def test_flip_mirrors_left_right_about_half_the_images():
    images = _images(200)
    flipped = np.asarray(random_flip(jax.random.PRNGKey(1), jnp.asarray(images)))
    mirrored = [
        np.array_equal(out, image[:, ::-1]) for image, out in zip(images, flipped, strict=True)
    ]
    unchanged = [np.array_equal(out, image) for image, out in zip(images, flipped, strict=True)]
    assert all(m != u for m, u in zip(mirrored, unchanged, strict=True))  # one or the other
    assert 70 < sum(mirrored) < 130


def test_erase_zeroes_one_k_by_k_square_inside_about_half_the_images():
    k, size = 3, 9
    images = _images(400, size)
    erased = np.asarray(random_erase(jax.random.PRNGKey(2), jnp.asarray(images), k))
    assert erased.dtype == np.uint8 and erased.shape == images.shape
    corners = set()
    for image, out in zip(images, erased, strict=True):
        zero = out[..., 0] == 0  # the inputs have no zeros: a zero here was erased
        if not zero.any():
            assert np.array_equal(out, image)
            continue
        rows, cols = np.nonzero(zero)
        top, left = rows.min(), cols.min()
        expected = np.zeros((size, size), bool)
        expected[top : top + k, left : left + k] = True
        assert np.array_equal(zero, expected), "exactly one k x k square, wholly inside"
        assert np.array_equal(out[~zero], image[~zero]), "every other pixel unchanged"
        corners.add((top, left))
    assert 150 < len([1 for out in erased if (out == 0).any()]) < 250
    assert corners == set(itertools.product(range(size - k + 1), repeat=2))  # all 49 places


def test_erase_with_a_side_longer_than_the_image_erases_all_of_it_or_nothing():
    images = _images(50, 5)
    erased = np.asarray(random_erase(jax.random.PRNGKey(0), jnp.asarray(images), 16))
    whole = [not out.any() for out in erased]
    kept = [np.array_equal(out, image) for image, out in zip(images, erased, strict=True)]
    assert all(w != k for w, k in zip(whole, kept, strict=True)) and 0 < sum(whole) < 50


def test_augmentation_is_a_function_of_its_key():
    images = jnp.asarray(_images(64))
    spec = (("flip", 0), ("shift", 2), ("erase", 4))
    first = augment_images(jax.random.PRNGKey(3), images, spec)
    chex.assert_trees_all_equal(first, augment_images(jax.random.PRNGKey(3), images, spec))
    assert not np.array_equal(first, augment_images(jax.random.PRNGKey(4), images, spec))


def test_augment_flag_parses_in_order_and_rejects_bad_specs():
    assert Config(augment="shift:2,flip").augmentations == (("shift", 2), ("flip", 0))
    assert Config(augment="flip,erase:8").augmentations == (("flip", 0), ("erase", 8))
    assert Config(augment="none").augmentations == Config().augmentations == ()
    for bad, message in [
        ("rotate", "unknown 'rotate'"),
        ("shift", "shift:K"),
        ("shift:0", "shift:K"),
        ("flip:2", "'flip:2': allowed: .*flip,"),
        ("shift:\u00b2", "shift:K"),  # a superscript 2: isdigit() but not int()-able
        ("erase", "erase:K"),
        ("erase:0", "erase:K"),
        ("erase:17", "erase:K"),
        ("elastic", "elastic takes ALPHA:SIGMA"),
        ("elastic:34", "elastic takes ALPHA:SIGMA"),
        ("elastic:34:x", "elastic takes ALPHA:SIGMA"),
        ("elastic:34:0.5", "SIGMA must be in \\[1, 10\\]"),
        ("elastic:101:4", "ALPHA must be in \\[0, 100\\]"),
    ]:
        with pytest.raises(ConfigError, match=f"^augment: .*{message}"):
            Config(augment=bad)
    assert Config(augment="elastic:34:4,shift:1").augmentations == (
        ("elastic", 34.0, 4.0),
        ("shift", 1),
    )


def _digit_like(n, size=28):
    """uint8[n, size, size, 1]: a bright square stroke on black, like a digit's ink."""
    images = np.zeros((n, size, size, 1), np.uint8)
    images[:, 8:20, 8:11] = images[:, 8:11, 8:20] = 255
    return images


def test_elastic_with_alpha_0_is_the_identity_and_keeps_the_dtype():
    images = jnp.asarray(_digit_like(4))
    same = random_elastic(jax.random.PRNGKey(0), images, 0.0, 4.0)
    assert same.dtype == jnp.uint8
    chex.assert_trees_all_equal(same, images)
    floats = images.astype(jnp.float32) / 255
    chex.assert_trees_all_close(random_elastic(jax.random.PRNGKey(0), floats, 0.0, 4.0), floats)


def test_elastic_moves_ink_by_a_few_pixels_smoothly_and_differently_per_image():
    images = jnp.asarray(_digit_like(64))
    moved = np.asarray(random_elastic(jax.random.PRNGKey(1), images, 34.0, 4.0))
    assert moved.shape == images.shape and moved.dtype == np.uint8
    changed = (moved != np.asarray(images)).mean(axis=(1, 2, 3))
    assert (changed > 0.02).all()  # every image moved
    assert len({m.tobytes() for m in moved}) == 64  # each image its own field
    # Smooth and small (Simard's sigma 4, alpha 34: about 1-2 pixels): most ink stays near the
    # stroke, and the total ink changes by interpolation only, not by tearing.
    ink = moved.astype(float).sum(axis=(1, 2, 3)) / np.asarray(images, float).sum(axis=(1, 2, 3))
    assert 0.5 < ink.min() and ink.max() < 1.6  # strokes stretch and thin, locally
    near = np.zeros((28, 28), bool)
    near[4:24, 4:15] = near[4:15, 4:24] = True  # the stroke grown by 4 pixels
    assert moved[..., 0][:, ~near].sum() < 0.05 * moved.sum()
    # A larger alpha moves pixels further.
    far = np.asarray(random_elastic(jax.random.PRNGKey(1), images, 100.0, 4.0))
    assert (far != np.asarray(images)).mean() > (moved != np.asarray(images)).mean()


def test_elastic_is_a_function_of_its_key_under_jit():
    images = jnp.asarray(_digit_like(8))
    spec = (("elastic", 34.0, 4.0),)
    draw = jax.jit(lambda key: augment_images(key, images, spec))
    chex.assert_trees_all_equal(draw(jax.random.PRNGKey(3)), draw(jax.random.PRNGKey(3)))
    assert not np.array_equal(draw(jax.random.PRNGKey(3)), draw(jax.random.PRNGKey(4)))


def _state(augmentations):
    model = MLP(hidden_sizes=(), num_classes=10, augmentations=augmentations)
    sample = jnp.zeros((1, 9, 9, 1), jnp.uint8)
    return create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1), sample)


def _loss_at_step(state, step, batch):
    """train_step's loss on `batch` from a copy of `state` moved to `step` (steps donate)."""
    state = jax.tree.map(jnp.copy, state).replace(step=jnp.int32(step))
    return float(train_step(state, batch)[1]["loss"])


def test_each_step_draws_new_augmentations_and_evaluation_draws_none():
    batch = {"image": jnp.asarray(_images(32)), "label": jnp.arange(32) % 10}
    augmented = _state((("flip", 0), ("shift", 2), ("erase", 4)))
    plain = _state(())
    # Same params, steps 0 and 1: the loss differs only through the step's augmentation key.
    loss = [_loss_at_step(augmented, t, batch) for t in (0, 0, 1)]
    assert loss[0] == loss[1] != loss[2]
    loss = [_loss_at_step(plain, t, batch) for t in (0, 1)]
    assert loss[0] == loss[1]
    variables = {"params": augmented.params}
    chex.assert_trees_all_equal(
        augmented.apply_fn(variables, batch["image"], train=False),
        plain.apply_fn(variables, batch["image"], train=False),
    )


def test_tta_flip_averages_the_logits_of_each_image_and_its_mirror():
    images = jnp.asarray(_images(16))
    plain = MLP(hidden_sizes=(7,), num_classes=10)
    flipped = plain.clone(test_flip=True)
    assert mlp_from_config(Config(tta="flip"), 10).test_flip
    assert not mlp_from_config(Config(), 10).test_flip
    variables = plain.init(jax.random.PRNGKey(0), images[:1])
    expected = (plain.apply(variables, images) + plain.apply(variables, images[:, :, ::-1])) / 2
    chex.assert_trees_all_close(flipped.apply(variables, images), expected, rtol=1e-5, atol=1e-6)
    # So an image and its mirror image get the same logits, and training (dropout-free here)
    # sees the images as they are.
    chex.assert_trees_all_close(
        flipped.apply(variables, images[:, :, ::-1]), expected, rtol=1e-5, atol=1e-6
    )
    chex.assert_trees_all_equal(
        flipped.apply(variables, images, train=True), plain.apply(variables, images, train=True)
    )
    with pytest.raises(ConfigError, match="^tta: unknown 'rotate'; allowed: none, flip"):
        Config(tta="rotate")
    with pytest.raises(ValueError, match=r"test_flip needs images \[B, H, W, C\], got \(16, \d+\)"):
        flipped.apply(variables, images.reshape(16, -1))  # flat images have no rows to mirror


def test_elastic_displacements_have_simards_scale():
    # On a ramp image (pixel value = its column), bilinear reading returns column + dx exactly,
    # so the output minus the ramp is the field. Smoothed uniform(-1, 1) noise has std
    # sqrt(1/3) * sum(w^2) ~ 0.577 / (2 sqrt(pi) sigma) = 0.041 at sigma 4: alpha 34 -> 1.38 px.
    ramp = jnp.broadcast_to(jnp.arange(28, dtype=jnp.float32)[None, None, :, None], (64, 28, 28, 1))
    moved = random_elastic(jax.random.PRNGKey(2), ramp, 34.0, 4.0)
    dx = np.asarray(moved - ramp)[:, 6:22, 6:22, 0]  # inside: nothing read from beyond the edge
    assert 1.1 < dx.std() < 1.7, dx.std()
    assert abs(dx.mean()) < 0.3
