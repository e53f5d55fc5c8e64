"""`normjax plan`: compile every program of a sweep (or experiment) for a chip that is not here.

Each distinct program the sweep would run is compiled for the target (`normjax.chips`): one run
data-parallel over the target's devices, and the vectorized group at 1, 2, 4 … runs, up to the
runs that share the program or the first group that does not fit. From the compiled programs:
memory per device (XLA's memory analysis) and whether it fits, the largest group that fits (the
size `normjax sweep` picks on that chip, `normjax.sweep.sizing`), flops and bytes per step (XLA's
cost analysis), a roofline lower bound on the step time from the chip's published peaks, and the
sweep's training time at that bound. For a GPU target also the kernels each way of running a
group compiles to (`STRATEGIES`), counted in the compiled HLO.

XLA's cost analysis counts a loop's body once, so a chunk of `steps_per_dispatch` steps costs
one step (and its data-order draw). The GPU compiler reports no cost analysis: there the flops
come from XLA's analysis of the same program before optimization (lowered for this host), and
the bound uses flops alone (bytes before fusion overstate the traffic).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax

from normjax.chips import Chip, chip, compile_devices
from normjax.config import load_config
from normjax.errors import UserError
from normjax.parallel import compile_for
from normjax.sweep.sizing import HEADROOM, GroupCompiler, largest_group

# Shapes of the TFDS datasets the study files name, for planning where one is not prepared:
# (training examples, image shape or None when the sizes vary, classes). Normalization
# statistics do not shape a program.
KNOWN_DATASETS = {
    "cifar10": (50000, (32, 32, 3), 10),
    "cifar100": (50000, (32, 32, 3), 100),
    "fashion_mnist": (60000, (28, 28, 1), 10),
    "mnist": (60000, (28, 28, 1), 10),
    "imagenet2012": (1281167, None, 1000),
}

# Ways to train a group of runs on a GPU, compared by their kernel counts (and by
# `benchmarks/gpu_strategies.py` in time): NORMJAX_CONV and the Program function each compiles.
STRATEGIES = {
    "vmap, XLA's grouped convs": ("xla", "vmap"),
    "vmap, per-run convs": ("custom", "vmap"),
    "lax.map over runs": ("xla", "map"),
    "runs one after another": ("xla", "one"),
}


@dataclasses.dataclass
class _Input:
    """What `program_for` reads of an input: its DataSpec and name."""

    spec: Any
    name: str


def is_sweep(path: str | os.PathLike) -> bool:
    """Whether the Python file at `path` defines `get_sweep` (a sweep) rather than `get_config`.

    Example:
      >>> is_sweep("experiments/sweep_lr.py"), is_sweep("experiments/resnet_digits.py")
      (True, False)
    """
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError):
        return False  # load_config reports it in one line
    return any(isinstance(n, ast.FunctionDef) and n.name == "get_sweep" for n in tree.body)


def run_configs(path: str | os.PathLike, size: str, overrides: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """The configs a sweep trains (each distinct config once, base runs first), or an experiment's one."""
    if not is_sweep(path):
        return [load_config(path, size=size, overrides=overrides)]
    from normjax.sweep.spec import expand

    runs, _ = expand(path, size, overrides)
    bases = {r.base.name: r.base.config for r in runs if r.base is not None}
    return list(bases.values()) + [r.config for r in runs if r.same_as is None]


def data_input(cfg: dict) -> Any:
    """The run's input (`normjax.training.inputs.input_for`), or for a known TFDS dataset that is
    not prepared here, its shapes alone (`KNOWN_DATASETS`)."""
    from normjax.training.inputs import input_for
    from normjax.training.program import DataSpec

    try:
        return input_for(cfg)
    except UserError:
        d = cfg["data"]
        if d["name"] not in KNOWN_DATASETS:
            raise
        n, shape, classes = KNOWN_DATASETS[d["name"]]
        stream = d["pipeline"] == "stream" or shape is None
        if stream:
            if not d["input_size"]:
                raise UserError(f"dataset {d['name']!r} streams: give data.input_size (e.g. 224)") from None
            shape = (d["input_size"], d["input_size"], 3)
        c = shape[2]
        spec = DataSpec(num_train=n, image_shape=shape, num_classes=classes, mean=(0.0,) * c, std=(1.0,) * c)
        return _Input(dataclasses.replace(spec, streaming=stream), d["name"])


@contextlib.contextmanager
def _conv_impl(impl: str) -> Iterator[None]:
    """NORMJAX_CONV set to `impl` inside the block (the conv a program traces, `use_custom_conv`)."""
    old = os.environ.get("NORMJAX_CONV")
    os.environ["NORMJAX_CONV"] = impl
    try:
        yield
    finally:
        if old is None:
            del os.environ["NORMJAX_CONV"]
        else:
            os.environ["NORMJAX_CONV"] = old


_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?[\w.\-]+ = .*? ([a-z][\w\-]*)\(")
_CALLED = re.compile(r"\b(body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
# Instructions that launch nothing: they name, slice or route buffers, or hold other computations.
_NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional", "call",
              "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain"}  # fmt: skip


def kernel_launches(hlo_text: str) -> int:
    """Kernels a compiled program launches in one call: the instructions outside fusions (a
    fusion, a library call or a copy is one kernel) of the entry computation, a loop's body
    times its trip count (as XLA's GPU compiler records it; once where it records none), and
    of a conditional the branch that launches most.

    Args:
      hlo_text: the compiled program's HLO (`compiled.as_text()`).

    Returns:
      The count.

    Example:
      >>> kernel_launches('''%fused (p: f32[4]) -> f32[4] {
      ...   %p = f32[4]{0} parameter(0)
      ...   ROOT %n = f32[4]{0} negate(%p)
      ... }
      ...
      ... ENTRY %main (p: f32[4]) -> f32[4] {
      ...   %p = f32[4]{0} parameter(0)
      ...   ROOT %f = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused
      ... }''')
      1
    """
    bodies: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):  # a computation's header
            words = line.split()
            current = (words[1] if words[0] == "ENTRY" else words[0]).lstrip("%")
            bodies[current] = []
            entry = current if words[0] == "ENTRY" else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            bodies[current].append(line)

    @functools.cache
    def launches(name: str) -> int:
        count = 0
        for line in bodies.get(name, ()):
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            op, called = m.group(1), dict((k, v) for k, v in _CALLED.findall(line))
            if op == "while":
                trips = _TRIPS.search(line)
                count += (int(trips.group(1)) if trips else 1) * (
                    launches(called["body"]) + launches(called["condition"])
                )
            elif op == "conditional":
                names = [n.strip().lstrip("%") for g in _BRANCHES.findall(line) for n in g.split(",")]
                names += [called[k] for k in ("true_computation", "false_computation") if k in called]
                count += max((launches(n) for n in names), default=0)
            elif op == "call":
                count += launches(called.get("to_apply", ""))
            elif op not in _NO_KERNEL and not op.endswith("-done"):
                count += 1
        return count

    return launches(entry) if entry else 0


def _cost(compiled: Any, lowered_here: Any = None) -> tuple[float | None, float | None]:
    """(flops, bytes accessed) per device per step: the compiled program's cost analysis, else
    (the GPU compiler) the flops of the same program lowered for this host, bytes unknown."""
    cost = compiled.cost_analysis()
    if cost and cost.get("flops") is not None:
        return float(cost["flops"]), float(cost.get("bytes accessed", 0.0)) or None
    if lowered_here is not None:
        cost = lowered_here.cost_analysis()
        if cost and cost.get("flops") is not None:
            return float(cost["flops"]), None
    return None, None


def bound_seconds(flops: float | None, nbytes: float | None, peak: float, bandwidth: float) -> float | None:
    """The roofline lower bound on a step: its flops at the chip's peak, or its bytes at the
    chip's bandwidth, whichever takes longer (None when neither is known).

    Example:
      >>> bound_seconds(2e12, 1e9, peak=1e15, bandwidth=1e12)
      0.002
    """
    times = [x / y for x, y in ((flops, peak), (nbytes, bandwidth)) if x is not None]
    return max(times) if times else None


def plan(
    path: str | os.PathLike,
    *,
    size: str = "smoke",
    target: str,
    overrides: list[str] | tuple[str, ...] = (),
    max_group: int = 64,
    strategies: bool | None = None,
) -> dict:
    """Compile a sweep's (or experiment's) programs for `target` and report what they need.

    Args:
      path: a sweep file (`get_sweep`) or an experiment file (`get_config`).
      size: the file's size.
      target: a name of `normjax.chips.CHIPS` (`tpu-v5e-8`, `h100`, ...).
      overrides: `key=value` settings for every run (as `--set`).
      max_group: the largest vectorized group compiled.
      strategies: also count each `STRATEGIES` entry's kernels (default: on GPU targets).

    Returns:
      The report as JSON-able values (`format_plan` prints it).

    Raises:
      UserError: (one line) an unknown target, its compiler not installed, or a program that
        does not fit the target's memory even alone.

    Example:
      >>> report = plan("experiments/sweep_lr.py", target="tpu-v5e-8")  # doctest: +SKIP
    """
    c = chip(target)
    if max_group < 1:
        raise UserError(f"--max-group {max_group} must be >= 1")
    devices = compile_devices(c)
    strategies = c.family == "gpu" if strategies is None else strategies
    configs = run_configs(path, size, overrides)
    limit = int(c.memory * c.usable * HEADROOM)
    t_start = time.perf_counter()
    from normjax.training.loop import program_for, total_steps
    from normjax.training.program import static_key

    with compile_for(devices):
        keyed: dict[str, list[dict]] = {}
        inputs = {}
        for cfg in configs:
            inp = data_input(cfg)
            spec = inp.spec
            key = static_key(cfg, spec, total_steps(cfg, spec.num_train), len(devices))
            keyed.setdefault(key, []).append(cfg)
            inputs[key] = inp
        programs = [
            _plan_program(c, program_for(cfgs[0], inputs[key]), cfgs, limit, max_group, strategies)
            for key, cfgs in keyed.items()
        ]
    totals = [p["sweep_bound_s"] for p in programs]
    return {
        "spec": str(path),
        "size": size,
        "target": {
            "name": c.name,
            "kind": c.kind,
            "devices": c.devices,
            "memory_bytes": c.memory,
            "group_limit_bytes": limit,
            "peak_flops_bf16": c.peak_bf16,
            "peak_flops_f32": c.peak_f32,
            "bandwidth_bytes_per_s": c.bandwidth,
            "source": c.source,
        },
        "runs": len(configs),
        "programs": programs,
        "sweep_bound_s": None if None in totals else sum(totals),
        "compile_s": time.perf_counter() - t_start,
    }


def _plan_program(c: Chip, program: Any, cfgs: list[dict], limit: int, max_group: int, strategies: bool) -> dict:
    """One program's part of the report: its groups compiled, the chosen size, the bound."""
    n, m, t = len(cfgs), program.cfg["model"], program.cfg["train"]
    peak = c.peak_bf16 if t["dtype"] == "bfloat16" else c.peak_f32
    compile_group = GroupCompiler(program)
    top = 1 if program.data.streaming else min(n, max_group)  # streamed runs train one at a time
    sizes = sorted({2**k for k in range(int(math.log2(top)) + 1)} | {top})
    rows = []
    for r in sizes:
        g = compile_group(r)
        rows.append(r)
        if g.bytes > limit:
            break
    chosen = largest_group(lambda r: compile_group(r).bytes, n if top > 1 else 1, limit, top)
    describe = f"{m['name']} depth {m.get('depth')} width {m.get('width')}, batch {t['batch_size']}, {t['dtype']}"
    if chosen == 0:
        need = compile_group(1).bytes
        raise UserError(
            f"a run of {describe} needs {need / 1e9:.2f} GB per device on {c.name}, more than the "
            f"{limit / 1e9:.2f} GB a group may take ({HEADROOM:.0%} of {c.usable:.0%} of {c.memory / 1e9:.1f} GB); "
            "lower train.batch_size or use a target with more devices or memory"
        )
    groups = []
    for r in sorted(set(rows) | {chosen}):
        g = compile_group(r)
        here = _lowered_here(cfgs[0], program, r) if c.family == "gpu" else None
        flops, nbytes = _cost(g.compiled, here)
        mem = g.compiled.memory_analysis()
        groups.append(
            {
                "runs": r,
                "bytes_per_device": g.bytes,
                "arguments_bytes": int(mem.argument_size_in_bytes),
                "temporaries_bytes": int(mem.temp_size_in_bytes),
                "fits": g.bytes <= limit,
                "flops_per_step": flops,
                "bytes_per_step": nbytes,
                "bound_s_per_step": bound_seconds(flops, nbytes, peak, c.bandwidth),
                "compile_s": g.seconds,
            }
        )
    at = next(g for g in groups if g["runs"] == chosen)
    steps = program.total_steps
    bound = at["bound_s_per_step"]
    out = {
        "model": describe,
        "runs": n,
        "total_steps": steps,
        "steps_per_dispatch": program.chunk,
        "streaming": bool(program.data.streaming),
        "groups": groups,
        "group_size": chosen,
        "group_size_limited_by": "memory" if chosen < top else ("runs" if top == n else "--max-group"),
        # Balanced groups of at most `chosen` runs, each step at the bound of the chosen group per run.
        "sweep_bound_s": None if bound is None else bound / chosen * n * steps,
    }
    if strategies:
        out["kernels"] = _strategy_kernels(program, cfgs[0], chosen, compile_group)
    return out


def _lowered_here(cfg: dict, program: Any, n_runs: int) -> Any:
    """The same program's chunk lowered for this host's first CPU device (for its cost analysis)."""
    from normjax.training.program import Program, static_key

    with compile_for(jax.devices("cpu")[:1]), _conv_impl("xla"):
        return Program(static_key(cfg, program.data, program.total_steps, 1)).lower_chunk(n_runs)


def _strategy_kernels(program: Any, cfg: dict, n_runs: int, compiled: GroupCompiler) -> dict[str, float]:
    """Kernel launches per training step of a group of `n_runs`, trained each way of `STRATEGIES`
    (a chunk's launches over its steps); `compiled` holds the program's groups already compiled."""
    from normjax.models.layers import use_custom_conv
    from normjax.training.program import Program, static_key

    out = {}
    for name, (impl, how) in STRATEGIES.items():
        one = how == "one"  # the runs one after another: each its own chunk
        size = 1 if one else n_runs
        if how != "map" and use_custom_conv() == (impl == "custom"):  # the program's own conv: compiled
            text = compiled(size).compiled.as_text()
        else:
            with _conv_impl(impl):
                p = Program(static_key(cfg, program.data, program.total_steps, program.mesh.devices.size))
                text = p.lower_chunk(size, "vmap" if one else how).compile().as_text()
        out[name] = (n_runs if one else 1) * kernel_launches(text) / program.chunk
    return out


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _gb(x: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x / 1e3:.3g} kB"


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x / 1e-9:.3g} ns"


def format_plan(report: dict) -> str:
    """The report of `plan` as a few tables, one per program, and the sweep's total.

    Example:
      >>> print(format_plan({"spec": "s.py", "size": "smoke", "runs": 2, "compile_s": 3.0, "sweep_bound_s": 0.5,
      ...     "target": {"name": "tpu-v5e-8", "kind": "TPU v5e", "devices": 8, "memory_bytes": 16e9,
      ...                "group_limit_bytes": 14.4e9, "peak_flops_bf16": 197e12, "peak_flops_f32": 197e12,
      ...                "bandwidth_bytes_per_s": 819e9, "source": "docs"},
      ...     "programs": [{"model": "mlp", "runs": 2, "total_steps": 10, "steps_per_dispatch": 5,
      ...                   "streaming": False, "group_size": 2, "group_size_limited_by": "runs",
      ...                   "sweep_bound_s": 0.5, "groups": [{"runs": 1, "bytes_per_device": 2e6,
      ...                   "fits": True, "flops_per_step": 1e9, "bytes_per_step": 1e6, "bound_s_per_step": 0.01,
      ...                   "compile_s": 1.0}]}]}))  # doctest: +NORMALIZE_WHITESPACE
      target tpu-v5e-8: 8 x TPU v5e, 16 GB per device (a group may take 14.4 GB), peak 197 TFLOP/s (bf16), 197 TFLOP/s (float32), 819 GB/s (docs)
      s.py --size smoke: 2 runs, 1 program, compiled in 3 s
      program 1: mlp; 2 runs x 10 steps (5 per dispatch)
        runs  memory/device  fits  GFLOP/step  GB/step  bound/step  compile
           1           2 MB   yes           1    0.001       10 ms     1 s
        group size: 2 (all its runs)
        training at the bound: 500 ms
      the sweep's training at the roofline bound: 500 ms (steps only: evaluation, input and dispatch not counted)
    """
    t = report["target"]
    lines = [
        f"target {t['name']}: {t['devices']} x {t['kind']}, {_gb(t['memory_bytes'])} per device (a group may take "
        f"{_gb(t['group_limit_bytes'])}), peak {t['peak_flops_bf16'] / 1e12:.3g} TFLOP/s (bf16), "
        f"{t['peak_flops_f32'] / 1e12:.3g} TFLOP/s (float32), {_gb(t['bandwidth_bytes_per_s'])}/s ({t['source']})",
        f"{report['spec']} --size {report['size']}: {_count(report['runs'], 'run')}, "
        f"{_count(len(report['programs']), 'program')}, compiled in {_seconds(report['compile_s'])}",
    ]
    why = {"runs": "all its runs", "memory": "the most that fit", "--max-group": "--max-group"}
    for i, p in enumerate(report["programs"], 1):
        lines.append(
            f"program {i}: {p['model']}; {_count(p['runs'], 'run')} x {p['total_steps']} steps ({p['steps_per_dispatch']} per "
            f"dispatch{', streamed' if p['streaming'] else ''})"
        )
        lines.append("  runs  memory/device  fits  GFLOP/step  GB/step  bound/step  compile")
        for g in p["groups"]:
            flops = "-" if g["flops_per_step"] is None else f"{g['flops_per_step'] / 1e9:.3g}"
            nbytes = "-" if g["bytes_per_step"] is None else f"{g['bytes_per_step'] / 1e9:.3g}"
            lines.append(
                f"  {g['runs']:>4}  {_gb(g['bytes_per_device']):>13}  {'yes' if g['fits'] else 'no':>4}  {flops:>10}"
                f"  {nbytes:>7}  {_seconds(g['bound_s_per_step']):>10}  {_seconds(g['compile_s']):>6}"
            )
        lines.append(f"  group size: {p['group_size']} ({why[p['group_size_limited_by']]})")
        lines.append(f"  training at the bound: {_seconds(p['sweep_bound_s'])}")
        if "kernels" in p:
            lines.append(f"  kernel launches per step, group of {p['group_size']}:")
            lines += [f"    {k:<28} {v:>8.0f}" for k, v in p["kernels"].items()]
    lines.append(
        f"the sweep's training at the roofline bound: {_seconds(report['sweep_bound_s'])} "
        "(steps only: evaluation, input and dispatch not counted)"
    )
    return "\n".join(lines)
