"""Issue kind "tracebacks on input": odd flag values, environments and names, each one line."""

import numpy as np
import pytest

from tests.faults import TINY, command, one_line
from tests.test_workdir import _write, write_idx_dir


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--devices", "\u00b2"], "--devices"),
        (["--augment", "shift:\u00b2"], "--augment"),
        (["--coordinator-timeout", "99999999999999"], "--coordinator-timeout"),
        (["--coordinator", "localhost:99999", "--num-processes", "2"], "--coordinator"),
        # Arabic-Indic 3: int() takes it, and it means 3.
        (["--layers", "\u0663", "--hidden", "16,16"], None),
    ],
)
def test_odd_numbers_in_flags_are_one_line(tmp_path, argv, flag):
    code, out, err = command(tmp_path, "train", *TINY, "--epochs", "1", *argv)
    if flag is None:
        assert code == 0 and "3-layer MLP" in out, err
        return
    assert code == 2
    one_line(err, flag)


def test_an_empty_slurm_ntasks_counts_as_one_process(tmp_path):
    env = {"SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": ""}
    code, out, err = command(tmp_path, "train", *TINY, "--epochs", "1", env=env)
    assert code == 0, err
    env["SLURM_NTASKS"] = "two"
    code, _, err = command(tmp_path, "train", *TINY, "--epochs", "1", env=env)
    assert code == 2
    one_line(err, "SLURM_NTASKS", "'two'")


def test_idx_images_with_a_zero_dimension_are_one_line(tmp_path):
    folder = write_idx_dir(tmp_path / "idx")
    _write(folder / "t10k-images-idx3-ubyte.gz", 0x08, (100, 0, 8), b"")
    code, _, err = command(tmp_path, "train", *TINY[2:], "--epochs", "1", "--idx-dir", "idx")
    assert code == 2
    one_line(err, "--idx-dir", "no pixels")
    assert np.prod((100, 0, 8)) == 0


@pytest.mark.parametrize("variable", ["JAX_ENABLE_X64", "JAX_DISABLE_JIT"])
@pytest.mark.parametrize("module", ["train", "evaluate"])
def test_unsupported_jax_settings_are_named_in_one_line(run_copy, variable, module):
    args = [*TINY, "--epochs", "1"] if module == "train" else ["--workdir", "run"]
    code, _, err = command(run_copy, module, *args, env={variable: "1"})
    assert code == 2
    one_line(err, variable, "unset it")


def test_a_workdir_name_that_is_not_utf8_is_refused_before_training(tmp_path):
    import subprocess
    import sys

    name = b"run-\xff"
    done = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"mlp_jax.train",
            *[a.encode() for a in TINY],
            b"--epochs",
            b"1",
            b"--workdir",
            name,
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2
    one_line(done.stderr.decode(errors="replace"), "--workdir", "UTF-8")
    assert b"epoch" not in done.stdout
