"""A run's folder, not the arrays in it (checkpoint.py writes DIR/checkpoints/): the path, the
lock, config.json, metrics.jsonl, moving an old run aside for --fresh. One run writes a workdir
at a time, holding the flock'ed DIR/.lock for its whole life; readers (evaluate, plot) take none."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mlp_jax.config import Config, ConfigError

CHECKPOINTS = "checkpoints"  # DIR/checkpoints/<epoch>/{state, info}
CONFIG = "config.json"
METRICS = "metrics.jsonl"
SELECTION = "selection.json"  # the last and the selected epoch (a sweep: the lr validation picks)
LOCK = ".lock"  # flock'ed by the run writing DIR; says who holds it, for messages

Record = dict[str, Any]
Log = Callable[[str], None]  # where a line for the user goes (print, or the loop's log)
# What an error about a bad config.json/metrics.jsonl line advises: the readers', and a run's.
FIX = "fix or delete that line (the checkpoints are not affected)"
FIX_OR_FRESH = f"{FIX}, or start over with --fresh (moves the run aside)"


class WorkdirError(RuntimeError):
    """A file of the workdir cannot be written (full or read-only disk); nothing saved is lost."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; older ones are intact (here: the CLI needs no orbax)."""


class NoCheckpointError(FileNotFoundError):
    """The workdir holds no checkpoint that can be read."""


class WorkdirBusy(ConfigError):
    """Another live process holds the workdir's lock."""


class RunFileError(ConfigError):
    """config.json or metrics.jsonl is not what a run writes (edited by hand or corrupted)."""

    def __init__(self, where: str, problem: str, advice: str):
        super().__init__("workdir", f"{where}: {problem}; {advice}")


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
        return cls(path=os.path.abspath(typed), shown=os.fspath(typed))

    def file(self, *names: str) -> str:
        """Absolute path of DIR/names..."""
        return os.path.join(self.path, *names)

    def show(self, *names: str) -> str:
        """DIR/names... as the user would type it, for messages."""
        return os.path.join(self.shown, *names)

    def holds_run(self) -> bool:
        return any(os.path.exists(self.file(name)) for name in (CONFIG, METRICS, CHECKPOINTS))

    def check_is_run(self) -> None:
        """ConfigError("workdir") unless this is a run's folder, for the commands that read one."""
        if not os.path.isdir(self.path):
            problem = "is a file" if os.path.exists(self.path) else "does not exist"
        elif not self.holds_run():
            problem = f"holds no run (no {CONFIG}, {METRICS} or {CHECKPOINTS}/)"
        else:
            return
        raise ConfigError("workdir", f"{self.shown} {problem}; give a training run's --workdir")

    def write_config(self, info: dict[str, Any]) -> None:
        write_atomically(self.file(CONFIG), json.dumps(info, indent=2), self.show(CONFIG))

    def read_config(self, advice: str = FIX_OR_FRESH, *, for_resume: bool = True) -> dict[str, Any]:
        """config.json, checked to hold what a run writes; RunFileError names the bad line."""
        try:
            info = json.loads(self._read(CONFIG, advice))
        except ValueError as error:  # not JSON, or not UTF-8
            line = f" line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
            problem = f"not JSON ({getattr(error, 'msg', error)})"
            raise RunFileError(self.show(CONFIG) + line, problem, advice) from None
        if problem := _config_problem(info, for_resume):
            raise RunFileError(self.show(CONFIG), problem, advice)
        return info

    def append_metrics(self, records: Iterable[Record]) -> None:
        """Append one line per record, fsynced: on disk before the epoch's checkpoint is."""
        try:
            with open(self.file(METRICS), "a") as file:
                file.writelines(json.dumps(record) + "\n" for record in records)
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise WorkdirError(f"cannot write {self.show(METRICS)}: {reason(error)}") from None

    def read_metrics(self, advice: str = FIX_OR_FRESH) -> tuple[list[Record], int]:
        """The records of DIR/metrics.jsonl and whether its last line is torn (0 or 1): a kill
        can leave one without its newline. Any other bad line raises RunFileError naming it."""
        if not os.path.exists(self.file(METRICS)):
            return [], 0
        lines = self._read(METRICS, advice).split(b"\n")
        for number, line in enumerate(lines[:-1], start=1):  # after the last newline: torn
            if problem := _record_problem(line):
                raise RunFileError(f"{self.show(METRICS)} line {number}", problem, advice)
        return [json.loads(line) for line in lines[:-1]], int(lines[-1] != b"")

    def keep_metrics_until(self, epoch: int) -> tuple[list[Record], int]:
        """Cut metrics.jsonl atomically to epochs 1..`epoch`; return those records and how many
        lines were dropped (later epochs, or a torn last line)."""
        records, torn = self.read_metrics()
        kept = [record for record in records if record["epoch"] <= epoch]  # read_metrics: an int
        dropped = len(records) - len(kept) + torn
        if dropped:
            text = "".join(json.dumps(r) + "\n" for r in kept)
            write_atomically(self.file(METRICS), text, self.show(METRICS))
        return kept, dropped

    def _read(self, name: str, advice: str) -> bytes:
        try:
            with open(self.file(name), "rb") as file:
                return file.read()
        except OSError as error:
            problem = f"cannot be read ({reason(error)})"
            raise RunFileError(self.show(name), problem, advice) from None

    @contextlib.contextmanager
    def lock(self, log: Log) -> Iterator[None]:
        """Hold DIR/.lock for the block (another live run: WorkdirBusy naming its pid); a dead
        holder's (even SIGKILL'ed) is taken over with a line. The file stays: removing it would
        let two runs lock two different files."""
        try:
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WorkdirError(f"cannot create {self.show(LOCK)}: {reason(error)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                advice = "wait for that run to end (or stop it), or use another --workdir"
                busy = f"{self.shown} is in use by {_holder(fd)}; {advice}"
                raise WorkdirBusy("workdir", busy) from None
            if os.pread(fd, 200, 0).strip():  # a holder that ended cleanly empties the file
                log(f"took over the lock of {self.shown} from {_holder(fd)}, which died")
            holder = f"pid {os.getpid()} on {socket.gethostname()} (since {time.strftime('%F %T')})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            _HELD_LOCKS.add(fd)
            yield
        finally:
            if fd in _HELD_LOCKS:  # ended, even by an exception: the next run takes it silently
                _HELD_LOCKS.discard(fd)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock


_HELD_LOCKS: set[int] = set()


def clear_held_locks() -> None:
    """Empty every lock file this process holds, before an os._exit (the kernel then unlocks)."""
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)


def _holder(fd: int) -> str:
    """Who holds a lock: "pid 1234 on host (since 2026-01-01 10:00:00)", as it wrote."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


@contextlib.contextmanager
def open_workdir(config: Config, log: Log, *, lock: bool = True) -> Iterator[Workdir | None]:
    """config.workdir, created and locked for the block (None without one); --fresh first moves
    a run there to DIR.previous-<time>. `lock=False` (processes other than 0) changes nothing."""
    if config.workdir is None or not lock:
        yield None if config.workdir is None else Workdir.of(config.workdir)
        return
    workdir = Workdir.of(config.workdir)
    try:
        os.makedirs(workdir.path, exist_ok=True)
    except OSError as error:
        why = "it is a file; give a folder" if os.path.isfile(workdir.path) else reason(error)
        raise ConfigError("workdir", f"cannot create {workdir.shown}: {why}") from None
    with contextlib.ExitStack() as locks:
        locks.enter_context(workdir.lock(log))
        if config.fresh and workdir.holds_run():
            aside = unused_path(f"{workdir.path}.previous-")  # path: absolute, normalised
            try:
                os.rename(workdir.path, aside)  # with its lock: lock the new DIR too
            except OSError as error:
                why = f"cannot move the run in {workdir.shown} aside: {error.strerror}"
                raise ConfigError("fresh", why) from None
            typed = os.path.normpath(workdir.shown)
            shown = os.path.join(os.path.dirname(typed), os.path.basename(aside))
            log(f"--fresh: moved the previous run in {workdir.shown} to {shown}")
            os.makedirs(workdir.path, exist_ok=True)  # where DIR was a moment ago
            locks.enter_context(workdir.lock(log))
        for name in (CHECKPOINTS, CONFIG, METRICS):  # checkpoints/ is a folder, the others files
            kind = "folder" if os.path.isdir(workdir.file(name)) else "file"
            if os.path.exists(workdir.file(name)) and (kind == "folder") != (name == CHECKPOINTS):
                problem = f"{workdir.show(name)} is a {kind}, not the run's; move it away"
                raise ConfigError("workdir", f"{problem}, or start over with --fresh")
        yield workdir


def read_metrics(workdir: str | Workdir, advice: str = FIX_OR_FRESH) -> tuple[list[Record], int]:
    """`Workdir.read_metrics` of a path, for research code and tests."""
    return Workdir.of(workdir).read_metrics(advice)


def write_atomically(path: str, text: str | bytes, shown: str | None = None) -> None:
    """Write `text` to a temp file beside `path`, fsync, then rename: readers see old or new. On
    failure (full or read-only disk) the temp file is removed and WorkdirError names `shown`."""
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temp, "wb" if isinstance(text, bytes) else "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise WorkdirError(f"cannot write {shown or path}: {reason(error)}") from None


def _config_problem(info: Any, for_resume: bool) -> str | None:
    """Why a config.json's content is not what a run writes (resume needs its "config" too)."""
    if not isinstance(info, dict):
        return f"holds a {type(info).__name__}, expected a JSON object"
    if for_resume and not isinstance(info.get("config"), dict):
        return 'lacks its "config" object'
    dataset = info.get("dataset")
    for key, kind in (("name", str), ("num_classes", int)):
        if not isinstance(dataset, dict) or not isinstance(dataset.get(key), kind):
            return f'"dataset" lacks "{key}" ({kind.__name__})'
    return None


def _record_problem(line: bytes) -> str | None:
    """Why one metrics.jsonl line is not a record, or None."""
    try:
        record = json.loads(line)
    except ValueError as error:
        return f"not JSON ({getattr(error, 'msg', error)})"
    if not isinstance(record, dict):
        return f"holds a {type(record).__name__}, expected a JSON object"
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return f'"epoch" must be a whole number >= 1, got {json.dumps(epoch)}'
    required = ("train_loss", "train_accuracy")  # the other metrics may be null (not evaluated)
    numeric = ("_loss", "_accuracy", "lr", "_seconds", "_second", "grad_norm", "seed")
    for key, value in (dict.fromkeys(required) | record).items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key.endswith(numeric) and not number and (value is not None or key in required):
            null = "" if key in required else " or null"
            return f'"{key}" must be a number{null}, got {json.dumps(value)}'
    return None


def reason(error: BaseException) -> str:
    """'No space left on device (errno 28)' of an OSError or TensorStore error, else line 1."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} (errno {error.errno})"
    # TensorStore puts the code after varying text (a file name, a JSON spec): the OS names it.
    if match := re.search(r"\[os_error_code='?(\d+)", str(error)):
        return f"{os.strerror(int(match.group(1)))} (errno {match.group(1)})"
    text = str(error).split(" See full TensorStore details")[0]  # orbax adds a long JSON spec
    return (text.strip() or type(error).__name__).splitlines()[0][:300]


def unused_path(prefix: str) -> str:
    """`prefix` + the time, with -1, -2... added if that is taken."""
    path = prefix + time.strftime("%Y%m%d-%H%M%S")
    candidates = (path if i == 0 else f"{path}-{i}" for i in range(1000))
    return next(candidate for candidate in candidates if not os.path.exists(candidate))
