"""What each optimizer built from `normjax.transforms` adds to a training step, against plain
SGD with momentum on the same model, in one process.

The optimizers are timed round-robin (one fused call of each, then again), so drift of a shared
machine hits them alike; the ratio per optimizer is the median over rounds of its time divided
by SGD's in the same round. Metrics hooks are off, so the optimizer is all that differs.

Usage:
    python -m benchmarks.transforms_overhead [--quick] [--out benchmarks/results-transforms-cpu.json]
"""

from __future__ import annotations

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, RESNET_BATCH
from benchmarks.normjax_cases import normjax_call
from benchmarks.timing import round_robin, round_robin_main

OPTIMIZERS = {
    "sgd": {"name": "sgd"},
    "uniform_elr": {"name": "sgd_uniform_elr"},
    "critical_warmup": {"name": "sgd_critical_warmup"},
    "prelu_prior": {"name": "sgd_prelu_l1", "prelu_l1": 1e-3},
}
WORKLOADS = {
    "resnet20": ({"name": "resnet", "depth": 20}, RESNET_BATCH),
    "mlp": ({"name": "mlp", "depth": MLP_DEPTH, "width": MLP_WIDTH}, MLP_BATCH),
}


def measure(workload: str, rounds: int) -> dict:
    """ms/step of each optimizer and its ratio to SGD; prelu_prior against SGD on the PReLU model."""
    model, batch = WORKLOADS[workload]
    prelu = model | {"activation": "prelu"}
    cases = {
        name: normjax_call(prelu if name == "prelu_prior" else model, batch, [], optim)
        for name, optim in OPTIMIZERS.items()
    }
    cases["sgd_prelu_model"] = normjax_call(prelu, batch, [], OPTIMIZERS["sgd"])
    return round_robin(cases, rounds, lambda name: "sgd_prelu_model" if name == "prelu_prior" else "sgd")


def main(argv: list[str] | None = None) -> int:
    return round_robin_main(
        argv, __doc__.splitlines()[0], list(WORKLOADS), measure, "benchmarks/results-transforms.json"
    )


if __name__ == "__main__":
    raise SystemExit(main())
