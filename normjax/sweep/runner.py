"""`normjax sweep`: expand a sweep, shard it, and train its runs, vectorized where possible.

Runs that share a compiled program (same shapes and structure; they differ only in traced
values such as seed, LR, momentum, weight decay) are trained together in groups by
`train_group` (vmap over a run axis). Complete runs are skipped, interrupted ones resume from
their checkpoints, a run that raises is recorded as `failed` and the sweep goes on. Ctrl-C or
SIGTERM stops the sweep: the group training then saves the step it reached (its runs resume
from there, together), the runs not started yet start when the sweep is run again. Every
dataset the sweep needs is loaded before any run starts, so a missing one is one line and
nothing is created.

Multi-host (`--distributed`): every process runs the same sweep; process 0 plans it (which
runs are finished, the groups, the locks) and shares the plan, so all processes train the same
group at the same time; only process 0 writes files.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import jax

from normjax.errors import Interrupted, UserError, missing_extra

try:
    from tqdm.auto import tqdm
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.parallel import decide, is_writer, maybe_initialize_distributed, platform
from normjax.sweep.sizing import HEADROOM, GroupCompiler, largest_group
from normjax.sweep.spec import RunSpec, check_same_size, expand, merge_manifest, select
from normjax.training.checkpoint import Checkpointer
from normjax.training.inputs import input_for
from normjax.training.lock import Heartbeat, RunLock
from normjax.training.loop import FINISHED, config_diff, program_for, train_group
from normjax.training.rundir import RunDir, SweepDir


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(p) for p in text.split("/"))
        if 0 <= i < n:
            return i, n
    except ValueError:
        pass
    raise UserError(f"--shard {text!r} is not i/n with 0 <= i < n (e.g. 0/4)")


def auto_group_size(program, n_runs: int, cap: int = 64, limit: int | None = None) -> int:
    """How many runs to vectorize together.

    On CPU, conv nets go one run at a time: with one conv per run under vmap (`vmap_per_slice`),
    a vmapped group of ResNet-20 runs is no faster than its runs in turn (benchmarks/RESULTS.md,
    "Vectorized runs": the convs already keep the cores busy, and the runs' activations spill the
    cache) but compiles longer; small MLPs gain a little and are grouped by 8. On GPU/TPU: the
    largest group whose compiled chunk fits in `HEADROOM` of the device's memory limit, by XLA's
    memory analysis of the group itself (`normjax.sweep.sizing.largest_group`; `normjax plan`
    shows the same choice ahead of time).

    Args:
      program: the runs' compiled program.
      n_runs: how many runs share it.
      cap: the largest group considered.
      limit: the device's memory limit in bytes (default: the first device's `bytes_limit`);
        given, the group is sized by memory on any backend.
    """
    if limit is None and platform() == "cpu":
        return 1 if program.cfg["model"]["name"] != "mlp" else min(n_runs, 8)
    try:
        if limit is None:
            limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0)
        if not limit:
            return min(n_runs, 8)
        compile_group = GroupCompiler(program)
        return max(1, largest_group(lambda r: compile_group(r).bytes, n_runs, int(HEADROOM * limit), cap))
    except Exception:  # noqa: BLE001 - memory analysis is backend-specific; fall back to a modest group
        return min(n_runs, 8)


def _groups(runs: list[RunSpec], workdir, group_size: int) -> tuple[list[list[str]], dict[str, str], list[str]]:
    """Run names keyed by (compiled program, resume step), cut into groups of at most group_size;
    the runs that cannot even be set up, with their errors; and notes for the user (groups
    smaller than asked for). Runs on process 0."""
    keyed: dict[tuple, list[RunSpec]] = {}
    programs, failed = {}, {}
    for r in runs:
        try:
            program = program_for(r.config, input_for(r.config))
        except Exception as e:  # noqa: BLE001 - recorded as a failed run
            failed[r.name] = _error_text(e)
            continue
        programs[id(program)] = program
        ckpt_dir = RunDir(workdir / r.name).checkpoints
        step = Checkpointer(ckpt_dir, read_only=True).latest_step() if ckpt_dir.is_dir() else None
        keyed.setdefault((id(program), step or 0), []).append(r)
    out, notes = [], []
    for (pid, _), members in keyed.items():
        # Streamed runs train one at a time: each reads its own batches.
        size = 1 if programs[pid].data.streaming else group_size or auto_group_size(programs[pid], len(members))
        # Balanced groups (12 runs by 8 -> 6 + 6): equal group shapes compile once.
        k = -(-len(members) // size)
        bounds = [round(j * len(members) / k) for j in range(k + 1)]
        parts = [members[a:b] for a, b in zip(bounds, bounds[1:])]
        if group_size and len(members) > 1 and max(len(g) for g in parts) < min(group_size, len(members)):
            notes.append(
                f"--group-size {group_size}: {len(members)} runs of one program go in {k} balanced "
                f"groups of {', '.join(str(len(g)) for g in parts)} (equal shapes compile once)"
            )
        out += [[r.name for r in g] for g in parts]
    return out, failed, notes


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:500]}"


def _fail(run_dir: RunDir, e: BaseException | str) -> dict:
    """Record a run as failed (process 0 writes its summary and its traceback, `RunDir.write_error`)."""
    summary = {"status": "failed", "error": e if isinstance(e, str) else _error_text(e)}
    if is_writer():
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.write_error(e if isinstance(e, str) else "".join(traceback.format_exception(e)))
        run_dir.write_summary(summary)
    return summary


def check_datasets(runs: list[RunSpec]) -> None:
    """Load every distinct dataset the runs name (cached for training), so a missing or
    unprepared one stops the sweep with its one-line error before any run starts."""
    seen = set()
    for r in runs:
        key = json.dumps(r.config["data"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            input_for(r.config)


def run_sweep(
    spec: str | Path,
    *,
    size: str = "smoke",
    workdir: str | os.PathLike | None = None,
    shard: tuple[int, int] = (0, 1),
    overrides: list[str] | tuple[str, ...] = (),
    group_size: int = 0,
    progress: bool | None = None,
    only: list[str] | tuple[str, ...] = (),
) -> dict[str, dict]:
    """Run this shard's share of a sweep (of its runs matching `only`'s `KEY=VALUE`s: a slice, the
    rest listed as missing); returns {run name: summary}.

    Example:
      >>> results = run_sweep("experiments/sweep_lr.py", size="smoke", workdir="runs/sweep-lr")  # doctest: +SKIP
    """
    maybe_initialize_distributed()
    runs, varied = expand(spec, size, overrides)
    chosen = select(runs, varied, only)
    i, n = shard
    mine = [r for k, r in enumerate(chosen) if k % n == i]
    bases = list({r.base.name: r.base for r in chosen if r.base is not None}.values())
    check_datasets(mine + bases)
    sweep = SweepDir(workdir or Path("runs") / Path(spec).stem)
    workdir = sweep.path
    new = {
        "spec": str(spec),
        "size": size,
        "overrides": list(overrides),
        "varied": varied,
        "runs": [{"name": r.name, "overrides": r.overrides} for r in runs],
    }

    def write_manifest() -> None:
        check_same_size(sweep.read_manifest(), size, str(workdir))
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"workdir {str(workdir)!r} is not writable ({e.strerror}); give a writable --workdir"
            ) from None
        sweep.write_manifest(merge_manifest(sweep.read_manifest(), new))

    decide(write_manifest)
    # Runs sharing another's config are symlinks to it; a bucket has no symlinks: trained again.
    local = "://" not in str(workdir)
    aliases = [r for r in mine if r.same_as is not None and local and not _real_dir(workdir / r.name)]
    mine = [r for r in mine if r not in aliases]
    decide(lambda: _link_aliases(aliases, workdir))
    if bases:  # base runs first (this shard's share); then the runs that start from them
        base_dir = sweep.pretrain
        # A base another shard trains and has not finished yet: its dependents fail with the
        # warm start's one-line error and train when the sweep is run again.
        _train_runs(
            [b for k, b in enumerate(bases) if k % n == i],
            base_dir,
            group_size,
            progress,
            f"{Path(spec).stem} (pretrain)",
        )
        mine = [_from_base(r, base_dir) for r in mine]
    results = _train_runs(mine, workdir, group_size, progress, Path(spec).stem, total=len(chosen), shard=shard)
    for r in aliases:  # their summaries are those of the runs they share
        s = results.get(r.same_as) or sweep.run(r.name).read_summary()
        if s is not None:
            results.setdefault(r.name, s)
    return results


def _real_dir(path) -> bool:
    """A directory that is no symlink: a run trained before runs of one config were shared (kept,
    and trained as its own run)."""
    return os.path.isdir(os.fspath(path)) and not os.path.islink(os.fspath(path))


def _link_aliases(aliases: list[RunSpec], workdir) -> None:
    """Each run with another run's config (`same_as`) as a relative symlink to that run's
    directory, on a local workdir (process 0)."""
    if not is_writer():
        return
    for r in aliases:
        link = os.fspath(workdir / r.name)
        if os.path.islink(link):
            if os.readlink(link) == r.same_as:
                continue
            os.unlink(link)
        os.symlink(r.same_as, link, target_is_directory=True)


def _from_base(r: RunSpec, base_dir) -> RunSpec:
    """`r` with `train.init_from` pointing at its base run's directory."""
    if r.base is None:
        return r
    cfg = {**r.config, "train": {**r.config["train"], "init_from": str(base_dir / r.base.name)}}
    return r._replace(config=cfg)


def _plan(mine: list[RunSpec], workdir, group_size: int) -> dict:
    """What this shard does (process 0 decides, every process follows): the finished runs'
    summaries, the groups to train, the runs that failed to set up, and notes. A finished or
    started run whose directory holds another config stops the sweep (one line, naming the key)."""
    finished, todo, resuming = {}, [], 0
    for r in mine:
        d = RunDir(workdir / r.name)
        if d.is_run():
            diff = config_diff(d.read_config(), r.config)
            if diff:
                raise UserError(
                    f"run {r.name!r} in {str(workdir)!r} was trained with another config ({diff}); give a new --workdir"
                )
        s = d.read_summary()
        if s and s.get("status") in FINISHED:
            finished[r.name] = s
        else:
            todo.append(r)
            resuming += (d.checkpoints / "").exists() and bool(Checkpointer(d.checkpoints, read_only=True).steps())
    groups, failed, notes = _groups(todo, workdir, group_size)
    return {"finished": finished, "groups": groups, "failed": failed, "notes": notes, "resuming": resuming}


def _train_runs(
    mine: list[RunSpec],
    workdir,
    group_size: int,
    progress: bool | None,
    label: str,
    total: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, dict]:
    """Train the unfinished runs of `mine` in groups; {name: summary} of all of them."""
    i, n = shard
    by_name = {r.name: r for r in mine}
    plan = decide(lambda: _plan(mine, workdir, group_size))
    results: dict[str, dict] = dict(plan["finished"])
    say = functools.partial(print, file=sys.stderr, flush=True) if is_writer() else (lambda *a, **k: None)
    say(
        f"sweep {label}: {total or len(mine)} runs, shard {i}/{n}: {len(mine)}, "
        f"{len(plan['finished'])} already finished, {plan['resuming']} resuming from checkpoints"
    )
    for note in plan["notes"]:
        say(note)
    bar = tqdm(
        total=len(mine),
        initial=len(results),
        unit="run",
        disable=not is_writer() or not (sys.stderr.isatty() if progress is None else progress),
    )
    done_count = len(results)
    for name, err in plan["failed"].items():
        results[name] = _fail(RunDir(workdir / name), err)
        done_count += 1
        say(f"[{done_count}/{len(mine)}] {name}: failed ({err})")
        bar.update(1)
    for names in plan["groups"]:
        group = [by_name[x] for x in names]
        locks = {r.name: RunLock(workdir / r.name) for r in group} if is_writer() else {}
        taken = decide(lambda: [r.name for r in group if locks[r.name].acquire()])
        for r in group:
            if r.name not in taken:
                say(f"  {r.name}: locked by another process ({locks[r.name].owner_text()}), skipped")
        now = [r for r in group if r.name in taken]
        if not now:
            continue
        t0 = time.time()
        try:
            with Heartbeat([locks[r.name] for r in now] if is_writer() else []):
                summaries = train_group([r.config for r in now], [workdir / r.name for r in now], progress=False)
        except Exception as e:  # noqa: BLE001 - a failing run must not stop the sweep
            summaries = [_fail(RunDir(workdir / r.name), e) for r in now]
        except KeyboardInterrupt as e:  # SIGINT or SIGTERM: the group saved the step it reached (train_group)
            e = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
            raise Interrupted(e.signum, f"{e} (sweep {label}: {done_count} of {len(mine)} runs finished)") from None
        finally:
            for r in now:
                if is_writer():
                    locks[r.name].release()
        if len(summaries) != len(now):
            raise RuntimeError(f"{len(summaries)} summaries for {len(now)} runs")
        for r, s in zip(now, summaries):
            results[r.name] = s
            done_count += 1
            acc = f" test_acc {s['test_accuracy']:.4f}" if "test_accuracy" in s else ""
            why = f" ({s.get('error') or s.get('message')})" if s["status"] not in ("done",) else ""
            say(
                f"[{done_count}/{len(mine)}] {r.name}: {s['status']}{acc}{why} "
                f"[group of {len(now)}, {time.time() - t0:.1f}s]"
            )
            bar.update(1)
    bar.close()
    return results
