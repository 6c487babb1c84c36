"""Helpers of the test_faults_*.py files: the commands run as users run them (a subprocess in a
temporary current directory, relative paths), a trained run to copy, and a hash of a folder to
show that nothing saved changed."""

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "16", "--batch-size", "100"]
PYTHON = sys.executable


def command(cwd, module, *args, env=None, timeout=180, close_stdout=False, fsize=None):
    """(exit code, stdout, stderr) of `python -m mlp_jax.<module> ARGS` run in `cwd`.

    `close_stdout` starts it with fd 1 closed (`>&-`); `fsize` caps every file it writes at that
    many bytes (RLIMIT_FSIZE, as a full disk: writes past it fail with EFBIG)."""
    argv = [PYTHON, "-m", f"mlp_jax.{module}", *map(str, args)]
    environment = {**os.environ, **(env or {})}
    if close_stdout or fsize:
        limit = f"ulimit -f {fsize // 512}; trap '' XFSZ; " if fsize else ""
        shell = limit + "exec " + shlex.join(argv) + (" >&-" if close_stdout else "")
        argv = ["bash", "-c", shell]
    done = subprocess.run(
        argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout, done.stderr


def one_line(err, *words):
    """`err` is one line, no traceback, and holds every one of `words`."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def tree_hash(folder):
    """sha256 over every file's relative path and bytes below `folder` (the lock excluded)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.name != ".lock":
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A folder holding `run`, a 2-epoch run of a tiny MLP on the MNIST subset."""
    folder = tmp_path_factory.mktemp("faults")
    code, out, err = command(folder, "train", *TINY, "--epochs", "2", "--workdir", "run")
    assert code == 0, err
    return folder


@pytest.fixture
def run_copy(trained, tmp_path):
    """A fresh copy of the trained run: tmp_path/run (the current directory of the commands)."""
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path
