"""Sweeps: expansion, vectorized groups equal runs alone, sharding, locks, failures, compile counts,
and an interrupted-and-resumed smoke sweep end to end."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from helpers import assert_close, close_rows, small_config, ulps_apart
from normjax.cli import main
from normjax.errors import UserError
from normjax.sweep.results import collect
from normjax.sweep.runner import parse_shard, run_sweep
from normjax.sweep.spec import expand, select
from normjax.training.checkpoint import Checkpointer
from normjax.training.lock import RunLock
from normjax.training.loop import read_run, train, train_group
from normjax.training.rundir import RunDir

SWEEP = """
def get_sweep(size):
    return {"base": "%s", "grid": {"optim.lr": [0.05, 0.2], "train.seed": [0, 1]},
            "zip": %s, "set": {"train.steps": 24, "model.depth": 2, "model.width": 32,
                               "checkpoint.every": 8, "train.steps_per_dispatch": 4}}
"""
ROOT = Path(__file__).parents[1]
# A vmapped group against the same runs alone: two programs (see tests/helpers.py). Seen: bitwise
# on an Intel Xeon, under 2 ulps on an AMD EPYC (BN statistics, the summary's loss), 2026-12.
ULPS_GROUP = 8


def _spec(tmp_path, zipped="{}", name="sweep_t.py"):
    path = tmp_path / name
    path.write_text(SWEEP % (ROOT / "experiments" / "mlp_digits.py", zipped))
    return path


def _metrics(run_dir):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in RunDir(Path(run_dir)).read_metrics()]


def test_expand_grid_zip_names(tmp_path):
    runs, varied = expand(_spec(tmp_path, '{"optim.momentum": [0.0, 0.9], "optim.nesterov": [False, True]}'))
    assert varied == ["optim.lr", "train.seed", "optim.momentum", "optim.nesterov"]
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    assert runs[0].name.startswith("lr=0.05-seed=0-momentum=0-nesterov=false-")
    assert {(r.config["optim"]["momentum"], r.config["optim"]["nesterov"]) for r in runs} == {(0.0, False), (0.9, True)}
    assert all(r.config["train"]["steps"] == 24 for r in runs)


@pytest.mark.parametrize(
    "zipped,words",
    [
        ('{"optim.lr": [0.1], "train.seed": [1, 2]}', ["zip", "length"]),
        ('{"model.name": ["vgg"]}', ["model.name", "vgg"]),
    ],
)
def test_bad_sweeps_one_line(tmp_path, zipped, words):
    with pytest.raises(UserError) as e:
        expand(_spec(tmp_path, zipped))
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)
    with pytest.raises(UserError, match="shard"):
        parse_shard("3/2")


@pytest.mark.cross_program
@pytest.mark.parametrize(
    "model,data",
    [
        ({}, {}),
        ({"name": "resnet", "depth": 8, "width": 8}, {}),
        ({"name": "resnet", "depth": 8, "width": 8}, {"name": "mnist1d"}),  # 1-D: 1x3 convs
    ],
    ids=["mlp", "resnet", "resnet_1d"],
)
def test_vectorized_group_equals_runs_alone(tmp_path, model, data):
    """MLP, and a ResNet (on images and on 1-D signals) whose convs and BN go through the per-run
    vmap rules (vmap_per_slice): every logged metric, the final parameters and BN statistics, and
    the summary."""
    cfgs = [
        small_config(model=model, data=data, optim={"lr": lr, "momentum": m}, train={"steps": 24, "seed": s})
        for lr, m, s in [(0.05, 0.9, 0), (0.2, 0.0, 1), (0.1, 0.5, 2)]
    ]
    group = train_group(cfgs, [tmp_path / f"g{i}" for i in range(3)])
    assert len(group) == 3
    # Equal up to rounding (two programs: the vmapped group vs each run alone): XLA reorders the
    # vmapped program's sums (BN statistics, norms, the loss mean) differently on each CPU. A
    # wrong LR, a skipped step or another run's slice is far outside ULPS_GROUP (asserted below).
    for i, cfg in enumerate(cfgs):
        alone = train(cfg, tmp_path / f"a{i}")
        rows_g, rows_a = _metrics(tmp_path / f"g{i}"), _metrics(tmp_path / f"a{i}")
        assert len(rows_g) == len(rows_a) == 13  # steps 0-9 (dense), 14, 19, 23
        assert rows_g[0].keys() == {
            "step",
            "epoch",
            "accuracy",
            "loss",
            "lr",
            "w_norm",
            "l2_params",
            "g_norm",
            "l2_grads",
            "l2_updates",
        }
        close_rows(rows_g, rows_a, ULPS_GROUP)
        *_, step_g, items_g = read_run(tmp_path / f"g{i}")
        *_, step_a, items_a = read_run(tmp_path / f"a{i}")
        assert step_g == step_a == 24
        assert_close(items_g["params"], items_a["params"], ULPS_GROUP, "params")
        assert_close(items_g["batch_stats"], items_a["batch_stats"], ULPS_GROUP, "batch_stats")
        assert_close(
            *[{k: v for k, v in s.items() if k != "wall_time"} for s in (group[i], alone)], ULPS_GROUP, "summary"
        )
    # The tolerance still sees real bugs: another run's slice, a skipped step, an LR off by 0.1%.
    assert ulps_apart(_metrics(tmp_path / "g0")[-1], _metrics(tmp_path / "a1")[-1]) > 1000 * ULPS_GROUP
    assert ulps_apart(rows_g[1:], rows_a[:-1]) > 1000 * ULPS_GROUP
    cfg = cfgs[-1]
    off = train(
        small_config(
            model=model, data=data, optim={**cfg["optim"], "lr": cfg["optim"]["lr"] * 1.001}, train=cfg["train"]
        ),
        tmp_path / "off",
    )
    assert ulps_apart(off["train_loss"], alone["train_loss"]) > 100 * ULPS_GROUP


def test_a_diverging_run_stops_alone(tmp_path):
    cfgs = [small_config(optim={"lr": lr, "momentum": 0.0}, train={"steps": 32}) for lr in (0.1, 1e30, 0.05)]
    out = train_group(cfgs, [tmp_path / f"r{i}" for i in range(3)])
    assert [s["status"] for s in out] == ["done", "diverged", "done"]
    assert out[0]["test_accuracy"] > 0.8


def test_shards_split_runs_and_compile_once(tmp_path):
    spec = _spec(tmp_path)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
    )
    a = run_sweep(spec, workdir=tmp_path / "w", shard=(0, 2), group_size=2)
    first = len(compiles)
    b = run_sweep(spec, workdir=tmp_path / "w", shard=(1, 2), group_size=2)
    assert len(compiles) == first, "the second shard differs only in traced values: nothing new to compile"
    assert set(a).isdisjoint(b) and len(set(a) | set(b)) == 4
    assert all(s["status"] == "done" for s in (a | b).values())
    again = run_sweep(spec, workdir=tmp_path / "w", group_size=2)  # complete runs are skipped
    assert again == a | b


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = tmp_path / "sweep_f.py"
    path.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "grid": {{"train.batch_size": [64, 100000]}},
            "set": {{"train.steps": 8}}}}
""")
    out = run_sweep(path, workdir=tmp_path / "w")
    status = {k.split("-")[0]: v["status"] for k, v in out.items()}
    assert status == {"batch_size=64": "done", "batch_size=100000": "failed"}
    failed = next(v for k, v in out.items() if "100000" in k)
    assert "train.batch_size=100000" in failed["error"] and "\n" not in failed["error"]


def test_an_unprepared_dataset_stops_the_sweep_before_any_run(tmp_path, capsys):
    path = tmp_path / "sweep_d.py"
    path.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "grid": {{"data.name": ["digits", "cifar10"]}},
            "set": {{"train.steps": 8, "data.data_dir": "{tmp_path / "nodata"}"}}}}
""")
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--workdir", str(tmp_path / "w")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset 'cifar10' is not prepared"), err
    assert "tfds build cifar10" in err[0]
    assert not (tmp_path / "w").exists()  # nothing created, not even for the digits run


def test_locks_block_live_owners_and_take_over_stale_ones(tmp_path):
    live = RunLock(tmp_path / "a")
    assert live.acquire()
    other = RunLock(tmp_path / "a")
    other.owner = {"host": live.owner["host"], "pid": os.getppid()}
    assert not other.acquire()  # held by a live process on this host
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "a" / "lock").write_text(json.dumps({"host": live.owner["host"], "pid": dead.pid}))
    assert other.acquire()  # its owner died: taken over
    remote = tmp_path / "b"
    remote.mkdir()
    (remote / "lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not RunLock(remote).acquire()  # fresh heartbeat on another host
    os.utime(remote / "lock", (time.time() - 3600, time.time() - 3600))
    assert RunLock(remote).acquire()  # heartbeat stopped an hour ago


def test_smoke_sweep_interrupted_and_resumed(tmp_path):
    """The CLI sweep, vectorized, killed with SIGKILL mid-run, restarted: it completes, and every
    run's metrics equal those of an uninterrupted sweep (float tolerance; a single run resumes
    bitwise, tests/test_resume.py)."""
    spec = _spec(tmp_path)
    slow = ["--set", "train.steps=400", "--set", "model.width=512", "--group-size", "4"]
    cmd = [sys.executable, "-m", "normjax", "sweep", str(spec), "--workdir", str(tmp_path / "k")] + slow
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if any(d.name.isdigit() and int(d.name) >= 16 for d in (tmp_path / "k").glob("*/checkpoints/*")):
            break
        time.sleep(0.02)
    assert p.poll() is None, "the sweep ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    ref = run_sweep(spec, workdir=tmp_path / "ref", overrides=["train.steps=400", "model.width=512"], group_size=4)
    for name in ref:
        assert RunDir(tmp_path / "k" / name).read_summary()["status"] == "done"
        got, want = _metrics(tmp_path / "k" / name), _metrics(tmp_path / "ref" / name)
        assert [r["step"] for r in got] == [r["step"] for r in want]  # no step lost or logged twice
        for a, b in zip(got, want):  # vmapped XLA:CPU matmuls may differ in the last bit after a restore
            for k in ("loss", "w_norm", "g_norm"):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5)


def test_ctrl_c_saves_the_groups_step_and_the_sweep_resumes_from_it(tmp_path, monkeypatch, capsys, sigint_default):
    """Issue 33, for sweeps: Ctrl-C mid-group saves every run of the group at the step it reached,
    says so with the sweep's count, and the sweep run again resumes that group from there and
    trains the group that had not started."""
    import normjax.training.loop as loop

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    spec = _spec(tmp_path)
    sets = ["checkpoint.every=1000"]  # chunks of 4 steps, no periodic checkpoint before the end
    drain, calls = loop._drain, []

    def drain_and_signal(*args):
        calls.append(1)
        if len(calls) == 2:  # the second fetch: chunk 3 (steps 8-11) is in flight
            os.kill(os.getpid(), signal.SIGINT)
        return drain(*args)

    monkeypatch.setattr(loop, "_drain", drain_and_signal)
    with pytest.raises(KeyboardInterrupt) as e:
        run_sweep(spec, workdir=tmp_path / "k", overrides=sets, group_size=2)  # groups as test_shards_...
    assert str(e.value) == (
        "SIGINT at step 12 of 24: 2 of 2 runs saved; the same command resumes them from step 12 "
        "(sweep sweep_t: 0 of 4 runs finished)"
    )
    runs = [RunDir(tmp_path / "k" / r.name) for r in expand(spec, "smoke", sets)[0]]
    saved = [r for r in runs if r.checkpoints.exists()]
    assert len(saved) == 2 and all(Checkpointer(r.checkpoints, read_only=True).steps() == [12] for r in saved)
    assert all(r.read_summary()["status"] == "interrupted" and not r.lock_path.exists() for r in saved)
    monkeypatch.setattr(loop, "_drain", drain)
    capsys.readouterr()
    out = run_sweep(spec, workdir=tmp_path / "k", overrides=sets, group_size=2)
    assert "2 resuming from checkpoints" in capsys.readouterr().err
    assert [s["status"] for s in out.values()] == ["done"] * 4
    assert all([row["step"] for row in r.read_metrics()] == list(range(24)) for r in runs)  # each step once


def test_auto_group_size_by_backend(monkeypatch):
    from normjax.sweep.runner import auto_group_size
    from normjax.training.inputs import input_for
    from normjax.training.loop import program_for

    mlp = small_config()
    conv = small_config(model={"name": "resnet", "depth": 8})
    p_mlp, p_conv = program_for(mlp, input_for(mlp)), program_for(conv, input_for(conv))
    assert auto_group_size(p_conv, 12) == 1 and auto_group_size(p_mlp, 12) == 8 and auto_group_size(p_mlp, 3) == 3
    # The accelerator branch: sized from the compiled groups' memory analysis (CPU reports no limit:
    # a modest group; tests/test_plan.py sizes one against a given limit).
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert 1 <= auto_group_size(p_mlp, 12) <= 12
    # ... compiled for the data as stored: MNIST-1D's float32 signals, not uint8 images
    signals = small_config(data={"name": "mnist1d"})
    p_signals, seen = program_for(signals, input_for(signals)), []

    class Recorder:
        def lower(self, state, images, *rest):
            seen.append(images.dtype)
            raise RuntimeError("recorded")  # the estimate falls back to a modest group

    monkeypatch.setattr(p_signals, "train_chunk_one", Recorder())
    assert auto_group_size(p_signals, 12, limit=2**30) == 8 and seen == [np.dtype(np.float32)]


PRETRAIN_SWEEP = """
def get_sweep(size):
    return {"base": "%s",
            "grid": {"data.task": [{"name": "a", "optim.momentum": 0.0}, {"name": "b", "optim.momentum": 0.5}],
                     "train.regime": [{"name": "during", "train.init_from": ""},
                                      {"name": "after", "train.init_from": "pretrain", "train.steps": 4}],
                     "optim.lr": [0.05, 0.1]},
            "set": {"train.steps": 8, "model.depth": 2, "model.width": 16, "train.steps_per_dispatch": 4,
                    "checkpoint.every": 4},
            "pretrain": {"optim.lr": 0.2, "train.steps": 8}}
"""


def test_bundles_and_pretrain_runs_train_each_base_once(tmp_path):
    spec = tmp_path / "sweep_p.py"
    spec.write_text(PRETRAIN_SWEEP % (ROOT / "experiments" / "mlp_digits.py"))
    runs, varied = expand(spec)
    assert varied == ["data.task", "train.regime", "optim.lr"] and len(runs) == 8
    assert runs[0].name.startswith("task=a-regime=during-lr=0.05-") and runs[0].overrides["data.task"] == "a"
    after = [r for r in runs if r.overrides["train.regime"] == "after"]
    assert len(after) == 4 and all(r.config["train"]["steps"] == 4 for r in after)
    # The base run: the run's config with the pretrain overrides; shared across the LRs of a task.
    assert len({r.base.name for r in after}) == 2 and all(r.base is None for r in runs if r not in after)
    assert {r.base.config["optim"]["lr"] for r in after} == {0.2} and after[0].base.config["train"]["init_from"] == ""
    assert {r.base.config["optim"]["momentum"] for r in after} == {0.0, 0.5}
    # Trained: one task (2 LRs x 2 regimes, one base) keeps the test short.
    spec.write_text(
        PRETRAIN_SWEEP.replace(', {"name": "b", "optim.momentum": 0.5}', "") % (ROOT / "experiments" / "mlp_digits.py")
    )
    runs, _ = expand(spec)
    after = [r for r in runs if r.overrides["train.regime"] == "after"]
    results = run_sweep(spec, workdir=tmp_path / "w")
    assert len(results) == 4 and all(s["status"] == "done" for s in results.values())
    bases = sorted(p.name for p in (tmp_path / "w" / "pretrain").iterdir())
    assert bases == sorted({r.base.name for r in after})
    for r in after:  # warm-started from its base: the run's first logged params are the base's last
        cfg = json.loads((tmp_path / "w" / r.name / "config.json").read_text())
        assert cfg["train"]["init_from"] == str(tmp_path / "w" / "pretrain" / r.base.name)
        first = next(RunDir(tmp_path / "w" / r.name).read_metrics())
        *_, step, items = read_run(tmp_path / "w" / "pretrain" / r.base.name)
        kernel = np.asarray(items["params"]["hidden"]["first"]["dense"]["kernel"])
        assert step == 8 and first["step"] == 0
        assert first["w_norm"][0] == pytest.approx(float(np.linalg.norm(kernel)), rel=1e-6)
    with pytest.raises(UserError, match="pretrain"):
        spec.write_text(
            PRETRAIN_SWEEP.replace('"pretrain": {"optim.lr": 0.2, "train.steps": 8}', "")
            % (ROOT / "experiments" / "mlp_digits.py")
        )
        expand(spec)


def test_after_training_run_names_follow_their_base_run(tmp_path):
    # Another `pretrain` entry makes other base runs; the after-training runs that warm-start from
    # them must get other names too (they are other runs), while the during-training runs keep theirs.
    spec = tmp_path / "sweep_p.py"
    spec.write_text(PRETRAIN_SWEEP % (ROOT / "experiments" / "mlp_digits.py"))
    before = {
        r.overrides["train.regime"] + str(r.overrides["optim.lr"]) + r.overrides["data.task"]: r.name
        for r in expand(spec)[0]
    }
    spec.write_text(
        (PRETRAIN_SWEEP % (ROOT / "experiments" / "mlp_digits.py")).replace('"train.steps": 8}}', '"train.steps": 16}}')
    )
    runs = expand(spec)[0]
    after = {
        r.overrides["train.regime"] + str(r.overrides["optim.lr"]) + r.overrides["data.task"]: r.name for r in runs
    }
    assert all(r.base.config["train"]["steps"] == 16 for r in runs if r.base is not None)
    for key, name in after.items():
        assert (name == before[key]) == key.startswith("during"), key
    assert all(r.config["train"]["init_from"] == "pretrain" for r in runs if r.base is not None)


def test_group_size_that_cannot_be_met_says_so(tmp_path):
    from normjax.sweep.runner import _groups

    path = tmp_path / "sweep_g.py"
    path.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "grid": {{"train.seed": list(range(12))}},
            "set": {{"train.steps": 8}}}}
""")
    runs, _ = expand(path, "smoke", ())
    groups, failed, notes = _groups(runs, tmp_path / "w", 8)
    assert [len(g) for g in groups] == [6, 6] and not failed
    assert notes == [
        "--group-size 8: 12 runs of one program go in 2 balanced groups of 6, 6 (equal shapes compile once)"
    ]
    assert _groups(runs, tmp_path / "w", 6)[2] == [] and _groups(runs, tmp_path / "w", 12)[2] == []


def test_a_key_added_to_the_defaults_renames_no_run(monkeypatch):
    """Run names hash only the values that differ from the defaults: a new key (defaulting to the
    old behaviour) keeps every existing run directory's name; a changed value changes it."""
    import copy

    from normjax import config
    from normjax.sweep.spec import expand

    before = [r.name for r in expand("experiments/sweep_lr.py", "smoke")[0]]
    grown = copy.deepcopy(config.DEFAULTS)
    grown["train"]["new_knob"] = 0
    monkeypatch.setattr(config, "DEFAULTS", grown)
    monkeypatch.setattr("normjax.sweep.spec.DEFAULTS", grown)
    after = expand("experiments/sweep_lr.py", "smoke")[0]
    assert [r.name for r in after] == before and all(r.config["train"]["new_knob"] == 0 for r in after)
    changed = expand("experiments/sweep_lr.py", "smoke", overrides=["train.new_knob=1"])[0]
    assert len(changed) == len(before) and all(a.name != b for a, b in zip(changed, before))


def test_a_sweep_key_a_runs_optimizer_ignores_stops_the_sweep_naming_the_run(tmp_path):
    """A sweep that sets `optim.prelu_l1` for plain-SGD runs is refused before any run; pairing it
    with its optimizer in a bundle is how a grid sets a key for some optimizers only."""
    path = tmp_path / "sweep_o.py"
    path.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "grid": {{"optim.prelu_l1": [0.0, 0.1]}},
            "set": {{"train.steps": 8}}}}
""")
    with pytest.raises(UserError) as e:
        expand(path)
    msg = str(e.value)
    assert "\n" not in msg and "0.1" in msg and "'sgd'" in msg and "sgd_prelu_l1" in msg, msg
    path.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "set": {{"model.activation": "prelu"}},
            "grid": {{"optim.regime": [{{"name": "plain"}},
                                       {{"name": "l1", "optim.name": "sgd_prelu_l1", "optim.prelu_l1": 0.1}}]}}}}
""")
    runs, _ = expand(path)
    assert [r.config["optim"]["name"] for r in runs] == ["sgd", "sgd_prelu_l1"]


def test_two_labels_of_one_config_train_once_and_both_have_rows(tmp_path):
    # A baseline widened to the width it already has is the equal-width run: one run, two labels.
    zipped = '{"model.baseline": [{"name": "equal_width", "model.width": 32}, {"name": "equal_params", "model.width": 32}, {"name": "equal_params", "model.width": 48}]}'
    spec = _spec(tmp_path, zipped)
    runs, _ = expand(spec)
    assert len(runs) == 12
    shared = [r for r in runs if r.same_as is not None]
    assert len(shared) == 4 and all(r.overrides["model.baseline"] == "equal_params" for r in shared)
    by_name = {r.name: r for r in runs}
    for r in shared:
        first = by_name[r.same_as]
        assert first.overrides["model.baseline"] == "equal_width" and first.config == r.config
        assert {k: v for k, v in first.overrides.items() if k != "model.baseline"} == {
            k: v for k, v in r.overrides.items() if k != "model.baseline"
        }
    w = tmp_path / "w"
    results = run_sweep(spec, workdir=w)
    assert len(results) == 12 and all(s["status"] == "done" for s in results.values())
    trained = [p for p in w.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.json").exists()]
    assert len(trained) == 8  # not 12
    for r in shared:
        assert (w / r.name).is_symlink() and os.readlink(w / r.name) == r.same_as
        assert results[r.name] == results[r.same_as]
    from normjax.sweep.results import collect

    rows = collect(w)
    assert all(row["status"] == "done" for row in rows)
    assert sorted(row["model.baseline"] for row in rows) == ["equal_params"] * 8 + ["equal_width"] * 4
    assert run_sweep(spec, workdir=w) == results  # a rerun trains nothing and keeps the links


def test_runs_stored_before_a_key_was_added_stay_finished(tmp_path):
    # A run directory written before `optim.prelu_min_rate` existed lacks it in config.json; the
    # key's default is the old behaviour, so the run is the same run: finished, not "another config".
    spec, w = _spec(tmp_path), tmp_path / "w"
    first = run_sweep(spec, workdir=w)
    for name in first:
        path = w / name / "config.json"
        cfg = json.loads(path.read_text())
        del cfg["optim"]["prelu_min_rate"]
        path.write_text(json.dumps(cfg))
    assert run_sweep(spec, workdir=w) == first


def test_a_set_on_a_key_the_sweep_varies_is_one_line():
    """`normjax sweep FILE --set KEY=V` where the grid (or a bundle) varies KEY would train at the
    grid's values, silently: refused, naming the key and the values the sweep gives it."""
    root = Path(__file__).parents[1] / "experiments"
    with pytest.raises(UserError) as e:
        expand(root / "sweep_depth.py", "smoke", ["model.depth=8"])
    assert str(e.value) == (
        "--set model.depth=8: the sweep varies model.depth (its runs take 8, 14, 20); drop the --set, "
        "or change the sweep file's grid"
    )
    with pytest.raises(UserError, match=r"varies data.name \(its runs take digits, synthetic\)"):
        expand(root / "sweep_apl_sparsity.py", "smoke", ["data.name=digits"])  # inside the task bundles
    runs, _ = expand(root / "sweep_depth.py", "smoke", ["train.epochs=1"])  # not varied: applies to every run
    assert {r.config["train"]["epochs"] for r in runs} == {1.0}


def test_a_sweep_directory_holds_one_size(tmp_path):
    # `make demo` then `make demo SIZE=medium` wrote both sizes into one directory, whose tables and
    # figures then mixed them: another size is refused before anything is written.
    spec, work = _spec(tmp_path), tmp_path / "w"
    work.mkdir()
    manifest = json.dumps({"spec": str(spec), "size": "smoke", "overrides": [], "varied": [], "runs": []})
    (work / "sweep.json").write_text(manifest)
    with pytest.raises(UserError, match=r"holds --size smoke runs; --size full goes in a directory of its own"):
        run_sweep(spec, size="full", workdir=work)
    assert [p.name for p in work.iterdir()] == ["sweep.json"] and (work / "sweep.json").read_text() == manifest


def test_make_demo_writes_each_size_into_its_own_directories():
    dry = {
        size: subprocess.run(
            ["make", "-n", "demo", f"SIZE={size}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for size in ("smoke", "medium")
    }
    for size, text in dry.items():
        workdirs = {w for w in text.split() if w.startswith("runs/demo")}
        assert {f"runs/demo-{size}", f"runs/demo-apl-{size}"} <= workdirs, workdirs
        assert not any(w in ("runs/demo", "runs/demo-apl") for w in workdirs)


def test_only_trains_a_slice_and_lists_the_rest_missing(tmp_path):
    # One task's after regime of a sweep with two tasks: its two runs and their one base run are
    # trained, nothing else; the table lists the other six runs as missing.
    spec = tmp_path / "sweep_p.py"
    spec.write_text(PRETRAIN_SWEEP % (ROOT / "experiments" / "mlp_digits.py"))
    runs, varied = expand(spec)
    chosen = select(runs, varied, ["task=b", "train.regime=after"])
    assert [r.overrides["optim.lr"] for r in chosen] == [0.05, 0.1]
    assert {(r.overrides["data.task"], r.overrides["train.regime"]) for r in chosen} == {("b", "after")}
    results = run_sweep(spec, workdir=tmp_path / "w", only=["task=b", "regime=after"])
    assert sorted(results) == sorted(r.name for r in chosen)
    assert [p.name for p in (tmp_path / "w" / "pretrain").iterdir()] == [chosen[0].base.name]
    status = {row["name"]: row["status"] for row in collect(tmp_path / "w", over=None)}
    assert status == {r.name: "done" if r in chosen else "missing" for r in runs}


@pytest.mark.parametrize(
    "only,words",
    [
        (["task"], "give KEY=VALUE"),
        (["depth=2"], "'depth' is not a varied key of this sweep; allowed: data.task, train.regime, optim.lr"),
        (["task=c"], "no run has task=c; its values: a, b"),
        (["lr=0.2"], "no run has lr=0.2; its values: 0.05, 0.1"),
    ],
)
def test_only_refuses_a_key_or_value_the_sweep_lacks_in_one_line(tmp_path, only, words):
    spec = tmp_path / "sweep_p.py"
    spec.write_text(PRETRAIN_SWEEP % (ROOT / "experiments" / "mlp_digits.py"))
    with pytest.raises(UserError, match=re.escape(words)):
        run_sweep(spec, workdir=tmp_path / "w", only=only)
    assert not (tmp_path / "w").exists()
