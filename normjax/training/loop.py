"""The one training loop every experiment uses. It knows nothing about either study: they plug
in optimizers (`register_optimizer`) and in-step metrics (`register_metric`).

Reads top to bottom: config → devices → data → compiled program → run dir → restore or init →
chunks of fused steps (metrics of chunk k are fetched while chunk k+1 runs) → checkpoints →
final evaluation → summary.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normjax import metrics as metrics_lib
from normjax.analysis import apl as apl_lib
from normjax.analysis import graph as graph_lib
from normjax.config import validate
from normjax.data import Dataset, load_dataset
from normjax.errors import UserError
from normjax.parallel import check_batch, data_mesh, maybe_initialize_distributed, put_replicated, replicated
from normjax.training.checkpoint import Checkpointer, read_latest_items
from normjax.training.program import DataSpec, Program, TrainState, get_program, static_key
from normjax.training.progress import Progress
from normjax.training.rundir import RunDir, read_json, write_json

EXIT_DIVERGED = 3


def dataset_for(cfg: dict) -> Dataset:
    """The dataset a config names (cached: a sweep asks for the same data once per run)."""
    return _dataset(json.dumps(cfg["data"], sort_keys=True))


@functools.lru_cache(maxsize=4)
def _dataset(data_json: str) -> Dataset:
    d = json.loads(data_json)
    return load_dataset(d["name"], data_dir=d["data_dir"] or None, synthetic=d["synthetic"])


def data_spec(ds: Dataset) -> DataSpec:
    return DataSpec(num_train=int(ds.train_images.shape[0]), image_shape=tuple(ds.image_shape),
                    num_classes=int(ds.num_classes), mean=tuple(ds.mean), std=tuple(ds.std))


def total_steps(cfg: dict, num_train: int) -> int:
    t = cfg["train"]
    return t["steps"] or max(1, math.ceil(t["epochs"] * max(1, num_train // t["batch_size"])))


def program_for(cfg: dict, ds: Dataset) -> Program:
    """Validate against the data and devices, then the (cached) compiled program."""
    mesh = data_mesh()
    check_batch(cfg["train"]["batch_size"], mesh)
    if cfg["train"]["batch_size"] > ds.train_images.shape[0]:
        raise UserError(f"train.batch_size={cfg['train']['batch_size']} exceeds the {ds.train_images.shape[0]} "
                        f"training examples of {ds.name!r}")
    spec = data_spec(ds)
    return get_program(static_key(cfg, spec, total_steps(cfg, spec.num_train), mesh.devices.size))


def state_items(state: TrainState, elapsed: float) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state,
            "meta": {"step": state.step, "key": state.key, "diverged": state.diverged,
                     "elapsed": np.float64(elapsed)}}


def restore_state(ckpt: Checkpointer, program: Program) -> tuple[TrainState, float] | None:
    abstract = program.abstract_state()
    templates = state_items(abstract, 0.0)
    templates["meta"]["elapsed"] = jax.ShapeDtypeStruct((), np.float64)
    restored = ckpt.restore(templates, drop_broken=True)  # templates fit: same config
    if restored is None:
        return None
    _, it = restored
    meta = it["meta"]
    state = TrainState(step=meta["step"], params=it["params"], batch_stats=it["batch_stats"],
                       opt_state=it["opt_state"], key=meta["key"], diverged=meta["diverged"])
    return state, float(meta["elapsed"])


def warm_start(state: TrainState, program: Program, source: str) -> TrainState:
    """Take params and BN statistics from another run's latest checkpoint; keep the new optimizer."""
    if source == "pretrain":  # normjax.sweep.spec.PRETRAIN, resolved by the sweep runner
        raise UserError("train.init_from='pretrain' names a sweep's base run: it works inside `normjax sweep` "
                        "with a 'pretrain' entry; give a run directory here")
    src = Path(source).expanduser()
    abstract = program.abstract_state()
    templates = {"params": abstract.params, "batch_stats": abstract.batch_stats}
    restored = read_latest_items(src / "checkpoints", templates)  # read-only: the source may still train
    if restored is None:
        raise UserError(f"train.init_from={source!r} holds no checkpoint that fits this model; "
                        "give a run directory of the same model that has trained")
    _, it = restored
    return state.replace(params=it["params"], batch_stats=it["batch_stats"])


def _pad_eval(images: np.ndarray, labels: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    n = images.shape[0]
    pad = (-n) % batch
    return (np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)]),
            np.concatenate([labels.astype(np.int32), -np.ones(pad, np.int32)]))


def eval_split(program: Program, images: np.ndarray, labels: np.ndarray, batch_size: int) -> tuple:
    """A dataset split on device, padded to whole eval batches (labels -1 = padding), and its batch."""
    n_dev = program.mesh.devices.size
    batch = max(n_dev, min(batch_size, images.shape[0]) // n_dev * n_dev)
    x, y = _pad_eval(images, labels, batch)
    return put_replicated(x, program.mesh), put_replicated(y, program.mesh), batch


def eval_splits(program: Program, ds: Dataset, cfg: dict) -> dict[str, tuple]:
    """The train subset and test split a run's final evaluation uses (put on device once)."""
    t = cfg["train"]
    n = t["eval_train_examples"] or ds.train_images.shape[0]
    return {"train": eval_split(program, ds.train_images[:n], ds.train_labels[:n], t["eval_batch_size"]),
            "test": eval_split(program, ds.test_images, ds.test_labels, t["eval_batch_size"])}


def final_metrics(program: Program, items: dict, splits: dict[str, tuple]) -> dict[str, float]:
    """Loss and accuracy (BN in inference mode) of `{"params", "batch_stats"}` on each split:
    `train_loss`, `test_accuracy`, ..."""
    out = {}
    for name, (x, y, batch) in splits.items():
        res = jax.device_get(program.evaluate(items["params"], items["batch_stats"], x, y, batch))
        out |= {f"{name}_loss": float(res["loss"]), f"{name}_accuracy": float(res["accuracy"])}
    return out


def logs_step(step: int, cfg: dict, total: int) -> bool:
    """The log cadence: every step of the first `log.dense_steps`, then every `log.every`-th, and the last."""
    log = cfg["log"]
    return step < log["dense_steps"] or (step + 1) % log["every"] == 0 or step == total - 1


def _log_rows(m: dict, cfg: dict, steps_per_epoch: int, total: int, wall: float) -> list[dict]:
    """Rows of one run's fetched chunk that the cadence keeps (`logs_step`)."""
    rows = []
    for i in np.nonzero(m["valid"])[0]:
        step = int(m["step"][i])
        if logs_step(step, cfg, total):
            row = {"step": step, "epoch": step / steps_per_epoch, "wall_time": wall}
            row.update({k: v[i] for k, v in m.items() if k not in ("valid", "step")})
            rows.append(row)
    return rows


class _Run:
    """Host-side bookkeeping of one run inside a (possibly vectorized) group."""

    def __init__(self, cfg: dict, workdir: str | Path):
        self.cfg = cfg
        self.dir = RunDir(Path(workdir).expanduser().absolute())
        self.diverged_at: int | None = None
        self.summary: dict | None = None


def _prepare(runs: list[_Run]) -> tuple[Dataset, Program]:
    """Validate every run against the data and devices before any run directory is touched."""
    for r in runs:
        validate(r.cfg)
        if r.dir.config.exists() and read_json(r.dir.config) != r.cfg:
            raise UserError(f"workdir {str(r.dir.path)!r} holds a run with another config; give a new --workdir")
    ds = dataset_for(runs[0].cfg)
    program = program_for(runs[0].cfg, ds)
    for r in runs[1:]:
        if program_for(r.cfg, ds) is not program:
            raise ValueError("a vectorized group needs runs that differ only in traced values")
    return ds, program


def train(cfg: dict, workdir: str | Path, *, progress: bool | None = None) -> dict:
    """Train (or resume) the run `cfg` describes in `workdir`; returns its summary.

    A finished run (done or diverged) is returned as is. A non-finite loss ends the run with
    status `diverged` (the last good checkpoint is kept).

    Example:
      >>> summary = train(load_config("experiments/resnet_digits.py"), "runs/demo")
      >>> summary["status"], summary["test_accuracy"]
    """
    return train_group([cfg], [workdir], progress=progress)[0]


def train_group(cfgs: list[dict], workdirs: list[str | Path], *, progress: bool | None = None) -> list[dict]:
    """Train runs that share one compiled program together, vmapped over a run axis.

    The runs may differ only in traced values (seed, LR, momentum, weight decay, transform
    strengths); each keeps its own run directory, metrics and checkpoints, and its result equals
    training it alone. A run that diverges stops updating (its state is frozen in the step) while
    the others go on. Returns one summary per run, in order.
    """
    maybe_initialize_distributed()
    runs = [_Run(c, w) for c, w in zip(cfgs, workdirs)]
    for r in runs:
        old = r.dir.read_summary() if r.dir.summary.exists() else None
        if old and old.get("status") in ("done", "diverged"):
            r.summary = old  # finished: a diverged run would diverge again, deterministically
    active = [r for r in runs if r.summary is None]
    if not active:
        return [r.summary for r in runs]
    ds, program = _prepare(active)
    total = program.total_steps

    states, starts = [], []
    for r in active:
        r.dir = RunDir.create(r.dir.path)
        write_json(r.dir.config, r.cfg)
        write_json(r.dir.layers, [{"name": l.name, "depth": l.depth, "scale_invariant": l.scale_invariant}
                                  for l in program.layers])
        write_json(r.dir.graph, program.graph.to_json())
        r.ckpt = Checkpointer(r.dir.checkpoints, keep=r.cfg["checkpoint"]["keep"])
        restored = restore_state(r.ckpt, program)
        if restored:
            state, r.elapsed = restored
        else:
            state, r.elapsed = program.init_state(r.cfg), 0.0
            if r.cfg["train"]["init_from"]:
                state = warm_start(state, program, r.cfg["train"]["init_from"])
        r.dir.trim_metrics(int(state.step))
        r.dir.write_summary({"status": "running", "step": int(state.step), "total_steps": total})
        states.append(state)
        starts.append(int(state.step))
    if len(set(starts)) > 1:
        raise ValueError(f"runs of a vectorized group must resume from the same step, got {starts}")
    state = jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), replicated(program.mesh))
    del states

    images = put_replicated(ds.train_images, program.mesh)
    labels = put_replicated(ds.train_labels.astype(np.int32), program.mesh)
    step, every = starts[0], min(r.cfg["checkpoint"]["every"] for r in active)
    t_start = time.time()
    bar = Progress(total, initial=step, batch_size=program.batch_size * len(active), enabled=progress)

    def drain(chunk_metrics):
        m = jax.device_get(chunk_metrics)
        losses = []
        for i, r in enumerate(active):
            mi = {k: v[i] for k, v in m.items()}
            if r.diverged_at is None:
                r.dir.append_metrics(_log_rows(mi, r.cfg, program.steps_per_epoch, total,
                                               r.elapsed + time.time() - t_start))
                bad = mi["valid"] & ~np.isfinite(mi["loss"])
                if bad.any():
                    r.diverged_at = int(mi["step"][np.argmax(bad)])
            good = mi["valid"] & np.isfinite(mi["loss"])
            if good.any():
                losses.append((float(mi["loss"][good][-1]), float(mi["accuracy"][good][-1])))
        if losses:
            bar.update(int(m["valid"][0].sum()), loss=float(np.mean([l for l, _ in losses])),
                       acc=float(np.mean([a for _, a in losses])))

    pending = None
    while step < total and any(r.diverged_at is None for r in active):
        n = min(program.chunk, total - step, every - step % every)
        mask = [any(logs_step(step + i, r.cfg, total) for r in active) for i in range(program.chunk)]
        state, chunk_metrics = program.run_chunk(state, images, labels, n, mask)
        if pending is not None:
            drain(pending)  # runs while the chunk just dispatched computes
        pending, step = chunk_metrics, step + n
        if step % every == 0 or step == total:
            drain(pending)
            pending = None
            for i, r in enumerate(active):
                if r.diverged_at is None and (step % r.cfg["checkpoint"]["every"] == 0 or step == total):
                    r.ckpt.save(step, state_items(jax.tree.map(lambda x: x[i], state),
                                                  r.elapsed + time.time() - t_start))
    if pending is not None:
        drain(pending)
    bar.close()

    splits: dict[int, dict] = {}  # by eval_train_examples: each split goes to the device once per group
    for i, r in enumerate(active):
        r.ckpt.close()
        wall = r.elapsed + time.time() - t_start
        if r.diverged_at is not None:
            r.summary = {"status": "diverged", "step": r.diverged_at, "total_steps": total, "wall_time": wall,
                         "message": f"non-finite loss at step {r.diverged_at}; last good checkpoint kept"}
        else:
            key = r.cfg["train"]["eval_train_examples"]
            if key not in splits:
                splits[key] = eval_splits(program, ds, r.cfg)
            final = final_metrics(program, {"params": jax.tree.map(lambda x: x[i], state.params),
                                            "batch_stats": jax.tree.map(lambda x: x[i], state.batch_stats)}, splits[key])
            r.summary = {"status": "done", "step": total, "total_steps": total,
                         "epochs": total / program.steps_per_epoch, "wall_time": wall, **final}
        r.summary |= metrics_lib.summarize(program.metric_names, list(r.dir.read_metrics()), r.cfg)
        r.dir.write_summary(r.summary)
    return [r.summary for r in runs]


def read_run(rundir: str | Path) -> tuple[dict, Dataset, Program, int, dict]:
    """A finished or running run's config, dataset, program, and latest checkpoint's step and
    `{"params", "batch_stats"}`, read-only (for the studies' commands).

    Raises UserError (one line) when `rundir` is no run directory or holds no checkpoint.
    """
    run = RunDir(Path(rundir).expanduser().absolute())
    if not run.config.exists():
        raise UserError(f"{str(run.path)!r} is not a run directory (no config.json)")
    cfg = read_json(run.config)
    ds = dataset_for(cfg)
    program = program_for(cfg, ds)
    abstract = program.abstract_state()
    restored = read_latest_items(run.checkpoints, {"params": abstract.params, "batch_stats": abstract.batch_stats})
    if restored is None:
        raise UserError(f"{str(run.path)!r} holds no checkpoint of this model")
    step, items = restored
    return cfg, ds, program, step, items


def evaluate_run(rundir: str | Path) -> dict:
    """Evaluate a run directory's latest checkpoint (read-only) on its train subset and test
    split; a PReLU run also hard-linearized (`"linearized"`: slopes within the tolerance set to 1)."""
    cfg, ds, program, step, items = read_run(rundir)
    splits = eval_splits(program, ds, cfg)
    out = {"step": int(step), **final_metrics(program, items, splits)}
    if cfg["model"]["activation"] == "prelu":
        tol = cfg["optim"]["prelu_tolerance"]
        hard = items | {"params": graph_lib.linearize(program.graph, items["params"], tol)}
        out["linearized"] = {"tolerance": tol, **final_metrics(program, hard, splits),
                             **{k: v for k, v in apl_lib.summary(program.graph, jax.device_get(hard["params"]), tol).items()
                                if k in ("apl", "nonlinear_units", "units")}}
    return out
