"""`normjax sweep`: expand a sweep, shard it, and train its runs, vectorized where possible.

Runs that share a compiled program (same shapes and structure; they differ only in traced
values such as seed, LR, momentum, weight decay) are trained together in groups by
`train_group` (vmap over a run axis). Complete runs are skipped, interrupted ones resume from
their checkpoints, a run that raises is recorded as `failed` and the sweep goes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from normjax.errors import UserError
from normjax.sweep.lock import Heartbeat, RunLock
from normjax.sweep.spec import RunSpec, expand
from normjax.training.checkpoint import Checkpointer
from normjax.training.loop import dataset_for, program_for, train_group
from normjax.training.rundir import RunDir, read_json, write_json

FINISHED = ("done", "diverged")


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(p) for p in text.split("/"))
        if 0 <= i < n:
            return i, n
    except ValueError:
        pass
    raise UserError(f"--shard {text!r} is not i/n with 0 <= i < n (e.g. 0/4)")


def auto_group_size(program, n_runs: int, cap: int = 64) -> int:
    """How many runs to vectorize together.

    On CPU, conv nets go one run at a time: with one conv per run under vmap (`vmap_per_slice`),
    8 vmapped ResNet-20 runs are exactly as fast as 8 in turn (1.00x, benchmarks/RESULTS.md: the
    convs already keep the cores busy, and 8 runs' activations spill the cache) but compile
    longer; small MLPs gain a little (1.05x) and are grouped by 8. On GPU/TPU: as many as fit in
    60% of device memory, by the compiled single-run step's memory analysis.
    """
    if jax.default_backend() == "cpu":
        return 1 if program.cfg["model"]["name"] != "mlp" else min(n_runs, 8)
    try:
        state = program.abstract_state()
        per_run = 3 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))  # state, grads, updates
        data = program.data
        compiled = program.train_chunk.lower(
            state, jax.ShapeDtypeStruct((data.num_train,) + tuple(data.image_shape), np.uint8),
            jax.ShapeDtypeStruct((data.num_train,), np.int32), np.int32(1), program.log_mask()).compile()
        per_run += compiled.memory_analysis().temp_size_in_bytes
        limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0)
        return max(1, min(n_runs, cap, int(0.6 * limit) // per_run)) if limit else min(n_runs, 8)
    except Exception:  # noqa: BLE001 - memory analysis is backend-specific; fall back to a modest group
        return min(n_runs, 8)


def _groups(runs: list[RunSpec], workdir: Path, group_size: int
            ) -> tuple[list[list[RunSpec]], dict[str, Exception]]:
    """Runs keyed by (compiled program, resume step), cut into groups of at most group_size;
    and the runs that cannot even be set up (bad data, say), with their errors."""
    keyed: dict[tuple, list[RunSpec]] = {}
    programs, failed = {}, {}
    for r in runs:
        try:
            program = program_for(r.config, dataset_for(r.config))
        except Exception as e:  # noqa: BLE001 - recorded as a failed run
            failed[r.name] = e
            continue
        programs[id(program)] = program
        ckpt_dir = workdir / r.name / "checkpoints"
        step = Checkpointer(ckpt_dir, read_only=True).latest_step() if ckpt_dir.is_dir() else None
        keyed.setdefault((id(program), step or 0), []).append(r)
    out = []
    for (pid, _), members in keyed.items():
        size = group_size or auto_group_size(programs[pid], len(members))
        # Balanced groups (12 runs by 8 -> 6 + 6): equal group shapes compile once.
        k = -(-len(members) // size)
        bounds = [round(j * len(members) / k) for j in range(k + 1)]
        out += [members[a:b] for a, b in zip(bounds, bounds[1:])]
    return out, failed


def _fail(run_dir: RunDir, e: BaseException) -> dict:
    first = (str(e).strip().splitlines() or [""])[0][:500]
    summary = {"status": "failed", "error": f"{type(e).__name__}: {first}"}
    run_dir.path.mkdir(parents=True, exist_ok=True)
    (run_dir.path / "error.txt").write_text("".join(traceback.format_exception(e)))
    run_dir.write_summary(summary)
    return summary


def run_sweep(spec: str | Path, *, size: str = "smoke", workdir: str | Path | None = None,
              shard: tuple[int, int] = (0, 1), overrides: list[str] | tuple[str, ...] = (),
              group_size: int = 0, progress: bool | None = None) -> dict[str, dict]:
    """Run this shard's share of a sweep; returns {run name: summary}.

    Example:
      >>> results = run_sweep("experiments/sweep_lr.py", size="smoke", workdir="runs/sweep-lr")
    """
    runs, varied = expand(spec, size, overrides)
    workdir = Path(workdir or Path("runs") / Path(spec).stem).expanduser().absolute()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"workdir {str(workdir)!r} is not writable ({e.strerror}); give a writable --workdir") from None
    manifest = {"spec": str(spec), "size": size, "overrides": list(overrides), "varied": varied,
                "runs": [{"name": r.name, "overrides": r.overrides} for r in runs]}
    if (workdir / "sweep.json").exists():
        old = read_json(workdir / "sweep.json")
        if {r["name"] for r in old["runs"]} - {r.name for r in runs}:
            # Another sweep, or this one with other values: keep both run sets listed.
            manifest["runs"] = old["runs"] + [m for m in manifest["runs"] if m["name"] not in {r["name"] for r in old["runs"]}]
            manifest["varied"] = list(dict.fromkeys(old["varied"] + varied))
    write_json(workdir / "sweep.json", manifest)

    i, n = shard
    mine = [r for k, r in enumerate(runs) if k % n == i]
    bases = list({r.base.name: r.base for r in runs if r.base is not None}.values())
    if bases:  # base runs first (this shard's share); then the runs that start from them
        base_dir = workdir / "pretrain"
        # A base another shard trains and has not finished yet: its dependents fail with the
        # warm start's one-line error and train when the sweep is run again.
        _train_runs([b for k, b in enumerate(bases) if k % n == i], base_dir, group_size, progress,
                    f"{Path(spec).stem} (pretrain)")
        mine = [_from_base(r, base_dir) for r in mine]
    return _train_runs(mine, workdir, group_size, progress, Path(spec).stem, total=len(runs), shard=shard)


def _from_base(r: RunSpec, base_dir: Path) -> RunSpec:
    """`r` with `train.init_from` pointing at its base run's directory."""
    if r.base is None:
        return r
    cfg = {**r.config, "train": {**r.config["train"], "init_from": str(base_dir / r.base.name)}}
    return r._replace(config=cfg)


def _train_runs(mine: list[RunSpec], workdir: Path, group_size: int, progress: bool | None, label: str,
                total: int | None = None, shard: tuple[int, int] = (0, 1)) -> dict[str, dict]:
    """Train the unfinished runs of `mine` in groups; {name: summary} of all of them."""
    i, n = shard
    results: dict[str, dict] = {}
    todo = []
    for r in mine:
        s = RunDir(workdir / r.name).read_summary() if (workdir / r.name / "summary.json").exists() else None
        if s and s.get("status") in FINISHED:
            results[r.name] = s
        else:
            todo.append(r)
    print(f"sweep {label}: {total or len(mine)} runs, shard {i}/{n}: {len(mine)}, "
          f"{len(mine) - len(todo)} already finished", file=sys.stderr, flush=True)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="run", disable=not (
        sys.stderr.isatty() if progress is None else progress))
    done_count = len(mine) - len(todo)
    groups, failed = _groups(todo, workdir, group_size)
    for name, e in failed.items():
        results[name] = _fail(RunDir(workdir / name), e)
        done_count += 1
        print(f"[{done_count}/{len(mine)}] {name}: failed ({results[name]['error']})", file=sys.stderr, flush=True)
        bar.update(1)
    for group in groups:
        locks = {r.name: RunLock(workdir / r.name) for r in group}
        mine_now = [r for r in group if locks[r.name].acquire()]
        for r in group:
            if r not in mine_now:
                print(f"  {r.name}: locked by another process, skipped", file=sys.stderr, flush=True)
        if not mine_now:
            continue
        t0 = time.time()
        try:
            with Heartbeat([locks[r.name] for r in mine_now]):
                summaries = train_group([r.config for r in mine_now], [workdir / r.name for r in mine_now],
                                        progress=False)
        except Exception as e:  # noqa: BLE001 - a failing run must not stop the sweep
            summaries = [_fail(RunDir(workdir / r.name), e) for r in mine_now]
        finally:
            for r in mine_now:
                locks[r.name].release()
        for r, s in zip(mine_now, summaries):
            results[r.name] = s
            done_count += 1
            acc = f" test_acc {s['test_accuracy']:.4f}" if "test_accuracy" in s else ""
            why = f" ({s.get('error') or s.get('message')})" if s["status"] not in ("done",) else ""
            print(f"[{done_count}/{len(mine)}] {r.name}: {s['status']}{acc}{why} "
                  f"[group of {len(mine_now)}, {time.time() - t0:.1f}s]", file=sys.stderr, flush=True)
            bar.update(1)
    bar.close()
    return results
