"""How soon `python -m mlp_jax.train` answers: --help, import, first output line, first epoch line.

Each row is the median wall time of --runs fresh processes, from launch to the moment the line
appears on stdout. The first epoch line is timed with a cold compilation cache (a new empty
folder each run) and a warm one (a folder filled by one earlier run). A checkout without
--compilation-cache (before issue 15) has no persistent cache: its cold and warm rows coincide.
Not a timed test: `--quick` (one run, a tiny net) only shows that the script works.

    python experiments/startup_benchmark.py            # 5 runs per row
    python experiments/startup_benchmark.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TRAIN = [sys.executable, "-m", "mlp_jax.train"]
# The default command, on the 5,000 shipped digits: no TFDS, no network probe, same on any machine.
RUN_FLAGS = ["--dataset", "mnist_subset", "--layers", "5", "--epochs", "1"]
QUICK_RUN_FLAGS = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "16", "--epochs", "1"]


CWD = tempfile.mkdtemp(prefix="startup_benchmark_")


def seconds_until(command: Sequence[str], is_line: Callable[[str], bool], env: dict) -> float:
    """Seconds from launching `command` until it prints a stdout line for which is_line holds."""
    start = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=CWD
    ) as process:
        for line in process.stdout:
            if is_line(line):
                seconds = time.perf_counter() - start
                process.kill()
                return seconds
        process.wait()
    raise RuntimeError(f"{' '.join(command)} exited ({process.returncode}) before that line")


def seconds_to_exit(command: Sequence[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=CWD)
    return time.perf_counter() - start


def help_imports_jax(env: dict) -> bool:
    """Whether --help imports jax, from `python -X importtime` (its report goes to stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *TRAIN[1:], "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=CWD,
    )
    return any(line.rsplit("|", 1)[-1].strip() == "jax" for line in result.stderr.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="processes per row (median)")
    parser.add_argument("--quick", action="store_true", help="1 run per row, a tiny net")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    run_flags = QUICK_RUN_FLAGS if args.quick else RUN_FLAGS

    # Runs start in an empty folder: `python -m` puts the current folder first on sys.path, and
    # the mlp_jax measured is the one this Python has installed, not a checkout it happens to be in.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    help_text = subprocess.run(
        [*TRAIN, "--help"], capture_output=True, text=True, env=env, cwd=CWD
    ).stdout
    has_cache_flag = "--compilation-cache" in help_text

    def median(measure: Callable[[], float]) -> float:
        return statistics.median(measure() for _ in range(runs))

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)

        def cache_flags(folder: Path) -> list[str]:
            return ["--compilation-cache", str(folder)] if has_cache_flag else []

        def first_epoch(folder: Path) -> float:
            command = [*TRAIN, *run_flags, *cache_flags(folder)]
            return seconds_until(command, lambda line: line.startswith("epoch 1/"), env)

        counter = iter(range(1_000_000))
        warm = scratch / "warm"
        first_epoch(warm)  # fills the warm cache
        rows = [
            ("--help", median(lambda: seconds_to_exit([*TRAIN, "--help"], env))),
            (
                "import mlp_jax",
                median(lambda: seconds_to_exit([sys.executable, "-c", "import mlp_jax"], env)),
            ),  # noqa: E501
            (
                "first output line",
                median(
                    lambda: seconds_until(
                        [*TRAIN, *run_flags, *cache_flags(scratch / f"cold{next(counter)}")],
                        lambda line: True,
                        env,
                    )
                ),
            ),  # noqa: E501
            (
                "first epoch line, cold cache",
                median(lambda: first_epoch(scratch / f"cold{next(counter)}")),
            ),  # noqa: E501
            ("first epoch line, warm cache", median(lambda: first_epoch(warm))),
        ]

    print(f"command: python -m mlp_jax.train {' '.join(run_flags)}; median of {runs} run(s)")
    print(f"--help imports jax: {'yes' if help_imports_jax(env) else 'no'}")
    cache = "yes" if has_cache_flag else "no (--compilation-cache absent)"
    print(f"persistent compilation cache: {cache}")
    print("| what | seconds |")
    print("|---|---:|")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
