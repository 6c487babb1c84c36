"""Your own pictures in the training format: read PNG/JPEG files, make them look like the dataset:
MNIST digits (ink fit into 20x20, centre of mass at the centre of 28x28) or Fashion-MNIST articles
(filling 28x28, bounding box centred), white on black. Pillow reads and resizes, scipy measures."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
STYLES = ("digit", "object", "none")


class ImageError(ValueError):
    """A file that cannot be used: names it and what is wrong. The CLI prints it as one line."""


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by `paths`: files as given, folders by their images (by name)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
            found = [p for p in found if p.is_file()]  # not a named pipe, which would block reads
            if not found:
                looked = ", ".join(IMAGE_SUFFIXES)
                raise ImageError(f"{path}: the folder holds no images (looked for {looked})")
            files += found
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ImageError(f"{path}: not a regular file (a pipe or a device?)")
        else:
            raise ImageError(f"{path}: no such file or folder")
    return files


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """uint8[H, W] grey levels of an image file (transparent = white paper), or an ImageError."""
    try:
        with warnings.catch_warnings():  # a decompression bomb is an error, not a warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)  # phone photos: apply the rotation flag
                if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
                    gray = np.asarray(image, np.float64)
                    top = 65535.0 if image.mode != "F" else max(1.0, float(np.nanmax(gray)))
                    return np.clip(np.rint(gray * (255.0 / top)), 0, 255).astype(np.uint8)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = image.convert("RGBA")
                    image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                return np.asarray(image.convert("L"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path}: too large to read safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:  # UnidentifiedImageError is an OSError
        why = "not an image Pillow can read" if isinstance(error, UnidentifiedImageError) else error
        raise ImageError(f"{path}: cannot read it ({why})") from None


def to_training_format(
    gray: np.ndarray, image_shape: Sequence[int], style: str = "digit"
) -> np.ndarray:
    """uint8[H, W] grey levels -> uint8[*image_shape] (e.g. [28, 28, 1]), white ink on black.
    style "digit" (MNIST): ink cropped, its longer side fit to 20/28 of the field (aspect kept),
    centre of mass centred; "object" (Fashion-MNIST): the longer side fills the field, the bounding
    box centred; "none": the pixels as they are, which must already have the training shape."""
    if style not in STYLES:
        raise ValueError(f"unknown preprocessing style {style!r}; allowed: {', '.join(STYLES)}")
    if len(image_shape) != 3 or image_shape[2] != 1:
        why = "only grayscale [H, W, 1] models can read image files"
        raise ImageError(f"the model was trained on images of shape {tuple(image_shape)}; {why}")
    height, width = int(image_shape[0]), int(image_shape[1])
    gray = np.asarray(gray, np.uint8)
    if style == "none":
        if gray.shape != (height, width):
            why = f"--preprocess none needs {height}x{width} (digit or object would resize it)"
            raise ImageError(f"is {gray.shape[0]}x{gray.shape[1]} pixels; {why}")
        return gray.reshape(height, width, 1)
    # Ink: 0 on the background (the border's median), up to 255 for the strongest ink, so that it
    # is bright as in MNIST whether the paper is light or dark.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = np.abs(gray.astype(np.float64) - float(np.median(border)))
    ink = np.round(255 * ink / ink.max()).astype(np.uint8) if ink.max() else np.zeros_like(gray)
    strong = ink >= 0.25 * 255  # what counts for the crop: no faint specks, no noise
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    if rows.size == 0:
        raise ImageError("has no ink: the image is blank (one uniform colour)")
    if style == "digit":  # MNIST's background is exactly 0: drop the paper's texture
        ink = np.where(strong, ink, 0).astype(np.uint8)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = 20 / 28 if style == "digit" else 1.0  # MNIST: the longer side fills 20 of 28 pixels
    scale = min(box * height / crop.shape[0], box * width / crop.shape[1])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    fitted = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS))
    field = np.zeros((height, width), np.uint8)
    top, left = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
    field[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    if style == "digit":
        # MNIST moved each digit by whole pixels so that its centre of mass sits at (14, 14).
        mass_row, mass_col = ndimage.center_of_mass(field.astype(np.float64))
        shift = (round(height // 2 - mass_row), round(width // 2 - mass_col))
        field = ndimage.shift(field, shift, order=0, mode="constant", cval=0)
    return field.reshape(height, width, 1)


def prepare_images(
    files: Sequence[Path], grays: Sequence[np.ndarray], image_shape: Sequence[int], style: str
) -> np.ndarray:
    """uint8[N, *image_shape]: `to_training_format` of each; an ImageError names its file."""
    images = []
    for path, gray in zip(files, grays, strict=True):
        try:
            images.append(to_training_format(gray, image_shape, style))
        except ImageError as error:
            raise ImageError(f"{path}: {error}") from None
    return np.stack(images)


def load_images(
    paths: Sequence[str | os.PathLike], image_shape: Sequence[int], style: str = "digit"
) -> tuple[list[Path], np.ndarray]:
    """The files named by `paths` (folders expanded) and their uint8[N, *image_shape] images."""
    files = image_files(paths)
    return files, prepare_images(files, [read_grayscale(p) for p in files], image_shape, style)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write one uint8[H, W, 1] (or [H, W]) image as a grayscale PNG."""
    Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[0], image.shape[1])).save(path)


def output_names(files: Sequence[Path], folder: Path) -> list[Path]:
    """FOLDER/<stem>.png per input, numbered where two inputs share a stem."""
    names = []
    for path in files:
        name, i = f"{path.stem}.png", 1
        while name in names:
            name, i = f"{path.stem}-{i}.png", i + 1
        names.append(name)
    return [folder / name for name in names]
