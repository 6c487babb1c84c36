"""The README's research-code example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_research_code_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "train_step" in block)
    exec(compile(example, str(README), "exec"), {})
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy:")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0 and "loss of each model" in out


def test_ci_runs_exactly_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert command in ci


def test_the_docs_nnx_example_runs(capsys):
    api = README.parent / "docs" / "api.md"
    blocks = re.findall(r"```python\n(.*?)```", api.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "nnx.Module" in block)
    exec(compile(example, str(api), "exec"), {})
    accuracy = float(capsys.readouterr().out.split("NNX test accuracy:")[1].split()[0])
    assert 0.5 < accuracy <= 1.0
