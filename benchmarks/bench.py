"""Benchmark harness behind `make bench`: times one training step of each registered case.

Usage:
    python -m benchmarks.bench [--quick] [--only NAME ...] [--out benchmarks/results.json]
                               [--device auto|cpu|cuda] [--baseline IMPL] [--list]

Registry
--------
`CASES` maps a case name to `fn(args: argparse.Namespace) -> dict`. Names are
`<workload>_<impl>` (e.g. `resnet20_torch_eager`): the text before the first "_" is the
workload, and the "rel. time" column divides each case's median by the median of
`<workload>_<baseline>` (baseline impl `torch_eager` unless `--baseline` says otherwise).

A case function:
  * reads `args.warmup` and `args.iters` (already resolved for `--quick`), and `args.device`;
  * builds its model and batch, times the first (compiling) call with `timing.time_compile`
    and the steady state with `timing.time_steps`, and returns the `time_steps` dict with
    optional extra keys: `first_call_s`, `params`, `batch`, `device`, `note`;
  * may raise: the harness records `"status": "failed: <reason>"` and moves on.

To add cases, call `register(name, fn)` at import time of a module and list that module in
`CASE_MODULES`; `main()` imports those modules before it resolves `--only`.

torch is imported inside the torch cases only, so the JAX cases run without it installed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import machine_info, time_compile, time_steps

Case = Callable[[argparse.Namespace], dict[str, Any]]

CASES: dict[str, Case] = {}

# Modules whose import registers more cases (e.g. normjax's own), imported by main().
CASE_MODULES: tuple[str, ...] = ("benchmarks.normjax_cases",)

RESNET_BATCH = 128
MLP_BATCH = 512
MLP_DEPTH = 20
MLP_WIDTH = 1024
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
# The ResNet-20 workloads: workload -> (input shape HWC, width w of the stages w/2w/4w). A shape of
# height 1 is a 1-D signal (normjax's [B, 1, L, C]): 1-D convs in every impl. Besides CIFAR's
# resnet20, the conv sizes of the CPU studies (`make bench-conv`): the 1-D ResNet-20 on
# MNIST-1D-shaped signals, and ResNet-20 at width 8 on 28x28x1 (Fashion-MNIST-shaped) images.
RESNET_WORKLOADS: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet20": (IMAGE_SHAPE, 16),
    "mnist1dresnet20": ((1, 40, 1), 16),
    "fmnistresnet20w8": ((28, 28, 1), 8),
}

# (warmup, iters): quick is a smoke run of every case (its time: benchmarks/RESULTS.md, end).
QUICK_ITERS = (1, 5)
FULL_ITERS = (5, 30)


def register(name: str, fn: Case) -> Case:
    """Add a case to `CASES` under `name` (`<workload>_<impl>`); names must be unique."""
    if name in CASES:
        raise ValueError(f"benchmark case {name!r} is already registered")
    if "_" not in name:
        raise ValueError(f"case name {name!r} must look like <workload>_<impl>")
    CASES[name] = fn
    return fn


def workload_of(name: str) -> str:
    """The workload part of a case name, which groups cases for the ratio column."""
    return name.split("_", 1)[0]


def make_batch(
    batch: int, seed: int = 0, image_shape: tuple[int, int, int] = IMAGE_SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """Random NHWC float32 images and int32 labels, identical for every framework."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *image_shape), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(batch,), dtype=np.int32)
    return x, y


def _torch_case(workload: str, use_compile: bool) -> Case:
    def run(args: argparse.Namespace) -> dict[str, Any]:
        import torch

        from benchmarks import torch_ref

        threads = torch_ref.set_threads()
        device = torch_ref.pick_device(args.device)
        if device.type == "cuda":
            # Fixed input shapes: let cuDNN pick its fastest algorithms once.
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        channels_last = False
        dims = 2
        if workload in RESNET_WORKLOADS:
            shape, width = RESNET_WORKLOADS[workload]
            dims = 1 if shape[0] == 1 else 2
            x_np, y_np = make_batch(RESNET_BATCH, image_shape=shape)
            model: torch.nn.Module = torch_ref.CifarResNet(
                20, NUM_CLASSES, in_channels=shape[2], width=width, dims=dims
            )
            # channels_last is a layout of 4-D tensors; Conv1d on [B, C, L] has none.
            channels_last = dims == 2 and torch_ref.RESNET_CHANNELS_LAST
        else:
            x_np, y_np = make_batch(MLP_BATCH)
            model = torch_ref.BnReluMlp(MLP_DEPTH, MLP_WIDTH, num_classes=NUM_CLASSES)
        x = torch.from_numpy(x_np).permute(0, 3, 1, 2)
        if dims == 1:
            x = x.flatten(2)  # [B, C, 1, L] -> [B, C, L]
        x = x.contiguous().to(device)
        y = torch.from_numpy(y_np).long().to(device)
        step = torch_ref.make_train_step(model.to(device), x, y, use_compile=use_compile, channels_last=channels_last)
        try:
            first = time_compile(step)
            result = time_steps(step, warmup=args.warmup, iters=args.iters)
        finally:
            if use_compile:
                # Drop compiled graphs so later cases start from a clean dynamo state.
                torch._dynamo.reset()
        desc = str(device)
        if device.type == "cuda":
            desc += f" ({torch.cuda.get_device_name(device)})"
            result["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
            result["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        else:
            desc += f" ({threads} threads)"
        result.update(
            first_call_s=first,
            params=torch_ref.param_count(model),
            batch=len(x_np),
            device=desc,
            note="channels_last" if channels_last else "",
        )
        return result

    return run


def _jax_case(workload: str) -> Case:
    def run(args: argparse.Namespace) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        from benchmarks import flax_plain

        if workload in RESNET_WORKLOADS:
            shape, width = RESNET_WORKLOADS[workload]
            dims = 1 if shape[0] == 1 else 2
            x_np, y_np = make_batch(RESNET_BATCH, image_shape=shape)
            if dims == 1:
                x_np = x_np[:, 0]  # [B, 1, L, C] -> [B, L, C]
            model: Any = flax_plain.CifarResNet(20, NUM_CLASSES, width=width, dims=dims)
        else:
            x_np, y_np = make_batch(MLP_BATCH)
            model = flax_plain.BnReluMlp(MLP_DEPTH, MLP_WIDTH, NUM_CLASSES)
        batch = (jnp.asarray(x_np), jnp.asarray(y_np))
        run_one, state = flax_plain.make_runner(model, batch)
        first = time_compile(run_one)
        result = time_steps(run_one, warmup=args.warmup, iters=args.iters)
        dev = jax.devices()[0]
        result.update(
            first_call_s=first,
            params=flax_plain.param_count(state),
            batch=len(x_np),
            device=f"{jax.default_backend()} ({dev.device_kind})",
            note="",
        )
        return result

    return run


register("resnet20_torch_eager", _torch_case("resnet20", use_compile=False))
register("resnet20_torch_compile", _torch_case("resnet20", use_compile=True))
register("resnet20_flax_plain", _jax_case("resnet20"))
register("mlp_torch_eager", _torch_case("mlp", use_compile=False))
register("mlp_torch_compile", _torch_case("mlp", use_compile=True))
register("mlp_jax_plain", _jax_case("mlp"))
for _workload in ("mnist1dresnet20", "fmnistresnet20w8"):
    register(f"{_workload}_torch_eager", _torch_case(_workload, use_compile=False))
    register(f"{_workload}_flax_plain", _jax_case(_workload))


class SkipCase(Exception):
    """Raised by a case that does not apply on this machine; recorded as `skipped: <reason>`."""


def _failure(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    # Inductor errors run to hundreds of lines; the first one names the cause.
    return f"failed: {type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run_cases(names: list[str], args: argparse.Namespace, on_result=None) -> dict[str, dict[str, Any]]:
    """Run the named cases in order; a failing case is recorded, never fatal. `on_result(results)`
    is called after each case (the caller writes partial results: a time-limited run keeps them)."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res = CASES[name](args)
            res["status"] = "ok"
        except SkipCase as e:
            res = {"status": f"skipped: {e}"}
        except Exception as e:  # noqa: BLE001 - recorded as the case's status; the other cases still run
            res = {"status": _failure(e)}
        res["wall_s"] = time.perf_counter() - t0
        print(f"[bench] {name}: {res['status']} in {res['wall_s']:.1f}s", file=sys.stderr, flush=True)
        results[name] = res
        if on_result is not None:
            on_result(results)
    return results


def format_table(results: dict[str, dict[str, Any]], baseline: str) -> str:
    """A plain-text table: case, median and min ms/step, time relative to the baseline."""
    header = ("case", "ms/step", "min ms", f"rel. time (vs *_{baseline})", "first call s", "note")
    rows: list[tuple[str, ...]] = []
    for name, res in results.items():
        if res.get("status") != "ok":
            rows.append((name, "-", "-", "-", "-", res.get("status", "")))
            continue
        base = results.get(f"{workload_of(name)}_{baseline}", {})
        rel = f"{res['median_ms'] / base['median_ms']:.2f}x" if base.get("status") == "ok" else "-"
        rows.append(
            (
                name,
                f"{res['median_ms']:.1f}",
                f"{res['min_ms']:.1f}",
                rel,
                f"{res.get('first_call_s', float('nan')):.1f}",
                str(res.get("note", "")),
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few iterations: a smoke run of every case")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results.json"), help="JSON output")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="torch device (auto: cuda if available); cpu also pins JAX to CPU, otherwise JAX uses its default backend",
    )
    p.add_argument("--baseline", default="torch_eager", help="impl the ratio column divides by")
    p.add_argument("--warmup", type=int, help="untimed steps per case (overrides --quick)")
    p.add_argument("--iters", type=int, help="timed steps per case (overrides --quick)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    args = p.parse_args(argv)
    for module in CASE_MODULES:
        importlib.import_module(module)
    if args.list:
        print("\n".join(CASES))
        sys.exit(0)
    unknown = [n for n in args.only or [] if n not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; allowed: {', '.join(CASES)}")
    warmup, iters = QUICK_ITERS if args.quick else FULL_ITERS
    args.warmup = warmup if args.warmup is None else args.warmup
    args.iters = iters if args.iters is None else args.iters
    if args.warmup < 0 or args.iters < 1:
        p.error("--warmup must be >= 0 and --iters >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # Must happen before any JAX array exists; afterwards the backend is fixed.
        import jax

        jax.config.update("jax_platforms", "cpu")
    names = args.only or list(CASES)
    settings = {
        "quick": args.quick,
        "warmup": args.warmup,
        "iters": args.iters,
        "device": args.device,
        "baseline": args.baseline,
        "cases": names,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(results: dict[str, dict[str, Any]]) -> None:
        report = {"machine": machine_info(), "settings": settings, "results": results}
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    results = run_cases(names, args, on_result=write)
    print(format_table(results, args.baseline))
    print(f"wrote {args.out}")
    # Failed cases (e.g. torch.compile without a working compiler) show in the table and
    # the JSON but do not fail `make bench`: the remaining numbers are still valid.
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so cases that other modules add through
    # `benchmarks.bench.register` land in the same CASES dict as the built-in ones.
    from benchmarks import bench

    sys.exit(bench.main())
