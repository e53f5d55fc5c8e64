"""How many runs go in one vectorized group: the largest whose compiled program fits the memory.

A group's memory is read from XLA's memory analysis of its compiled chunk (what the sweep runs),
not extrapolated from one run: vmapped programs are not linear in the runs (XLA reuses
temporaries, and a grouped conv's workspace grows otherwise). `normjax sweep` sizes its groups so
on an accelerator, and `normjax plan` so for a chip that is not there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

# The share of the device's memory limit a group may take: the evaluation sets, held on the
# device beside the training program, and the allocator's fragmentation take the rest.
HEADROOM = 0.9


def device_bytes(compiled: Any) -> int:
    """Per-device bytes a compiled program holds while it runs: its arguments, its outputs less
    those that reuse a donated argument's buffer, and its temporaries (XLA's memory analysis).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> c = jax.jit(lambda x: x * 2).lower(jnp.zeros(256, jnp.float32)).compile()
      >>> device_bytes(c) >= 2 * 256 * 4
      True
    """
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


@dataclasses.dataclass
class GroupCompile:
    """One compiled group: its size, per-device memory, compile time and the compiled program."""

    n_runs: int
    bytes: int
    seconds: float
    compiled: Any


class GroupCompiler:
    """Compiles a program's chunk for groups of runs, each size once.

    Args:
      program: a `normjax.training.program.Program` (built for the devices compiled for).
      strategy: `vmap` (what sweeps run) or `map` (`Program.lower_chunk`).
    """

    def __init__(self, program: Any, strategy: str = "vmap"):
        self.program, self.strategy = program, strategy
        self.done: dict[int, GroupCompile] = {}

    def __call__(self, n_runs: int) -> GroupCompile:
        if n_runs not in self.done:
            t0 = time.perf_counter()
            compiled = self.program.lower_chunk(n_runs, self.strategy).compile()
            self.done[n_runs] = GroupCompile(n_runs, device_bytes(compiled), time.perf_counter() - t0, compiled)
        return self.done[n_runs]


def largest_group(memory: Callable[[int], int], n_runs: int, limit: int, cap: int = 64, tries: int = 6) -> int:
    """The most runs (at most `min(n_runs, cap)`) whose group needs at most `limit` bytes; 0 when
    one run alone needs more.

    Compiles the groups of 1 and 2 runs, extrapolates the largest size from them and compiles
    that; where it does not fit, narrows the sizes between the largest group known to fit and
    the smallest known not to, each time at the size the two interpolate to (at most `tries`
    compiles after the first two; the largest size found to fit is the answer).

    Args:
      memory: the per-device bytes of a compiled group of a given size (e.g. a `GroupCompiler`'s).
      n_runs: the runs that share the program.
      limit: the bytes a group may take.
      cap: the largest group considered.
      tries: compiles allowed after the groups of 1 and 2.

    Returns:
      The group size.

    Example:
      >>> largest_group(lambda r: 100 + 30 * r, n_runs=12, limit=400)
      10
      >>> largest_group(lambda r: 100 + 30 * r, n_runs=12, limit=100)
      0
    """
    top = min(n_runs, cap)
    m1 = memory(1)
    if m1 > limit:
        return 0
    if top == 1:
        return 1
    m2 = memory(2)
    if m2 > limit:
        return 1
    lo, lo_m = 2, m2
    hi, hi_m = top + 1, None  # the smallest size known not to fit (none yet)
    r = min(top, 2 + (limit - m2) // max(m2 - m1, 1))
    for _ in range(tries):
        if r <= lo or r >= hi:
            break
        m = memory(r)
        if m <= limit:
            lo, lo_m = r, m
        else:
            hi, hi_m = r, m
        if hi_m is None:  # everything up to `top` fits on the line through 1 and 2
            r = top if lo < top else lo
        else:
            r = min(hi - 1, max(lo + 1, lo + (limit - lo_m) * (hi - lo) // max(hi_m - lo_m, 1)))
    return lo
