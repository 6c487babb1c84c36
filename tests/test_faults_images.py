"""Issue kind "images": 16-bit PNGs, decompression bombs and named pipes, through predict."""

import os

import numpy as np
from PIL import Image

from tests.faults import command, one_line


def test_a_16_bit_png_of_a_digit_is_read_not_called_blank(run_copy):
    # Dark ink on white paper: clipped to 8 bits (Pillow's convert("L")) both become 255.
    pixels = np.full((28, 28), 65535, np.uint16)
    pixels[6:22, 12:16] = 10000
    Image.fromarray(pixels).save(run_copy / "digit16.png")
    assert Image.open(run_copy / "digit16.png").mode.startswith("I")
    code, out, err = command(run_copy, "predict", "--workdir", "run", "digit16.png")
    assert code == 0, err
    assert "digit16.png" in out and "%" in out


def test_a_decompression_bomb_is_one_line(run_copy):
    Image.new("L", (20000, 20000)).save(run_copy / "huge.png")  # 400 MB of pixels, 0.4 MB file
    code, _, err = command(run_copy, "predict", "--workdir", "run", "huge.png")
    assert code == 2
    one_line(err, "huge.png", "too large")


def test_a_named_pipe_among_the_images_does_not_hang(run_copy):
    folder = run_copy / "pictures"
    folder.mkdir()
    os.mkfifo(folder / "x.png")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))
    digit.save(folder / "one.png")
    code, out, err = command(run_copy, "predict", "--workdir", "run", "pictures", timeout=60)
    assert code == 0, err
    assert "one.png" in out and "x.png" not in out
    code, _, err = command(run_copy, "predict", "--workdir", "run", "pictures/x.png", timeout=60)
    assert code == 2
    one_line(err, "x.png", "not a regular file")
