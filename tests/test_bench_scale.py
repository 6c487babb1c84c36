"""experiments/bench_scale.py --quick runs (with its own 8 fake devices) and reports each figure."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_scale_quick_reports_devices_and_seeds(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench_scale", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 cpu devices" in result.stdout and "| devices |" in result.stdout
    figures = json.loads(out.read_text())
    assert [row["devices"] for row in figures["devices"]] == [1, 2]
    one, two = (row["test_accuracy"] for row in figures["devices"])
    assert abs(one - two) <= 0.002  # the same model on 1 and 2 devices, up to float rounding
    (seeds,) = figures["seeds"]
    assert seeds["models"] == 2 and seeds["vmapped_examples_per_second"] > 0
