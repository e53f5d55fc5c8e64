"""normjax's own benchmark cases: the real training program (`normjax.training.program`) with
data held on device, several steps fused per call, and the per-layer norm hook on (as in runs).

Times are per *step* (a call runs `STEPS_PER_CALL` steps). Inputs are the synthetic 32x32x3 task
with augmentation off, matching the references' fixed random batch in cost; the conv workloads of
`benchmarks.bench.RESNET_WORKLOADS` use their own input shape (1x40x1 signals: MNIST-1D's generated
signals, as the synthetic task holds images only, and the 1-D ResNet).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, RESNET_BATCH, RESNET_WORKLOADS, SkipCase, register
from benchmarks.timing import time_steps

STEPS_PER_CALL = 5


def _program(
    model: dict,
    batch: int,
    metrics: list[str],
    dtype: str = "float32",
    image_shape=(32, 32, 3),
    optim: dict | None = None,
):
    import numpy as np

    from normjax.config import DEFAULTS, merge
    from normjax.parallel import put_replicated
    from normjax.training.inputs import input_for
    from normjax.training.loop import dataset_for, program_for

    if image_shape[0] == 1:
        # The synthetic task holds images only (H, W >= 4); 1-D signals come from MNIST-1D's
        # generator (1x40x1, no download): 5 batches of signals, its 0.8 / 0.2 split leaves 4 to train.
        if tuple(image_shape) != (1, 40, 1):
            raise ValueError(f"1-D inputs are MNIST-1D's (1, 40, 1), got {tuple(image_shape)}")
        data: dict = {"name": "mnist1d", "mnist1d": {"num_samples": 5 * batch}}
    else:
        data = {
            "name": "synthetic",
            "synthetic": {
                "num_train": 4 * batch,
                "num_test": 64,
                "image_shape": list(image_shape),
                "num_classes": 10,
            },
        }
    cfg = merge(
        DEFAULTS,
        {
            "model": model,
            "data": data,
            "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "constant", **(optim or {})},
            "train": {"batch_size": batch, "steps": 1000, "steps_per_dispatch": STEPS_PER_CALL, "dtype": dtype},
            "log": {"metrics": metrics},
        },
    )
    ds = dataset_for(cfg)
    program = program_for(cfg, input_for(cfg))
    images = put_replicated(ds.train_images, program.mesh)
    labels = put_replicated(ds.train_labels.astype(np.int32), program.mesh)
    return cfg, program, images, labels


def normjax_call(
    model: dict, batch: int, metrics: list[str], optim: dict | None = None, log_mask=None
) -> Callable[[], float]:
    """A compiled normjax chunk of `STEPS_PER_CALL` steps as a closure returning its ms/step
    (the state carried between calls; hooks on the slots `log_mask` marks, default all)."""
    import jax
    import numpy as np

    cfg, program, images, labels = _program(model, batch, metrics, optim=optim)
    holder = {"state": program.init_state(cfg)}
    args = (images, labels, np.int32(STEPS_PER_CALL), program.log_mask(log_mask))
    compiled = program.train_chunk.lower(holder["state"], *args).compile()

    def call() -> float:
        t0 = time.perf_counter()
        holder["state"], m = compiled(holder["state"], *args)
        jax.block_until_ready((holder["state"], m))
        return (time.perf_counter() - t0) * 1000 / STEPS_PER_CALL

    return call


def _case(model: dict, batch: int, metrics: list[str], dtype: str = "float32", image_shape=(32, 32, 3)):
    def run(args: argparse.Namespace) -> dict[str, Any]:
        import jax
        import numpy as np

        cfg, program, images, labels = _program(model, batch, metrics, dtype, image_shape=image_shape)
        state = program.init_state(cfg)
        n = np.int32(STEPS_PER_CALL)
        t0 = time.perf_counter()
        compiled = program.train_chunk.lower(state, images, labels, n, program.log_mask()).compile()
        compile_s = time.perf_counter() - t0
        holder = {"state": state}

        def run_one():
            holder["state"], m = compiled(holder["state"], images, labels, n, program.log_mask())
            jax.block_until_ready(m)

        t0 = time.perf_counter()
        run_one()
        first = compile_s + time.perf_counter() - t0
        res = time_steps(run_one, warmup=max(0, args.warmup // STEPS_PER_CALL), iters=max(2, args.iters // 5))
        for k in ("median_ms", "min_ms", "mean_ms"):
            res[k] /= STEPS_PER_CALL
        res["samples_ms"] = [s / STEPS_PER_CALL for s in res["samples_ms"]]
        params = sum(x.size for x in jax.tree.leaves(holder["state"].params))
        res.update(
            first_call_s=first,
            compile_s=compile_s,
            params=int(params),
            batch=batch,
            device=f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
            note=f"compile {compile_s:.1f}s; {STEPS_PER_CALL} steps/call; {dtype}; metrics={metrics or 'off'}",
        )
        return res

    return run


LN = ["layer_norms"]
register("resnet20_normjax", _case({"name": "resnet", "depth": 20}, RESNET_BATCH, LN))
register("resnet20_normjax-nometrics", _case({"name": "resnet", "depth": 20}, RESNET_BATCH, []))
register("mlp_normjax", _case({"name": "mlp", "depth": MLP_DEPTH, "width": MLP_WIDTH}, MLP_BATCH, LN))
register("mlp_normjax-nometrics", _case({"name": "mlp", "depth": MLP_DEPTH, "width": MLP_WIDTH}, MLP_BATCH, []))
register("resnet56_normjax", _case({"name": "resnet", "depth": 56}, RESNET_BATCH, LN))
register("resnet110_normjax", _case({"name": "resnet", "depth": 110}, RESNET_BATCH, LN))
register("resnet20_normjax-bf16", _case({"name": "resnet", "depth": 20}, RESNET_BATCH, LN, "bfloat16"))
# The conv sizes of the CPU studies (`make bench-conv`); a 1x40x1 input gives the 1-D ResNet (dims=1).
for _workload in ("mnist1dresnet20", "fmnistresnet20w8"):
    _shape, _width = RESNET_WORKLOADS[_workload]
    _model = {"name": "resnet", "depth": 20, "width": _width}
    register(f"{_workload}_normjax", _case(_model, RESNET_BATCH, LN, image_shape=_shape))


@contextlib.contextmanager
def _env(name: str, value: str):
    """Set an environment variable for the duration of a case."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _group_case(model: dict, batch: int, runs: int, vectorized: bool, image_shape=(32, 32, 3), conv: str = "auto"):
    """`runs` runs that differ in seed and LR: one vmapped program vs one run after another.
    `conv` sets NORMJAX_CONV for this case (see `normjax.models.layers.use_custom_conv`)."""

    def run(args: argparse.Namespace) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        from normjax.config import merge
        from normjax.parallel import replicated
        from normjax.training.optim import set_hyperparams

        if conv != "auto" and jax.default_backend() == "cpu":
            raise SkipCase("an accelerator comparison: on CPU the default already is the custom conv")
        with _env("NORMJAX_CONV", conv):  # read when the program is traced (first call below)
            cfg, program, images, labels = _program(model, batch, LN, image_shape=image_shape)
            states = [program.init_state(merge(cfg, {"train": {"seed": r}})) for r in range(runs)]
            states = [
                s.replace(opt_state=set_hyperparams(s.opt_state, {"lr": 0.05 * (r + 1)})) for r, s in enumerate(states)
            ]
            rep = replicated(program.mesh)
            holder = {
                "g": jax.device_put(jax.tree.map(lambda *x: jnp.stack(x), *states), rep)
                if vectorized
                else [jax.device_put(jax.tree.map(lambda x: x[None], s), rep) for s in states]
            }
            steps = 5  # fused steps per call, as in the single-run cases

            def run_one():
                if vectorized:
                    holder["g"], m = program.run_chunk(holder["g"], images, labels, steps)
                else:
                    out = [program.run_chunk(s, images, labels, steps) for s in holder["g"]]
                    holder["g"], m = [o[0] for o in out], [o[1] for o in out]
                jax.block_until_ready(m)

            t0 = time.perf_counter()
            run_one()
            first = time.perf_counter() - t0
        res = time_steps(run_one, warmup=0, iters=2)
        for k in ("median_ms", "min_ms", "mean_ms"):
            res[k] /= steps * runs  # per step of one run
        res.update(
            first_call_s=first,
            batch=batch,
            runs=runs,
            device=f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
            note=f"ms per run-step; {runs} runs {'vmapped' if vectorized else 'one after another'}",
        )
        return res

    return run


RESNET20 = {"name": "resnet", "depth": 20}
SMALL_MLP = {"name": "mlp", "depth": 6, "width": 128}
register("resnet20x8_normjax-vmap", _group_case(RESNET20, RESNET_BATCH, 8, True))
register("resnet20x8_normjax-sequential", _group_case(RESNET20, RESNET_BATCH, 8, False))
# Accelerators: vmapped runs with our per-run convs instead of XLA's grouped convs (cuDNN).
register("resnet20x8_normjax-vmap-customconv", _group_case(RESNET20, RESNET_BATCH, 8, True, conv="custom"))
register("resnet20digitsx8_normjax-vmap", _group_case(RESNET20, RESNET_BATCH, 8, True, (8, 8, 1)))
register("resnet20digitsx8_normjax-sequential", _group_case(RESNET20, RESNET_BATCH, 8, False, (8, 8, 1)))
register("mlpsmallx8_normjax-vmap", _group_case(SMALL_MLP, 64, 8, True, (8, 8, 1)))
register("mlpsmallx8_normjax-sequential", _group_case(SMALL_MLP, 64, 8, False, (8, 8, 1)))
