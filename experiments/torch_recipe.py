"""mlp_jax's training recipes in PyTorch, as one process: the peer for whole-process time to 88%.

python -m experiments.torch_recipe --idx-dir DIR [--recipe default|lectures] [--compile MODE]
Prints one `epoch E/N ... test acc XX.XX% ...` line per epoch, as `python -m mlp_jax.train` does.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from mlp_jax.config import Config
from mlp_jax.data import load_idx_dir, train_mean_std  # numpy only: this process imports no JAX

HIDDEN = Config().hidden_sizes  # 784-512-256-128-64-10, as experiments/benchmark.py

# mlp_jax's Config() defaults (docs/cli.md, "Default recipe") and the lectures' plain recipe.
RECIPES = {
    "default": dict(lr=0.05, momentum=0.9, cosine=True, batch_size=128, standardize=True),
    "lectures": dict(lr=0.01, momentum=0.0, cosine=False, batch_size=12, standardize=False),
}


def torch_mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    """The lectures' PyTorch net: Linear layers with ReLU between them."""
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", required=True, help="folder of 4 IDX files")
    parser.add_argument("--recipe", choices=list(RECIPES), default="default")
    parser.add_argument("--epochs", type=int, default=10, help="the cosine schedule's horizon too")
    parser.add_argument("--compile", metavar="MODE", help="torch.compile the loss and the step")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    dataset = load_idx_dir(args.idx_dir)
    mean, std = train_mean_std(dataset.train_images) if recipe["standardize"] else (0.0, 1.0)

    def tensor(images_u8: np.ndarray) -> torch.Tensor:  # uint8[N, H, W, C] -> float32[N, H*W*C]
        pixels = torch.from_numpy(images_u8.reshape(len(images_u8), -1)).float().div_(255.0)
        return (pixels - mean) / std

    train_images, test_images = tensor(dataset.train_images), tensor(dataset.test_images)
    train_labels = torch.from_numpy(dataset.train_labels).long()
    test_labels = torch.from_numpy(dataset.test_labels).long()
    net = torch_mlp([train_images.shape[1], *HIDDEN, dataset.num_classes])
    optimizer = torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=recipe["momentum"])
    batch_size = recipe["batch_size"]
    steps = math.ceil(len(train_labels) / batch_size)  # the last batch is kept, as in mlp_jax
    # optax.cosine_decay_schedule(peak, epochs * steps), stepped once per batch.
    total = args.epochs * steps
    shape = (
        (lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        if recipe["cosine"]
        else (lambda step: 1.0)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)

    def loss_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(images), labels)

    optimizer_step = optimizer.step
    if args.compile:
        loss_fn = torch.compile(loss_fn, mode=args.compile)
        optimizer_step = torch.compile(optimizer.step, mode=args.compile)

    # The whole-process timer (time_to_accuracy.py) marks this line: imports, data and model done.
    print(f"ready to train: {len(train_labels)} images, torch {torch.__version__}", flush=True)
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        net.train()
        order = torch.randperm(len(train_labels))
        running, seen = 0.0, 0
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(train_images[indices], train_labels[indices])
            loss.backward()
            optimizer_step()
            scheduler.step()
            running += loss.item() * len(indices)
            seen += len(indices)
        net.eval()
        with torch.no_grad():
            predictions = torch.cat([net(x).argmax(1) for x in test_images.split(1000)])
        accuracy = int((predictions == test_labels).sum()) / len(test_labels)
        seconds = time.perf_counter() - start
        print(
            f"epoch {epoch}/{args.epochs}  train loss {running / seen:.4f}  "
            f"test acc {100 * accuracy:5.2f}%  lr {lr:.4g}  {seconds:.2f}s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
