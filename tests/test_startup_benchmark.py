"""experiments/startup_benchmark.py --quick prints its start-up table (timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_startup_benchmark_prints_a_row_per_moment():
    result = subprocess.run(
        [sys.executable, "experiments/startup_benchmark.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "--help imports jax: no" in lines
    assert "persistent compilation cache: yes" in lines
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:]
    assert rows == [
        "--help",
        "import mlp_jax",
        "first output line",
        "first epoch line, cold cache",
        "first epoch line, warm cache",
    ]
