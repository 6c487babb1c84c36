"""An NNX model through create_train_state: the same pure state, steps and results as linen.

The contract (create_train_state's docstring): `__call__(self, images, *, train=False,
rngs=None)` returns logits, dropout is `nnx.Dropout(rate)(x, deterministic=not train,
rngs=rngs)`, and the module's own nnx.Param weights become the state's params.
"""

import json
import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mlp_jax import MLP, create_train_state, evaluate, predict, train_epoch, train_step

ROOT = pathlib.Path(__file__).resolve().parent.parent


class NnxMLP(nnx.Module):
    """mlp_jax.MLP(hidden_sizes=(hidden,), num_classes) in NNX, with linen's layer names, so the
    two params dicts have the same structure."""

    def __init__(self, *, rngs, hidden=32, num_classes=10, dropout_rate=0.0, mean=0.0, std=1.0):
        self.hidden_0 = nnx.Linear(784, hidden, rngs=rngs)
        self.output = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)
        self.mean, self.std = mean, std

    def __call__(self, images, *, train=False, rngs=None):
        x = images.reshape((images.shape[0], -1))
        if jnp.issubdtype(x.dtype, jnp.integer):
            x = x.astype(jnp.float32) / 255.0
        x = (x - self.mean) / self.std
        x = self.dropout(nnx.relu(self.hidden_0(x)), deterministic=not train, rngs=rngs)
        return self.output(x)


def _copy_weights(model, params):
    for layer in ("hidden_0", "output"):  # copies: train_step will donate the linen state
        getattr(model, layer).kernel[...] = jnp.array(params[layer]["kernel"])
        getattr(model, layer).bias[...] = jnp.array(params[layer]["bias"])


def _batch(subset, n=64, start=0):
    rows = slice(start, start + n)
    return {
        "image": jnp.asarray(subset.train_images[rows]),
        "label": jnp.asarray(subset.train_labels[rows]),
    }


def test_nnx_mlp_given_linen_weights_gives_the_same_logits_loss_and_update(subset):
    mean, std = 0.13, 0.31
    rng, tx = jax.random.PRNGKey(0), optax.sgd(0.1, momentum=0.9)
    batch = _batch(subset)
    linen_state = create_train_state(
        rng, MLP(hidden_sizes=(32,), num_classes=10, mean=mean, std=std), tx, batch["image"][:1]
    )
    model = NnxMLP(rngs=nnx.Rngs(1), mean=mean, std=std)
    _copy_weights(model, linen_state.params)
    nnx_state = create_train_state(rng, model, tx, batch["image"][:1])

    chex.assert_trees_all_equal(nnx_state.params, linen_state.params)  # plain dicts, same names
    chex.assert_trees_all_equal(nnx_state.rng, linen_state.rng)  # rng seeds dropout alike
    linen_logits = linen_state.apply_fn({"params": linen_state.params}, batch["image"])
    logits = nnx_state.apply_fn({"params": nnx_state.params}, batch["image"])
    chex.assert_trees_all_close(logits, linen_logits, atol=1e-5)

    for _ in range(2):  # the second step uses the momentum of the first
        linen_state, linen_metrics = train_step(linen_state, batch)
        nnx_state, metrics = train_step(nnx_state, batch)
        chex.assert_trees_all_close(metrics, linen_metrics, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(nnx_state.params, linen_state.params, atol=1e-6)
    chex.assert_trees_all_close(nnx_state.opt_state, linen_state.opt_state, atol=1e-6)
    # The state copied the weights: donating it left the module whole and unchanged.
    chex.assert_trees_all_close(model(batch["image"]), linen_logits, atol=1e-5)


def test_nnx_model_with_dropout_trains_through_train_epoch(subset):
    images, labels = jnp.asarray(subset.train_images[:400]), jnp.asarray(subset.train_labels[:400])
    model = NnxMLP(rngs=nnx.Rngs(0), hidden=64, dropout_rate=0.2, mean=0.13, std=0.31)
    state = create_train_state(jax.random.PRNGKey(0), model, optax.adam(1e-3), images[:1])

    variables = {"params": state.params}
    drop = [
        state.apply_fn(variables, images[:8], train=True, rngs={"dropout": jax.random.key(k)})
        for k in (1, 2)
    ]
    assert not np.allclose(drop[0], drop[1])  # dropout is on in training, keyed by the rngs
    chex.assert_trees_all_equal(state.apply_fn(variables, images[:8]), model(images[:8]))

    compiled = train_epoch._cache_size()
    losses = []
    for epoch in range(4):
        key = jax.random.fold_in(jax.random.PRNGKey(1), epoch)
        state, metrics = train_epoch(state, images, labels, key, batch_size=50)
        losses.append(float(metrics["train_loss"]))
    assert train_epoch._cache_size() == compiled + 1  # NnxApply is stable: one compilation
    assert losses[-1] < 0.7 * losses[0], losses
    assert int(state.step) == 4 * 8

    test_images = jnp.asarray(subset.test_images)
    result = evaluate(state, test_images, jnp.asarray(subset.test_labels))
    assert float(result["accuracy"]) > 0.7, result["accuracy"]
    probabilities = predict(state, test_images[:10])
    chex.assert_shape(probabilities, (10, 10))
    np.testing.assert_allclose(np.sum(probabilities, -1), 1.0, rtol=1e-5)


def test_create_train_state_and_train_step_vmap_over_seeds(subset):
    batch = _batch(subset, 32)
    model = NnxMLP(rngs=nnx.Rngs(0), dropout_rate=0.5)
    tx = optax.sgd(0.1)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states = jax.vmap(lambda k: create_train_state(k, model, tx, batch["image"][:1]))(keys)
    chex.assert_shape(states.params["output"]["kernel"], (3, 32, 10))
    assert len({tuple(np.asarray(k)) for k in states.rng}) == 3  # one dropout key per seed

    new, metrics = jax.vmap(train_step, in_axes=(0, None))(states, batch)
    chex.assert_shape(metrics["loss"], (3,))
    kernels = np.asarray(new.params["hidden_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])  # each seed dropped other units
    single, single_metrics = train_step(
        create_train_state(keys[1], model, tx, batch["image"]), batch
    )
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], new.params), single.params, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"][1], single_metrics["loss"], rtol=1e-6)


def test_state_other_than_params_is_refused_with_the_reason():
    class WithBatchNorm(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(784, 10, rngs=rngs)
            self.norm = nnx.BatchNorm(10, rngs=rngs)

    class DropoutKeepsRngs(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(784, 10, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

    sample = jnp.zeros((1, 28, 28, 1), jnp.uint8)
    with pytest.raises(ValueError, match="WithBatchNorm also holds norm.mean.*BatchNorm"):
        create_train_state(
            jax.random.PRNGKey(0), WithBatchNorm(nnx.Rngs(0)), optax.sgd(0.1), sample
        )
    with pytest.raises(ValueError, match="dropout.rngs.*rngs=rngs"):
        create_train_state(
            jax.random.PRNGKey(0), DropoutKeepsRngs(nnx.Rngs(0)), optax.sgd(0.1), sample
        )


def _mesh_main():
    """In a process with 2 CPU devices: one train_step and one train_epoch on the `data` mesh and
    on one device; prints, as JSON, both steps' losses and how far the epochs' params differ."""
    from mlp_jax.data import load_mnist_subset
    from mlp_jax.sharding import batch_sharding, put_replicated, shard_batch

    assert jax.device_count() == 2, jax.devices()
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    subset = load_mnist_subset()
    images, labels = jnp.asarray(subset.train_images[:200]), jnp.asarray(subset.train_labels[:200])
    model = NnxMLP(rngs=nnx.Rngs(0), dropout_rate=0.2)

    def fresh():
        return create_train_state(jax.random.PRNGKey(0), model, optax.adam(1e-3), images[:1])

    batch = {"image": images[:64], "label": labels[:64]}
    _, plain = train_step(fresh(), batch)
    _, sharded = train_step(put_replicated(fresh(), mesh), shard_batch(batch, mesh))
    key = jax.random.PRNGKey(1)
    plain_epoch, _ = train_epoch(fresh(), images, labels, key, 20)
    sharded_epoch, _ = train_epoch(
        put_replicated(fresh(), mesh),
        *put_replicated((images, labels, key), mesh),
        20,
        batch_sharding=batch_sharding(mesh),
    )
    results = {
        "step": [float(plain["loss"]), float(sharded["loss"])],
        "devices": len(sharded["loss"].sharding.device_set),
        "epoch_params_max_diff": max(
            jax.tree.leaves(
                jax.tree.map(
                    lambda a, b: float(jnp.max(jnp.abs(a - b))),
                    plain_epoch.params,
                    sharded_epoch.params,
                )
            )
        ),
    }
    print(json.dumps(results))


def test_nnx_train_step_on_a_2_device_mesh_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", "from tests.test_nnx import _mesh_main; _mesh_main()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["devices"] == 2
    plain, sharded = results["step"]
    assert abs(plain - sharded) <= 1e-5, results
    assert results["epoch_params_max_diff"] <= 1e-5, results


def test_train_many_trains_an_nnx_model_like_the_linen_mlp_with_its_weights(subset):
    from mlp_jax import Config, train_many
    from mlp_jax.state import build_model, init_states

    config = Config(dataset="mnist_subset", layers=2, hidden=(32,), normalize="scale", epochs=2)
    linen = build_model(config, subset)
    model = NnxMLP(rngs=nnx.Rngs(5))
    _copy_weights(model, init_states(config, subset, linen, [0], [config.lr]).params)
    runs = {
        name: train_many(config, subset, seeds=[0, 1], model=module)
        for name, module in (("linen", linen), ("nnx", model))
    }
    # Seed 0: the same initial weights, dropout keys and data order.
    for linen_record, nnx_record in zip(
        runs["linen"].history[0], runs["nnx"].history[0], strict=True
    ):
        for key in ("train_loss", "test_loss", "test_accuracy"):
            assert nnx_record[key] == pytest.approx(linen_record[key], rel=1e-4), key
    # Seed 1: the NNX module's own weights again (not seed 1's), another data order.
    nnx_history = runs["nnx"].history
    assert nnx_history[1][0]["train_loss"] != nnx_history[0][0]["train_loss"]
    assert min(h[-1]["test_accuracy"] for h in nnx_history) > 0.85
