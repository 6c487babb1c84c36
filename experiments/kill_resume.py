"""Kill a `--workdir` training run with SIGKILL at random moments, N times in a row, restarting it
each time; then check that it ends bit-identical to an uninterrupted run (issue 3's "done when").

    python experiments/kill_resume.py [--kills 10] [--seed 0] [--keep-dirs DIR] [--sweep]
                                      [-- TRAIN FLAGS]

--sweep kills a sweep instead (--seeds 2 --lr-sweep with a validation split and the plateau
schedule: 4 models in one program, each with its own selection and plateau state).

Each run starts in the folder holding the two workdirs and is given `--workdir uninterrupted` /
`--workdir killed`, relative paths, as users type them (--absolute gives full paths instead).

Three kills in four land in training, within the three epochs after the one the restart resumes
from (epochs, evaluations, metrics lines, asynchronous saves); the rest land anywhere in start-up
(resume and compilation). Prints one line per kill, what it left on disk, and a verdict; exit 1 on
a mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlp_jax.resume import restore_checkpoint  # noqa: E402
from mlp_jax.workdir import read_metrics  # noqa: E402

DEFAULT_FLAGS = [
    "--dataset",
    "mnist_subset",
    "--layers",
    "3",
    "--hidden",
    "512,256",
    "--dropout",
    "0.1",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--epochs",
    "10",
]
SWEEP_FLAGS = [
    "--dataset",
    "mnist_subset",
    "--layers",
    "3",
    "--hidden",
    "128,64",
    "--dropout",
    "0.1",
    "--batch-size",
    "16",
    "--seeds",
    "2",
    "--lr-sweep",
    "0.01,0.05",
    "--validation-split",
    "0.1",
    "--schedule",
    "plateau",
    "--plateau-patience",
    "1",
    "--epochs",
    "8",
]
TIMINGS = ("epoch_seconds", "examples_per_second")


class Run:
    """One `python -m mlp_jax.train` process; its output goes to `log`, and `compiled` is set
    once it has restored its checkpoint and compiled, i.e. when training proper begins."""

    def __init__(self, workdir: Path, flags: list[str], log: Path, relative: bool = True):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.began = time.perf_counter()
        where = workdir.name if relative else str(workdir)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlp_jax.train", *flags, "--workdir", where],
            cwd=workdir.parent if relative else ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.compiled = threading.Event()
        self.compiled_after = None
        self.epoch_lines: dict[int, float] = {}  # epoch -> when its line was printed
        self._log = log
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self._log, "a") as log:
            for line in self.process.stdout:
                log.write(line)
                if line.startswith("compiled the epoch"):
                    self.compiled_after = time.perf_counter() - self.began
                    self.compiled.set()
                if line.startswith("epoch "):
                    epoch = int(line.split()[1].split("/")[0])
                    self.epoch_lines[epoch] = time.perf_counter()

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout)
        self._reader.join()
        return code


def newest_checkpoint(workdir: Path) -> int:
    checkpoints = workdir / "checkpoints"
    epochs = (
        [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]
        if checkpoints.exists()
        else []
    )
    return max(epochs, default=0)


def on_disk(workdir: Path) -> str:
    """What a kill left: metrics lines, complete checkpoints, interrupted saves."""
    records, torn = read_metrics(str(workdir)) if workdir.exists() else ([], 0)
    checkpoints = workdir / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else []
    complete = [n for n in names if n.isdigit()]
    partial = [n.split(".")[0] for n in names if ".orbax-checkpoint-tmp" in n]
    return (
        f"metrics lines {len(records)}{f' (+{torn} torn)' if torn else ''}, "
        f"checkpoints {','.join(sorted(complete, key=int)) or '-'}"
        + (f", interrupted saves {','.join(partial)}" if partial else "")
    )


def compare(reference: Path, killed: Path) -> list[str]:
    """Differences between two finished workdirs: the full train state and metrics.jsonl."""
    problems = []
    a, b = restore_checkpoint(str(reference)), restore_checkpoint(str(killed))
    for part in ("params", "opt_state", "step", "rng"):
        leaves_a = jax.tree.leaves(jax.device_get(getattr(a.state, part)))
        leaves_b = jax.tree.leaves(jax.device_get(getattr(b.state, part)))
        same = len(leaves_a) == len(leaves_b) and all(
            x.dtype == y.dtype and np.array_equal(x, y)
            for x, y in zip(leaves_a, leaves_b, strict=True)
        )
        if not same:
            problems.append(f"{part} differ")
    records_a, torn_a = read_metrics(str(reference))
    records_b, torn_b = read_metrics(str(killed))
    strip = [
        [{k: v for k, v in r.items() if k not in TIMINGS} for r in rs]
        for rs in (records_a, records_b)
    ]
    if strip[0] != strip[1] or torn_a or torn_b:
        problems.append(
            f"metrics.jsonl differ (epochs {[r['epoch'] for r in records_a]} vs "
            f"{[r['epoch'] for r in records_b]})"
        )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed for the kill moments")
    parser.add_argument("--keep-dirs", default=None, help="put the workdirs here and keep them")
    parser.add_argument(
        "--absolute", action="store_true", help="give --workdir as a full path (default: relative)"
    )
    parser.add_argument("--sweep", action="store_true", help=f"default flags: {SWEEP_FLAGS}")
    parser.add_argument("flags", nargs="*", help="training flags (after --)")
    args = parser.parse_args()
    flags = args.flags or (SWEEP_FLAGS if args.sweep else DEFAULT_FLAGS)
    root = Path(args.keep_dirs or tempfile.mkdtemp(prefix="kill_resume-"))
    root.mkdir(parents=True, exist_ok=True)
    reference, killed = root / "uninterrupted", root / "killed"
    rng = random.Random(args.seed)
    print(f"training flags: {' '.join(flags)}")
    relative = not args.absolute
    where = f"--workdir killed, run in {root}" if relative else f"--workdir {killed}"
    print(f"workdirs: {where}")

    reference_run = Run(reference, flags, root / "uninterrupted.log", relative)
    assert reference_run.wait() == 0, f"uninterrupted run failed: see {root / 'uninterrupted.log'}"
    duration = time.perf_counter() - reference_run.began
    start_up = reference_run.compiled_after
    training = duration - start_up
    epochs = max(record["epoch"] for record in read_metrics(str(reference))[0])
    print(
        f"uninterrupted run: {duration:.1f}s ({start_up:.1f}s start-up and compilation, "
        f"{training:.1f}s training {epochs} epochs)"
    )

    # One kill in four lands anywhere in start-up (resume, compilation). The others land in
    # training: after the line of epoch k (the resumed epoch or one of the next two), at a fraction
    # of the time from one epoch line to the next, i.e. anywhere in metrics line k, save k
    # (asynchronous), epoch k + 1 and its evaluation.
    lines = sorted(reference_run.epoch_lines.values())
    epoch_seconds = float(np.median(np.diff(lines)))  # line to line: epoch, eval, save
    log = root / "killed.log"
    for kill in range(1, args.kills + 1):
        done = newest_checkpoint(killed)  # where this restart resumes
        run = Run(killed, flags, log, relative)
        if rng.random() < 0.25 or done == epochs:  # a complete run has only start-up left
            when, deadline = "in start-up", run.began + rng.uniform(0, start_up)
        else:
            # A few epochs ahead at most, so that 10 kills spread over a 10-epoch run.
            target = rng.randint(done, min(done + 2, epochs - 1))  # done: its first epoch
            fraction = rng.random()
            since = f"epoch {target}'s line" if target > done else "compilation"
            when = f"{fraction:.2f} of an epoch after {since}"
            while target not in run.epoch_lines and run.process.poll() is None:
                if target == done and run.compiled.is_set():
                    break
                time.sleep(0.001)
            after = run.epoch_lines.get(target, time.perf_counter())
            deadline = after + fraction * epoch_seconds
        try:
            code = run.wait(timeout=max(deadline - time.perf_counter(), 0))
            print(f"kill {kill:2}: the run ended (exit {code}) before its kill ({when})")
            continue
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.wait()
        print(
            f"kill {kill:2}: SIGKILL {deadline - run.began:5.2f}s after start, {when} "
            f"-> {on_disk(killed)}"
        )
    run = Run(killed, flags, log, relative)
    assert run.wait() == 0, f"the final restart failed: see {log}"
    print(f"final restart ran to the end -> {on_disk(killed)}")

    problems = compare(reference, killed)
    if problems:
        print(f"VERDICT: MISMATCH after {args.kills} kills: {'; '.join(problems)} (logs in {root})")
        return 1
    lines = len(read_metrics(str(killed))[0])
    print(
        f"VERDICT: IDENTICAL after {args.kills} kills: params, optimizer state, step and rng equal "
        f"bit for bit; metrics.jsonl has {lines} lines, equal to the uninterrupted run's "
        f"(timing fields excluded)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
