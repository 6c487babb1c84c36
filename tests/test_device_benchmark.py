"""experiments/device_benchmark.py --quick on the CPU: every check runs, passes and is tabled."""

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import device_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _bench(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.device_benchmark", "--quick", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_quick_run_checks_against_its_cpu_reference_and_writes_one_table(tmp_path):
    reference = tmp_path / "reference.json"
    written = _bench("--reference", str(reference), "--write-cpu-reference")
    assert written.returncode == 0, written.stderr[-3000:]
    accuracies = json.loads(reference.read_text())["test_accuracy"]
    assert len(accuracies) == device_benchmark.SEEDS and len(set(accuracies)) > 1  # 8 models

    result = _bench("--reference", str(reference), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    (table,) = (tmp_path / "out").glob("*.md")
    (figures,) = (tmp_path / "out").glob("*.json")
    rows = {row["what"]: row for row in json.loads(figures.read_text())["rows"]}
    assert table.read_text().count("\n| ") == len(rows) + 1  # the header, then one line a row
    checks = [what for what, row in rows.items() if row["met"] != "-"]
    assert len(checks) == 7 and all(rows[what]["met"] == "yes" for what in checks)
    same_cpu = rows["test accuracy of seeds 0-7 against the same seeds on a CPU"]["measured"]
    assert "difference +0.00 [+0.00, +0.00] points" in same_cpu  # the same machine, same bits
    for name in ("epoch at batch 16", "epoch at batch 64", "K = 1 ", "K = 2 ", "K = 4 "):
        assert any(what.startswith(name) for what in rows), (name, list(rows))


def test_without_a_reference_for_the_recipe_the_row_says_so_and_a_failing_part_fails(
    tmp_path, monkeypatch
):
    def broken(*args):
        raise RuntimeError("no such device")

    monkeypatch.setattr(device_benchmark, "time_torch", broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"config": "another recipe", "test_accuracy": [0.9] * 8}))
    out = tmp_path / "out"
    code = device_benchmark.main(["--quick", "--reference", str(other), "--out", str(out)])
    assert code == 1  # a part that fails is a failed check
    (figures,) = out.glob("*.json")
    rows = json.loads(figures.read_text())["rows"]
    failed = {"what": "torch", "measured": "failed: RuntimeError: no such device", "goal": "-"}
    assert failed | {"met": "**no**"} in rows
    (cpu,) = [row for row in rows if row["what"].endswith("on a CPU")]
    assert cpu["measured"].startswith("no CPU reference for this recipe")


def test_bit_identity_sees_one_ulp_and_a_dtype():
    tree = {"w": jnp.arange(4, dtype=jnp.float32), "b": jnp.ones(2)}
    assert device_benchmark._bit_identical(tree, jax_copy(tree))
    nudged = dict(tree, w=tree["w"].at[3].set(np.nextafter(np.float32(3), np.float32(4))))
    assert not device_benchmark._bit_identical(tree, nudged)
    assert not device_benchmark._bit_identical(tree, dict(tree, b=tree["b"].astype(jnp.bfloat16)))
    assert device_benchmark._max_relative_difference(nudged, tree) == pytest.approx(
        float(np.spacing(np.float32(3))) / 3
    )


def jax_copy(tree):
    return {name: jnp.array(leaf, copy=True) for name, leaf in tree.items()}


def test_a_full_run_needs_the_idx_files():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.device_benchmark"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--idx-dir DIR is needed" in result.stderr
