"""Orbax checkpoints of a run, `DIR/checkpoints/<epoch>/`: saving, restoring, which to keep.
The rest of the run folder (config.json, metrics.jsonl, --fresh) is workdir.py's.

A checkpoint is the whole TrainState plus a JSON record (epoch, config, dataset, normalisation, a
hash of the state); with `epoch_key(config, e)` ordering each epoch, that is all a resume needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mlp_jax.config import Config, ConfigError
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.optim import make_optimizer
from mlp_jax.state import new_train_state
from mlp_jax.steps import TrainState, steps_per_epoch
from mlp_jax.workdir import (  # the errors live there: the CLI catches them without orbax
    CHECKPOINTS,
    UNREADABLE,
    CheckpointError,
    NoCheckpointError,
    Workdir,
    timestamp,
    unused_path,
)

# Config fields that change the shapes or the meaning of the saved state, or the data order: a
# resume with any of them different would not continue the same run. Everything else (epochs, lr
# and the schedule, evaluation, where the data lives, checkpointing) may change on resume.
MUST_MATCH = (
    "dataset",
    "idx_dir",
    "normalize",
    "layers",
    "hidden_sizes",
    "activation",
    "dropout",
    "bias",
    "optimizer",
    "momentum",
    "weight_decay",
    "clip_norm",
    "batch_size",
    "seed",
    "seeds",  # --seeds and --lr-sweep stack K models into one state
    "lr_sweep",
    "validation_split",  # which images are trained on
    "monitored",  # what the early-stopping state and the best checkpoint refer to
    "plateau_schedule",  # adds its state to the optimizer state
    # Augmentation, regularisers and the loss: each changes what the state means (--ema its
    # shapes too: the average is part of it).
    "augment",
    "input_dropout",
    "max_norm",
    "label_smoothing",
    "ema",
    "loss",
)
# What identifies the data a run was trained on (the config alone does not: e.g. offline fallback).
DATASET_FACTS = ("name", "num_train", "num_test", "image_shape", "num_classes")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the state after `epoch` epochs and what it was trained with."""

    state: TrainState
    epoch: int
    config: Config
    info: dict[str, Any]  # the JSON record saved with it (see `Checkpointer.save`)
    path: str  # DIR/checkpoints/<epoch>
    skipped: tuple[str, ...] = ()  # one message per newer checkpoint that could not be read


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
        options = ocp.CheckpointManagerOptions(
            preservation_policy=_preservation_policy(keep, keep_best),
            # best_fn only makes orbax write each save's metrics and read them back after a
            # restart (BestN needs them); which checkpoints stay is the policy's decision.
            best_fn=_best_key if keep_best else None,
            best_mode="min",
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

    def _absolute(self, epoch: int) -> str:
        return os.path.join(self.directory, str(epoch))

    def save(
        self,
        epoch: int,
        state: TrainState,
        config: Config,
        run_info: dict[str, Any],
        monitored: float | None = None,
    ) -> str:
        """Start writing the checkpoint of `epoch`; it becomes visible only once complete.

        Copies the state to host memory first, so the caller may donate `state` right away.
        `run_info` holds `dataset` (with DATASET_FACTS), `mean` and `std` (see `abstract_state`),
        and may hold `selection` (selection.Selection.to_json). `monitored` is this epoch's
        monitored value (lower is better): with `keep_best`, the lowest one's checkpoint is kept.
        Raises CheckpointError if this or the previous (asynchronous) save failed.
        """
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
            metrics = None if monitored is None else {"monitored": monitored, "epoch": epoch}
            self._manager.save(epoch, args=args, force=True, metrics=metrics)
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
        target: TrainState | None = None,
        epoch: int | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Checkpoint:
        """The newest checkpoint that reads back intact (or exactly `epoch`).

        A checkpoint whose files cannot be read, or whose arrays do not hash to what was saved, is
        skipped with a message naming it (in `Checkpoint.skipped`) and the next older one is tried.
        `check(info)` may raise (e.g. ConfigError) to refuse a checkpoint outright. Without
        `target` (a state of the right structure), the state is rebuilt from the saved record.
        """
        candidates = [epoch] if epoch is not None else sorted(self.epochs(), reverse=True)
        skipped = []
        for candidate in candidates:
            path = self.path(candidate)
            try:
                info = self.read_info(candidate)
            except Exception as error:
                skipped.append(f"checkpoint {path} cannot be read ({_first_line(error)})")
                continue
            if check is not None:
                check(info)
            abstract = _abstract(target if target is not None else abstract_state(info))
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
                epoch=int(info["epoch"]),
                config=config_from_dict(info["config"]),
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


def restore_checkpoint(
    workdir: str | Workdir, epoch: int | None = None, best: bool = False
) -> Checkpoint:
    """Restore the newest readable checkpoint of `workdir` (or that of `epoch`), for research code.

    With `best=True`, the checkpoint of the epoch that validation selected (the best monitored
    value, as recorded by the newest readable checkpoint). Needs no dataset: the model (with its
    normalisation) and the optimizer are rebuilt from the saved record, so `ckpt.state.apply_fn`
    and `ckpt.state.params` are ready to use. Newer checkpoints that cannot be read are listed in
    `ckpt.skipped`. Raises NoCheckpointError.
    """
    workdir = Workdir.of(workdir)  # relative paths are relative to the current directory
    if not os.path.isdir(workdir.file(CHECKPOINTS)):
        raise NoCheckpointError(
            f"no checkpoints in {workdir.shown} (expected {CHECKPOINTS}/ there)"
        )
    checkpointer = Checkpointer(workdir, read_only=True)
    if not best:
        return checkpointer.restore(epoch=epoch)
    newest = checkpointer.restore(epoch=epoch)
    selected = (newest.info.get("selection") or {}).get("best_epoch")
    if selected is None:
        raise NoCheckpointError(
            f"the run in {workdir.shown} selected no best epoch (it monitored nothing: train with "
            "--validation-split F or --monitor)"
        )
    if selected == newest.epoch:
        return newest
    return checkpointer.restore(epoch=selected)


def _best_key(metrics: dict[str, Any]) -> tuple[float, int]:
    return metrics["monitored"], metrics["epoch"]


def _preservation_policy(keep: int, keep_best: bool) -> Any:
    """The newest `keep` checkpoints, and with `keep_best` also the one of the lowest monitored
    value (the earliest among equals, as flax's EarlyStopping counts only strict improvements).

    Both policies together: with BestN alone orbax deletes the newest checkpoint, which resume
    needs, whenever it is not among the best (google/orbax#526).
    """
    newest = ocp.checkpoint_managers.LatestN(keep)
    if not keep_best:
        return newest
    best = ocp.checkpoint_managers.BestN(
        # Sorted descending by (value, epoch); BestN keeps the last n: the lowest, earliest.
        get_metric_fn=_best_key,
        reverse=True,
        n=1,
        keep_checkpoints_without_metrics=False,
    )
    return ocp.checkpoint_managers.AnyPreservationPolicy([newest, best])


def restore_params(workdir: str | Workdir, epoch: int | None = None) -> Any:
    """Just the params of the newest readable checkpoint of `workdir` (see `restore_checkpoint`)."""
    return restore_checkpoint(workdir, epoch).state.params


def restore_for_inference(workdir: str | Workdir, best: bool) -> Checkpoint:
    """The newest checkpoint of `workdir`, or the one validation selected with `best`."""
    if not best:
        return restore_checkpoint(workdir)
    if "best" not in inspect.signature(restore_checkpoint).parameters:
        raise ConfigError("--best", "this version keeps no best checkpoint; leave out --best")
    return restore_checkpoint(workdir, best=True)


def abstract_state(info: dict[str, Any]) -> TrainState:
    """Shapes and dtypes of the TrainState a checkpoint record describes, computing nothing."""
    config = config_from_dict(info["config"])
    dataset = info["dataset"]
    model = model_from_info(info)
    tx = make_optimizer(config, steps_per_epoch(dataset["num_train"], config.batch_size))
    sample = jnp.zeros((1, *dataset["image_shape"]), jnp.uint8)

    def create(key: jax.Array) -> TrainState:
        return new_train_state(config, key, model, tx, sample)

    keys = jnp.zeros((config.num_models, 2), jnp.uint32)  # --seeds/--lr-sweep: a stack of states
    if config.num_models == 1:
        return jax.eval_shape(create, keys[0])
    return jax.eval_shape(jax.vmap(create), keys)


def model_from_info(info: dict[str, Any]) -> MLP:
    """The MLP of a checkpoint record, with the normalisation constants it was trained with."""
    config = config_from_dict(info["config"])
    if "hidden_sizes" in info:  # as trained: the default widths' rule may change
        config = config.replace(
            hidden=tuple(info["hidden_sizes"]), layers=len(info["hidden_sizes"]) + 1
        )
    return mlp_from_config(config, info["dataset"]["num_classes"], info["mean"], info["std"])


def config_from_dict(saved: dict[str, Any]) -> Config:
    """A Config from its saved dict; fields this version does not know are ignored."""
    known = {field.name for field in dataclasses.fields(Config)}
    return Config(**{name: value for name, value in saved.items() if name in known})


def check_resumable(config: Config, info: dict[str, Any], dataset_facts: dict[str, Any]) -> None:
    """Raise ConfigError listing every MUST_MATCH field (and dataset fact) that differs."""
    saved = config_from_dict(info["config"])
    if saved.idx_dir is not None:  # older runs saved it as typed
        saved = saved.replace(idx_dir=os.path.abspath(saved.idx_dir))
    differences = [
        f"{name} {_show(getattr(saved, name, None))} -> {_show(getattr(config, name, None))}"
        for name in MUST_MATCH
        if getattr(saved, name, None) != getattr(config, name, None)
    ]
    saved_facts = info.get("dataset", {})
    differences += [
        f"dataset {name} {_show(saved_facts.get(name))} -> {_show(dataset_facts.get(name))}"
        for name in DATASET_FACTS
        if name in saved_facts and saved_facts[name] != dataset_facts.get(name)
    ]
    if differences:
        raise ConfigError(
            "--workdir",
            f"{config.workdir} holds a run with a different config ({'; '.join(differences)}); "
            "to resume, use its settings; or start over with --fresh (moves the old run aside) "
            "or use another --workdir",
        )


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "()"
    return str(value)


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
