"""A run's start, reproduced outside its `Program`: what `normjax explode` and `normjax critical-lr` measure on.

`Measurement` builds the model a config describes and, for a seed, gives the parameters and batch
statistics a training run with `train.seed=seed` starts from (`Program.init_state`), the example
indices of that run's first batches (`Program.epoch_orders`), those batches normalized
(`Program.preprocess`, without augmentation) and the mean cross-entropy with BatchNorm in train
mode (`Program.apply`). It differs from the run's `Program` on purpose, and only in this:

  * float32 whatever `train.dtype` says, and BN statistics over the whole batch (no
    `model.per_device_bn` groups): the measured quantities are small norms and ratios;
  * no augmentation: the batches are the run's examples, normalized;
  * the init is eager, not jitted: each distinct kernel shape's initializer compiles once and is
    reused by every depth and seed of a grid, where the Program's jitted init compiles per depth;
  * one instance per model, dataset and batch shape (`measurement_for`, cached), with no optimizer.

`tests/test_measurement.py` ties it to the Program: the same init (to a few ulps), the same batch
indices (bitwise), the same normalized inputs, logits and gradients on a batch (to a few ulps).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normjax.errors import missing_extra

try:
    from flax import nnx
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None


class Measurement:
    """Model structure, eager init, data order, loss and the jitted per-layer gradient norms of one
    static setting (model, dataset, batch size, batches); make it with `measurement_for`."""

    def __init__(
        self,
        model_json: str,
        num_classes: int,
        image_shape: tuple,
        mean: tuple,
        std: tuple,
        batch_size: int,
        batches: int,
    ):
        from normjax.models import build_model

        cfg = json.loads(model_json)
        self.make = lambda rngs: build_model(
            cfg, num_classes=num_classes, image_shape=image_shape, rngs=rngs, dtype=jnp.float32
        )
        abstract = nnx.eval_shape(lambda: self.make(nnx.Rngs(0)))
        self.layers = abstract.layers()
        self.graphdef, self.params_template, self.rest_template = nnx.split(abstract, nnx.Param, ...)
        self.mean, self.std, self.batch_size, self.batches = mean, std, batch_size, batches
        self.grads = jax.jit(jax.vmap(self._one_seed, in_axes=(0, 0, 0, None, None)))

    def init(self, seed: int) -> tuple[Any, Any, np.ndarray]:
        """Params, other state (BN statistics) and key data of seed `seed`, as `Program.init_state` makes them.

        Eager, not jitted: each distinct kernel shape's initializer compiles once and is reused by
        every depth and seed, where a jitted init would recompile the whole model per depth.
        """
        key_data = jax.random.key_data(jax.random.key(np.uint32(seed)))
        model = self.make(nnx.Rngs(params=jax.random.fold_in(jax.random.wrap_key_data(key_data), 0)))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(rest), np.asarray(key_data)

    def order(self, key_data, n: int) -> jax.Array:
        """`[batches, batch_size]` example indices: the first batches of the run with this seed, as
        `Program.epoch_orders` draws them from `n` training examples."""
        key = jax.random.wrap_key_data(key_data)
        order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), 0), n)
        return order[: self.batches * self.batch_size].reshape(self.batches, self.batch_size)

    def inputs(self, images, idx) -> jax.Array:
        """The examples `idx` of `images`, normalized as `Program.preprocess` does (no augmentation)."""
        from normjax.data import preprocess

        return preprocess(images[idx], None, mean=self.mean, std=self.std)

    def logits(self, p, rest, x) -> jax.Array:
        """Float32 logits of params `p` on inputs `x`, BatchNorm in train mode (batch statistics)."""
        # Fresh variables at this trace level (BN writes its running statistics), as `Program.apply`.
        pv = jax.tree.map(lambda v: v, self.params_template)
        rv = jax.tree.map(lambda v: v, self.rest_template)
        nnx.replace_by_pure_dict(pv, p)
        nnx.replace_by_pure_dict(rv, rest)
        return nnx.merge(self.graphdef, pv, rv)(x, train=True).astype(jnp.float32)

    def loss(self, p, rest, x, y) -> jax.Array:
        """Mean cross-entropy of params `p` on `(x, y)`, BatchNorm in train mode (batch statistics)."""
        return optax.softmax_cross_entropy_with_integer_labels(self.logits(p, rest, x), y).mean()

    def _one_seed(self, params, rest, key_data, images, labels):
        """One seed's `||∇_{w_l} L||²` per batch `[batches, L]` and `||w_l||²` `[L]` (`grads` vmaps it)."""
        from normjax.models import per_layer

        def one_batch(idx):
            return per_layer(jax.grad(self.loss)(params, rest, self.inputs(images, idx), labels[idx]), self.layers)

        return jax.lax.map(one_batch, self.order(key_data, images.shape[0])), per_layer(params, self.layers)


@functools.lru_cache(maxsize=8)
def _measurement(*static) -> Measurement:
    return Measurement(*static)


def measurement_for(cfg: dict, ds: Any, batch_size: int, batches: int) -> Measurement:
    """The (cached) model, init and gradient machinery of `cfg["model"]` on dataset `ds`: the first
    `batches` batches of `batch_size` of a run, as `Program` draws them."""
    return _measurement(
        json.dumps(cfg["model"], sort_keys=True),
        int(ds.num_classes),
        tuple(ds.image_shape),
        tuple(ds.mean),
        tuple(ds.std),
        batch_size,
        batches,
    )
