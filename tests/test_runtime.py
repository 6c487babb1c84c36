"""Tests for mlp_jax/runtime.py: the persistent XLA compilation cache, on by default, switchable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlp_jax.config import ConfigError
from mlp_jax.runtime import compilation_cache_dir, use_compilation_cache

TINY = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "16", "--epochs", "1"]


def run_train(args, cwd, xdg_cache_home, **extra_env):
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_home), **extra_env}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "mlp_jax.train", *TINY, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_default_run_writes_compiled_programs_to_the_user_cache_folder(tmp_path):
    result = run_train([], tmp_path, tmp_path / "xdg")

    assert result.returncode == 0, result.stderr
    folder = tmp_path / "xdg" / "mlp_jax" / "xla"
    assert f"(compilation cache {folder})" in result.stdout
    assert len(list(folder.iterdir())) >= 2  # the epoch and the evaluation, at least


@pytest.mark.parametrize(
    ("flags", "env"),
    [(["--compilation-cache", "off"], {}), ([], {"JAX_ENABLE_COMPILATION_CACHE": "false"})],
)
def test_compilation_cache_off_writes_nothing(tmp_path, flags, env):
    result = run_train(flags, tmp_path, tmp_path / "xdg", **env)

    assert result.returncode == 0, result.stderr
    assert "(compilation cache off)" in result.stdout
    # (matplotlib may keep its font cache in XDG_CACHE_HOME; nothing of mlp_jax's may appear.)
    assert not (tmp_path / "xdg" / "mlp_jax").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name != "xdg"] == []


def test_compilation_cache_folder_is_resolved_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert compilation_cache_dir("off") is None
    assert compilation_cache_dir("cache/xla") == tmp_path / "cache" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "from_env"))
    assert compilation_cache_dir("auto") == tmp_path / "from_env"


def test_an_uncreatable_cache_folder_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")

    with pytest.raises(ConfigError, match="^compilation_cache: .*cannot write"):
        use_compilation_cache(str(Path(tmp_path / "file" / "xla")))
