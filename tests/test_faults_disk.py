"""Issue kind "disk full or read-only outside the checkpoint": one line, nothing saved lost, no
temporary files left behind. A full disk is RLIMIT_FSIZE (every write past the cap fails)."""

import pytest
from PIL import Image

from tests.faults import TINY, command, one_line, tree_hash


def test_resume_on_a_full_disk_is_one_line_and_keeps_the_run(run_copy):
    saved = run_copy / "run" / "checkpoints" / "2"
    before = tree_hash(saved)
    code, _, err = command(
        run_copy, "train", *TINY, "--epochs", "4", "--workdir", "run", fsize=16384
    )
    assert code == 1
    one_line(err, "cannot write")
    code, out, err = command(run_copy, "evaluate", "--workdir", "run")
    assert code == 0, err
    assert "(epoch 2" in out or "(epoch 3" in out or "(epoch 4" in out
    assert tree_hash(saved) == before  # epoch 2's checkpoint, as it was


def test_export_to_a_full_disk_is_one_line_and_leaves_no_temp_file(run_copy):
    before = tree_hash(run_copy / "run")
    (run_copy / "out").mkdir()
    code, _, err = command(
        run_copy, "export", "--workdir", "run", "--out", "out/model.bin", fsize=4096
    )
    assert code == 1
    one_line(err, "cannot write", "out/model.bin")
    assert list((run_copy / "out").iterdir()) == []
    assert tree_hash(run_copy / "run") == before


def test_export_into_a_path_below_a_file_is_one_line(run_copy):
    (run_copy / "a_file").write_text("keep")
    code, _, err = command(run_copy, "export", "--workdir", "run", "--out", "a_file/model.bin")
    assert code == 2
    one_line(err, "--out")
    assert (run_copy / "a_file").read_text() == "keep"


def test_predict_save_preprocessed_where_it_cannot_write_is_one_line_before_printing(run_copy):
    Image.new("L", (28, 28), 0).save(run_copy / "blank.png")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))
    digit.save(run_copy / "digit.png")
    (run_copy / "a_file").write_text("keep")
    code, out, err = command(
        run_copy, "predict", "--workdir", "run", "--save-preprocessed", "a_file/x", "digit.png"
    )
    assert code == 2 and out == ""
    one_line(err, "--save-preprocessed")
    assert (run_copy / "a_file").read_text() == "keep"


def test_plot_to_a_full_disk_is_one_line(run_copy):
    before = tree_hash(run_copy / "run")
    code, _, err = command(run_copy, "plot", "--workdir", "run", "--out", "figs", fsize=2048)
    assert code == 2
    one_line(err, "--out", "cannot write")
    assert tree_hash(run_copy / "run") == before


def test_a_read_only_checkpoints_folder_is_one_line_at_once(run_copy):
    """A failed save leaves orbax threads that wait 300 s for it: the command must not wait."""
    import os
    import shutil
    import subprocess

    from tests.faults import PYTHON

    root = os.geteuid() == 0  # chmod binds root only without these capabilities
    if root and shutil.which("setpriv") is None:
        pytest.skip("as root, a read-only folder needs setpriv (util-linux)")
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner,-chown"]
    (run_copy / "run" / "checkpoints").chmod(0o555)
    argv = [*(drop if root else []), PYTHON, "-m", "mlp_jax.train", *TINY, "--epochs", "4"]
    done = subprocess.run(
        [*argv, "--workdir", "run"], cwd=run_copy, capture_output=True, text=True, timeout=120
    )
    (run_copy / "run" / "checkpoints").chmod(0o755)
    assert done.returncode == 1
    one_line(done.stderr, "checkpoint run/checkpoints/3: Permission denied", "(epochs 1, 2)")
