"""normjax's own benchmark cases: the real training program (`normjax.training.program`) with
data held on device, several steps fused per call, and the per-layer norm hook on (as in runs).

Times are per *step* (a call runs `STEPS_PER_CALL` steps). Inputs are the synthetic 32x32x3 task
with augmentation off, matching the references' fixed random batch in cost.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, RESNET_BATCH, register
from benchmarks.timing import time_steps

STEPS_PER_CALL = 5


def _program(model: dict, batch: int, metrics: list[str], dtype: str = "float32"):
    import numpy as np

    from normjax.config import DEFAULTS, merge
    from normjax.parallel import put_replicated
    from normjax.training.loop import dataset_for, program_for

    cfg = merge(DEFAULTS, {
        "model": model,
        "data": {"name": "synthetic", "synthetic": {"num_train": 4 * batch, "num_test": 64,
                                                    "image_shape": [32, 32, 3], "num_classes": 10}},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "constant"},
        "train": {"batch_size": batch, "steps": 1000, "steps_per_dispatch": STEPS_PER_CALL, "dtype": dtype},
        "log": {"metrics": metrics},
    })
    ds = dataset_for(cfg)
    program = program_for(cfg, ds)
    images = put_replicated(ds.train_images, program.mesh)
    labels = put_replicated(ds.train_labels.astype(np.int32), program.mesh)
    return cfg, program, images, labels


def _case(model: dict, batch: int, metrics: list[str], dtype: str = "float32"):
    def run(args: argparse.Namespace) -> dict[str, Any]:
        import jax
        import numpy as np

        cfg, program, images, labels = _program(model, batch, metrics, dtype)
        state = program.init_state(cfg)
        n = np.int32(STEPS_PER_CALL)
        t0 = time.perf_counter()
        compiled = program.train_chunk.lower(state, images, labels, n).compile()
        compile_s = time.perf_counter() - t0
        holder = {"state": state}

        def run_one():
            holder["state"], m = compiled(holder["state"], images, labels, n)
            jax.block_until_ready(m)

        t0 = time.perf_counter()
        run_one()
        first = compile_s + time.perf_counter() - t0
        res = time_steps(run_one, warmup=max(0, args.warmup // STEPS_PER_CALL), iters=max(2, args.iters // 2))
        for k in ("median_ms", "min_ms", "mean_ms"):
            res[k] /= STEPS_PER_CALL
        res["samples_ms"] = [s / STEPS_PER_CALL for s in res["samples_ms"]]
        params = sum(x.size for x in jax.tree.leaves(holder["state"].params))
        res.update(first_call_s=first, compile_s=compile_s, params=int(params), batch=batch,
                   device=f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
                   note=f"compile {compile_s:.1f}s; {STEPS_PER_CALL} steps/call; {dtype}; metrics={metrics or 'off'}")
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
