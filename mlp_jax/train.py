"""`python -m mlp_jax.train`: one flag per Config field, then the loop (loop.py). Imports no
JAX until the flags are parsed, so `--help` and flag errors answer at once."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from mlp_jax.cli import OneLineParser, command, leave
from mlp_jax.config import PRESETS, Config

PROG = "mlp_jax.train"


def _list_of(kind: type) -> Callable[[str], tuple]:
    """argparse type for comma-separated values, e.g. --hidden 1000,1500."""

    def parse(text: str) -> tuple:
        parts = text.split(",")
        for index, part in enumerate(parts):
            try:
                kind(part)
            except ValueError:
                at = f"item {index + 1} of {len(parts)} is {part[:40]!r}"
                raise argparse.ArgumentTypeError(f"expected {kind.__name__}s; {at}") from None
        return tuple(map(kind, parts))

    return parse


def _preset_flags(preset: dict[str, Any]) -> str:
    """A preset as the flags it stands for, e.g. "--layers 3 --hidden 1024,512"."""
    text = {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in preset.items()}
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in text.items())


def build_parser(
    prog: str = PROG, description: str = "Train and evaluate an MLP on MNIST-like data."
) -> OneLineParser:
    """One flag per Config field, with the field's default and help; and --preset."""
    parser = OneLineParser(prog, description)
    for field in dataclasses.fields(Config):
        kind, kwargs = field.type, {"default": field.default, **field.metadata}
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("tuple"):
            kwargs["type"] = _list_of(float if "float" in kind else int)
        else:
            kwargs["type"] = {"int": int, "float": float}.get(kind.split(" ")[0], str)
        kwargs.pop("bounds", None)  # checked by Config
        parser.add_argument("--" + field.name.replace("_", "-"), **kwargs)
    recipes = "; ".join(f"{name}: {_preset_flags(preset)}" for name, preset in PRESETS.items())
    help = f"start from a named recipe; other flags override it. {recipes}"
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help=help)
    return parser


def config_from_args(
    argv: Sequence[str] | None = None, parser: OneLineParser | None = None
) -> Config:
    """The Config that `argv` asks for (`parser` may add flags of its own: they are left out)."""
    parser = parser or build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset is not None:
        parser.set_defaults(**PRESETS[preset])
    args = vars(parser.parse_args(argv))
    recipe = PRESETS.get(preset, {})
    own_depth = args["layers"] == recipe.get("layers", args["layers"])
    if not own_depth and args["hidden"] == recipe.get("hidden"):  # --layers overrides a preset,
        args["hidden"] = None  # whose widths fit its own depth only: the default widths then
    return Config(**{field.name: args[field.name] for field in dataclasses.fields(Config)})


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)
    if config.process_id in (None, 0):  # an answer within a second, before JAX takes its time
        from mlp_jax.writers import print_line  # numpy and tqdm only

        data = f"--idx-dir {config.idx_dir}" if config.idx_dir else config.dataset
        models = f", {config.num_models} models" if config.num_models > 1 else ""
        batches = f"{config.epochs} epoch{'s' * (config.epochs != 1)} of batch {config.batch_size}"
        print_line(f"{PROG}: {config.layers}-layer MLP on {data}, {batches}{models}; starting JAX")
    from mlp_jax.loop import train_and_evaluate  # JAX and flax load here (orbax: --workdir)

    train_and_evaluate(config)
    return 0


if __name__ == "__main__":
    leave(main())
