"""The APL study's cost per training step, and normjax's PReLU step against a PyTorch reference.

Both in one process; the reference is the same network with the same update.

CIFAR ResNet-20 (32x32x3 synthetic batch of `RESNET_BATCH`, augmentation off), SGD momentum 0.9,
LR 0.1, weight decay 5e-4, `STEPS_PER_CALL` steps per call. Cases, timed round-robin
(`benchmarks.timing.round_robin`: a warm-up call each, then one call of each per round), ratio =
median over rounds of (case / `prelu_l1` in the same round):
- `relu_sgd`: the ReLU network, plain SGD; `prelu_sgd`: channel-wise PReLU (slopes start at 0),
  plain SGD (weight decay on the slopes too);
- `prelu_l1`: PReLU with the sparsity prior (`sgd_prelu_l1`, lambda 1e-3: proximal L1 step on the
  slopes toward 1, frozen within 0.01 of 1, no decay on the slopes), the reference;
- `prelu_l1_apl`: the same with the `apl` metric hook (nonlinear units, average path length) on
  every step; `prelu_l1_apl_unlogged`: the hook configured, on no step of the call (a step between
  log points);
- `prelu_target`: the prior steered to keep half the units nonlinear (`sgd_prelu_target`,
  target 0.5, initial lambda 1e-3);
- `torch_eager`, `torch_compile`: `benchmarks.torch_ref.CifarResNet(activation="prelu")` (an
  `nn.PReLU(C, init=0.0)` in place of every ReLU) with `make_train_step(prelu_l1=1e-3)` (the same
  update: no decay on the slopes, proximal step after the optimizer step), channels_last, on
  cuda when available. A torch case that cannot run (torch missing, no working compiler) is
  recorded as `failed: <reason>`; the others are still timed.

Usage:
    python -m benchmarks.apl_overhead [--quick] [--rounds N] [--batch B] [--only CASE ...]
                                      [--device auto|cpu|cuda] [--out benchmarks/results-apl.json]

`--batch` other than the default is for smoke checks only (the results then are not comparable
with the other tables). Nothing here imports tensorflow-datasets (the synthetic set is built in
numpy), so it runs on an image that has only jax, flax, optax and torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench import NUM_CLASSES, RESNET_BATCH, _failure, make_batch
from benchmarks.normjax_cases import STEPS_PER_CALL, normjax_call
from benchmarks.timing import machine_info, round_robin, time_compile

WORKLOAD = "resnet20"
REFERENCE = "prelu_l1"
PRELU_L1 = 1e-3
PRELU_TARGET = 0.5

_RELU = {"name": "resnet", "depth": 20, "activation": "relu"}
_PRELU = {"name": "resnet", "depth": 20, "activation": "prelu", "prelu_init": 0.0}
_SGD = {"name": "sgd"}
_L1 = {"name": "sgd_prelu_l1", "prelu_l1": PRELU_L1}
_TARGET = {"name": "sgd_prelu_target", "prelu_target": PRELU_TARGET, "prelu_l1": PRELU_L1}

# name -> (model, optim, metrics, log every step of the call?)
NORMJAX_CASES: dict[str, tuple[dict, dict, list[str], bool]] = {
    "relu_sgd": (_RELU, _SGD, [], True),
    "prelu_sgd": (_PRELU, _SGD, [], True),
    "prelu_l1": (_PRELU, _L1, [], True),
    "prelu_l1_apl": (_PRELU, _L1, ["apl"], True),
    "prelu_target": (_PRELU, _TARGET, [], True),
    "prelu_l1_apl_unlogged": (_PRELU, _L1, ["apl"], False),
}
TORCH_CASES = {"torch_eager": False, "torch_compile": True}  # name -> use torch.compile
CASES = [*NORMJAX_CASES, *TORCH_CASES]

NOTES = {
    "relu_sgd": "normjax, ReLU, SGD",
    "prelu_sgd": "normjax, PReLU, SGD",
    "prelu_l1": f"normjax, PReLU, sgd_prelu_l1 lambda={PRELU_L1:g} (reference)",
    "prelu_l1_apl": "normjax, prelu_l1 + apl hook every step",
    "prelu_target": f"normjax, PReLU, sgd_prelu_target {PRELU_TARGET:g}",
    "prelu_l1_apl_unlogged": "normjax, prelu_l1, apl hook on no step",
    "torch_eager": "PyTorch eager, PReLU + proximal L1, channels_last",
    "torch_compile": "PyTorch torch.compile(model), PReLU + proximal L1, channels_last",
}


def _normjax_case(name: str, batch: int) -> tuple[Callable[[], float], dict[str, Any]]:
    model, optim, metrics, logged = NORMJAX_CASES[name]
    t0 = time.perf_counter()
    call = normjax_call(model, batch, metrics, optim, log_mask=None if logged else [False] * STEPS_PER_CALL)
    return call, {"setup_s": time.perf_counter() - t0}


def _torch_case(name: str, batch: int, device_name: str) -> tuple[Callable[[], float], dict[str, Any]]:
    """The PyTorch PReLU ResNet-20 with the proximal L1 step, as a closure running
    `STEPS_PER_CALL` steps and returning ms/step; its first (compiling) step is run here."""
    import torch

    from benchmarks import torch_ref

    threads = torch_ref.set_threads()
    device = torch_ref.pick_device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its algorithms once
    torch.manual_seed(0)
    x_np, y_np = make_batch(batch)
    model = torch_ref.CifarResNet(20, NUM_CLASSES, activation="prelu", prelu_init=0.0).to(device)
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(y_np).long().to(device)
    step = torch_ref.make_train_step(
        model, x, y, use_compile=TORCH_CASES[name], channels_last=torch_ref.RESNET_CHANNELS_LAST, prelu_l1=PRELU_L1
    )
    first = time_compile(step)  # raises here if torch.compile does not work on this machine

    def call() -> float:
        t0 = time.perf_counter()
        for _ in range(STEPS_PER_CALL):
            step()  # blocks (cuda: synchronize) at its end
        return (time.perf_counter() - t0) * 1000 / STEPS_PER_CALL

    desc = str(device)
    desc += f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({threads} threads)"
    return call, {"first_call_s": first, "params": torch_ref.param_count(model), "device": desc}


def measure(
    names: list[str], rounds: int, batch: int, device: str, on_progress: Callable[[dict], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Set up the named cases (failures recorded, not fatal), time the rest round-robin."""
    calls: dict[str, Callable[[], float]] = {}
    info: dict[str, dict[str, Any]] = {}
    used_compile = False
    try:
        for name in names:
            print(f"[apl] setting up {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                if name in NORMJAX_CASES:
                    calls[name], info[name] = _normjax_case(name, batch)
                else:
                    used_compile |= TORCH_CASES[name]
                    calls[name], info[name] = _torch_case(name, batch, device)
                info[name]["status"] = "set up, not timed yet"
            except Exception as e:  # e.g. no torch, or no working compiler for torch.compile
                if name == REFERENCE:
                    raise
                info[name] = {"status": _failure(e)}
            info[name] |= {"note": NOTES[name], "wall_s": time.perf_counter() - t0}
            print(f"[apl] {name}: {info[name]['status']} in {info[name]['wall_s']:.1f}s", file=sys.stderr, flush=True)
            if on_progress is not None:
                on_progress(info)  # a time-limited run keeps what was set up
        print(f"[apl] timing {len(calls)} cases, {rounds} rounds ...", file=sys.stderr, flush=True)
        timed = round_robin(calls, rounds, lambda _name: REFERENCE)
    finally:
        if used_compile and "torch" in sys.modules:
            sys.modules["torch"]._dynamo.reset()
    for name, r in timed.items():
        info[name] |= r | {"status": "ok"}
    return info


def format_table(res: dict[str, dict[str, Any]]) -> str:
    header = ("case", "ms/step", "min ms", f"x vs {REFERENCE}", "setup s", "note")
    rows = []
    for name, r in res.items():
        if "median_ms" not in r:
            rows.append((name, "-", "-", "-", "-", r.get("status", "")))
            continue
        setup = r.get("setup_s", r.get("first_call_s", float("nan")))
        rows.append(
            (
                name,
                f"{r['median_ms']:.2f}",
                f"{r['min_ms']:.2f}",
                f"{r['ratio']:.3f}",
                f"{setup:.1f}",
                r.get("note", ""),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.apl_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 rounds instead of 12")
    p.add_argument("--rounds", type=int, help="timed rounds (overrides --quick)")
    p.add_argument(
        "--batch",
        type=int,
        default=RESNET_BATCH,
        help=f"batch size (default {RESNET_BATCH}; others for smoke checks only)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=CASES,
        default=CASES,
        help=f"cases to run ({REFERENCE}, the reference, is always added)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="torch device (auto: cuda if available); cpu also pins JAX to CPU",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results-apl.json"), help="JSON output")
    args = p.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else 4 if args.quick else 12
    if rounds < 1 or args.batch < 1:
        p.error("--rounds and --batch must be >= 1")
    if args.device == "cpu":
        import jax

        jax.config.update("jax_platforms", "cpu")  # before any JAX array exists
    names = [n for n in CASES if n in args.only or n == REFERENCE]
    settings = {
        "quick": args.quick,
        "rounds": rounds,
        "batch": args.batch,
        "steps_per_call": STEPS_PER_CALL,
        "device": args.device,
        "reference": REFERENCE,
        "prelu_l1": PRELU_L1,
        "prelu_target": PRELU_TARGET,
        "cases": names,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(res: dict[str, dict[str, Any]]) -> None:
        report = {
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
            "rounds": rounds,
            "settings": settings,
            "workloads": {WORKLOAD: res},
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    res = measure(names, rounds, args.batch, args.device, on_progress=write)
    write(res)
    print(f"{WORKLOAD} (batch {args.batch}, {rounds} rounds, {STEPS_PER_CALL} steps/call):")
    print(format_table(res))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
