"""One typed, frozen config: the single source of truth for the CLI and the experiments. Every
field is one `--flag` of `python -m mlp_jax.train` (underscores become dashes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# The --augment vocabulary (augment.py): name -> the largest K of name:K (0: takes none). Parsed
# here, not in augment.py, so that config stays free of JAX (the first line prints first).
AUGMENTATIONS = {"shift": 8, "flip": 0, "erase": 16}
Augmentation = tuple  # e.g. ("shift", 2), ("flip", 0), or ("elastic", alpha, sigma)
MIN_DEFAULT_WIDTH = 16  # default widths halve from 512, never below this (nor the class count)
# The compiled epoch unrolls every layer, so compile time grows with depth, and plain MLPs (no
# residuals, no normalisation) this deep no longer train anyway.
MAX_LAYERS = 64
MAX_SEED = 2**31 - 1  # JAX seeds are 32-bit; the --seeds engine stacks them as int32

# Named recipes: `--preset NAME` sets these fields; flags given on the command line win. Each is
# validation's pick by experiments/best_mlp.py (RESULTS.md; 5-seed test accuracy: choosing-models).
PRESETS: dict[str, dict[str, Any]] = {
    # Fashion-MNIST: the best of fifteen candidates (91.37%; without the test-time flips 91.36%,
    # without the weight decay 91.18%, 784-1024-512-10 plain for 20 epochs 90.78%).
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
    # Full MNIST: the best of four 784-800-800-10 candidates (99.16%; shift:2 99.03%, none 98.46%).
    "best-mnist": dict(layers=3, hidden=(800, 800), dropout=0.2, augment="elastic:34:4", epochs=30),
}


class ConfigError(ValueError):
    """Bad user input: names the argument at fault (a Config field, or a function's argument)
    and what is allowed. The CLI prints it as one line naming the flag (cli.FLAGS), exit 2."""

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
    idx_dir: str | None = _field(None, "IDX files' folder, e.g. Fashion-MNIST; overrides --dataset")
    normalize: str = _field(
        "standardize",
        "scale (pixels / 255), standardize (then - train mean, / train std), none (raw 0..255)",
        ("scale", "standardize", "none"),
    )
    # Model.
    layers: int = _field(5, "number of Dense layers (hidden + output)", f"[1, {MAX_LAYERS}]")
    hidden: tuple[int, ...] | None = _field(
        None,
        f"hidden widths, e.g. 1000,1500 (default: 512 halving, >= {MIN_DEFAULT_WIDTH}, classes)",
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
        1, "average the gradients of N batches, then update once (optax.MultiSteps)", "[1, 1024]"
    )
    schedule: str = _field(
        "cosine",
        "learning-rate schedule",
        ("constant", "step", "exponential", "cosine", "warmup_cosine", "plateau"),
    )
    step_every: int = _field(3, "step schedule: decay every K epochs (PyTorch StepLR)", "[1, inf)")
    gamma: float = _field(0.5, "step/exponential: decay factor per K epochs / epoch", "(0, 1]")
    warmup_epochs: float = _field(1.0, "warmup_cosine schedule: linear warm-up epochs", "[0, inf)")
    # Model selection: a validation split, what to monitor on it, early stopping, and the plateau
    # schedule driven by the monitored value (data.validation_split, selection.py, optim.py).
    validation_split: float = _field(
        0.0, "hold out this stratified fraction of train for validation (seed-free)", "[0, 1)"
    )
    monitor: str | None = _field(
        None,
        "what early stopping, --best and plateau follow (default: val_loss if --validation-split)",
        ("val_loss", "val_accuracy", "train_loss"),
    )
    early_stopping: int | None = _field(
        None, "stop after P evaluations in a row without improvement of --monitor", "[1, inf)"
    )
    plateau_factor: float = _field(0.5, "plateau schedule: lr multiplier on a plateau", "(0, 1)")
    plateau_patience: int = _field(2, "plateau: flat evaluations before the lr drops", "[1, inf)")
    plateau_cooldown: int = _field(0, "plateau: evaluations to wait after a drop", "[0, inf)")
    # Loop.
    epochs: int = _field(10, "number of passes over the training set", "[1, inf)")
    batch_size: int = _field(128, "training minibatch size, at most the train-set size", "[1, inf)")
    eval_batch_size: int = _field(1000, "eval batch size (any size: padded and masked)", "[1, inf)")
    eval_every: int = _field(1, "evaluate on test every N epochs (and the last)", "[1, inf)")
    diagnostics: bool = _field(False, "also log each epoch's mean gradient norm (slower)")
    fast_dev_run: bool = _field(
        False,
        "debugging: one epoch of one training batch, one eval batch per split, every writer and "
        "(with --workdir) a checkpoint touched, then exit (sets --epochs 1 --overfit-batches 1)",
    )
    overfit_batches: int = _field(
        0,
        "debugging: train on N batches' worth of train images only (a fixed random choice): a net "
        "that cannot reach 100 percent train accuracy on them has a bug; 0: off",
        "[0, inf)",
    )
    seed: int = _field(0, "seed for init, dropout and data order", f"[0, {MAX_SEED}]")
    workdir: str | None = _field(None, "a run's folder (config, metrics, checkpoints); resumes it")
    checkpoint_every: int = _field(1, "checkpoint every N epochs (and the last)", "[1, inf)")
    keep: int = _field(3, "with --workdir: keep the newest K checkpoints", "[1, inf)")
    fresh: bool = _field(False, "move the run in --workdir aside (DIR.previous-<time>), restart")
    log_every: int = _field(10, "TensorBoard: every Nth step's loss (0: epochs only)", "[0, inf)")
    profile: str | None = _field(None, "jax.profiler trace of epochs A:B (or A) in DIR/profile")
    # Scale: devices, hosts, many models (sharding.py, sweep.py).
    devices: str = _field("auto", "data-parallel devices: auto (all) or N (the first N)")
    seeds: int = _field(1, "train K models (seeds seed .. seed+K-1) in one compiled program")
    lr_sweep: tuple[float, ...] | None = _field(
        None, "comma-separated peak learning rates, one model each, trained in one program"
    )
    coordinator: str | None = _field(None, "host:port of process 0 (default: from SLURM/TPU/MPI)")
    coordinator_timeout: int = _field(60, "seconds to wait for all processes", "[1, 86400]")
    num_processes: int | None = _field(None, "multi-process: number of processes", "[1, inf)")
    process_id: int | None = _field(None, "multi-process: this process's index, 0 .. N-1")
    # Augmentation, regularisers and the loss (augment.py, model.py, steps.py, optim.py).
    augment: str | None = _field(
        None,
        "random changes to each training image, made in the compiled step, comma-separated, in "
        "order: shift:K (translate by up to K pixels in x and y), flip (mirror, p=1/2: not for "
        "digits), erase:K (p=1/2, zero a K x K square), elastic:ALPHA:SIGMA (Simard et al. 2003; "
        "ALPHA in [0, 100], SIGMA in [1, 10]; Simard used elastic:34:4). E.g. shift:2,flip",
    )
    input_dropout: float = _field(0.0, "dropout rate on the input pixels", "[0, 1)")
    max_norm: float | None = _field(None, "cap incoming weight norms at C, post-update", "(0, inf)")
    label_smoothing: float = _field(0.0, "train on targets (1-A) * one_hot + A/classes", "[0, 1)")
    ema: float | None = _field(None, "evaluate the params' EMA, e.g. decay 0.999", "(0, 1)")
    loss: str = _field(
        "cross_entropy",
        "training loss: cross_entropy (softmax), or mse (1/2 sum_k (sigmoid(z_k) - y_k)^2, the "
        "TA deck's cost); evaluation always reports the cross-entropy",
        ("cross_entropy", "mse"),
    )
    tta: str = _field(
        "none",
        "flip: average the logits of each image and its mirror in evaluation, predict and export",
        ("none", "flip"),
    )
    compilation_cache: str = _field(
        "auto", "XLA compilation cache: auto (e.g. ~/.cache/mlp_jax/xla), a folder, or off"
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
        """Raise ConfigError naming the first bad field: the checks declared with the fields, then
        the rules that relate fields. Checks that need the data live in data.py and state.py."""
        for field in dataclasses.fields(self):
            name, value, meta = field.name, getattr(self, field.name), field.metadata
            if value is None:
                continue
            if field.type.split(" ")[0] in ("int", "float"):  # e.g. a hand-edited config.json
                number = isinstance(value, int | float) and not isinstance(value, bool)
                _check(number, name, f"must be a number, got {value!r}")
            if "choices" in meta:
                allowed = ", ".join(meta["choices"])
                _check(value in meta["choices"], name, f"unknown {value!r}; allowed: {allowed}")
            if "bounds" in meta:
                bounds = meta["bounds"]
                low, high = (float(end) for end in bounds[1:-1].split(","))
                above = value > low if bounds[0] == "(" else value >= low
                below = value < high if bounds[-1] == ")" else value <= high
                finite = "" if math.isfinite(value) else "a finite number "
                message = f"must be {finite}{_allowed(bounds)}, got {value}"
                _check(math.isfinite(value) and above and below, name, message)
        if self.hidden is not None:
            needs = f"has {len(self.hidden)} widths; --layers {self.layers} needs {self.layers - 1}"
            _check(len(self.hidden) == self.layers - 1, "hidden", needs)
            _check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        # Training computes in float32: an lr outside its normal range rounds to 0 or inf.
        low, high = 1.1754943508222875e-38, 3.4028234663852886e38
        normal = f"must be a finite number > 0 in float32's normal range [{low:.3g}, {high:.3g}]"
        for name, lr in [("lr", self.lr), *(("lr_sweep", lr) for lr in self.lr_sweep or ())]:
            _check(low <= lr <= high, name, f"{normal}, got {lr}")
        late = f"{self.warmup_epochs:g} is not shorter than --epochs {self.epochs}: the lr would "
        late += "never reach its peak; use fewer warm-up epochs or more --epochs"
        warmup_ok = self.schedule != "warmup_cosine" or self.warmup_epochs < self.epochs
        _check(warmup_ok, "warmup_epochs", late)
        for name in ("fresh", "profile"):
            _check(not getattr(self, name) or self.workdir is not None, name, "needs --workdir")
        for name in ("workdir", "idx_dir", "data_dir", "manual_dir", "compilation_cache"):
            path = getattr(self, name)
            shown = path and path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            _check(path != "", name, "is empty (an unset shell variable?); give a folder")
            _check(shown == path, name, f"{shown!r} is not valid UTF-8; rename it")
        _ = self.profiled_epochs, self.augmentations  # parse --profile, --augment: ConfigError
        self._validate_selection_and_scale()

    @property
    def profiled_epochs(self) -> tuple[int, int] | None:
        """--profile parsed: "2:3" -> (2, 3), "2" -> (2, 2); None without it."""
        if not self.profile:
            return None
        parts = self.profile.split(":")
        valid = len(parts) <= 2 and all(map(_is_number, parts))
        first, last = (int(parts[0]), int(parts[-1])) if valid else (0, 0)
        allowed = f"must be A:B or A with 1 <= A <= B <= --epochs {self.epochs}"
        ok = valid and 1 <= first <= last <= self.epochs
        _check(ok, "profile", f"{allowed}, got {self.profile!r}")
        return first, last

    @property
    def augmentations(self) -> tuple[Augmentation, ...]:
        """--augment parsed: e.g. "shift:2,flip" -> (("shift", 2), ("flip", 0))."""
        if self.augment is None or self.augment in ("", "none"):
            return ()
        known = [f"{name}:K (K = 1..{K})" if K else name for name, K in AUGMENTATIONS.items()]
        allowed = ", ".join([*known, "elastic:ALPHA:SIGMA"])
        parsed = []
        for part in map(str.strip, self.augment.split(",")):
            name, _, size = part.partition(":")
            if name == "elastic":
                parsed.append(_elastic(part, size.split(":"), allowed))
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

    @property
    def num_models(self) -> int:
        """Models trained at once: --seeds times the number of --lr-sweep values."""
        return self.seeds * (len(self.lr_sweep) if self.lr_sweep is not None else 1)

    def _validate_selection_and_scale(self) -> None:
        split = "a validation split (--validation-split F with 0 < F < 1)"
        val = (self.monitor or "").startswith("val_")
        _check(not val or self.validation_split > 0, "monitor", f"{self.monitor} needs {split}")
        nothing = "nothing to monitor: add --validation-split F, or --monitor train_loss"
        _check(self.early_stopping is None or self.monitored, "early_stopping", nothing)
        _check(not self.plateau_schedule or self.monitored, "schedule", f"plateau has {nothing}")
        devices = self.devices == "auto" or (_is_number(self.devices) and int(self.devices) >= 1)
        _check(devices, "devices", f"must be auto or a number >= 1, got {self.devices!r}")
        most = MAX_SEED - self.seed + 1
        why = f"seeds --seed .. --seed + K - 1 must stay <= {MAX_SEED}, as JAX seeds are 32-bit"
        _check(1 <= self.seeds <= most, "seeds", f"must be 1 .. {most} ({why}), got {self.seeds}")
        if self.lr_sweep is not None:
            _check(len(self.lr_sweep) >= 1, "lr_sweep", "needs at least one learning rate")
            repeated = sorted({lr for lr in self.lr_sweep if self.lr_sweep.count(lr) > 1})
            lrs = ", ".join(f"{lr:g}" for lr in repeated)
            once = "give each learning rate once (--seeds K repeats each one K times)"
            _check(not repeated, "lr_sweep", f"lists {lrs} more than once; {once}")
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            valid = bool(host) and _is_number(port) and 1 <= int(port) <= 65535
            allowed = "host:port with a port 1..65535, e.g. 10.0.0.1:1234"
            _check(valid, "coordinator", f"expected {allowed}, got {self.coordinator!r}")
        n, index = self.num_processes, self.process_id
        outside = f"must be in 0 .. --num-processes - 1, got {index} (--num-processes {n})"
        _check(index is None or (n is not None and 0 <= index < n), "process_id", outside)

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what config.json records)."""
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


def _elastic(part: str, numbers: list[str], allowed: str) -> Augmentation:
    """ "elastic:34:4" -> ("elastic", 34.0, 4.0): ALPHA in [0, 100], SIGMA in [1, 10]."""
    message = f"{part!r}: elastic takes ALPHA:SIGMA, e.g. elastic:34:4; allowed: {allowed}"
    decimal = [n.replace(".", "", 1) for n in numbers]  # 34, 4.5: ASCII digits, one point
    _check(len(numbers) == 2 and all(map(_is_number, decimal)), "augment", message)
    alpha, sigma = map(float, numbers)
    for what, value, low, high in (("ALPHA", alpha, 0, 100), ("SIGMA", sigma, 1, 10)):
        _check(low <= value <= high, "augment", f"{part!r}: {what} must be in [{low}, {high}]")
    return ("elastic", alpha, sigma)


def _check(ok: Any, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)
