"""mlp_jax.predict: probabilities from the library, and the command line on image files."""

import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from mlp_jax import predict
from mlp_jax.predict import main
from mlp_jax.steps import eval_step


def run_predict(cwd, *args):
    result = subprocess.run(
        [sys.executable, "-m", "mlp_jax.predict", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout, result.stderr


def evaluate_predictions(state, images, labels):
    """The classes `evaluate` counts: eval_step's per-example predictions."""
    batch = {"image": images, "label": labels}
    return np.asarray(jax.device_get(eval_step(state, batch)["prediction"]))


def test_predict_gives_probabilities_for_uint8_and_float_images(trained_run, subset):
    _, result = trained_run
    images_u8 = subset.test_images[:64]
    probabilities = predict(result.state, images_u8)
    assert probabilities.shape == (64, 10)
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)
    float_images = images_u8.astype(np.float32) / 255.0
    np.testing.assert_allclose(predict(result.state, float_images), probabilities, atol=1e-6)
    expected = evaluate_predictions(result.state, images_u8, subset.test_labels[:64])
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), expected)


@pytest.fixture
def workspace(tmp_path, trained_run):
    """A temporary current directory holding a copy of the trained run as ./run."""
    shutil.copytree(trained_run[0], tmp_path / "run")
    return tmp_path


def test_pngs_of_the_test_split_get_the_classes_evaluate_gives(workspace, trained_run, subset):
    _, result = trained_run
    images, labels = subset.test_images[:40], subset.test_labels[:40]
    (workspace / "digits").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(workspace / "digits" / f"test{i:02d}.png")
    code, out, err = run_predict(
        workspace,
        "--workdir",
        "run",
        "--preprocess",
        "none",
        "--save-preprocessed",
        "seen",
        "digits",
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("digits")]
    assert len(lines) == 40
    predicted = [int(line.split()[1]) for line in lines]  # "digits/test00.png  7 (99.1%)  ..."
    np.testing.assert_array_equal(predicted, evaluate_predictions(result.state, images, labels))
    for line in lines:  # top-3, most likely first
        shares = [float(part.strip("(%)")) for part in line.split()[2::2]]
        assert len(shares) == 3 and shares == sorted(shares, reverse=True) and sum(shares) <= 100.1
    seen = np.asarray(Image.open(workspace / "seen" / "test07.png"))
    np.testing.assert_array_equal(seen, images[7, ..., 0])  # what the net saw, unchanged


def test_a_drawn_digit_is_saved_as_the_net_sees_it(workspace):
    page = Image.new("L", (160, 120), 255)
    page.paste(0, (100, 10, 110, 90))  # a "1": a black bar, right of centre
    page.save(workspace / "one.jpg")
    code, out, err = run_predict(
        workspace, "--workdir", "run", "one.jpg", "--save-preprocessed", "seen", "--top", "2"
    )
    assert code == 0, err
    assert "preprocessing: digit" in out
    line = next(line for line in out.splitlines() if line.startswith("one.jpg"))
    assert len(line.split()) == 5  # the file and two (class, probability) pairs
    seen = np.asarray(Image.open(workspace / "seen" / "one.png"))
    assert seen.shape == (28, 28) and seen[0, 0] == 0 and seen[14, 14] > 200  # white on black


def test_an_unreadable_file_gets_one_line_from_the_command(workspace):
    (workspace / "photo.jpg").write_bytes(b"\xff\xd8 truncated")
    code, out, err = run_predict(workspace, "--workdir", "run", "photo.jpg")
    assert code == 2 and out == ""
    assert (
        err == "mlp_jax.predict: error: photo.jpg: cannot read it (not an image Pillow can read)\n"
    )


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("text", ["notes.png"], "notes.png: cannot read it (not an image Pillow can read)"),
        (
            "small",
            ["--preprocess", "none", "small.png"],
            "small.png: is 20x20 pixels; --preprocess none needs 28x28",
        ),
        ("empty", ["empty"], "empty: the folder holds no images"),
        ("blank", ["blank.png"], "blank.png: has no ink"),
        (None, ["missing.png"], "missing.png: no such file or folder"),
        ("small", ["--workdir", "nowhere", "small.png"], "--workdir: nowhere does not exist"),
        ("small", ["--best", "small.png"], "best"),  # no validation: no best epoch
        ("small", ["--top", "0", "small.png"], "--top: must be an integer >= 1"),
    ],
)
def test_bad_input_gets_a_one_line_error(workspace, setup, args, message, monkeypatch, capsys):
    if setup == "text":
        (workspace / "notes.png").write_text("not a picture")
    elif setup == "small":
        Image.new("L", (20, 20), 0).save(workspace / "small.png")
    elif setup == "empty":
        (workspace / "empty").mkdir()
        (workspace / "empty" / "readme.txt").write_text("no images here")
    elif setup == "blank":
        Image.new("L", (40, 40), 255).save(workspace / "blank.png")
    workdir = [] if "--workdir" in args else ["--workdir", "run"]
    monkeypatch.chdir(workspace)  # relative paths, as users type them
    code = main([*workdir, *args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("mlp_jax.predict: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_missing_flag_is_one_line_without_the_usage(capsys):
    assert main(["seven.png"]) == 2
    err = capsys.readouterr().err
    assert err == "mlp_jax.predict: error: the following arguments are required: --workdir\n"
