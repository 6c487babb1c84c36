"""Process-wide JAX settings of a run: the persistent XLA compilation cache, with which a rerun of
the same command loads its compiled epoch from disk instead of compiling it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import platformdirs

from mlp_jax.config import ConfigError


def compilation_cache_dir(setting: str) -> Path | None:
    """The folder --compilation-cache names: None for "off"; for "auto" $JAX_COMPILATION_CACHE_DIR
    or else the user cache folder (~/.cache/mlp_jax/xla on Linux, honouring $XDG_CACHE_HOME)."""
    if setting == "off":
        return None
    if setting == "auto":
        chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR")
        return Path(chosen or Path(platformdirs.user_cache_dir("mlp_jax")) / "xla")
    return Path(setting).expanduser().resolve()


def use_compilation_cache(setting: str, log: Callable[[str], None] = print) -> Path | None:
    """Point JAX's persistent compilation cache at `setting`'s folder before the first compilation
    and return it (None when off). "auto" respects JAX_ENABLE_COMPILATION_CACHE=false, and runs
    without a cache it cannot write (saying so); a named folder that cannot be written is a
    ConfigError."""
    folder = compilation_cache_dir(setting)
    if setting == "auto" and not jax.config.jax_enable_compilation_cache:
        folder = None
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # writable? (a read-only mount fails root)
    except OSError as error:
        reason = f"cannot write {folder}: {error.strerror or error}"
        if setting != "auto":
            raise ConfigError(
                "compilation_cache", f"{reason}; give a writable folder or off"
            ) from None
        log(f"compilation cache off: {reason} (--compilation-cache DIR names another)")
        folder = None
    jax.config.update("jax_enable_compilation_cache", folder is not None)
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        # JAX's defaults skip programs that compile in under 1 s, such as our epoch on a fast
        # machine, whose compilation still delays the first epoch line: cache every program.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def active_compilation_cache() -> Path | None:
    """The folder JAX's persistent compilation cache writes to now, or None when it is off."""
    folder = jax.config.jax_compilation_cache_dir
    return Path(folder) if folder and jax.config.jax_enable_compilation_cache else None
