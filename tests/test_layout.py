"""The package's shape: short functions, a loop module and CLI modules that fit a screen or
two, layers that point down (no library module imports a CLI module), and few `# fmt: skip`."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mlp_jax"
MODULES = sorted(PACKAGE.glob("*.py"))
CLI_MODULES = ("train", "evaluate", "predict", "export", "plot", "lr_find")
MAX_FUNCTION_LINES = 60


def _functions(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_no_function_is_longer_than_60_lines(path):
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in _functions(path)
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_the_loop_fits_400_lines_and_each_command_100():
    sizes = {p.stem: len(p.read_text().splitlines()) for p in MODULES}
    assert sizes["loop"] <= 400, sizes["loop"]
    assert {name: sizes[name] for name in CLI_MODULES if sizes[name] > 100} == {}


def test_no_library_module_imports_a_command_module():
    commands = {f"mlp_jax.{name}" for name in CLI_MODULES}
    offenders = []
    for path in MODULES:
        if path.stem in CLI_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.name} imports {name}" for name in names if name in commands]
    assert not offenders, offenders


def test_the_public_api_is_listed_once_and_has_at_most_25_names():
    import mlp_jax

    assert len(mlp_jax.__all__) == len(set(mlp_jax.__all__)) <= 25
    for name in mlp_jax.__all__:
        assert getattr(mlp_jax, name) is not None, name


def test_at_most_10_fmt_skip_markers_in_the_repository():
    files = [p for d in ("mlp_jax", "tests", "experiments") for p in (ROOT / d).rglob("*.py")]
    marker = "fmt: " + "skip"  # split, so that this file does not count itself
    count = sum(p.read_text().count(marker) for p in files)
    assert count <= 10, count
