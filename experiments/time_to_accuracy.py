"""Whole-process time to accuracy: seconds from launching a command to its first epoch line >= it.

--target 0.88 on Fashion-MNIST, 0.98 on MNIST.

python -m experiments.time_to_accuracy --idx-dir DIR [--runs 3] [--out DIR]
Imports, data loading, initialisation and compilation all count, as they do for a user pressing
Enter. Each run of each command is a fresh process; the runs rotate through the commands, and a
process is stopped once it reaches the target. Writes JSON and a Markdown table to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from experiments.common import markdown_table

OUT_DIR = Path(__file__).resolve().parent / "results" / "benchmark"
LECTURES = [
    "--optimizer",
    "sgd",
    "--lr",
    "0.01",
    "--schedule",
    "constant",
    "--batch-size",
    "12",
    "--normalize",
    "scale",
]
ACCURACY = re.compile(r"^epoch\s+(\d+)/\d+.*test (?:loss \S+ )?acc\s+([\d.]+)%")
# Where the time goes: seconds from launch to the first stdout line (imports done), to the line
# that says training can start (mlp_jax: compiled; PyTorch: data and model ready; torch.compile
# compiles inside epoch 1), and to each epoch line.
READY = ("compiled the epoch", "ready to train")


def commands(idx_dir: str, max_epochs: int, torch_threads: int) -> dict[str, list[str]]:
    """label -> argv. The cache labels get JAX's compilation cache through env vars (main)."""
    train = [sys.executable, "-m", "mlp_jax.train", "--idx-dir", idx_dir]
    torch = [
        sys.executable,
        "-m",
        "experiments.torch_recipe",
        "--idx-dir",
        idx_dir,
        "--threads",
        str(torch_threads),
    ]
    keras = [sys.executable, "-m", "experiments.keras_recipe", "--idx-dir", idx_dir]
    return {
        "mlp_jax default recipe, cold cache": [*train],
        "mlp_jax default recipe, warm cache": [*train],
        "pytorch default recipe, eager": [*torch],
        "pytorch default recipe, torch.compile": [*torch, "--compile", "default"],
        # Keras' fit on JAX uses JAX's compilation cache as mlp_jax does: cold and warm too.
        "keras default recipe, fit, cold cache": [*keras],
        "keras default recipe, fit, warm cache": [*keras],
        "mlp_jax lectures' recipe, cold cache": [*train, *LECTURES, "--epochs", str(max_epochs)],
        "pytorch lectures' recipe, eager": [
            *torch,
            "--recipe",
            "lectures",
            "--epochs",
            str(max_epochs),
        ],
        "pytorch lectures' recipe, torch.compile": [
            *torch,
            "--recipe",
            "lectures",
            "--epochs",
            str(max_epochs),
            "--compile",
            "default",
        ],
    }


def run_once(argv: list[str], target: float, environment: dict[str, str]) -> dict:
    """Start `argv`; return the seconds and epoch of its first test accuracy >= target."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment
    )
    result = {
        "seconds": None,
        "epoch": None,
        "accuracies": [],
        "first_line": None,
        "ready": None,
        "epoch_lines": [],
    }
    for line in process.stdout:
        now = time.perf_counter() - start
        if result["first_line"] is None:
            result["first_line"] = now
        if line.startswith(READY):
            result["ready"] = now
        match = ACCURACY.match(line)
        if match:
            result["epoch_lines"].append(now)
            accuracy = float(match[2]) / 100
            result["accuracies"].append(accuracy)
            if accuracy >= target:
                result.update(seconds=now, epoch=int(match[1]))
                break
    process.kill()  # our own child: the rest of its run is not timed
    process.wait()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--idx-dir", required=True, help="folder of the four IDX files (MNIST or Fashion-MNIST)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--max-epochs", type=int, default=20, help="for the lectures' recipe")
    parser.add_argument(
        "--torch-threads", type=int, default=os.cpu_count(), help="torch.set_num_threads"
    )
    parser.add_argument("--only", help="comma-separated substrings: run the matching labels only")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    folder = tempfile.TemporaryDirectory(prefix="jax_cache_")
    table = commands(args.idx_dir, args.max_epochs, args.torch_threads)
    if args.only:
        table = {k: v for k, v in table.items() if any(s in k for s in args.only.split(","))}
    runs: dict[str, list[dict]] = {label: [] for label in table}
    for index in range(args.runs):
        for label, command in table.items():
            environment = {**os.environ}
            if "cache" in label:  # JAX's persistent compilation cache, through its env vars
                cache = Path(folder.name) / f"{label}-{index}"
                if "warm" in label:  # filled by one untimed run first
                    cache = Path(folder.name) / "warm"
                environment.update(
                    JAX_COMPILATION_CACHE_DIR=str(cache),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
                )
                if "warm" in label and not cache.exists():
                    run_once(command, args.target, environment)
            result = run_once(command, args.target, environment)
            runs[label].append(result)
            print(f"{label} run {index + 1}: {result['seconds']} s (epoch {result['epoch']})")
            sys.stdout.flush()
    rows = []
    for label, results in runs.items():
        seconds = [r["seconds"] for r in results if r["seconds"] is not None]
        rows.append(
            {
                "command": label,
                "runs": len(results),
                f"s to {args.target:.0%} (median)": f"{statistics.median(seconds):.1f}"
                if len(seconds) == len(results)
                else "never",
                "min-max": f"{min(seconds):.1f}-{max(seconds):.1f}" if seconds else "-",
                "epoch": "/".join(str(r["epoch"]) for r in results),
            }
        )
    phases = [_phases(label, results) for label, results in runs.items()]
    from experiments.benchmark import cpu_facts, cpu_slug  # one folder per CPU model

    cpu = cpu_facts()
    out = args.out / cpu_slug(cpu)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": cpu,
        "command": "python -m experiments.time_to_accuracy " + " ".join(argv or sys.argv[1:]),
        "argv": table,
        "runs": runs,
        "loadavg_end": os.getloadavg(),
    }
    (out / "time_to_accuracy_process.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown_table(rows) + "\n\nWhere the time goes (medians, s from launch):\n\n"
    text += markdown_table(phases)
    (out / "time_to_accuracy_process.md").write_text(f"{text}\n\n`{report['command']}`\n")
    print(f"\n{text}")
    folder.cleanup()
    return 0


def _phases(label: str, results: list[dict]) -> dict:
    """Median seconds from launch to the first output line, to ready-to-train, to the first
    epoch line, and the median gap between epoch lines (an epoch with its evaluation)."""

    def median(values: list[float | None]) -> str:
        values = [v for v in values if v is not None]
        return f"{statistics.median(values):.1f}" if values else "-"

    gaps = [b - a for r in results for a, b in itertools.pairwise(r["epoch_lines"])]
    return {
        "command": label,
        "first line (imports)": median([r["first_line"] for r in results]),
        "ready to train": median([r["ready"] for r in results]),
        "first epoch line": median([(r["epoch_lines"] or [None])[0] for r in results]),
        "s per later epoch": f"{statistics.median(gaps):.2f}" if gaps else "-",
    }


if __name__ == "__main__":
    sys.exit(main())
