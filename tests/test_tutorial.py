"""docs/tutorial.py (the tutorial notebook, jupytext percent format) runs top to bottom as a
plain script and prints what its markdown promises."""

import re
import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.py"


def number(pattern: str, out: str) -> float:
    match = re.search(pattern, out)
    assert match, f"{pattern!r} not in the tutorial's output:\n{out}"
    return float(match.group(1))


def test_tutorial_runs_top_to_bottom(tmp_path):
    # A fresh process in an empty folder: the tutorial must need no state and write no files.
    done = subprocess.run(
        [sys.executable, str(TUTORIAL)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert list(tmp_path.iterdir()) == []

    # 1. The one-layer net learns (its templates are drawn from its kernel).
    assert number(r"one-layer net: test accuracy ([\d.]+)", out) > 0.8
    # 2. chex.assert_trees_all_close passed, so the next line printed.
    assert "hand-written backprop equals jax.grad: True" in out
    assert number(r"largest difference: (\S+)", out) < 1e-5
    # 3. The 5-layer MLP in a lax.scan loop: the loss falls and the net generalises.
    start = number(r"loss at the first step ([\d.]+)", out)
    end = number(r"mean over the last epoch ([\d.]+)", out)
    assert end < start / 3
    assert number(r"5-layer MLP: test accuracy ([\d.]+)", out) > 0.8
    # 4. Ten learning rates, one accuracy each; the best of them trains well.
    assert len(re.findall(r"^lr \S+\s+test accuracy [\d.]+$", out, flags=re.MULTILINE)) == 10
    assert number(r"best lr \S+: test accuracy ([\d.]+)", out) > 0.8
    # 5. The drawn "7" is read as a 7.
    match = re.search(r"^prediction: (\d) \(probability ([\d.]+)\)$", out, flags=re.MULTILINE)
    assert match, out
    assert match.group(1) == "7" and 0.5 < float(match.group(2)) <= 1.0


def test_tutorial_is_a_percent_notebook():
    """Five numbered steps, each a markdown cell followed by code (mkdocs-jupyter renders it)."""
    text = TUTORIAL.read_text()
    assert "format_name: percent" in text
    cells = re.split(r"^# %%", text, flags=re.MULTILINE)[1:]
    kinds = ["markdown" if cell.startswith(" [markdown]") else "code" for cell in cells]
    assert kinds == ["markdown", "code"] * 6
    headings = re.findall(r"^# ## (\d)\. ", text, flags=re.MULTILINE)
    assert headings == ["1", "2", "3", "4", "5"]
