"""A plain Flax (linen) port of the reference networks, written the obvious way.

This is the "what a user would write from the Flax docs" baseline: NHWC convolutions,
`nn.BatchNorm(use_running_average=not train)`, a `TrainState` carrying `batch_stats`, and one
`jax.jit`-ted train step per dispatch. No buffer donation, no scan over layers, no fused steps.

The only deliberate choices are the ones that make it the same computation as
`benchmarks.torch_ref`: BatchNorm momentum 0.9 / epsilon 1e-5 (torch's 0.1 / 1e-5), and weight
decay added to the gradient *before* momentum, which is what `torch.optim.SGD` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

Batch = tuple[jax.Array, jax.Array]

# Flax's default BatchNorm momentum is 0.99; 0.9 matches torch's momentum=0.1 convention.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut (1x1 conv + BN when the shape changes), ReLU.

    `dims=1`: kernel-3 convs (`kernel_size=(3,)`) on `[B, L, C]` signals.
    """

    features: int
    strides: int = 1
    dims: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        strides = (self.strides,) * self.dims
        y = nn.Conv(self.features, (3,) * self.dims, strides, padding=1, use_bias=False)(x)
        y = nn.relu(BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (3,) * self.dims, padding=1, use_bias=False)(y)
        y = BatchNorm(use_running_average=not train)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1,) * self.dims, strides, use_bias=False)(x)
            x = BatchNorm(use_running_average=not train)(x)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """CIFAR ResNet v1 of depth 6n+2 on NHWC input; ResNet-20 has 272,474 parameters.

    `width`: stage widths w, 2w, 4w (16 in the paper). `dims=1`: the same net with 1-D convs
    (`kernel_size=(3,)`) on `[B, L, C]` signals (e.g. MNIST-1D).
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    dims: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if (self.depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2, got {self.depth}")
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {self.dims}")
        n = (self.depth - 2) // 6
        x = nn.Conv(self.width, (3,) * self.dims, padding=1, use_bias=False)(x)
        x = nn.relu(BatchNorm(use_running_average=not train)(x))
        for stage, features in enumerate((self.width, 2 * self.width, 4 * self.width)):
            for i in range(n):
                strides = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(features, strides, self.dims)(x, train)
        x = jnp.mean(x, axis=tuple(range(1, 1 + self.dims)))
        return nn.Dense(self.num_classes)(x)


class BnReluMlp(nn.Module):
    """Flatten, `depth` x (Dense without bias -> BatchNorm -> ReLU), then a Dense classifier."""

    depth: int = 20
    width: int = 1024
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for _ in range(self.depth):
            x = nn.Dense(self.width, use_bias=False)(x)
            x = nn.relu(BatchNorm(use_running_average=not train)(x))
        return nn.Dense(self.num_classes)(x)


class TrainState(train_state.TrainState):
    """The Flax-docs TrainState plus BatchNorm running statistics."""

    batch_stats: Any


def make_optimizer() -> optax.GradientTransformation:
    """SGD(lr 0.1, momentum 0.9) with L2 weight decay 5e-4, as torch.optim.SGD applies it."""
    # Decay first: torch adds wd * param to the gradient before the momentum buffer sees it.
    return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))


def create_train_state(model: nn.Module, rng: jax.Array, sample_x: jax.Array) -> TrainState:
    """Initialise parameters and batch statistics from a sample batch."""
    variables = model.init(rng, sample_x, train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=make_optimizer(),
    )


@jax.jit
def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, jax.Array]:
    """One SGD step on a batch of (images, integer labels); returns the new state and the loss."""
    x, y = batch

    def loss_fn(params: Any) -> tuple[jax.Array, Any]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
    return state, loss


def param_count(state: TrainState) -> int:
    """Trainable parameters (batch statistics excluded), comparable to torch's count."""
    return sum(p.size for p in jax.tree_util.tree_leaves(state.params))


def make_runner(model: nn.Module, batch: Batch, seed: int = 0) -> tuple[Callable[[], None], TrainState]:
    """Return a closure that runs one train step and blocks on its result, and the initial state.

    The closure keeps the updated state between calls, so every timed step is a real step.
    """
    state = create_train_state(model, jax.random.PRNGKey(seed), batch[0])
    holder = [state]

    def run_one() -> None:
        new_state, loss = train_step(holder[0], batch)
        holder[0] = new_state
        # Blocking on the whole state covers the parameter and batch-stat updates, not just loss.
        jax.block_until_ready((new_state, loss))

    return run_one, state
