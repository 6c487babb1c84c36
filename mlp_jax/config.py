"""One typed, frozen config: the single source of truth for the CLI and the experiments.

Every field is one `--flag` of `python -m mlp_jax.train` (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# The --augment vocabulary (augment.py): name -> the largest size K of name:K (0: takes none).
# Parsed here, not in augment.py, so that config stays free of JAX (the first line prints first).
AUGMENTATIONS = {"shift": 8, "flip": 0, "erase": 16}
# elastic:ALPHA:SIGMA (Simard et al. 2003) takes two numbers, each within these bounds.
ELASTIC_BOUNDS = {"ALPHA": (0.0, 100.0), "SIGMA": (1.0, 10.0)}
# (name, size) e.g. ("shift", 2), ("flip", 0); or ("elastic", alpha, sigma)
Augmentation = tuple

# Default hidden widths halve from 512 but never drop below this (nor below the class count).
MIN_DEFAULT_WIDTH = 16
# Deeper nets are refused: the compiled epoch unrolls every layer, so compile time grows with
# depth, and plain MLPs (no residuals, no normalisation) this deep no longer train anyway.
MAX_LAYERS = 64
MAX_SEED = 2**31 - 1  # JAX seeds are 32-bit; the --seeds engine stacks them as int32
# Training computes in float32: smaller positive values round to 0 or lose precision (subnormal).
FLOAT32_TINY = 1.1754943508222875e-38
FLOAT32_MAX = 3.4028234663852886e38


# Named recipes: `--preset NAME` sets these fields; flags given on the command line win.
PRESETS: dict[str, dict[str, Any]] = {
    # Chosen on a Fashion-MNIST validation split by experiments/best_mlp.py (RESULTS.md): the
    # highest validation accuracy of fifteen candidates (91.37%; without the test-time flips
    # 91.36%, without the weight decay 91.18%, 784-1024-512-10 plain for 20 epochs 90.78%). Its
    # 5-seed test accuracy is in docs/choosing-models.md.
    "best": {
        "layers": 3,
        "hidden": (2048, 1024),
        "dropout": 0.2,
        "augment": "flip",
        "label_smoothing": 0.1,
        "ema": 0.999,
        "weight_decay": 5e-4,
        "tta": "flip",
        "epochs": 40,
    },
    # Chosen on a full-MNIST validation split by experiments/best_mlp.py (RESULTS.md): the
    # highest validation accuracy of four 784-800-800-10 candidates (99.16%; shift:2 99.03%,
    # no augmentation 98.46%). Its 5-seed test accuracy is in docs/choosing-models.md.
    "best-mnist": {
        "layers": 3,
        "hidden": (800, 800),
        "dropout": 0.2,
        "augment": "elastic:34:4",
        "epochs": 30,
    },
}


def preset_flags(name: str) -> str:
    """PRESETS[name] as the flags it stands for, e.g. "--layers 3 --hidden 1024,512"."""
    return " ".join(
        f"--{field.replace('_', '-')} "
        + (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        for field, value in PRESETS[name].items()
    )


class ConfigError(ValueError):
    """Bad user input: names the argument at fault (a Config field, or a function's argument)
    and what is allowed. The CLI prints it as one line naming the flag (cli.flag_for), exit 2."""

    def __init__(self, argument: str, message: str):
        self.argument, self.message = argument, message
        super().__init__(f"{argument}: {message}")


def _allowed(bounds: str) -> str:
    """An interval as the help and the errors say it: "[1, inf)" -> ">= 1", else "in [0, 1)"."""
    if bounds.endswith("inf)"):
        return f"{'>' if bounds[0] == '(' else '>='} {bounds[1:].split(',')[0]}"
    return f"in {bounds}"


def _field(default: Any, help: str, check: tuple[str, ...] | str | None = None) -> Any:
    """A Config field: its --help text and the check `Config.validate` makes, either the allowed
    values (a tuple) or bounds (an interval such as "[0, 1)" or "[1, inf)", which help states)."""
    metadata = {"help": help}
    if isinstance(check, tuple):
        metadata["choices"] = check
    elif check is not None:
        metadata.update(help=f"{help}; {_allowed(check)}", bounds=check)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on, checked when made (ConfigError names the bad field)."""

    # Data.
    dataset: str = _field("mnist", "TFDS image-classification dataset name, or mnist_subset")
    data_dir: str | None = _field(None, "TFDS data_dir (where prepared datasets live)")
    manual_dir: str | None = _field(None, "folder with the 4 original MNIST IDX .gz files")
    idx_dir: str | None = _field(
        None, "folder with 4 IDX files (e.g. Fashion-MNIST); overrides --dataset"
    )
    normalize: str = _field(
        "standardize",
        "input normalisation: scale (pixels / 255), standardize (then minus the train mean, over "
        "the train std), none (raw 0..255 floats)",
        ("scale", "standardize", "none"),
    )
    # Model.
    layers: int = _field(5, f"number of Dense layers (hidden + output), at most {MAX_LAYERS}")
    hidden: tuple[int, ...] | None = _field(
        None,
        "comma-separated hidden widths, e.g. 1000,1500 (default: halve from 512, never below "
        f"{MIN_DEFAULT_WIDTH} nor the number of classes)",
    )
    activation: str = _field("relu", "hidden non-linearity", ("relu", "tanh", "sigmoid", "gelu"))
    dropout: float = _field(0.0, "dropout rate after each hidden activation", "[0, 1)")
    bias: bool = _field(True, "Dense layers have biases (--no-bias: the lectures' bias-free net)")
    # Optimiser and schedule.
    optimizer: str = _field(
        "momentum", "optax optimizer", ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
    )
    lr: float = _field(0.05, "peak learning rate")
    momentum: float = _field(0.9, "momentum for momentum/nesterov", "[0, 1)")
    weight_decay: float = _field(0.0, "L2 weight decay (decoupled for adamw)", "[0, inf)")
    clip_norm: float | None = _field(None, "clip gradients to this global norm", "(0, inf)")
    dtype: str = _field(
        "float32",
        "compute dtype of the Dense layers; bfloat16 is mixed precision (params, optimizer state, "
        "loss and softmax stay float32): for GPUs and TPUs, slower on CPUs without bf16 units",
        ("float32", "bfloat16"),
    )
    grad_accum: int = _field(
        1,
        "gradient accumulation: average the gradients of N batches, then update once (optax."
        "MultiSteps), as one batch N times larger; the schedule counts these updates",
        "[1, 1024]",
    )
    schedule: str = _field(
        "cosine",
        "learning-rate schedule",
        ("constant", "step", "exponential", "cosine", "warmup_cosine", "plateau"),
    )
    step_every: int = _field(3, "step schedule: decay every K epochs (PyTorch StepLR)", "[1, inf)")
    gamma: float = _field(
        0.5, "step/exponential schedule: decay factor per K epochs / per epoch", "(0, 1]"
    )
    warmup_epochs: float = _field(1.0, "warmup_cosine schedule: linear warm-up epochs", "[0, inf)")
    # Model selection: a validation split, what to monitor on it, early stopping, and the plateau
    # schedule driven by the monitored value (data.validation_split, selection.py, optim.py).
    validation_split: float = _field(
        0.0, "hold out this stratified fraction of train for validation (seed-free)", "[0, 1)"
    )
    monitor: str | None = _field(
        None,
        "what early stopping, the best checkpoint and --schedule plateau follow "
        "(None: val_loss with --validation-split, else nothing)",
        ("val_loss", "val_accuracy", "train_loss"),
    )
    early_stopping: int | None = _field(
        None, "stop after P evaluations in a row without improvement of --monitor", "[1, inf)"
    )
    plateau_factor: float = _field(0.5, "plateau schedule: lr multiplier on a plateau", "(0, 1)")
    plateau_patience: int = _field(
        2, "plateau schedule: evaluations without improvement before the lr drops", "[1, inf)"
    )
    plateau_cooldown: int = _field(
        0, "plateau schedule: evaluations to wait after a drop before counting again", "[0, inf)"
    )
    # Loop.
    epochs: int = _field(10, "number of passes over the training set", "[1, inf)")
    batch_size: int = _field(128, "training minibatch size, at most the train-set size", "[1, inf)")
    eval_batch_size: int = _field(1000, "eval batch size (any size: padded and masked)", "[1, inf)")
    eval_every: int = _field(
        1, "evaluate on the test split every N epochs (and after the last)", "[1, inf)"
    )
    diagnostics: bool = _field(
        False, "also compute each step's gradient norm and log its epoch mean (slower at batch 12)"
    )
    fast_dev_run: bool = _field(
        False,
        "debugging: one epoch of one training batch, evaluated on one batch of each split, every "
        "writer and (with --workdir) a checkpoint touched, then exit (Lightning's fast_dev_run; "
        "sets --epochs 1 --overfit-batches 1)",
    )
    overfit_batches: int = _field(
        0,
        "debugging: train on N batches' worth of train images only (a fixed random choice, the "
        "same every epoch; validation and test unchanged): a net that cannot reach 100 percent "
        "train accuracy on them has a bug (Lightning's overfit_batches); 0: off",
        "[0, inf)",
    )
    seed: int = _field(0, "seed for init, dropout and data order", f"[0, {MAX_SEED}]")
    workdir: str | None = _field(
        None, "write config.json, metrics.jsonl and checkpoints here; resume the run it holds"
    )
    checkpoint_every: int = _field(
        1, "with --workdir: save a checkpoint every N epochs (and last)", "[1, inf)"
    )
    keep: int = _field(3, "with --workdir: keep the newest K checkpoints", "[1, inf)")
    fresh: bool = _field(
        False, "with --workdir: move a run already there aside (DIR.previous-<time>), start over"
    )
    log_every: int = _field(
        10,
        "with --workdir: TensorBoard gets every Nth step's train loss (0: epochs only)",
        "[0, inf)",
    )
    profile: str | None = _field(
        None,
        "with --workdir: a jax.profiler trace of epochs A to B (A:B, or A) in DIR/profile/; open "
        "its .trace.json.gz in ui.perfetto.dev, or DIR/profile in TensorBoard's profile plugin",
    )
    # Scale: devices, hosts, many models (sharding.py, sweep.py).
    devices: str = _field("auto", "data-parallel devices: auto (all) or N (the first N)")
    seeds: int = _field(
        1, "train K models (seeds seed .. seed+K-1) in one compiled program; report mean and std"
    )
    lr_sweep: tuple[float, ...] | None = _field(
        None, "comma-separated peak learning rates, one model each, trained in one program"
    )
    coordinator: str | None = _field(
        None, "multi-process: host:port of process 0 (default: detected from SLURM/TPU/MPI)"
    )
    coordinator_timeout: int = _field(
        60, "multi-process: seconds to wait for all processes at the coordinator", "[1, 86400]"
    )
    num_processes: int | None = _field(None, "multi-process: number of processes", "[1, inf)")
    process_id: int | None = _field(None, "multi-process: this process's index, 0 .. N-1")
    # Augmentation, regularisers and the loss (augment.py, model.py, steps.py, optim.py).
    augment: str | None = _field(
        None,
        "random changes to each training image, made on the device in the compiled step, "
        "comma-separated, applied in order: shift:K (translate by up to K pixels in x and y, zeros "
        "fill in), flip (mirror left-right with probability 1/2: for left-right symmetric classes "
        "like Fashion-MNIST's, not digits), erase:K (with probability 1/2, zero a K x K square at "
        "a random place), elastic:ALPHA:SIGMA (Simard et al. 2003's elastic distortion: a random "
        "displacement field smoothed by a Gaussian of std SIGMA pixels, scaled by ALPHA; Simard "
        "used elastic:34:4 on MNIST; ALPHA in [0, 100], SIGMA in [1, 10]). E.g. shift:2,flip",
    )
    input_dropout: float = _field(0.0, "dropout rate on the input pixels", "[0, 1)")
    max_norm: float | None = _field(
        None, "after every update, scale each unit's incoming weights to norm <= C", "(0, inf)"
    )
    label_smoothing: float = _field(0.0, "train on targets (1-A) * one_hot + A/classes", "[0, 1)")
    ema: float | None = _field(
        None,
        "evaluate an exponential moving average of the params with this decay, e.g. 0.999",
        "(0, 1)",
    )
    loss: str = _field(
        "cross_entropy",
        "training loss: cross_entropy (softmax), or mse (1/2 sum_k (sigmoid(z_k) - y_k)^2, the "
        "TA deck's cost); evaluation always reports the cross-entropy",
        ("cross_entropy", "mse"),
    )
    tta: str = _field(
        "none",
        "test-time augmentation: flip averages the logits of each image and its mirror image in "
        "evaluation, predict and export; for nets trained with --augment flip (not for digits)",
        ("none", "flip"),
    )
    compilation_cache: str = _field(
        "auto",
        "XLA compilation cache: auto (the user cache, e.g. ~/.cache/mlp_jax/xla), a folder, or off",
    )

    def __post_init__(self) -> None:
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.lr_sweep is not None:
            object.__setattr__(self, "lr_sweep", tuple(float(lr) for lr in self.lr_sweep))
        object.__setattr__(self, "devices", str(self.devices))  # Python callers may pass an int
        if self.fast_dev_run:  # what the flag means, set here so that every reader sees it
            object.__setattr__(self, "epochs", 1)
            object.__setattr__(self, "overfit_batches", 1)
        self.validate()

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Widths of the hidden layers for up to 16 classes: see `hidden_sizes_for`."""
        return self.hidden_sizes_for(0)

    def hidden_sizes_for(self, num_classes: int) -> tuple[int, ...]:
        """--hidden if given, else halving from 512, never below MIN_DEFAULT_WIDTH nor
        `num_classes`: a bottleneck narrower than the classes would cap the accuracy."""
        if self.hidden is not None:
            return self.hidden
        floor = max(MIN_DEFAULT_WIDTH, num_classes)
        return tuple(max(512 // 2**i, floor) for i in range(self.layers - 1))

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field: first the checks declared with the
        fields (`choices`, `bounds`), then the rules that relate fields. Checks that need the
        data (label values, memory) live in data.py and state.py."""
        for field in dataclasses.fields(self):
            name, value = field.name, getattr(self, field.name)
            if value is None:
                continue
            if field.type.split(" ")[0] in ("int", "float"):  # e.g. a hand-edited config.json
                number = isinstance(value, int | float) and not isinstance(value, bool)
                _check(number, name, f"must be a number, got {value!r}")
            if "choices" in field.metadata:
                allowed = field.metadata["choices"]
                _check(value in allowed, name, f"unknown {value!r}; allowed: {', '.join(allowed)}")
            if "bounds" in field.metadata:
                bounds = field.metadata["bounds"]
                low, high = (float(end) for end in bounds[1:-1].split(","))
                above = value > low if bounds[0] == "(" else value >= low
                below = value < high if bounds[-1] == ")" else value <= high
                finite = "" if math.isfinite(value) else "a finite number "
                message = f"must be {finite}{_allowed(bounds)}, got {value}"
                _check(math.isfinite(value) and above and below, name, message)
        _check(
            1 <= self.layers <= MAX_LAYERS,
            "layers",
            f"must be 1 .. {MAX_LAYERS}, got {self.layers} (the compiled step unrolls every "
            "layer, so compiling grows with depth; plain MLPs this deep do not train)",
        )
        if self.hidden is not None:
            _check(
                len(self.hidden) == self.layers - 1,
                "hidden",
                f"gives {len(self.hidden)} widths but --layers {self.layers} needs "
                f"{self.layers - 1} (one per hidden layer)",
            )
            _check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        _check_lr("lr", self.lr)
        _check(
            self.schedule != "warmup_cosine" or self.warmup_epochs < self.epochs,
            "warmup_epochs",
            f"{self.warmup_epochs:g} is not shorter than --epochs {self.epochs}: the learning "
            "rate would never reach its peak; use fewer warm-up epochs or more --epochs",
        )
        _check(not self.fresh or self.workdir is not None, "fresh", "needs --workdir")
        _check(not self.profile or self.workdir is not None, "profile", "needs --workdir")
        _ = self.profiled_epochs  # parses --profile, raising ConfigError if it is bad
        for name in ("workdir", "idx_dir", "data_dir", "manual_dir", "compilation_cache"):
            _check_path(name, getattr(self, name))
        _ = self.augmentations  # parses --augment, raising ConfigError if it is bad
        self._validate_selection_and_scale()

    @property
    def profiled_epochs(self) -> tuple[int, int] | None:
        """--profile parsed: "2:3" -> (2, 3), "2" -> (2, 2); None without it."""
        if not self.profile:
            return None
        parts = self.profile.split(":")
        valid = len(parts) <= 2 and all(_is_number(part) for part in parts)
        first, last = (int(parts[0]), int(parts[-1])) if valid else (0, 0)
        message = (
            f"must be A:B or A with 1 <= A <= B <= --epochs {self.epochs}, got {self.profile!r}"
        )
        _check(valid and 1 <= first <= last <= self.epochs, "profile", message)
        return first, last

    @property
    def augmentations(self) -> tuple[Augmentation, ...]:
        """--augment parsed: e.g. "shift:2,flip" -> (("shift", 2), ("flip", 0))."""
        if self.augment is None or self.augment in ("", "none"):
            return ()
        allowed = ", ".join(
            f"{name}:K (K = 1..{size})" if size else name for name, size in AUGMENTATIONS.items()
        )
        allowed += ", elastic:ALPHA:SIGMA"
        parsed = []
        for part in self.augment.split(","):
            name, _, size = part.strip().partition(":")
            if name == "elastic":
                parsed.append(_elastic(part.strip(), allowed))
                continue
            largest = AUGMENTATIONS.get(name)
            unknown = f"unknown {name!r} in {self.augment!r}; allowed: {allowed}"
            _check(largest is not None, "augment", unknown)
            valid = (_is_number(size) and 1 <= int(size) <= largest) if largest else not size
            _check(valid, "augment", f"{part!r}: allowed: {allowed}")
            parsed.append((name, int(size or 0)))
        return tuple(parsed)

    @property
    def monitored(self) -> str | None:
        """What model selection follows: --monitor, else val_loss with a validation split."""
        return self.monitor or ("val_loss" if self.validation_split > 0 else None)

    @property
    def plateau_schedule(self) -> bool:
        """Whether the lr follows the monitored value (its state is in the optimizer state)."""
        return self.schedule == "plateau"

    def _validate_selection_and_scale(self) -> None:
        _check(
            not (self.monitor or "").startswith("val_") or self.validation_split > 0,
            "monitor",
            f"{self.monitor} needs a validation split (--validation-split F with 0 < F < 1)",
        )
        nothing = "nothing to monitor: add --validation-split F, or --monitor train_loss"
        _check(self.early_stopping is None or self.monitored, "early_stopping", nothing)
        _check(not self.plateau_schedule or self.monitored, "schedule", f"plateau has {nothing}")
        _check(
            self.devices == "auto" or (_is_number(self.devices) and int(self.devices) >= 1),
            "devices",
            f"must be auto or a number >= 1, got {self.devices!r}",
        )
        most_seeds = MAX_SEED - self.seed + 1
        _check(
            1 <= self.seeds <= most_seeds,
            "seeds",
            f"must be 1 .. {most_seeds} (seeds --seed .. --seed + K - 1 must stay <= {MAX_SEED}, "
            f"as JAX seeds are 32-bit), got {self.seeds}",
        )
        if self.lr_sweep is not None:
            _check(len(self.lr_sweep) >= 1, "lr_sweep", "needs at least one learning rate")
            for lr in self.lr_sweep:
                _check_lr("lr_sweep", lr)
            repeated = sorted({lr for lr in self.lr_sweep if self.lr_sweep.count(lr) > 1})
            _check(
                not repeated,
                "lr_sweep",
                f"lists {', '.join(f'{lr:g}' for lr in repeated)} more than once; give each "
                "learning rate once (--seeds K repeats each one K times)",
            )
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            _check(
                bool(host) and _is_number(port) and 1 <= int(port) <= 65535,
                "coordinator",
                f"expected host:port with a port 1..65535, e.g. 10.0.0.1:1234, "
                f"got {self.coordinator!r}",
            )
        _check(
            self.process_id is None
            or (self.num_processes is not None and 0 <= self.process_id < self.num_processes),
            "process_id",
            f"must be in 0 .. --num-processes - 1, got {self.process_id} "
            f"(--num-processes {self.num_processes})",
        )

    @property
    def num_models(self) -> int:
        """Models trained at once: --seeds times the number of --lr-sweep values."""
        return self.seeds * (len(self.lr_sweep) if self.lr_sweep is not None else 1)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str = "config.json") -> Config:
        """A Config from its saved dict (config.json); fields this version does not know are
        ignored. A bad value raises ConfigError naming `source` and the field, not a flag."""
        if not isinstance(saved, dict):
            raise ConfigError(source, f"holds a {type(saved).__name__} where a config belongs")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{name: value for name, value in saved.items() if name in known})
        except ConfigError as error:
            message = f'"{error.argument}" {error.message} (edited by hand?)'
            raise ConfigError(source, message) from None
        except (TypeError, ValueError) as error:  # e.g. a number where a list belongs
            raise ConfigError(source, f"a value has the wrong type ({error})") from None


def _is_number(text: str) -> bool:
    """Whether `text` is a whole number in ASCII digits ("²" and "٣" are digits to str.isdigit)."""
    return text.isascii() and text.isdigit()


def _elastic(part: str, allowed: str) -> Augmentation:
    """ "elastic:34:4" -> ("elastic", 34.0, 4.0), within ELASTIC_BOUNDS."""
    numbers = part.split(":")[1:]
    message = f"{part!r}: elastic takes ALPHA:SIGMA, e.g. elastic:34:4; allowed: {allowed}"
    decimal = [n.replace(".", "", 1) for n in numbers]  # 34, 4.5: ASCII digits, one point
    _check(len(numbers) == 2 and all(map(_is_number, decimal)), "augment", message)
    values = tuple(float(n) for n in numbers)
    for (what, (low, high)), value in zip(ELASTIC_BOUNDS.items(), values, strict=True):
        _check(low <= value <= high, "augment", f"{part!r}: {what} must be in [{low:g}, {high:g}]")
    return ("elastic", *values)


def _check_path(field: str, path: str | None) -> None:
    if path is None:
        return
    _check(path != "", field, "is empty (an unset shell variable?); give a folder")
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    _check(shown == path, field, f"{shown!r} is not valid UTF-8; rename it or choose another")


def _check_lr(field: str, lr: float) -> None:
    """Training computes in float32: a smaller lr would round to 0, a larger one to inf."""
    normal = f"[{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}]"
    message = f"must be a finite number > 0 in float32's normal range {normal}, got {lr}"
    _check(FLOAT32_TINY <= lr <= FLOAT32_MAX, field, message)


def _check(ok: Any, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)
