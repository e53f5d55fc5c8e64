"""Wall-clock timing helpers and a machine description for benchmark results."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def time_steps(run_one: Callable[[], None], *, warmup: int, iters: int) -> dict[str, Any]:
    """Time `iters` calls of `run_one` after `warmup` untimed calls.

    `run_one` must return only once its work is finished (JAX: `jax.block_until_ready`; torch
    on CUDA: `torch.cuda.synchronize`), otherwise this measures dispatch, not compute.
    Returns median/min/mean milliseconds per call plus the raw samples.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        run_one()
    samples: list[float] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run_one()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "mean_ms": statistics.fmean(samples),
        "warmup": warmup,
        "iters": iters,
        "samples_ms": samples,
    }


def round_robin(
    cases: dict[str, Callable[[], float]], rounds: int, baseline: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    """Time cases in turn (one call of each, then again) so drift on a shared machine hits them alike.

    Each case returns its ms/step for one call (and blocks until done). The ratio of a case is the
    median over rounds of its time divided by its baseline's (`baseline(name)`) in the same round.
    """
    for fn in cases.values():  # warm-up call each
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(fn())
    return {
        name: {
            "median_ms": statistics.median(ts),
            "min_ms": min(ts),
            "baseline": baseline(name),
            "ratio": statistics.median(t / b for t, b in zip(ts, times[baseline(name)], strict=True)),
            "samples_ms": ts,
        }
        for name, ts in times.items()
    }


def round_robin_main(
    argv: list[str] | None,
    description: str,
    workloads: list[str],
    measure: Callable[[str, int], dict],
    default_out: str,
) -> int:
    """The command line of a round-robin benchmark: `--quick` (4 rounds, else 12), `--out`,
    `--only`; runs `measure(workload, rounds)` per workload, prints ratios, writes the JSON."""
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="4 rounds instead of 12")
    p.add_argument("--out", type=Path, default=Path(default_out), help="JSON output")
    p.add_argument("--only", nargs="+", choices=sorted(workloads), default=sorted(workloads), help="workloads")
    args = p.parse_args(argv)
    rounds = 4 if args.quick else 12
    results = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "rounds": rounds, "workloads": {}}
    for w in args.only:
        results["workloads"][w] = res = measure(w, rounds)
        print(f"{w}:")
        for name, r in res.items():
            print(f"  {name:16s} {r['median_ms']:8.2f} ms/step   x{r['ratio']:.3f} vs {r['baseline']}")
        args.out.write_text(json.dumps(results, indent=1))  # after each workload: a cut run keeps the rest
    print(f"wrote {args.out}")
    return 0


def time_compile(fn: Callable[[], Any]) -> float:
    """Seconds taken by one call of `fn`; pass the first (compiling) call of a step.

    For `jax.jit` and `torch.compile` that call traces, compiles and runs one step, so the
    result is compile time plus one step; callers must block inside `fn` as for `time_steps`.
    """
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # Non-Linux hosts have no /proc/cpuinfo; platform gives at least the architecture.
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, core count, library versions, accelerator and date, for the results file.

    torch is described only if a case already imported it, so JAX-only runs never import it.
    """
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # Containers can restrict the cores a process may use below os.cpu_count().
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "torch": _version("torch"),
    }
    try:
        import jax

        devices = jax.devices()
        info["jax_backend"] = jax.default_backend()
        info["jax_device_kind"] = devices[0].device_kind
        info["jax_device_count"] = len(devices)
    except Exception as e:  # noqa: BLE001 - a broken accelerator plugin should not lose the whole results file
        info["jax_backend"] = f"unavailable: {e}"
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["torch_cuda_device"] = torch.cuda.get_device_name(0)
            info["torch_cuda_version"] = torch.version.cuda
    return info
