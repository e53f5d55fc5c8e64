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

import argparse
import json
import time
from pathlib import Path

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, NUM_CLASSES, RESNET_BATCH, make_batch
from benchmarks.normjax_cases import STEPS_PER_CALL, normjax_call
from benchmarks.timing import machine_info, round_robin

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
    net = (flax_plain.CifarResNet(20, NUM_CLASSES) if workload == "resnet20"
           else flax_plain.BnReluMlp(MLP_DEPTH, MLP_WIDTH, NUM_CLASSES))
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 rounds instead of 12")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results-metrics.json"), help="JSON output")
    p.add_argument("--only", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS), help="workloads")
    args = p.parse_args(argv)
    rounds = 4 if args.quick else 12
    results = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "steps_per_call": STEPS_PER_CALL,
               "rounds": rounds, "workloads": {}}
    for w in args.only:
        results["workloads"][w] = res = measure(w, rounds)
        print(f"{w}:")
        for name, r in res.items():
            print(f"  {name:14s} {r['median_ms']:8.2f} ms/step   x{r['ratio']:.3f} vs normjax off")
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
