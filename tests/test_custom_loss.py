"""Your own loss: any hashable callable `(logits, labels, mask) -> scalar` trains the model,
and evaluation keeps reporting the plain cross-entropy beside it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp_jax import MLP, create_train_state, evaluate, train_epoch, train_step


@dataclasses.dataclass(frozen=True)
class FocalLoss:
    """Lin et al.'s focal loss -(1 - p_y)^gamma log p_y, mean over the unmasked examples."""

    gamma: float = 2.0

    def __call__(self, logits, labels, mask=None):
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        losses = -((1.0 - jnp.exp(log_p)) ** self.gamma) * log_p
        if mask is None:
            return jnp.mean(losses)
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)


def _focal_by_hand(logits, labels, mask, gamma=2.0):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    p_y = p[np.arange(len(labels)), np.asarray(labels)]
    losses = -((1 - p_y) ** gamma) * np.log(p_y)
    return losses[np.asarray(mask)].mean()


def _state(subset, loss):
    model = MLP(hidden_sizes=(64,), num_classes=10, mean=0.13, std=0.31)
    sample = jnp.asarray(subset.train_images[:1])
    return create_train_state(jax.random.PRNGKey(0), model, optax.adam(1e-3), sample, loss=loss)


def test_the_reported_training_loss_is_the_focal_loss_of_the_batch(subset):
    state = _state(subset, FocalLoss(gamma=2.0))
    images, labels = jnp.asarray(subset.train_images[:32]), jnp.asarray(subset.train_labels[:32])
    mask = jnp.arange(32) < 27  # the last 5 examples are padding
    logits = state.apply_fn({"params": state.params}, images)  # no dropout: train = eval
    expected = _focal_by_hand(logits, labels, mask)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)[:27].mean()

    _, metrics = train_step(state, {"image": images, "label": labels, "mask": mask})
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    assert abs(float(metrics["loss"]) - float(cross_entropy)) > 0.1  # not the cross-entropy


def test_focal_loss_trains_and_evaluate_still_reports_cross_entropy(subset):
    state = _state(subset, FocalLoss(gamma=2.0))
    images, labels = jnp.asarray(subset.train_images), jnp.asarray(subset.train_labels)
    compiled = train_epoch._cache_size()
    losses = []
    for epoch in range(3):
        key = jax.random.fold_in(jax.random.PRNGKey(1), epoch)
        state, metrics = train_epoch(state, images, labels, key, batch_size=100)
        losses.append(float(metrics["train_loss"]))
    assert train_epoch._cache_size() == compiled + 1  # the frozen dataclass is hash-stable
    assert losses[-1] < 0.5 * losses[0], losses

    test_images, test_labels = jnp.asarray(subset.test_images), jnp.asarray(subset.test_labels)
    result = evaluate(state, test_images, test_labels, batch_size=300)  # 1000 = 4 x 300 padded
    logits = state.apply_fn({"params": state.params}, test_images)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, test_labels).mean()
    np.testing.assert_allclose(float(result["loss"]), float(cross_entropy), rtol=1e-5)
    focal = FocalLoss()(logits, test_labels)
    assert float(focal) < 0.8 * float(cross_entropy)  # so the report is not the training loss
    assert float(result["accuracy"]) > 0.8, result["accuracy"]
