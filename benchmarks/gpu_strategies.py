"""The GPU sweep benchmark: the ways to train a group of runs of one program, against each other.

Whether vectorizing runs helps on a GPU is open: a vmapped CNN compiles to grouped convolutions,
whose backward can be slow. Each case trains `runs` runs that differ in seed and LR, one way:

- `vmap-xla`: one vmapped program, XLA's grouped convs (what `normjax sweep` runs on a GPU);
- `vmap-custom`: one vmapped program, normjax's per-run convs (`NORMJAX_CONV=custom`);
- `map`: one program that runs the group's runs in turn (`lax.map`, `Program.train_chunk_map`);
- `sequential`: the single-run program, called once per run.

A case reports run-steps per second (the group's throughput), ms per step of one run, the first
call's compile time and the kernels the compiled program launches per step
(`normjax.sweep.plan.kernel_launches`). Cases run in order of importance, each in its own process
under its own time limit (`--case-limit`), within a total budget (`--budget`); the JSON is written
after every case, so a cut run keeps what it measured. Compiles are shared between cases through
JAX's persistent compilation cache. Needs only what the GPU image has (jax, flax, optax, chex,
orbax-checkpoint, scikit-learn, tqdm) and this repository: `make bench-gpu` runs it there.

    python -m benchmarks.gpu_strategies [--only CASE ...] [--budget S] [--case-limit S] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import MLP_BATCH, MLP_DEPTH, MLP_WIDTH, RESNET_BATCH
from benchmarks.timing import machine_info

# workload -> (model, optimizer, batch): ResNet-20 (CIFAR shape), the deep BN MLP, and the PReLU
# ResNet-20 with the λ controller keeping half the units nonlinear (the APL study's optimizer).
WORKLOADS: dict[str, tuple[dict, dict | None, int]] = {
    "resnet20": ({"name": "resnet", "depth": 20}, None, RESNET_BATCH),
    "mlp": ({"name": "mlp", "depth": MLP_DEPTH, "width": MLP_WIDTH}, None, MLP_BATCH),
    "prelu_resnet20_target": (
        {"name": "resnet", "depth": 20, "activation": "prelu", "prelu_init": 0.0},
        {"name": "sgd_prelu_target", "prelu_target": 0.5, "prelu_l1": 1e-3},
        RESNET_BATCH,
    ),
    "mlpsmall": ({"name": "mlp", "depth": 6, "width": 128}, None, 64),  # seconds on a CPU: to check the benchmark
}
# strategy -> (NORMJAX_CONV, Program function): `one` is the single-run chunk, once per run.
STRATEGIES = {"vmap-xla": ("xla", "vmap"), "vmap-custom": ("custom", "vmap"), "map": ("xla", "map"),
              "sequential": ("xla", "one")}  # fmt: skip
_CONV = ("vmap-xla", "sequential", "map", "vmap-custom")
# In order of importance: does vectorizing help ResNet-20 at all (8 runs), then at 32 and 16, then
# the other two workloads.
CASES = (
    [f"resnet20x8_{s}" for s in _CONV]
    + [f"resnet20x32_{s}" for s in _CONV]
    + [f"resnet20x16_{s}" for s in _CONV]
    + [f"mlpx8_{s}" for s in ("vmap-xla", "sequential", "map")]
    + [f"prelu_resnet20_targetx8_{s}" for s in _CONV]
)
NEEDS = ("jax", "flax", "optax", "chex", "orbax.checkpoint", "sklearn", "tqdm", "etils")
STEPS = 5  # fused steps per call, as in the other normjax cases


def parse_case(name: str) -> tuple[str, int, str]:
    """`resnet20x8_vmap-xla` -> ('resnet20', 8, 'vmap-xla').

    Example:
      >>> parse_case("prelu_resnet20_targetx16_map")
      ('prelu_resnet20_target', 16, 'map')
    """
    head, strategy = name.rsplit("_", 1)
    workload, runs = head.rsplit("x", 1)
    if workload not in WORKLOADS or strategy not in STRATEGIES or not runs.isdigit():
        raise ValueError(f"case {name!r}: WORKLOADxRUNS_STRATEGY with {sorted(WORKLOADS)} and {sorted(STRATEGIES)}")
    return workload, int(runs), strategy


def measure(name: str, min_seconds: float = 2.0, max_calls: int = 20) -> dict[str, Any]:
    """Run one case in this process (its NORMJAX_CONV set before anything is traced)."""
    workload, runs, strategy = parse_case(name)
    conv, how = STRATEGIES[strategy]
    os.environ["NORMJAX_CONV"] = conv
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.normjax_cases import LN, _program
    from normjax.config import merge
    from normjax.parallel import replicated
    from normjax.sweep.plan import kernel_launches
    from normjax.training.optim import set_hyperparams

    model, optim, batch = WORKLOADS[workload]
    cfg, program, images, labels = _program(model, batch, LN, optim=optim)
    assert program.chunk == STEPS
    states = []
    for r in range(runs):  # runs differ in seed and LR, as a sweep's
        s = program.init_state(merge(cfg, {"train": {"seed": r}}))
        states.append(s.replace(opt_state=set_hyperparams(s.opt_state, {"lr": 0.05 * (r + 1)})))
    rep = replicated(program.mesh)
    one = how == "one"
    groups = (
        [jax.tree.map(lambda x: x[None], s) for s in states]
        if one
        else [jax.tree.map(lambda *x: jnp.stack(x), *states)]
    )
    groups = [jax.device_put(g, rep) for g in groups]
    fn = (
        program.train_chunk_one
        if one or runs == 1
        else {"vmap": program.train_chunk_group, "map": program.train_chunk_map}[how]
    )
    rest = (images, labels, np.int32(STEPS), program.log_mask())
    t0 = time.perf_counter()
    compiled = fn.lower(groups[0], *rest).compile()
    compile_s = time.perf_counter() - t0
    holder = {"g": groups}

    def call() -> None:
        out = [compiled(g, *rest) for g in holder["g"]]
        holder["g"] = [o[0] for o in out]
        jax.block_until_ready([o[1] for o in out])

    t0 = time.perf_counter()
    call()  # the first call: allocation, autotuning
    first_s = time.perf_counter() - t0
    samples = []
    start = time.perf_counter()
    while len(samples) < max_calls and (time.perf_counter() - start < min_seconds or len(samples) < 3):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    per_call = sorted(samples)[len(samples) // 2]
    launches = kernel_launches(compiled.as_text()) * (runs if one else 1) / STEPS
    return {
        "workload": workload,
        "runs": runs,
        "strategy": strategy,
        "batch": batch,
        "run_steps_per_s": runs * STEPS / per_call,
        "ms_per_run_step": per_call * 1e3 / (runs * STEPS),
        "ms_per_group_step": per_call * 1e3 / STEPS,
        "compile_s": compile_s,
        "first_call_s": first_s,
        "calls": len(samples),
        "kernel_launches_per_step": launches,
        "device": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "note": f"{STEPS} steps per call, median of {len(samples)} calls; layer_norms hook every step",
    }


def _child(name: str, out: Path) -> int:
    try:
        res = measure(name) | {"status": "ok"}
    except Exception as e:  # noqa: BLE001 - recorded as the case's status
        lines = str(e).strip().splitlines()
        res = {"status": f"failed: {type(e).__name__}: {lines[0] if lines else ''}"}
    out.write_text(json.dumps(res))
    return 0


def missing_packages() -> list[str]:
    """What this machine lacks of `NEEDS` (carry it as wheels: /work/.library/device/README.md).

    Example:
      >>> isinstance(missing_packages(), list)
      True
    """
    return [m for m in NEEDS if importlib.util.find_spec(m.split(".")[0]) is None]


def run(names: list[str], out: Path, budget: float, case_limit: float) -> dict:
    """Each case in a child process under `case_limit` seconds, in order, until `budget` is spent;
    the JSON written after each."""
    results: dict[str, Any] = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "missing": missing_packages(),
    }
    results["cases"] = cases = {}
    cache = Path(tempfile.gettempdir()) / "normjax-jax-cache"
    env = os.environ | {
        "JAX_COMPILATION_CACHE_DIR": str(cache),  # the single-run and shared programs compile once
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    }
    deadline = time.monotonic() + budget
    for name in names:
        left = deadline - time.monotonic()
        if left < 15:
            cases[name] = {"status": "not run: the budget was spent"}
            continue
        print(f"[gpu_strategies] {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            try:
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.gpu_strategies", "--child", name, "--child-out", f.name],
                    env=env,
                    timeout=min(case_limit, left),
                    check=False,
                )
                text = Path(f.name).read_text()
                cases[name] = json.loads(text) if text else {"status": "failed: the case wrote nothing"}
            except subprocess.TimeoutExpired:
                cases[name] = {"status": f"cut: over its {min(case_limit, left):.0f} s"}
        cases[name]["wall_s"] = time.monotonic() - t0
        r = cases[name]
        shown = f"{r['run_steps_per_s']:.0f} run-steps/s" if r["status"] == "ok" else r["status"]
        print(f"[gpu_strategies] {name}: {shown} ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        out.write_text(json.dumps(results, indent=1))
    return results


def format_results(results: dict) -> str:
    """One line per case: throughput, and against the same workload and runs' `sequential`.

    Example:
      >>> print(format_results({"cases": {"mlpx8_map": {"status": "ok", "run_steps_per_s": 10.0,
      ...     "compile_s": 1.0, "kernel_launches_per_step": 40.0}, "mlpx8_vmap-xla": {"status": "cut"}}}))
      mlpx8_map                               10.0 run-steps/s  compile 1.0 s  40 kernels/step
      mlpx8_vmap-xla                        cut
    """
    lines = []
    for name, r in results["cases"].items():
        if r["status"] != "ok":
            lines.append(f"{name:<36}  {r['status']}")
            continue
        base = results["cases"].get(name.rsplit("_", 1)[0] + "_sequential", {})
        vs = f"  {r['run_steps_per_s'] / base['run_steps_per_s']:.2f}x sequential" if base.get("status") == "ok" else ""
        lines.append(
            f"{name:<36}  {r['run_steps_per_s']:6.1f} run-steps/s  compile {r['compile_s']:.1f} s  "
            f"{r['kernel_launches_per_step']:.0f} kernels/step{vs}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_strategies", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="CASE", help=f"these cases, in this order (default: {len(CASES)})")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all cases (default 480)")
    p.add_argument("--case-limit", type=float, default=120.0, help="seconds for one case, compile included")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results-gpu-strategies.json"), help="JSON output")
    p.add_argument("--list", action="store_true", help="print the cases in their order and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child, args.child_out)
    names = args.only or CASES
    for name in names:
        parse_case(name)
    if args.list:
        print("\n".join(names))
        return 0
    results = run(names, args.out, args.budget, args.case_limit)
    print(format_results(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
