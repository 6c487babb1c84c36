"""Orbax checkpoints of a run, `DIR/checkpoints/<epoch>/`: saving, restoring, which to keep.
Each is the whole TrainState (of all K models) plus a JSON record (epoch, config, dataset,
normalisation, selections, a hash of the state); what it must match to resume is resume.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
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
    reason,
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
        self.workdir = Workdir.of(workdir)
        self.directory = self.workdir.file(CHECKPOINTS)  # absolute, as orbax needs
        self.shown = self.workdir.show(CHECKPOINTS)  # as the user typed it: messages show this
        # The newest `keep`, and with keep_best each model's selected epoch: `save` puts a
        # CustomSteps policy in this list, which the AnyPreservationPolicy consults at each save.
        # (BestN would need one value for all models, and alone it evicts the newest:
        # google/orbax#526.)
        self._keep_best = keep_best
        self._policies = [ocp.checkpoint_managers.LatestN(keep)]
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(self._policies),
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
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, oldest first (interrupted saves are not listed)."""
        return sorted(self._manager.all_steps())

    def path(self, epoch: int) -> str:
        """DIR/checkpoints/<epoch> as the user would type it (for messages)."""
        return os.path.join(self.shown, str(epoch))

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
        if self._keep_best:
            self._policies[1:] = [ocp.checkpoint_managers.CustomSteps(selected_epochs)]
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

    def close(self) -> None:
        """Wait for the last save to be on disk (CheckpointError if it failed), release orbax."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:
            raise self._save_error(self._last_saved, error) from error
        finally:
            self._manager.close()

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
        kept = self.epochs()
        if epoch is not None and epoch not in kept:
            listed = ", ".join(map(str, kept)) or "none"
            raise NoCheckpointError(
                f"no checkpoint of epoch {epoch} in {self.shown} (epochs: {listed})"
            )
        skipped = []
        for candidate in [epoch] if epoch is not None else reversed(kept):
            path = self.path(candidate)
            try:  # a record edited by hand or corrupted: skipped too
                info = self._restore(candidate, info=ocp.args.JsonRestore()).info
                config = Config.from_dict(info["config"], f"{path}/info")
                saved_epoch = int(info["epoch"])
            except Exception as error:
                skipped.append(f"checkpoint {path} cannot be read ({reason(error)})")
                continue
            if check is not None:
                check(info)
            abstract = _abstract(target(info))
            try:
                state = self._restore(candidate, state=ocp.args.StandardRestore(abstract)).state
            except Exception as error:
                skipped.append(f"checkpoint {path} cannot be read ({reason(error)})")
                continue
            if _state_hash(jax.device_get(state)) != info.get("state_sha256"):
                skipped.append(
                    f"checkpoint {path} is corrupted (its arrays do not match their hash)"
                )
                continue
            return Checkpoint(state, saved_epoch, config, info, path, tuple(skipped))
        where = f"epoch {epoch} in {self.shown}" if epoch is not None else self.shown
        reasons = "; ".join(skipped) if skipped else "there is none"
        raise NoCheckpointError(f"no readable checkpoint of {where}: {reasons}")

    def _restore(self, epoch: int, **items: Any) -> Any:
        return self._manager.restore(epoch, args=ocp.args.Composite(**items))

    def set_aside(self, epoch: int) -> str:
        """Move one (unreadable) checkpoint out of the way, to DIR/unreadable-checkpoints/."""
        name = os.path.basename(unused_path(self.workdir.file(UNREADABLE, f"{epoch}-")))
        os.makedirs(self.workdir.file(UNREADABLE), exist_ok=True)
        os.rename(os.path.join(self.directory, str(epoch)), self.workdir.file(UNREADABLE, name))
        self._manager.reload()
        return self.workdir.show(UNREADABLE, name)

    def _save_error(self, epoch: int | None, error: Exception) -> CheckpointError:
        # From the disk, not the manager: orbax already forgot the one it planned to delete.
        kept = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
        return CheckpointError(
            f"cannot write checkpoint {self.path(epoch)}: {reason(error)}; the complete "
            f"checkpoints are intact (epochs {', '.join(map(str, kept)) or 'none'})"
        )


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
