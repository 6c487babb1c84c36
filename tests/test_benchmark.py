"""experiments/benchmark.py --quick writes its table and JSON, with or without torch installed."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_KERAS = importlib.util.find_spec("keras") is not None


def _run_quick(out: Path, *flags: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--quick", "--out", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def report_cpu():
    from experiments.benchmark import cpu_facts

    return cpu_facts()


def test_quick_benchmark_writes_a_row_per_contender_and_batch_size(tmp_path):
    _run_quick(tmp_path)
    (folder,) = tmp_path.iterdir()  # one folder per CPU model, named for it
    assert folder.name.endswith(
        f"-family{report_cpu()['cpu_family']}-model{report_cpu()['cpu_model_number']}"
    )
    report = json.loads((folder / "benchmark.json").read_text())
    assert report["machine"]["vector_extensions"] == report_cpu()["vector_extensions"]
    expected = ["mlp_jax", "pytorch", "flax_host_loop", "pytorch_1thread", "matmul_chain"]
    expected += [
        "mlp_jax_cli",
        "mlp_jax_cli_noworkdir",
        "mlp_jax_cli_noeval",
        "keras",
    ]  # not torch.compile, keras_spe
    expected = [name for name in expected if HAS_TORCH or "torch" not in name]
    expected = [name for name in expected if HAS_KERAS or "keras" not in name]
    assert [section["batch_size"] for section in report["sections"]] == [16, 64]
    for section in report["sections"]:
        assert [row["contender"] for row in section["rows"]] == expected
        for row in section["rows"]:
            assert row["epoch_seconds_median"] > 0 and row["roofline_fraction"] > 0
            assert (row["speedup_vs_pytorch"] is not None) == HAS_TORCH
            assert row["speedup_vs_fastest_peer"] > 0
        cli = next(row for row in section["rows"] if row["contender"] == "mlp_jax_cli")
        assert cli["timed_epochs"] == 1 and cli["cli_epoch_seconds_median"] > 0
        assert section["permutation_seconds"] > 0
    assert report["flops_per_example"] == 2_641_664
    table = (folder / "benchmark.md").read_text()
    assert f"(family {report['machine']['cpu_family']}, model" in table
    assert "| contender | batch |" in table and table.count("| mlp_jax |") == 2


def test_quick_time_to_accuracy_writes_one_row_per_recipe(tmp_path):
    _run_quick(tmp_path, "--time-to-accuracy")
    (folder,) = tmp_path.iterdir()
    rows = json.loads((folder / "time_to_accuracy.json").read_text())["time_to_accuracy"]
    assert len(rows) == (3 if HAS_TORCH else 2)
    assert all(row["epochs_run"] == 2 and 0 <= row["final_accuracy"] <= 1 for row in rows)
    assert "| recipe |" in (folder / "time_to_accuracy.md").read_text()
