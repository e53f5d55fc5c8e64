"""The one training loop every experiment uses. It knows nothing about either study: they plug
in optimizers (`register_optimizer`) and in-step metrics (`register_metric`).

Reads top to bottom: config → devices → data (held on device or streamed,
`normjax.training.inputs`) → compiled program → run dir → restore or init → chunks of fused
steps (metrics of chunk k are fetched while chunk k+1 runs) → checkpoints → final evaluation →
summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax import metrics as metrics_lib
from normjax.analysis import apl as apl_lib
from normjax.analysis import graph as graph_lib
from normjax.config import DEFAULTS, canonical, validate
from normjax.data import Dataset
from normjax.errors import Interrupted, UserError
from normjax.models import check_model_input
from normjax.models.structure import is_projection
from normjax.parallel import (
    check_batch,
    check_same,
    data_mesh,
    decide,
    is_writer,
    maybe_initialize_distributed,
    replicated,
)
from normjax.training.checkpoint import Checkpointer, read_latest_items
from normjax.training.inputs import MemoryInput, StreamInput, chunk_sizes, input_for, state_array, state_template
from normjax.training.lock import Heartbeat, RunLock
from normjax.training.program import Program, TrainState, get_program, static_key
from normjax.training.progress import Progress
from normjax.training.rundir import RunDir

EXIT_DIVERGED = 3
FINISHED = ("done", "diverged")


Input = MemoryInput | StreamInput


def dataset_for(cfg: dict) -> Dataset:
    """The in-memory dataset a config names (cached); a one-line error for a streamed one."""
    inp = input_for(cfg)
    if inp.streaming:
        raise UserError(
            f"dataset {inp.name!r} streams (data.pipeline resolves to stream): this command needs it in "
            "memory; set data.pipeline=memory for a dataset that fits"
        )
    return inp.ds


# Steps are counted in int32 on device (the state's step, schedule bounds, per-chunk indices);
# 2^30 leaves room for the chunk and checkpoint arithmetic past the last step.
MAX_STEPS = 2**30


def total_steps(cfg: dict, num_train: int) -> int:
    """The run's length in steps: `train.steps`, else `train.epochs` of the training set."""
    t = cfg["train"]
    steps = t["steps"]
    if not steps:
        epochs = t["epochs"]
        if not math.isfinite(epochs) or epochs * max(1, num_train // t["batch_size"]) > MAX_STEPS:
            raise UserError(
                f"train.epochs={epochs} is {max(1, num_train // t['batch_size'])} steps per epoch of "
                f"{num_train} examples: too many steps; allowed: at most {MAX_STEPS} steps in all"
            )
        steps = max(1, math.ceil(epochs * max(1, num_train // t["batch_size"])))
    if steps > MAX_STEPS:
        raise UserError(f"train.steps={steps} is too many; allowed: at most {MAX_STEPS} (steps count in int32)")
    return steps


def program_for(cfg: dict, inp: Input) -> Program:
    """Validate against the data and devices, then the (cached) compiled program."""
    mesh = data_mesh()
    check_batch(cfg["train"]["batch_size"], mesh)
    spec = inp.spec
    check_model_input(cfg, spec.image_shape, inp.name)
    if cfg["train"]["batch_size"] > spec.num_train:
        raise UserError(
            f"train.batch_size={cfg['train']['batch_size']} exceeds the {spec.num_train} "
            f"training examples of {inp.name!r}"
        )
    return get_program(static_key(cfg, spec, total_steps(cfg, spec.num_train), mesh.devices.size))


def state_items(state: TrainState, elapsed: float, data: Any = None) -> dict:
    """A checkpoint's items: the train state, and the input pipeline's state (`data`, streamed only)."""
    items = {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "meta": {"step": state.step, "key": state.key, "diverged": state.diverged, "elapsed": np.float64(elapsed)},
    }
    return items if data is None else items | {"data": {"state": data}}


def restore_state(ckpt: Checkpointer, program: Program) -> tuple[TrainState, float, np.ndarray | None] | None:
    """The newest checkpoint of a run as `(state, elapsed wall time, input-pipeline state or
    None)`, or None to start afresh."""
    abstract = program.abstract_state()
    templates = state_items(abstract, 0.0, state_template() if program.data.streaming else None)
    templates["meta"]["elapsed"] = jax.ShapeDtypeStruct((), np.float64)
    resumed = ckpt.resume(templates)  # corrupt steps are moved aside, other errors raised
    if resumed.message and is_writer():
        print(resumed.message, file=sys.stderr, flush=True)
    if resumed.step is None:
        return None
    it = resumed.items
    meta = it["meta"]
    state = TrainState(
        step=meta["step"],
        params=it["params"],
        batch_stats=it["batch_stats"],
        opt_state=it["opt_state"],
        key=meta["key"],
        diverged=meta["diverged"],
    )
    data = np.asarray(jax.device_get(it["data"]["state"])) if "data" in it else None
    return state, float(meta["elapsed"]), data


def warm_start_items(program: Program, source: str) -> dict:
    """The params and BN statistics of another run's latest checkpoint, for a warm start (one-line
    errors: the source has no checkpoint that fits this model)."""
    if source == "pretrain":  # normjax.sweep.spec.PRETRAIN, resolved by the sweep runner
        raise UserError(
            "train.init_from='pretrain' names a sweep's base run: it works inside `normjax sweep` "
            "with a 'pretrain' entry; give a run directory here"
        )
    abstract = program.abstract_state()
    templates = {"params": abstract.params, "batch_stats": abstract.batch_stats}
    restored = read_latest_items(RunDir(source).checkpoints, templates)  # read-only: the source may still train
    if restored is None:
        raise UserError(
            f"train.init_from={source!r} holds no checkpoint that fits this model; "
            "give a run directory of the same model that has trained"
        )
    _, it = restored
    return {"params": it["params"], "batch_stats": it["batch_stats"]}


def warm_start(state: TrainState, program: Program, source: str) -> TrainState:
    """Take params and BN statistics from another run's latest checkpoint; keep the new optimizer."""
    return state.replace(**warm_start_items(program, source))


def final_metrics(items: dict, evals: dict) -> dict[str, float]:
    """Loss and accuracy (BN in inference mode) of `{"params", "batch_stats"}` on each split of
    `evals` (`Input.eval_sets`): `train_loss`, `test_accuracy`, ..."""
    out = {}
    for name, run in evals.items():
        res = run(items)
        out |= {f"{name}_loss": res["loss"], f"{name}_accuracy": res["accuracy"]}
    return out


def logs_step(step: int, cfg: dict, total: int) -> bool:
    """The log cadence: every step of the first `log.dense_steps`, then every `log.every`-th, and the last."""
    log = cfg["log"]
    return step < log["dense_steps"] or (step + 1) % log["every"] == 0 or step == total - 1


# Per-slot flags of a fetched chunk that are bookkeeping, not metrics.
_FLAGS = ("valid", "step", "ok", "grad_finite")


@dataclasses.dataclass
class _Run:
    """Host-side bookkeeping of one run inside a (possibly vectorized) group."""

    cfg: dict
    dir: RunDir
    summary: dict | None = None  # set once the run is finished (before this call or during it)
    ckpt: Checkpointer | None = None
    start: int = 0  # the step this call starts from (restored or 0)
    elapsed: float = 0.0  # wall time of the earlier sessions of this run
    saved: int | None = None  # the newest checkpoint's step
    data: np.ndarray | None = None  # the restored input-pipeline state (streamed data)
    diverged_at: int | None = None  # the step whose loss or gradient was non-finite
    reason: str = ""
    warm: dict | None = None  # the warm start's params and BN statistics (`train.init_from`), read first

    @property
    def training(self) -> bool:
        return self.summary is None and self.diverged_at is None


def train(cfg: dict, workdir: str | os.PathLike, *, progress: bool | None = None) -> dict:
    """Train (or resume) the run `cfg` describes in `workdir`; returns its summary.

    A finished run (done or diverged) with the same config is returned as is (its summary gets
    `"already": True`); one with another config is refused. A non-finite loss or gradient norm
    ends the run with status `diverged` (the last good checkpoint is kept). The run directory is
    locked while it trains (`lock`), so a second process cannot train it at the same time: it is
    refused at once, before the data load. SIGINT (Ctrl-C) or SIGTERM stops the run at the end of
    the chunk of steps it is in, saves the state reached, and raises `normjax.errors.Interrupted`
    (a `KeyboardInterrupt`); started again, the run resumes from that step.

    Example:
      >>> summary = train(load_config("experiments/resnet_digits.py"), "runs/demo")  # doctest: +SKIP
      >>> summary["status"], summary["test_accuracy"]  # doctest: +SKIP
    """
    return train_group([cfg], [workdir], progress=progress, announce=True, lock=True)[0]


def train_group(
    cfgs: list[dict],
    workdirs: list[str | os.PathLike],
    *,
    progress: bool | None = None,
    announce: bool = False,
    lock: bool = False,
) -> list[dict]:
    """Train runs that share one compiled program together, vmapped over a run axis.

    The runs may differ only in traced values (seed, LR, momentum, weight decay, transform
    strengths); each keeps its own run directory, metrics and checkpoints, and its result equals
    training it alone. A run that diverges stops updating (its state is frozen in the step) while
    the others go on. Returns one summary per run, in order.

    Multi-host: every process calls this with the same arguments. Process 0 makes the host-side
    decisions (which runs are finished, from which step to resume) and shares them; only it writes
    run files; every process saves and restores checkpoints (Orbax coordinates them) and checks
    that all restored the same step. `announce` prints one line per run on resuming; `lock`
    refuses at once a run another process trains and takes each run's lock once the runs are
    validated (the sweep runner takes its locks itself).

    On one process, SIGINT and SIGTERM stop the group at the end of the chunk it is in: every run
    still training saves the step it reached, and `normjax.errors.Interrupted` is raised (a
    second signal interrupts at once, losing the steps since each run's last checkpoint). With
    several processes a signal interrupts at once (each process would stop at its own chunk).
    """
    maybe_initialize_distributed()
    if len(cfgs) != len(workdirs):
        raise ValueError(f"{len(cfgs)} configs for {len(workdirs)} workdirs")
    runs = [_Run(c, RunDir(w)) for c, w in zip(cfgs, workdirs)]
    if lock:  # before the data and the program: a live run is refused in a moment, not after them
        decide(lambda: [RunLock(r.dir.path).check_free() for r in runs])
    for r, s in zip(runs, decide(lambda: [_finished(run) for run in runs])):
        r.summary = s
    active = [r for r in runs if r.summary is None]
    if active:
        inp, program = _prepare(active)
        with _locks(active if lock else []):
            _train_active(active, inp, program, progress, announce)
    return [r.summary for r in runs]


def _train_active(active: list[_Run], inp: Input, program: Program, progress: bool | None, announce: bool) -> None:
    """Open, train and finish the runs that are not finished yet."""
    state = _open_runs(active, program, announce)
    t_start = time.time()
    try:
        feed = inp.feed(program, active[0].cfg, active[0].start, active[0].data)
        try:
            state = _train_chunks(active, program, state, feed, t_start, progress)
        finally:
            feed.close()
    except BaseException:
        _interrupted(active, program.total_steps)
        raise
    _finish(active, program, inp, state, t_start)


@contextlib.contextmanager
def _locks(runs: list[_Run]) -> Iterator[None]:
    """Hold the runs' locks (process 0; heartbeats included) while the block trains them."""
    locks = [RunLock(r.dir.path) for r in runs] if is_writer() else []
    held = decide(lambda: [RunDir.create(lk.path.parent) is not None and lk.acquire() for lk in locks])
    try:
        for ok, lk in zip(held, locks or [RunLock(r.dir.path) for r in runs]):
            if not ok:
                raise UserError(lk.busy_message())
        with Heartbeat(locks):
            yield
    finally:
        for lk, ok in zip(locks, held):
            if ok:
                lk.release()


def _finished(r: _Run) -> dict | None:
    """The summary of a finished run with this config (marked `already`), None to train it; a
    finished or unfinished run with another config is refused. Runs on process 0."""
    old = r.dir.read_summary()
    if r.dir.is_run():
        diff = config_diff(r.dir.read_config(), r.cfg)
        if diff:
            state = old.get("status", "unfinished") if old else "unfinished"
            raise UserError(
                f"workdir {str(r.dir.path)!r} holds a {state} run with another config ({diff}); give a new --workdir"
            )
    if old and old.get("status") in FINISHED:
        return old | {"already": True}  # a diverged run would diverge again, deterministically
    return None


def config_diff(old: dict, new: dict, prefix: str = "") -> str:
    """The first differing key of two configs, as `key: old -> new`; "" when they are equal.

    Example:
      >>> config_diff({"optim": {"lr": 0.1}}, {"optim": {"lr": 0.05}})
      'optim.lr: 0.1 -> 0.05'
      >>> resnet = {"name": "resnet", "shortcut": True}
      >>> config_diff({"model": resnet}, {"model": resnet | {"shortcut": "auto"}})  # the same model
      ''
      >>> stored = {"optim": {k: v for k, v in DEFAULTS["optim"].items() if k != "prelu_min_rate"}}
      >>> config_diff(stored, {"optim": DEFAULTS["optim"]})  # a key added to the defaults since
      ''
    """
    if not prefix:  # values that build the same model are the same (normjax.config.canonical);
        # a stored config lacks the keys added to the defaults since: they had their defaults
        old, new = canonical(with_defaults(old)), canonical(with_defaults(new))
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            d = config_diff(a, b, f"{prefix}{key}.")
            if d:
                return d
        elif a != b and not (isinstance(a, list) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            return f"{prefix}{key}: {a!r} -> {b!r}"
    return ""


def _prepare(runs: list[_Run]) -> tuple[Input, Program]:
    """Validate every run against the data and devices before any run directory is touched."""
    for r in runs:
        validate(r.cfg)
    inp = input_for(runs[0].cfg)
    program = program_for(runs[0].cfg, inp)
    for r in runs[1:]:
        if program_for(r.cfg, inp) is not program:
            raise ValueError("a vectorized group needs runs that differ only in traced values")
    if inp.streaming and len(runs) > 1:
        raise ValueError("streamed runs train one at a time (each reads its own batches)")
    for r in runs:  # a warm start that cannot be read fails here, before its run directory exists
        source = r.cfg["train"]["init_from"]
        if source and not _has_checkpoint(r.dir):
            r.warm = warm_start_items(program, source)
    return inp, program


def _has_checkpoint(rundir: RunDir) -> bool:
    """Whether a run directory holds checkpoints already (then it resumes, and needs no warm start)."""
    ckpts = rundir.checkpoints
    return ckpts.exists() and any(True for _ in ckpts.iterdir())


def _open_runs(active: list[_Run], program: Program, announce: bool) -> TrainState:
    """Create the run directories (process 0), restore each run or initialize it, and stack the
    states on a leading run axis, replicated."""
    total, states = program.total_steps, []
    for r in active:
        if is_writer():
            r.dir = RunDir.create(r.dir.path)
            r.dir.write_config(r.cfg)
            r.dir.write_layers(
                [
                    {
                        "name": l.name,
                        "depth": l.depth,
                        "scale_invariant": l.scale_invariant,
                        "projection": is_projection(l),
                    }
                    for l in program.layers
                ],
            )
            r.dir.write_graph(program.graph)
        r.ckpt = Checkpointer(r.dir.checkpoints, keep=r.cfg["checkpoint"]["keep"])
        restored = restore_state(r.ckpt, program)
        if restored:
            state, r.elapsed, r.data = restored
            r.saved = int(state.step)
        else:
            state = program.init_state(r.cfg)
            source = r.cfg["train"]["init_from"]
            if source:  # read in `_prepare`, unless the directory had checkpoints that did not restore
                state = state.replace(**(r.warm if r.warm is not None else warm_start_items(program, source)))
                r.warm = None
        r.start = int(state.step)
        check_same(f"the step {str(r.dir.path)!r} resumes from", r.start)
        if is_writer():
            r.dir.trim_metrics(r.start)
            r.dir.write_summary({"status": "running", "step": r.start, "total_steps": total})
            if announce and r.start:
                print(f"resuming {str(r.dir.path)!r} from step {r.start} of {total}", file=sys.stderr, flush=True)
        states.append(state)
    starts = [r.start for r in active]
    if len(set(starts)) > 1:
        raise ValueError(f"runs of a vectorized group must resume from the same step, got {starts}")
    return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), replicated(program.mesh))


def _train_chunks(
    active: list[_Run], program: Program, state: TrainState, feed: Iterator[dict], t_start: float, progress: bool | None
) -> TrainState:
    """Fused chunks of steps (sizes: `chunk_sizes`) up to the end, or until every run has
    diverged; `feed` gives each chunk's data. The metrics of chunk k are fetched and written
    while chunk k+1 runs; every run is checkpointed at its `checkpoint.every` and at the end,
    unless it has diverged (a frozen state is never saved), with the feed's pipeline state."""
    total, step = program.total_steps, active[0].start
    every = min(r.cfg["checkpoint"]["every"] for r in active)
    bar = Progress(
        total, initial=step, batch_size=program.batch_size * len(active), enabled=progress if is_writer() else False
    )
    if is_writer() and not program.compiled(len(active)):
        print("compiling the training step (once per model shape) ...", file=sys.stderr, flush=True)
    pending = None
    with _StopAtChunk() as stop:
        for n in chunk_sizes(step, total, program.chunk, every):
            if stop.signum is not None or not any(r.training for r in active):
                break
            mask = [any(logs_step(step + i, r.cfg, total) for r in active) for i in range(program.chunk)]
            batch = next(feed)
            state, chunk_metrics = program.run_chunk(state, batch["image"], batch["label"], n, mask)
            if pending is not None:
                _drain(active, program, pending, bar, t_start)  # runs while the chunk just dispatched computes
            pending, step = chunk_metrics, step + n
            if step % every == 0 or step == total:
                _drain(active, program, pending, bar, t_start)
                pending = None
                for i, r in enumerate(active):
                    if r.training and (step % r.cfg["checkpoint"]["every"] == 0 or step == total):
                        _save(r, i, state, step, feed, t_start)
        if pending is not None:
            _drain(active, program, pending, bar, t_start)
        bar.close()
        saving = [i for i, r in enumerate(active) if r.training]
        if stop.signum is not None and step < total and saving:
            # Every run still training saves the step it reached (its rows up to it are logged):
            # the same state and chunk boundaries as an uninterrupted run, so resuming is bitwise.
            for i in saving:
                if active[i].saved != step:
                    _save(active[i], i, state, step, feed, t_start)
            raise Interrupted(stop.signum, _stopped_message(stop.signum, step, total, active, len(saving)))
    return state


def _save(r: _Run, i: int, state: TrainState, step: int, feed: Any, t_start: float) -> None:
    """Checkpoint run `i` of the stacked `state` at `step`, with the feed's pipeline state."""
    items = state_items(jax.tree.map(lambda x: x[i], state), r.elapsed + time.time() - t_start, state_array(feed))
    r.ckpt.save(step, items)
    r.saved = step


def _stopped_message(signum: int, step: int, total: int, active: list[_Run], n_saved: int) -> str:
    """The one line of a group stopped by a signal at `step`: what was saved, where it resumes."""
    head = f"{Interrupted(signum).signame} at step {step} of {total}"
    if len(active) == 1:
        return f"{head}: saved in {active[0].dir.checkpoints}; the same command resumes from step {step}"
    return f"{head}: {n_saved} of {len(active)} runs saved; the same command resumes them from step {step}"


class _StopAtChunk:
    """SIGINT and SIGTERM while the chunks run: the first one sets `signum`, and the loop stops at
    the end of the chunk it is in (a chunk in flight cannot be cut: it computes on the device) to
    save what it reached; a second one raises `Interrupted` at once.

    Installed on one process and in the main thread only (elsewhere `signum` stays None and the
    handlers are left alone); a signal that is ignored (`nohup`, a background job's SIGINT) stays
    ignored. The handlers before are restored on exit.
    """

    def __init__(self):
        self.signum: int | None = None
        self._before: dict[int, Any] = {}

    def __enter__(self) -> _StopAtChunk:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                before = signal.getsignal(sig)
                if before is not signal.SIG_IGN:
                    self._before[sig] = before
                    signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)  # asked twice: stop now
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, before in self._before.items():
            signal.signal(sig, signal.SIG_DFL if before is None else before)


def _drain(active: list[_Run], program: Program, chunk_metrics: dict, bar: Progress, t_start: float) -> None:
    """Fetch one chunk's metrics: log each run's rows up to its divergence, note the divergence
    (the device's flags: the one rule), and advance the progress bar."""
    m = jax.device_get(chunk_metrics)
    total, losses = program.total_steps, []
    for i, r in enumerate(active):
        mi = {k: v[i] for k, v in m.items()}
        if not r.training:
            continue
        applied = mi["valid"] & mi["ok"]  # slots whose update was applied (a frozen state repeats its step)
        rows = _log_rows(mi, applied, r.cfg, program.steps_per_epoch, total, r.elapsed + time.time() - t_start)
        if is_writer():
            r.dir.append_metrics(rows)
        bad = mi["valid"] & ~mi["ok"]
        if bad.any():
            j = int(np.argmax(bad))
            r.diverged_at = int(mi["step"][j])
            what = "loss" if not np.isfinite(mi["loss"][j]) else "gradient norm"
            r.reason = f"non-finite {what} at step {r.diverged_at}"
        if applied.any():
            losses.append((float(mi["loss"][applied][-1]), float(mi["accuracy"][applied][-1])))
    if losses:
        bar.update(
            int(m["valid"][0].sum()),
            loss=float(np.mean([l for l, _ in losses])),
            acc=float(np.mean([a for _, a in losses])),
        )


def _log_rows(m: dict, applied: np.ndarray, cfg: dict, steps_per_epoch: int, total: int, wall: float) -> list[dict]:
    """Rows of one run's fetched chunk: the applied steps the cadence keeps (`logs_step`)."""
    rows = []
    for i in np.nonzero(applied)[0]:
        step = int(m["step"][i])
        if logs_step(step, cfg, total):
            row = {"step": step, "epoch": step / steps_per_epoch, "wall_time": wall}
            row.update({k: v[i] for k, v in m.items() if k not in _FLAGS})
            rows.append(row)
    return rows


def _interrupted(active: list[_Run], total: int) -> None:
    """On an interrupt (or any error) mid-training: each unfinished run's summary says
    `interrupted` and the step it resumes from, so no dead run reads `running`."""
    for r in active:
        step = r.saved or 0
        if r.ckpt is not None:
            try:  # what is on disk: a save may have finished just before the interrupt
                step = r.ckpt.latest_step() or 0
            finally:
                r.ckpt.close()
        if is_writer() and r.summary is None:
            r.dir.write_summary(
                {
                    "status": "interrupted",
                    "step": step,
                    "total_steps": total,
                    "message": f"interrupted; resumes from step {step} when started again",
                }
            )


def _finish(active: list[_Run], program: Program, inp: Input, state: TrainState, t_start: float) -> None:
    """Close the checkpointers, evaluate the runs that finished (BN in inference mode), and write
    each run's summary (diverged runs: the step and the reason)."""
    total = program.total_steps
    splits: dict[int, dict] = {}  # by eval_train_examples: each split goes to the device once per group
    for i, r in enumerate(active):
        r.ckpt.close()
        wall = r.elapsed + time.time() - t_start
        if r.diverged_at is not None:
            kept = f"checkpoint of step {r.saved} kept" if r.saved is not None else "no checkpoint was written"
            r.summary = {
                "status": "diverged",
                "step": r.diverged_at,
                "total_steps": total,
                "wall_time": wall,
                "reason": r.reason,
                "message": f"{r.reason}; {kept}",
            }
        else:
            key = r.cfg["train"]["eval_train_examples"]
            if key not in splits:
                splits[key] = inp.eval_sets(program, r.cfg)
            final = final_metrics(
                {
                    "params": jax.tree.map(lambda x: x[i], state.params),
                    "batch_stats": jax.tree.map(lambda x: x[i], state.batch_stats),
                },
                splits[key],
            )
            r.summary = {
                "status": "done",
                "step": total,
                "total_steps": total,
                "epochs": total / program.steps_per_epoch,
                "wall_time": wall,
                **final,
            }
        if is_writer():
            r.summary |= metrics_lib.summarize(program.metric_names, list(r.dir.read_metrics()), r.cfg)
            r.dir.write_summary(r.summary)
        r.summary = decide(lambda r=r: r.summary)  # every process returns what process 0 wrote


def with_defaults(cfg: dict, defaults: dict | None = None) -> dict:
    """A stored config with the keys added to `DEFAULTS` since it was written filled in (their
    defaults), so readers of older run directories keep working.

    Example:
      >>> with_defaults({"optim": {"lr": 0.3}}, {"optim": {"lr": 0.1, "weight_decay_on": "all_but_prelu"}})
      {'optim': {'lr': 0.3, 'weight_decay_on': 'all_but_prelu'}}
    """
    defaults = DEFAULTS if defaults is None else defaults
    out = dict(cfg)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = with_defaults(out[key], value)
    return out


def read_run(rundir: str | os.PathLike) -> tuple[dict, Input, Program, int, dict]:
    """A finished or running run's config, input (`normjax.training.inputs`), program, and
    latest checkpoint's step and `{"params", "batch_stats"}`, read-only (for the studies' commands).

    Raises UserError (one line) when `rundir` is no run directory or holds no checkpoint.
    """
    run = RunDir(rundir)
    if not run.is_run():
        raise UserError(f"{str(run.path)!r} is not a run directory (no config.json)")
    cfg = with_defaults(run.read_config())
    inp = input_for(cfg)
    program = program_for(cfg, inp)
    abstract = program.abstract_state()
    restored = read_latest_items(run.checkpoints, {"params": abstract.params, "batch_stats": abstract.batch_stats})
    if restored is None:
        raise UserError(f"{str(run.path)!r} holds no checkpoint of this model")
    step, items = restored
    return cfg, inp, program, step, items


def evaluate_run(rundir: str | os.PathLike) -> dict:
    """Evaluate a run directory's latest checkpoint (read-only) on its train subset and test
    split; a PReLU run also hard-linearized (`"linearized"`: slopes within the tolerance set to 1)."""
    cfg, inp, program, step, items = read_run(rundir)
    evals = inp.eval_sets(program, cfg)
    out = {"step": int(step), **final_metrics(items, evals)}
    if cfg["model"]["activation"] == "prelu":
        tol = cfg["optim"]["prelu_tolerance"]
        hard = items | {"params": graph_lib.linearize(program.graph, items["params"], tol)}
        out["linearized"] = {
            "tolerance": tol,
            **final_metrics(hard, evals),
            **{
                k: v
                for k, v in apl_lib.summary(program.graph, jax.device_get(hard["params"]), tol).items()
                if k in ("apl", "nonlinear_units", "units")
            },
        }
    return out
