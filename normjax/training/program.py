"""The compiled side of a run: model, optimizer, and the jitted init / train / eval functions.

A `Program` depends only on a config's *static* part (shapes, structure, schedule length) and is
cached on it, so runs that differ in traced values (LR, momentum, weight decay, seed and transform
strengths, all held in the state) reuse one compiled program. Everything inside is pure: NNX
modules are rebuilt from plain parameter dicts with `nnx.merge` inside the traced functions.

The train function fuses `steps_per_dispatch` steps into one call (`lax.scan`). In-memory data
(`DataSpec.streaming` False): the whole uint8 dataset is an argument, and data order (a
per-epoch permutation from the seed), normalization and augmentation all run on device.
Streamed data: the chunk's batches are the argument ([steps_per_dispatch, B, H, W, C] uint8,
decoded and augmented on the host), and the step only normalizes them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from normjax.errors import missing_extra

try:
    import chex
    from flax import nnx
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax import metrics as metrics_lib
from normjax.data import preprocess
from normjax.models import build_model, layer_axes, prelu_mask, scale_invariant_mask
from normjax.models.layers import use_custom_conv
from normjax.parallel import DATA, batch_sharded, check_batch, compiling_elsewhere, data_mesh, replicated
from normjax.training.optim import (
    SCHEDULE_KEYS,
    OptimizerContext,
    current_lr,
    hyperparams,
    make_optimizer,
    optimizer_metrics,
    optimizer_spec,
    schedule_shape,
    set_hyperparams,
)

# Keys that never shape the compiled program: they do not enter the compile-cache key.
HOST_ONLY = {
    "log": ("dense_steps", "every"),
    "checkpoint": ("every", "keep"),
    "train": ("seed", "init_from", "eval_train_examples"),
    "data": ("data_dir", "memory_limit_mb", "workers", "worker_threads", "prefetch"),
}


@chex.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training; a pytree (vmappable, checkpointable)."""

    step: jax.Array  # int32 []: updates applied so far
    params: Any  # nested dict of float32 arrays
    batch_stats: Any  # nested dict of BN running statistics
    opt_state: Any  # optax state, injected hyper-parameters included
    key: jax.Array  # uint32 [2]: raw PRNG key data from the seed (init, data order, augmentation)
    diverged: jax.Array  # bool []: a non-finite loss was met; updates stopped


@chex.dataclass(frozen=True)
class DataSpec:
    """The static facts about a dataset that shape a compiled program."""

    num_train: int
    image_shape: tuple  # (H, W, C) the model sees
    num_classes: int
    mean: tuple
    std: tuple
    streaming: bool = False  # batches arrive per chunk (normjax.training.inputs.StreamInput)
    dtype: str = "uint8"  # of the images as stored: uint8, or float32 for 1-D signals (MNIST-1D)


def static_key(cfg: dict, data: DataSpec, total_steps: int, num_devices: int) -> str:
    """JSON of everything that shapes the compiled program (traced values and host-only keys removed)."""
    spec = optimizer_spec(cfg["optim"])
    shaping = {"name", *SCHEDULE_KEYS, *spec.static}  # optim keys the optimizer reads statically
    if "prelu_tolerance" not in spec.hyperparams:  # then the APL hook reads it from the config, statically
        shaping.add("prelu_tolerance")
    stripped = {
        sec: {k: v for k, v in vals.items() if k not in HOST_ONLY.get(sec, ()) and (sec != "optim" or k in shaping)}
        for sec, vals in cfg.items()
    }
    return json.dumps(
        {
            "cfg": stripped,
            "data": dict(data.items()),
            "total_steps": total_steps,
            "devices": num_devices,
            "custom_conv": use_custom_conv(),
        },
        sort_keys=True,
        default=list,
    )


def get_program(key: str) -> Program:
    """The (cached) compiled program for a `static_key`; built afresh and not cached while
    compiling for a chip that is not here (`normjax.parallel.compile_for`), whose mesh it holds."""
    return Program(key) if compiling_elsewhere() else _cached_program(key)


@functools.lru_cache(maxsize=16)
def _cached_program(key: str) -> Program:
    return Program(key)


class Program:
    """Model, optimizer and jitted functions for one static configuration."""

    def __init__(self, key: str):
        spec = json.loads(key)
        cfg, data = spec["cfg"], spec["data"]
        self.cfg, self.total_steps = cfg, spec["total_steps"]
        self.data = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        self.mesh = data_mesh()
        assert self.mesh.devices.size == spec["devices"]
        self.batch_size = cfg["train"]["batch_size"]
        check_batch(self.batch_size, self.mesh)
        self.steps_per_epoch = max(1, self.data.num_train // self.batch_size)
        self.chunk = cfg["train"]["steps_per_dispatch"]
        self.dtype = jnp.bfloat16 if cfg["train"]["dtype"] == "bfloat16" else jnp.float32
        self.bn_groups = self.mesh.devices.size if cfg["model"]["per_device_bn"] else 1
        self.metric_names = tuple(cfg["log"]["metrics"])
        metrics_lib.check_metrics(list(self.metric_names))

        abstract = nnx.eval_shape(lambda: self._model(nnx.Rngs(0)))
        self.graphdef, self.params_template, self.stats_template, rest = nnx.split(
            abstract, nnx.Param, nnx.BatchStat, ...
        )
        assert not jax.tree.leaves(rest), "models hold only Params and BatchStats"
        self.layers = abstract.layers()
        self.graph = abstract.graph()
        abstract_params = nnx.to_pure_dict(self.params_template)
        self.context = OptimizerContext(
            scale_invariant_mask(abstract_params, self.layers),
            prelu_mask(abstract_params),
            self.layers,
            layer_axes(abstract_params),
            self.total_steps,
        )
        self.schedule = schedule_shape(cfg["optim"], self.total_steps)
        self.tx = make_optimizer(
            cfg["optim"] | {k: 0.0 for k in optimizer_spec(cfg["optim"]).hyperparams},
            total_steps=self.total_steps,
            context=self.context,
        )
        self.has_lr = "lr" in optimizer_spec(cfg["optim"]).hyperparams
        # The tolerance within which a PReLU slope counts as linear (the APL hook's, as eval's,
        # `normjax apl`'s and `fold`'s): traced where the optimizer injects it, else the config's.
        self.tolerance_traced = "prelu_tolerance" in optimizer_spec(cfg["optim"]).hyperparams
        self.prelu_tolerance = None if self.tolerance_traced else float(cfg["optim"]["prelu_tolerance"])

        rep = replicated(self.mesh)
        self._compiled: set[int] = set()
        self.init = jax.jit(self._init, out_shardings=rep)
        self.train_chunk = jax.jit(self._train_chunk, donate_argnums=0, out_shardings=rep)
        self.evaluate = jax.jit(self._evaluate, static_argnums=4, out_shardings=rep)
        self.evaluate_batch = jax.jit(self.eval_sums, out_shardings=rep)
        # Runs carry a leading run axis R. R > 1: the step vmapped over it (vectorized runs);
        # R == 1: the plain step, the axis dropped and restored inside the jit (free reshapes).
        self.train_chunk_group = jax.jit(
            jax.vmap(self._train_chunk, in_axes=(0, None, None, None, None)), donate_argnums=0, out_shardings=rep
        )
        self.train_chunk_one = jax.jit(
            lambda s, *args: jax.tree.map(lambda x: x[None], self._train_chunk(jax.tree.map(lambda x: x[0], s), *args)),
            donate_argnums=0,
            out_shardings=rep,
        )
        # The runs of a group one after another inside one program (`lax.map`): a strategy that
        # `benchmarks/` and `normjax plan` compare with the vmapped group; sweeps use the vmap.
        self.train_chunk_map = jax.jit(
            lambda s, *args: jax.lax.map(lambda one: self._train_chunk(one, *args), s),
            donate_argnums=0,
            out_shardings=rep,
        )

    def run_chunk(
        self,
        states: TrainState,
        images: jax.Array,
        labels: jax.Array,
        n_active: int,
        log_mask: np.ndarray | None = None,
    ) -> tuple[TrainState, dict]:
        """`n_active` steps of every run in `states` (leading run axis R; R == 1 runs unvectorized);
        the metric hooks run on the chunk's slots where `log_mask` is True (default: all).

        `images`/`labels`: the whole training set (in memory), or the chunk's batches
        ([steps_per_dispatch, B, ...], streamed; slots past `n_active` are ignored)."""
        n_runs = jax.tree.leaves(states)[0].shape[0]
        self._compiled.add(n_runs)
        return (self.train_chunk_one if n_runs == 1 else self.train_chunk_group)(
            states, images, labels, np.int32(n_active), self.log_mask(log_mask)
        )

    def chunk_arguments(self, n_runs: int) -> tuple:
        """Abstract arguments (shapes, dtypes, shardings) of a chunk of `n_runs` runs, as
        `run_chunk` passes them: to compile the chunk without data (group sizing, `normjax plan`).

        Args:
          n_runs: the runs on the leading run axis of the state.

        Returns:
          `(states, images, labels, n_active, log_mask)`: every step of the chunk active and logged.
        """
        rep, d = replicated(self.mesh), self.data
        states = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct((n_runs, *s.shape), s.dtype, sharding=rep), self.abstract_state()
        )
        if d.streaming:  # the chunk's batches, sharded over the batch axis as the prefetcher puts them
            sharding, lead = NamedSharding(self.mesh, P(None, DATA)), (self.chunk, self.batch_size)
            dtype = np.uint8
        else:  # the whole training set, replicated
            sharding, lead, dtype = rep, (d.num_train,), np.dtype(d.dtype)
        images = jax.ShapeDtypeStruct((*lead, *d.image_shape), dtype, sharding=sharding)
        labels = jax.ShapeDtypeStruct(lead, np.int32, sharding=sharding)
        return states, images, labels, np.int32(self.chunk), self.log_mask()

    def lower_chunk(self, n_runs: int, strategy: str = "vmap") -> jax.stages.Lowered:
        """The chunk of `n_runs` runs lowered for the program's devices (`chunk_arguments`).

        Args:
          n_runs: runs in the group (1: the plain, unvectorized chunk).
          strategy: `vmap` (what sweeps run) or `map` (the runs in turn, `lax.map`).

        Returns:
          The lowered program; `.compile()` it for its memory and cost analyses.
        """
        fn = {"vmap": self.train_chunk_group, "map": self.train_chunk_map}[strategy]
        return (self.train_chunk_one if n_runs == 1 else fn).lower(*self.chunk_arguments(n_runs))

    def compiled(self, n_runs: int) -> bool:
        """Whether the chunk for `n_runs` vectorized runs has been called (so is compiled)."""
        return n_runs in self._compiled

    def log_mask(self, mask: np.ndarray | None = None) -> np.ndarray:
        """A chunk's `[steps_per_dispatch]` bool mask of the steps whose metric hooks run."""
        return np.ones(self.chunk, bool) if mask is None else np.asarray(mask, bool).reshape(self.chunk)

    # ---- model ---------------------------------------------------------------------------------
    def _model(self, rngs: nnx.Rngs) -> nnx.Module:
        return build_model(
            self.cfg["model"],
            num_classes=self.data.num_classes,
            image_shape=self.data.image_shape,
            rngs=rngs,
            bn_groups=self.bn_groups,
            dtype=self.dtype,
        )

    def apply(self, params: Any, batch_stats: Any, x: jax.Array, train: bool) -> tuple[jax.Array, Any]:
        """Logits (float32) and the updated BN statistics."""
        p = jax.tree.map(lambda v: v, self.params_template)
        s = jax.tree.map(lambda v: v, self.stats_template)
        nnx.replace_by_pure_dict(p, params)
        nnx.replace_by_pure_dict(s, batch_stats)
        model = nnx.merge(self.graphdef, p, s)
        logits = model(x.astype(self.dtype), train=train).astype(jnp.float32)
        return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    def preprocess(self, images: jax.Array, key: jax.Array | None) -> jax.Array:
        d = self.cfg["data"]
        return preprocess(
            images,
            key,
            mean=self.data.mean,
            std=self.data.std,
            crop_padding=d["crop_padding"],
            flip=d["flip"],
            dtype=self.dtype,
        )

    # ---- init ----------------------------------------------------------------------------------
    def _init(self, key_data: jax.Array, hparams: dict) -> TrainState:
        key = jax.random.wrap_key_data(key_data)
        model = self._model(nnx.Rngs(params=jax.random.fold_in(key, 0)))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)),
            opt_state=set_hyperparams(self.tx.init(params), hparams),
            key=key_data,
            diverged=jnp.zeros((), bool),
        )

    def init_state(self, cfg: dict) -> TrainState:
        """A fresh state for a full config (its seed and hyper-parameter values)."""
        key_data = jax.random.key_data(jax.random.key(np.uint32(cfg["train"]["seed"])))
        return self.init(key_data, hyperparams(cfg["optim"]))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of a state (for checkpoint restore)."""
        shapes = jax.eval_shape(
            self._init,
            jax.ShapeDtypeStruct((2,), jnp.uint32),
            {k: jax.ShapeDtypeStruct((), jnp.float32) for k in optimizer_spec(self.cfg["optim"]).hyperparams},
        )
        rep = replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)

    # ---- training ------------------------------------------------------------------------------
    def _loss(self, params, batch_stats, x, y):
        logits, new_stats = self.apply(params, batch_stats, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (new_stats, acc)

    def epoch_orders(self, state: TrainState, n: int) -> tuple[jax.Array, jax.Array]:
        """The data orders (each a permutation of the n examples, from the seed and the epoch) of
        every epoch a chunk starting at `state.step` can reach: [K, n], and the first epoch.

        Drawn once per chunk rather than once per step: a permutation is a sort of n keys, a
        visible share of a CIFAR-size step on CPU (measured in benchmarks/RESULTS.md).
        """
        spe = self.steps_per_epoch
        first = state.step // spe
        base = jax.random.fold_in(jax.random.wrap_key_data(state.key), 1)
        k = (spe + self.chunk - 2) // spe + 1
        return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(base, e), n))(first + jnp.arange(k)), first

    def select_batch(
        self, state: TrainState, images: jax.Array, labels: jax.Array, orders: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """The in-memory path's batch at `state.step`: its examples from `orders` (`epoch_orders`),
        normalized and augmented (key from the seed and the step)."""
        b, t, spe = self.batch_size, state.step, self.steps_per_epoch
        perms, first = orders
        idx = jax.lax.dynamic_slice_in_dim(perms[t // spe - first], (t % spe) * b, b)
        idx = jax.lax.with_sharding_constraint(idx, batch_sharded(self.mesh))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.key), 2), t)
        return self.preprocess(images[idx], key), labels[idx]

    def train_step(
        self, state: TrainState, x: jax.Array, y: jax.Array, logged: jax.Array | bool = True
    ) -> tuple[TrainState, dict]:
        """One SGD step on the preprocessed batch `x` (float [B, H, W, C]) with labels `y`; stops
        updating on divergence. The metric hooks run when `logged` (a `lax.cond` inside the
        update: unlogged steps pay nothing for them; their metric slots hold zeros)."""
        t = state.step
        (loss, (stats, acc)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state.params, state.batch_stats, x, y
        )
        # The one divergence rule (the host reads `ok` and `grad_finite` from the metrics, so it
        # records what froze the state): a non-finite loss or gradient norm stops the updates.
        grad_finite = jnp.isfinite(optax.tree.norm(grads))
        ok = jnp.isfinite(loss) & grad_finite & ~state.diverged
        lr = current_lr(state.opt_state, self.schedule, t) if self.has_lr else None

        def hooks(opt_state, updates):
            return metrics_lib.compute(
                self.metric_names,
                metrics_lib.StepInfo(
                    state.params,
                    grads,
                    updates,
                    opt_state,
                    self.layers,
                    optimizer_metrics(opt_state, lr).get("lr"),
                    self.graph,
                    optax.tree_utils.tree_get(opt_state, "prelu_tolerance")
                    if self.tolerance_traced
                    else self.prelu_tolerance,
                ),
            )

        shapes = jax.eval_shape(hooks, state.opt_state, grads)
        no_hooks = lambda *_: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)  # noqa: E731

        def apply(_):
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
            # The hooks read w_t and the update before it is applied (so it stays in place), and
            # only on logged steps: a cond, whose untaken branch costs nothing.
            hooked = jax.lax.cond(logged, hooks, no_hooks, opt_state, updates) if self.metric_names else {}
            return optax.apply_updates(state.params, updates), opt_state, hooked

        def hold(_):  # a non-finite loss or gradient: the state stays as it was
            return state.params, state.opt_state, no_hooks()

        # A cond rather than a select over the whole state: an unvectorized step makes no extra
        # pass over parameters and optimizer state (vmapped, it lowers to the select anyway).
        params, opt_state, hooked = jax.lax.cond(ok, apply, hold, None)
        new = state.replace(
            step=jnp.where(ok, t + 1, t),
            params=params,
            opt_state=opt_state,
            diverged=~ok,
            batch_stats=jax.tree.map(lambda a, o: jnp.where(ok, a, o), stats, state.batch_stats),
        )
        m = {
            "step": t,
            "loss": loss,
            "accuracy": acc,
            **optimizer_metrics(opt_state, lr),
            **hooked,
            "ok": ok,
            "grad_finite": grad_finite,
        }
        return new, m

    def _train_chunk(
        self, state: TrainState, images: jax.Array, labels: jax.Array, n_active: jax.Array, log_mask: jax.Array
    ) -> tuple[TrainState, dict]:
        """`n_active` (<= steps_per_dispatch) steps; metrics stacked with a `valid` flag per slot.
        `log_mask` (`[steps_per_dispatch]` bool, never vmapped) says on which slots hooks run.
        `images`/`labels` as in `run_chunk`."""
        if self.data.streaming:  # slot i trains on the chunk's batch i
            batch = lambda s, i: (self.preprocess(images[i], None), labels[i])  # noqa: E731
        else:
            orders = self.epoch_orders(state, images.shape[0])
            batch = lambda s, i: self.select_batch(s, images, labels, orders)  # noqa: E731

        def step(s, i):
            return self.train_step(s, *batch(s, i), log_mask[i])

        _, m_shape = jax.eval_shape(step, state, 0)

        def skip(s, _):
            return s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), m_shape)

        def body(s, i):
            s, m = jax.lax.cond(i < n_active, step, skip, s, i)
            return s, m | {"valid": i < n_active}

        return jax.lax.scan(body, state, jnp.arange(self.chunk))

    # ---- evaluation ----------------------------------------------------------------------------
    def eval_sums(self, params: Any, batch_stats: Any, x: jax.Array, y: jax.Array) -> tuple:
        """Summed loss, correct count and count of one uint8 batch (BN in inference mode; labels
        -1 = padding, not counted)."""
        x = jax.lax.with_sharding_constraint(x, batch_sharded(self.mesh))
        logits, _ = self.apply(params, batch_stats, self.preprocess(x, None), train=False)
        valid = y >= 0
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
        return (jnp.sum(jnp.where(valid, loss, 0)), jnp.sum(valid & (logits.argmax(-1) == y)), jnp.sum(valid))

    def _evaluate(self, params, batch_stats, images, labels, batch_size: int) -> dict:
        """Mean loss and accuracy over `images` (count padded to a multiple of batch_size; labels -1 = pad)."""
        nb = images.shape[0] // batch_size
        xs = images.reshape((nb, batch_size) + images.shape[1:])
        ys = labels.reshape(nb, batch_size)

        def body(acc, xy):
            return jax.tree.map(jnp.add, acc, self.eval_sums(params, batch_stats, *xy)), None

        (loss, correct, count), _ = jax.lax.scan(body, (0.0, 0, 0), (xs, ys))
        return {"loss": loss / count, "accuracy": correct / count}
