"""Orbax checkpoints of a run, `DIR/checkpoints/<epoch>/`: saving, restoring, which to keep.
Nothing else: what a checkpoint must match to resume, and rebuilding its model, are resume.py's;
the rest of the run folder is workdir.py's.

A checkpoint is the whole TrainState (of all K models) plus a JSON record (epoch, config, dataset,
normalisation, selections, a hash of the state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mlp_jax.config import Config
from mlp_jax.steps import TrainState
from mlp_jax.workdir import (  # the errors live there: the CLI catches them without orbax
    CHECKPOINTS,
    UNREADABLE,
    CheckpointError,
    NoCheckpointError,
    Workdir,
    timestamp,
    unused_path,
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the state after `epoch` epochs and what it was trained with."""

    state: TrainState
    epoch: int
    config: Config
    info: dict[str, Any]  # the JSON record saved with it (see `Checkpointer.save`)
    path: str  # DIR/checkpoints/<epoch>
    skipped: tuple[str, ...] = ()  # one message per newer checkpoint that could not be read
    model: int | None = None  # which model of a sweep `state` is (None: all, or a single run)


class Checkpointer:
    """Saves checkpoints of one workdir asynchronously, keeps the newest `keep`, restores.

    `read_only=True` writes nothing until `save`/`set_aside`: for looking at a workdir before
    deciding to resume it. (orbax's own read_only option logs a warning each time.)
    """

    def __init__(
        self,
        workdir: str | Workdir,
        keep: int = 3,
        *,
        keep_best: bool = False,
        read_only: bool = False,
    ):
        workdir = Workdir.of(workdir)
        self.directory = workdir.file(CHECKPOINTS)  # absolute, as orbax needs
        self.shown = workdir.show(CHECKPOINTS)  # as the user typed it: messages show this
        selected = _KeepEpochs(set())
        newest = ocp.checkpoint_managers.LatestN(keep)
        options = ocp.CheckpointManagerOptions(
            # The newest `keep`, and with keep_best each model's selected epoch. (BestN would
            # need one value for all models, and alone it evicts the newest: google/orbax#526.)
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy([newest, selected])
            if keep_best
            else newest,
            # Temporary dirs are saves that a kill interrupted: never complete, so never used.
            cleanup_tmp_directories=not read_only,
            create=False,  # orbax cannot create it with `active_processes` set (below)
            enable_async_checkpointing=True,
            # In a multi-process run only process 0 saves: no barriers with the others.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            ),
        )
        self._last_saved: int | None = None
        self._selected_epochs = selected
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, oldest first (interrupted saves are not listed)."""
        return sorted(self._manager.all_steps())

    def path(self, epoch: int) -> str:
        """DIR/checkpoints/<epoch> as the user would type it (for messages)."""
        return os.path.join(self.shown, str(epoch))

    def _absolute(self, epoch: int) -> str:
        return os.path.join(self.directory, str(epoch))

    def save(
        self,
        epoch: int,
        state: TrainState,
        config: Config,
        run_info: dict[str, Any],
        selected_epochs: Sequence[int] = (),
    ) -> str:
        """Start writing the checkpoint of `epoch`; it becomes visible only once complete.

        Copies the state to host memory first, so the caller may donate `state` right away.
        `run_info` holds `dataset`, `mean` and `std` (see resume.abstract_state), and may hold
        `selections` (selection.Selection.to_json per model). With `keep_best`, the
        checkpoints of `selected_epochs` (each model's best so far) are kept besides the newest.
        Raises CheckpointError if this or the previous (asynchronous) save failed.
        """
        self._selected_epochs.epochs = set(selected_epochs)
        host_state = jax.device_get(state)
        info = {
            **run_info,
            "epoch": epoch,
            "step": int(np.ravel(host_state.step)[0]),  # a sweep's models share the count
            "config": config.to_dict(),
            "state_sha256": _state_hash(host_state),
        }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(host_state), info=ocp.args.JsonSave(info)
        )
        self._last_saved = epoch
        try:
            self._manager.save(epoch, args=args, force=True)
        except Exception as error:
            raise self._save_error(epoch, error) from error
        return self.path(epoch)

    def wait(self) -> None:
        """Block until the last save is complete on disk; raise CheckpointError if it failed."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:
            raise self._save_error(self._last_saved, error) from error

    def close(self) -> None:
        """Wait for the last save (raising CheckpointError if it failed), then release orbax."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def read_info(self, epoch: int) -> dict[str, Any]:
        """The JSON record of one checkpoint, without reading its arrays."""
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(info=ocp.args.JsonRestore())
        )
        return restored.info

    def restore(
        self,
        target: Callable[[dict[str, Any]], TrainState],
        epoch: int | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Checkpoint:
        """The newest checkpoint that reads back intact (or exactly `epoch`).

        A checkpoint whose files cannot be read, or whose arrays do not hash to what was saved, is
        skipped with a message naming it (in `Checkpoint.skipped`) and the next older one is tried.
        `check(info)` may raise (e.g. ConfigError) to refuse a checkpoint outright. `target(info)`
        gives a state of the saved structure (its arrays, or their shapes, are not used).
        """
        if epoch is not None and epoch not in self.epochs():
            kept = ", ".join(map(str, self.epochs())) or "none"
            raise NoCheckpointError(
                f"no checkpoint of epoch {epoch} in {self.shown} (epochs: {kept})"
            )
        candidates = [epoch] if epoch is not None else sorted(self.epochs(), reverse=True)
        skipped = []
        for candidate in candidates:
            path = self.path(candidate)
            try:
                info = self.read_info(candidate)
                config = Config.from_dict(info["config"], f"{path}/info")
                epoch_of = int(info["epoch"])
            except Exception as error:  # a record edited by hand or corrupted: set aside too
                skipped.append(f"checkpoint {path} cannot be read ({_first_line(error)})")
                continue
            if check is not None:
                check(info)
            abstract = _abstract(target(info))
            try:
                restored = self._manager.restore(
                    candidate, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                ).state
            except Exception as error:
                skipped.append(f"checkpoint {path} cannot be read ({_first_line(error)})")
                continue
            if _state_hash(jax.device_get(restored)) != info.get("state_sha256"):
                skipped.append(
                    f"checkpoint {path} is corrupted (its arrays do not match their hash)"
                )
                continue
            return Checkpoint(
                state=restored,
                epoch=epoch_of,
                config=config,
                info=info,
                path=path,
                skipped=tuple(skipped),
            )
        where = f"epoch {epoch} in {self.shown}" if epoch is not None else self.shown
        reasons = "; ".join(skipped) if skipped else "there is none"
        raise NoCheckpointError(f"no readable checkpoint of {where}: {reasons}")

    def set_aside(self, epoch: int) -> str:
        """Move one (unreadable) checkpoint out of the way, to DIR/unreadable-checkpoints/."""
        name = os.path.basename(
            unused_path(os.path.join(self._unreadable(), f"{epoch}-{timestamp()}"))
        )
        os.makedirs(self._unreadable(), exist_ok=True)
        os.rename(self._absolute(epoch), os.path.join(self._unreadable(), name))
        self._manager.reload()
        return os.path.join(os.path.dirname(self.shown), UNREADABLE, name)

    def _unreadable(self) -> str:
        return os.path.join(os.path.dirname(self.directory), UNREADABLE)

    def _save_error(self, epoch: int | None, error: Exception) -> CheckpointError:
        # From the disk, not the manager: orbax already forgot the one it planned to delete.
        kept = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
        return CheckpointError(
            f"cannot write checkpoint {self.path(epoch)}: {_os_reason(error)}; the complete "
            f"checkpoints are intact (epochs {', '.join(map(str, kept)) or 'none'})"
        )


@dataclasses.dataclass
class _KeepEpochs:
    """An orbax preservation policy: keep the checkpoints of `epochs` (set before each save)."""

    epochs: set[int]

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        return [checkpoint.step in self.epochs for checkpoint in checkpoints]


def _abstract(state: TrainState) -> TrainState:
    """ShapeDtypeStructs (with a sharding, as orbax needs) for every array of `state`."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def describe(leaf):
        sharding = getattr(leaf, "sharding", None) or device
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(describe, state)


def _state_hash(host_state: TrainState) -> str:
    """sha256 over every array of the state (dtype, shape, bytes): catches silently bad restores."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(host_state):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def _os_reason(error: BaseException) -> str:
    """'No space left on device (errno 28)' out of an OSError or a TensorStore error message."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} (errno {error.errno})"
    # TensorStore's messages put the code after varying text (a file name, or a JSON spec):
    # the code is what is reliable, and the OS names it.
    match = re.search(r"\[os_error_code='?(\d+)", str(error))
    if match:
        code = int(match.group(1))
        return f"{os.strerror(code)} (errno {code})"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
