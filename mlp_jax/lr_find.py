"""`python -m mlp_jax.lr_find [train's flags]`: K lrs on a log grid train for --epochs (2) on 9/10
of train in one vmapped program (train_many); the lowest validation loss after that (a diverged lr
has none) picks the peak lr. The test split is not looked at. Writes lr_find.png."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlp_jax import cli
from mlp_jax.config import Config, ConfigError
from mlp_jax.train import build_parser as train_parser
from mlp_jax.train import config_from_args

PROG = "mlp_jax.lr_find"


def lr_grid(min_lr: float, max_lr: float, num_lrs: int) -> tuple[float, ...]:
    """num_lrs learning rates, evenly spaced in log10 from min_lr to max_lr."""
    if not 0 < min_lr <= max_lr < math.inf:
        raise ConfigError("--min-lr", f"needs 0 < --min-lr <= --max-lr, got {min_lr}, {max_lr}")
    step = math.log10(max_lr / min_lr) / max(num_lrs - 1, 1)
    return tuple(float(f"{min_lr * 10 ** (step * i):.4g}") for i in range(num_lrs))


def suggest(rows: Sequence[dict]) -> dict | None:
    """The row (lr, val_loss, val_accuracy) with the lowest finite validation loss, else None."""
    finite = [row for row in rows if math.isfinite(row["val_loss"])]
    return min(finite, key=lambda row: row["val_loss"]) if finite else None


def grid_search(config: Config, dataset: Any = None) -> tuple[list[dict], Any]:
    """One model per lr of config.lr_sweep (train_many): a row per lr after the last epoch (lr,
    train_loss, val_loss: NaN if diverged, val_accuracy), and the SweepResult."""
    from mlp_jax.loop import train_many

    result, rows = train_many(config, dataset), []
    for lr, history in zip(result.lrs, result.history, strict=True):
        row = {"lr": lr, **{k: history[-1][k] for k in ("train_loss", "val_loss", "val_accuracy")}}
        if not math.isfinite(row["train_loss"]):  # diverged: its validation loss means nothing
            row["val_loss"] = math.nan
        rows.append(row)
    return rows, result


@cli.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    parser = train_parser(PROG, "Find a peak learning rate: a short vmapped sweep on validation.")
    parser.set_defaults(epochs=2, validation_split=0.1)
    parser.add_argument("--min-lr", type=float, default=1e-4, help="smallest lr of the grid")
    parser.add_argument("--max-lr", type=float, default=1.0, help="largest lr of the grid")
    parser.add_argument("--num-lrs", type=cli.positive_int, default=9, help="lrs on the grid")
    parser.add_argument("--out", type=Path, default="lr_find.png", help="where to write the figure")
    args = parser.parse_args(argv)
    for flag in ("workdir", "seeds", "lr_sweep"):  # what lr_find sets itself, or never writes
        if getattr(args, flag) != parser.get_default(flag):
            raise ConfigError(flag, "lr_find trains one model per lr of its grid and saves no run")
    lrs = lr_grid(args.min_lr, args.max_lr, args.num_lrs)
    config = config_from_args(argv, parser).replace(lr_sweep=lrs)
    if config.validation_split == 0:
        raise ConfigError("--validation-split", "lr_find scores on validation: give one > 0")
    cli.writable_folder(args.out.parent, "--out")
    from mlp_jax.figures import dataset_title, plot_lr_find, save_figure
    from mlp_jax.writers import print_line

    print_line(f"{PROG}: {len(lrs)} lrs from {lrs[0]:g} to {lrs[-1]:g}, {config.epochs} epochs")
    rows, result = grid_search(config)
    for row in rows:
        diverged = "  (diverged)" if math.isnan(row["val_loss"]) else ""
        losses = f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}"
        accuracy = f"val acc {100 * row['val_accuracy']:.2f}%{diverged}"
        print_line(f"lr {row['lr']:<9g} {losses}  {accuracy}")
    best = suggest(rows)
    if best is None:
        raise ConfigError("--max-lr", "every lr of the grid diverged; lower the grid")
    print_line(f"suggested lr {best['lr']:g} (lowest validation loss after {config.epochs} epochs)")
    title = f"{dataset_title(result.dataset.name)}: {config.epochs} epochs per lr"
    save_figure(plot_lr_find(rows, best["lr"], title), args.out, "--out")
    print_line(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.leave(main())
