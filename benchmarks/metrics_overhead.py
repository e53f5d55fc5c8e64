"""What the in-step metric hooks add to a training step, and how normjax's step compares with the
plain jitted JAX step of the same model (`benchmarks.flax_plain`), in one process.

Cases per workload, timed round-robin (`benchmarks.timing.round_robin`), ratios against normjax
with metrics off in the same round:
- `plain_jax`: the Flax-docs step, one step per jit call on a fixed batch (`STEPS_PER_CALL` calls);
- `off`: normjax, no hooks; `layer_norms`, `elr`: that hook on every step;
- `elr_unlogged`: the ELR hook configured but on no step of the call (a step between log points).

Usage:
    python -m benchmarks.metrics_overhead [--quick] [--out benchmarks/results-metrics-cpu.json]
"""

from __future__ import annotations

import time

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, NUM_CLASSES, RESNET_BATCH, make_batch
from benchmarks.normjax_cases import STEPS_PER_CALL, normjax_call
from benchmarks.timing import round_robin, round_robin_main

WORKLOADS = {
    "resnet20": ({"name": "resnet", "depth": 20}, RESNET_BATCH),
    "mlp": ({"name": "mlp", "depth": MLP_DEPTH, "width": MLP_WIDTH}, MLP_BATCH),
}


def plain_jax_call(workload: str):
    """The plain Flax step as a closure running `STEPS_PER_CALL` steps, returning ms/step."""
    import jax.numpy as jnp

    from benchmarks import flax_plain

    model, batch = WORKLOADS[workload]
    x, y = make_batch(batch)
    net = (
        flax_plain.CifarResNet(20, NUM_CLASSES)
        if workload == "resnet20"
        else flax_plain.BnReluMlp(MLP_DEPTH, MLP_WIDTH, NUM_CLASSES)
    )
    run_one, _ = flax_plain.make_runner(net, (jnp.asarray(x), jnp.asarray(y)))

    def call() -> float:
        t0 = time.perf_counter()
        for _ in range(STEPS_PER_CALL):
            run_one()
        return (time.perf_counter() - t0) * 1000 / STEPS_PER_CALL

    return call


def measure(workload: str, rounds: int) -> dict:
    model, batch = WORKLOADS[workload]
    cases = {
        "off": normjax_call(model, batch, []),
        "plain_jax": plain_jax_call(workload),
        "layer_norms": normjax_call(model, batch, ["layer_norms"]),
        "elr": normjax_call(model, batch, ["elr"]),
        "elr_unlogged": normjax_call(model, batch, ["elr"], log_mask=[False] * STEPS_PER_CALL),
    }
    return round_robin(cases, rounds, lambda name: "off")


def main(argv: list[str] | None = None) -> int:
    return round_robin_main(argv, __doc__.splitlines()[0], list(WORKLOADS), measure, "benchmarks/results-metrics.json")


if __name__ == "__main__":
    raise SystemExit(main())
