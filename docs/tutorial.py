# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: the lectures' MLPs in JAX
#
# Five steps on the 5,000 MNIST digits shipped with `mlp_jax` (4,000 train, 1,000 test), each a
# few seconds on a laptop CPU:
#
# 1. the one-layer softmax net, whose weights are one template per digit;
# 2. backpropagation written by hand, checked against `jax.grad`;
# 3. the 5-layer MLP trained by `train_step` inside your own `jax.lax.scan`;
# 4. ten learning rates trained as one vmapped program;
# 5. a prediction on a digit drawn with Pillow.
#
# Figures use matplotlib's object API (`Figure`, no pyplot), so the file also runs as a plain
# script; in Jupyter (where `%matplotlib inline` below is live) a cell that ends with a figure
# shows it.

# %%
# %matplotlib inline
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from mlp_jax import (
    MLP,
    Config,
    create_train_state,
    cross_entropy_loss,
    evaluate,
    predict,
    train_epoch,
    train_many,
    train_step,
)
from mlp_jax.data import load_mnist_subset
from mlp_jax.figures import plot_templates
from mlp_jax.images import to_training_format

data = load_mnist_subset()
print("train:", data.train_images.shape, data.train_images.dtype, data.train_labels.shape)
print("test: ", data.test_images.shape, data.test_images.dtype, data.test_labels.shape)
digits = [str(d) for d in range(10)]

# %% [markdown]
# ## 1. The one-layer softmax net is template matching
#
# With no hidden layer the class scores are $z = W^\top x + b$ with $W \in \mathbb{R}^{784
# \times 10}$, and $p = \mathrm{softmax}(z)$. Score $z_k = w_k \cdot x + b_k$ is the match
# between the image $x$ and column $w_k$, so after training each column looks like a template
# of its digit. `MLP(hidden_sizes=())` is this net; `train_epoch` runs one whole epoch (a
# `lax.scan` over shuffled minibatches of `train_step`) as one compiled call.

# %%
linear = MLP(hidden_sizes=(), num_classes=10)
state = create_train_state(
    jax.random.PRNGKey(0), linear, optax.sgd(0.1, momentum=0.9), data.train_images[:1]
)
for epoch in range(5):
    key = jax.random.fold_in(jax.random.PRNGKey(1), epoch)
    state, metrics = train_epoch(
        state, data.train_images, data.train_labels, key, batch_size=100
    )  # train_epoch donates `state`: keep only the returned one
    print(f"epoch {epoch + 1}: train loss {float(metrics['train_loss']):.3f}")
linear_test = evaluate(state, data.test_images, data.test_labels)
print(f"one-layer net: test accuracy {float(linear_test['accuracy']):.3f}")

kernel = np.asarray(state.params["output"]["kernel"])  # float32[784, 10]: column k is w_k
plot_templates(kernel, (28, 28, 1), digits, "the 10 columns of W as 28x28 templates")

# %% [markdown]
# ## 2. Backpropagation by hand equals `jax.grad`
#
# A 2-layer net: $z_1 = x W_1 + b_1$, $h = \mathrm{relu}(z_1)$, $z_2 = h W_2 + b_2$, and the
# loss $L = \frac{1}{B} \sum_i -\log \mathrm{softmax}(z_2)_{i, y_i}$. The chain rule, layer by
# layer from the top: $\partial L / \partial z_2 = (\mathrm{softmax}(z_2) - \mathrm{onehot}(y))
# / B$, $\partial L / \partial W_2 = h^\top \, \partial L / \partial z_2$,
# $\partial L / \partial b_2 = \sum_i \partial L / \partial z_{2,i}$,
# $\partial L / \partial h = \partial L / \partial z_2 \, W_2^\top$,
# $\partial L / \partial z_1 = \partial L / \partial h \odot [z_1 > 0]$, and $W_1$, $b_1$ as for
# $W_2$, $b_2$ with $x$ in place of $h$. The params are those of `MLP(hidden_sizes=(32,))`, so
# `jax.grad` differentiates the library's own model and loss.

# %%
two_layer = MLP(hidden_sizes=(32,), num_classes=10)
x = jnp.asarray(data.train_images[:64].reshape(64, -1), jnp.float32) / 255.0  # float: [0, 1]
y = jnp.asarray(data.train_labels[:64])
params = two_layer.init(jax.random.PRNGKey(2), x)["params"]


def backprop_by_hand(params, x, y):
    W1, b1 = params["hidden_0"]["kernel"], params["hidden_0"]["bias"]
    W2, b2 = params["output"]["kernel"], params["output"]["bias"]
    batch = x.shape[0]
    z1 = x @ W1 + b1  # forward, keeping what the backward pass needs
    h = jnp.maximum(z1, 0.0)
    z2 = h @ W2 + b2
    dz2 = (jax.nn.softmax(z2) - jax.nn.one_hot(y, 10)) / batch  # backward
    dW2, db2 = h.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ W2.T) * (z1 > 0)
    dW1, db1 = x.T @ dz1, dz1.sum(0)
    return {"hidden_0": {"kernel": dW1, "bias": db1}, "output": {"kernel": dW2, "bias": db2}}


def loss(params, x, y):
    return cross_entropy_loss(two_layer.apply({"params": params}, x), y)


by_hand = backprop_by_hand(params, x, y)
by_jax = jax.grad(loss)(params, x, y)
chex.assert_trees_all_close(by_hand, by_jax, rtol=1e-5, atol=1e-6)
print("hand-written backprop equals jax.grad: True")
differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), by_hand, by_jax)
print(f"largest difference: {max(jax.tree.leaves(differences)):.1e}")

# %% [markdown]
# ## 3. The 5-layer MLP in your own `lax.scan` loop
#
# The lectures' net 784-512-256-128-64-10 (four hidden ReLU layers and the output layer).
# `train_step(state, batch) -> (state, metrics)` is one minibatch SGD step, $\theta \leftarrow
# \theta - \eta \nabla_\theta L$ (here Adam's version of it), and has exactly the signature of
# a `lax.scan` body: the state is the carry, the batches are scanned over. Three epochs of 40
# shuffled batches of 100 become one compiled program.

# %%
mlp = MLP(hidden_sizes=(512, 256, 128, 64), num_classes=10)
state = create_train_state(jax.random.PRNGKey(3), mlp, optax.adam(1e-3), data.train_images[:1])

epochs, batch_size = 3, 100
rng = np.random.default_rng(0)
order = np.concatenate([rng.permutation(len(data.train_labels)) for _ in range(epochs)])
order = order.reshape(-1, batch_size)  # int[120 steps, 100]
batches = {"image": data.train_images[order], "label": data.train_labels[order]}

train = jax.jit(lambda s, b: jax.lax.scan(train_step, s, b))
state, metrics = train(state, batches)
steps_per_epoch = len(data.train_labels) // batch_size
print(f"loss at the first step {float(metrics['loss'][0]):.3f}, ", end="")
print(f"mean over the last epoch {float(metrics['loss'][-steps_per_epoch:].mean()):.3f}")
test = evaluate(state, data.test_images, data.test_labels)
print(f"5-layer MLP: test accuracy {float(test['accuracy']):.3f}")

figure = Figure(figsize=(6, 3))
axes = figure.subplots()
axes.plot(np.asarray(metrics["loss"]))
axes.set(xlabel="step", ylabel="minibatch loss", title="train_step in lax.scan", yscale="log")
figure  # noqa: B018 (Jupyter shows a cell's last value)

# %% [markdown]
# ## 4. Ten learning rates as one vmapped program
#
# `train_many` stacks K train states (one per learning rate $\eta_k$) and `jax.vmap`s the
# compiled epoch over them, so ten 3-layer nets (SGD with momentum, cosine schedule) train as
# one program. Too small an $\eta$ barely moves in two epochs; too large a one diverges.

# %%
lrs = [float(lr) for lr in np.geomspace(1e-3, 3.0, 10)]
config = Config(dataset="mnist_subset", epochs=2, layers=3, hidden=(128, 64), batch_size=100)
sweep = train_many(config, data, lrs=lrs, seeds=[0])
final = [records[-1]["test_accuracy"] for records in sweep.history]
for lr, accuracy in zip(sweep.lrs, final, strict=True):
    print(f"lr {lr:<7.3g} test accuracy {accuracy:.3f}")
print(f"best lr {sweep.lrs[int(np.argmax(final))]:.3g}: test accuracy {max(final):.3f}")

figure = Figure(figsize=(6, 3.5))
axes = figure.subplots()
axes.plot(sweep.lrs, final, "o-")
axes.set(xscale="log", xlabel="peak learning rate", ylabel="test accuracy after 2 epochs")
axes.set_title("10 learning rates, one vmapped program")
axes.grid(alpha=0.3)
figure  # noqa: B018 (Jupyter shows a cell's last value)

# %% [markdown]
# ## 5. A prediction on a digit drawn with Pillow
#
# A "7" in black ink on a 200x200 white page. `to_training_format` makes it look like MNIST:
# white ink on black, the digit fitted into 20x20 pixels and its centre of mass moved to the
# centre of the 28x28 field. `predict` returns the softmax probabilities $p = \mathrm{softmax}(
# z)$ of the 5-layer net from step 3.

# %%
page = Image.new("L", (200, 200), 255)
draw = ImageDraw.Draw(page)
draw.line([(50, 40), (150, 40)], fill=0, width=14)
draw.line([(150, 40), (85, 170)], fill=0, width=14)
seen = to_training_format(np.asarray(page), (28, 28, 1), "digit")  # uint8[28, 28, 1]

probabilities = np.asarray(predict(state, seen[None]))[0]
top = int(np.argmax(probabilities))
print(f"prediction: {top} (probability {probabilities[top]:.3f})")

figure = Figure(figsize=(8, 2.8))
page_axes, seen_axes, bar_axes = figure.subplots(1, 3)
page_axes.imshow(np.asarray(page), cmap="gray", vmin=0, vmax=255)
page_axes.set_title("drawn (200x200)")
seen_axes.imshow(seen[..., 0], cmap="gray", vmin=0, vmax=255)
seen_axes.set_title("what the net sees (28x28)")
for image_axes in (page_axes, seen_axes):
    image_axes.set(xticks=[], yticks=[])
bar_axes.bar(digits, probabilities)
bar_axes.set(ylim=(0, 1), xlabel="class", title="predict: probabilities")
figure.tight_layout()
figure  # noqa: B018 (Jupyter shows a cell's last value)
