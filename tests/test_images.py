"""Your own images in the training format: MNIST-style digits, Fashion-MNIST-style objects."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from mlp_jax.images import ImageError, image_files, read_grayscale, to_training_format

SHAPE = (28, 28, 1)


def drawn_seven(size=(200, 150), at=(110, 20), scale=1.0, paper="white", ink="black"):
    """A "7" drawn with two thick lines, off-centre, on a page of another size than 28x28."""
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    x, y = at
    top_right = (x + 60 * scale, y)
    draw.line([(x, y), top_right], fill=ink, width=round(9 * scale))
    draw.line([top_right, (x + 20 * scale, y + 90 * scale)], fill=ink, width=round(9 * scale))
    return np.asarray(image.convert("L"))


def bounding_box(image):
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size": (400, 300), "at": (30, 150), "scale": 2.0},
        {"size": (90, 130), "at": (5, 5), "scale": 0.5},
    ],
)
def test_drawn_digit_is_made_like_mnist(kwargs):
    """Dark ink on white, anywhere, any size -> white ink on black, longer side 20, mass centred."""
    page = drawn_seven(**kwargs)
    digit = to_training_format(page, SHAPE, "digit")
    assert digit.shape == SHAPE and digit.dtype == np.uint8
    image = digit[..., 0]
    top, bottom, left, right = bounding_box(image)
    height, width = bottom - top + 1, right - left + 1
    assert max(height, width) == 20 and min(height, width) < 20  # fit in 20x20, aspect kept
    ink_top, ink_bottom, ink_left, ink_right = bounding_box(page < 128)
    aspect = (ink_right - ink_left + 1) / (ink_bottom - ink_top + 1)
    assert abs(width - 20 * aspect) <= 1.5  # the resize's kernel may add a pixel per side
    mass = ndimage.center_of_mass(image.astype(float))
    assert np.allclose(mass, (14, 14), atol=0.5)  # where MNIST puts it (measured on the subset)
    corners = [image[:3, :3], image[:3, -3:], image[-3:, :3], image[-3:, -3:]]
    assert all(corner.max() == 0 for corner in corners) and image.max() == 255


def test_light_ink_on_dark_paper_gives_the_same_digit():
    dark_on_light = to_training_format(drawn_seven(), SHAPE, "digit")
    light_on_dark = to_training_format(drawn_seven(paper="black", ink="white"), SHAPE, "digit")
    np.testing.assert_array_equal(dark_on_light, light_on_dark)


def test_mnist_digits_already_centred_stay_where_they_are(subset):
    """An MNIST test digit, made again from itself, keeps its centre of mass and size."""
    for image in subset.test_images[:20]:
        again = to_training_format(image[..., 0], SHAPE, "digit")[..., 0]
        top, bottom, left, right = bounding_box(again)
        assert max(bottom - top, right - left) + 1 == 20
        mass = ndimage.center_of_mass(again.astype(float))
        assert np.allclose(mass, ndimage.center_of_mass(image[..., 0].astype(float)), atol=1.0)


def test_object_style_fills_the_field_and_centres_the_box():
    """Fashion-MNIST: the article's longer side is 28 pixels, its bounding box centred."""
    page = np.full((300, 200), 255, np.uint8)
    page[50:110, 20:180] = 40  # a wide dark "bag" on white paper, top of the page
    item = to_training_format(page, SHAPE, "object")[..., 0]
    top, bottom, left, right = bounding_box(item > 0)
    assert (left, right) == (0, 27)
    assert abs((top + bottom) / 2 - 13.5) <= 0.5 and 9 <= bottom - top + 1 <= 12  # 60/160 * 28


def test_none_style_takes_pixels_as_they_are_and_checks_the_shape():
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(to_training_format(pixels, SHAPE, "none")[..., 0], pixels)
    with pytest.raises(ImageError, match="is 20x28 pixels; --preprocess none needs 28x28"):
        to_training_format(pixels[:20], SHAPE, "none")


def test_blank_image_has_no_ink():
    with pytest.raises(ImageError, match="has no ink"):
        to_training_format(np.full((50, 50), 255, np.uint8), SHAPE, "digit")


def test_colour_model_cannot_read_image_files():
    with pytest.raises(ImageError, match=r"only grayscale \[H, W, 1\] models"):
        to_training_format(drawn_seven(), (32, 32, 3), "digit")


def test_transparent_background_counts_as_white_paper(tmp_path):
    rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))  # transparent black: looks like no paper
    ImageDraw.Draw(rgba).line([(30, 10), (30, 50)], fill=(0, 0, 0, 255), width=5)
    rgba.save(tmp_path / "one.png")
    gray = read_grayscale(tmp_path / "one.png")
    assert gray[0, 0] == 255 and gray[30, 30] == 0


def test_folders_give_their_images_by_name_and_refuse_when_empty(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files([tmp_path])] == ["a.JPG", "b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="the folder holds no images"):
        image_files([tmp_path / "empty"])
    with pytest.raises(ImageError, match="no such file or folder"):
        image_files([tmp_path / "missing.png"])
