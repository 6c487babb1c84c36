"""A run's folder and nothing about the arrays in it: the path (resolved once), config.json,
metrics.jsonl (append, read, trim), moving an old run aside for --fresh.

`checkpoint.py` writes DIR/checkpoints/ with orbax; everything else under DIR is written here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from mlp_jax.config import Config, ConfigError

CHECKPOINTS = "checkpoints"  # DIR/checkpoints/<epoch>/{state, info}
UNREADABLE = "unreadable-checkpoints"  # where checkpoints that failed to restore are moved
CONFIG = "config.json"
METRICS = "metrics.jsonl"
RUN_FILES = (CONFIG, METRICS, CHECKPOINTS)  # any of these means DIR holds a run

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Workdir:
    """A run folder: `path` is absolute (resolved once, so a later chdir changes nothing and
    orbax, which needs absolute paths, gets one); `shown` is the path as the user typed it."""

    path: str
    shown: str

    @classmethod
    def of(cls, typed: str | os.PathLike | Workdir) -> Workdir:
        if isinstance(typed, Workdir):
            return typed
        typed = os.fspath(typed)
        return cls(path=os.path.abspath(typed), shown=typed)

    def file(self, *names: str) -> str:
        """Absolute path of DIR/names..."""
        return os.path.join(self.path, *names)

    def show(self, *names: str) -> str:
        """DIR/names... as the user would type it, for messages."""
        return os.path.join(self.shown, *names)

    def holds_run(self) -> bool:
        return any(os.path.exists(self.file(name)) for name in RUN_FILES)

    # ------------------------------------------------------------------------- config.json

    def write_config(self, info: dict[str, Any]) -> None:
        write_atomically(self.file(CONFIG), json.dumps(info, indent=2))

    def read_config(self) -> dict[str, Any]:
        with open(self.file(CONFIG)) as file:
            return json.load(file)

    # ------------------------------------------------------------------------- metrics.jsonl

    def append_metrics(self, records: Iterable[Record]) -> None:
        """Append one line per record, fsynced: on disk before the epoch's checkpoint is."""
        with open(self.file(METRICS), "a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
            file.flush()
            os.fsync(file.fileno())

    def read_metrics(self) -> tuple[list[Record], int]:
        """The records of DIR/metrics.jsonl and how many lines could not be read.

        A kill can leave a last line without its newline (a torn write): it is not a record.
        """
        path = self.file(METRICS)
        if not os.path.exists(path):
            return [], 0
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
        records, unreadable = [], 0
        for line in lines[:-1]:  # the part after the last newline is empty or torn
            try:
                records.append(json.loads(line))
            except ValueError:
                unreadable += 1
        return records, unreadable + (lines[-1] != b"")

    def keep_metrics_until(self, epoch: int) -> tuple[list[Record], int]:
        """Cut metrics.jsonl to the records of epochs 1..`epoch` (atomically: temp file + rename).

        Returns the kept records and how many lines were dropped (later epochs, torn or unreadable).
        """
        records, unreadable = self.read_metrics()
        kept = [record for record in records if record.get("epoch", epoch + 1) <= epoch]
        dropped = len(records) - len(kept) + unreadable
        if dropped:
            write_atomically(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in kept))
        return kept, dropped

    # ------------------------------------------------------------------------- --fresh

    def move_aside(self) -> str:
        """Rename DIR to `DIR.previous-<timestamp>` (one atomic rename) and recreate it.

        Returns the new name as the user would type it.
        """
        aside = unused_path(f"{os.path.normpath(self.path)}.previous-{timestamp()}")
        os.rename(self.path, aside)
        os.makedirs(self.path)
        return os.path.join(os.path.dirname(os.path.normpath(self.shown)), os.path.basename(aside))


def prepare_workdir(config: Config, log: Callable[[str], None]) -> Workdir | None:
    """Create config.workdir. With --fresh, first move a run already there aside (never delete)."""
    if config.workdir is None:
        return None
    workdir = Workdir.of(config.workdir)
    shown = workdir.shown
    if os.path.exists(workdir.path) and not os.path.isdir(workdir.path):
        raise ConfigError("--workdir", f"{shown} is a file; expected a directory (new or empty)")
    if config.fresh and os.path.isdir(workdir.path) and workdir.holds_run():
        try:
            aside = workdir.move_aside()
        except OSError as error:
            raise ConfigError(
                "--fresh", f"cannot move the run in {shown} aside: {error.strerror}"
            ) from None
        log(f"--fresh: moved the previous run in {shown} to {aside}")
    elif config.num_models > 1 and os.path.isdir(workdir.path) and workdir.holds_run():
        raise ConfigError(
            "--workdir",
            f"{shown} already holds a run, and --seeds/--lr-sweep runs do not resume; "
            "use --fresh (moves it aside) or a new directory",
        )
    try:
        os.makedirs(workdir.path, exist_ok=True)
    except OSError as error:
        raise ConfigError("--workdir", f"cannot create {shown}: {error.strerror}") from None
    return workdir


# Path-taking forms of the metrics functions, for research code and tests.


def read_metrics(workdir: str | Workdir) -> tuple[list[Record], int]:
    return Workdir.of(workdir).read_metrics()


def keep_metrics_until(workdir: str | Workdir, epoch: int) -> tuple[list[Record], int]:
    return Workdir.of(workdir).keep_metrics_until(epoch)


def write_atomically(path: str, text: str) -> None:
    """Write `text` to a temp file beside `path`, fsync, then rename: readers see old or new."""
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def unused_path(path: str) -> str:
    candidates: Iterable[str] = (path if i == 0 else f"{path}-{i}" for i in range(1000))
    return next(candidate for candidate in candidates if not os.path.exists(candidate))
