"""Issue kind "silently wrong results": each is now refused in one line, or stopped."""

import gzip
import shutil

from tests.faults import TINY, command, one_line, tree_hash
from tests.test_workdir import write_idx_dir


def test_an_empty_workdir_is_refused_and_writes_nothing_here(tmp_path):
    code, _, err = command(tmp_path, "train", *TINY, "--epochs", "1", "--workdir", "")
    assert code == 2
    one_line(err, "--workdir", "empty")
    assert list(tmp_path.iterdir()) == []
    for module in ("evaluate", "plot", "export", "predict"):
        code, _, err = command(tmp_path, module, "--workdir", "", "--out", "x", "a.png")
        assert code == 2, (module, err)
        one_line(err, "--workdir", "empty")
    assert list(tmp_path.iterdir()) == []


def test_manual_dir_without_tfds_is_refused_not_the_subset(tmp_path):
    hide = "import sys, runpy; sys.modules['tensorflow_datasets'] = None; "
    code = (
        hide
        + "sys.argv[0] = 'mlp_jax.train'; runpy.run_module('mlp_jax.train', run_name='__main__')"
    )
    (tmp_path / "manual").mkdir()
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code, "--dataset", "mnist", "--manual-dir", "manual"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    one_line(done.stderr, "--manual-dir", "tensorflow-datasets")
    assert "epoch 1/" not in done.stdout


def test_an_idx_dir_with_both_a_file_and_its_gz_is_refused(tmp_path):
    folder = write_idx_dir(tmp_path / "idx")
    gz = folder / "train-labels-idx1-ubyte.gz"
    (folder / "train-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes())[:-1] + b"\3")
    code, _, err = command(tmp_path, "train", *TINY[2:], "--epochs", "1", "--idx-dir", "idx")
    assert code == 2
    one_line(err, "--idx-dir", "train-labels-idx1-ubyte and train-labels-idx1-ubyte.gz")


def test_a_finite_but_exploding_loss_stops_as_divergence(tmp_path):
    # No NaN: weight decay 1e30 multiplies every weight without bound; the loss grows finite.
    argv = [*TINY, "--epochs", "3", "--optimizer", "sgd", "--lr", "1000", "--schedule", "constant"]
    code, out, err = command(tmp_path, "train", *argv)
    assert code == 1, (out, err)
    one_line(err, "train loss became")


def test_more_steps_than_the_int32_counter_is_refused(tmp_path):
    code, _, err = command(tmp_path, "train", *TINY, "--epochs", "3000000000")
    assert code == 2
    one_line(err, "--epochs", "int32", "at most")


def test_refusals_keep_a_saved_run_intact(run_copy):
    before = tree_hash(run_copy / "run")
    shutil.copytree(run_copy / "run", run_copy / "kept")
    for argv in (
        ["--epochs", "3000000000"],
        ["--devices", "\u00b2"],
        ["--augment", "shift:\u00b2"],
    ):
        code, _, err = command(run_copy, "train", *TINY, *argv, "--workdir", "run")
        assert code == 2, err
    assert tree_hash(run_copy / "run") == before
