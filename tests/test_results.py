"""Sweep results: collect/aggregate/report/plot on hand-written sweep directories (no training)."""

import csv
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normjax.errors import UserError
from normjax.sweep.plot import plot_sweep
from normjax.sweep.results import aggregate, collect, report
from normjax.sweep.spec import merge_manifest

VARIED = ["model.depth", "model.shortcut", "train.seed"]
# Runs that did not finish; every other run of the 2 x 2 x 3 grid is done.
ODD = {
    (14, False, 0): "failed",
    (14, False, 1): "diverged",
    (8, False, 2): "missing",
    (14, True, 2): "running",
}


def run_name(depth: int, shortcut: bool, seed: int) -> str:
    return f"depth={depth}-shortcut={'true' if shortcut else 'false'}-seed={seed}-0000abcd"


def acc_of(depth: int, shortcut: bool, seed: int) -> float:
    return 0.9 - 0.01 * depth * (not shortcut) + 0.003 * seed + 0.001 * depth


def write_run(root: Path, depth: int, shortcut: bool, seed: int, status: str, wide_rows: bool = False) -> None:
    d = root / run_name(depth, shortcut, seed)
    if status == "missing":
        return
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"model": {"depth": depth, "shortcut": shortcut}, "train": {"seed": seed}})
    )
    summary = {"status": status, "step": 40, "total_steps": 40, "wall_time": 10.0 + seed}
    if status == "done":
        summary |= {
            "train_loss": 0.1 + seed / 100,
            "train_accuracy": 0.99 - seed / 100,
            "test_loss": 0.3 + depth / 100,
            "test_accuracy": acc_of(depth, shortcut, seed),
            "epochs": 1.5,
        }
    elif status == "failed":
        summary |= {"step": 7, "error": "RuntimeError: out of memory"}
    elif status == "diverged":
        summary |= {"step": 12, "message": "non-finite loss at step 12; last good checkpoint kept"}
    elif status == "running":
        summary = {"status": "running", "step": 20, "total_steps": 40}
        # Held by a live process (this one), as a training run holds its lock.
        (d / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    (d / "summary.json").write_text(json.dumps(summary))
    # Long per-layer lists make each row several KB, so the tail read must grow past one chunk.
    width = 2000 if wide_rows else 3
    rows = [
        {
            "step": s,
            "epoch": s / 27,
            "loss": 2.0 / (s + 1),
            "accuracy": 0.5,
            "lr": 0.1,
            "wall_time": float(s),
            "w_norm": [1.0] * width,
            "g_norm": [0.5] * width,
        }
        for s in range(0, 40, 5)
    ]
    if status == "diverged":
        rows[-1]["loss"] = "nan"  # how the run writer stores a non-finite loss
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if status == "done" and seed == 1:
        text += '{"step": 40, "loss": 0.0'  # a torn last line from a killed writer is skipped
    (d / "metrics.jsonl").write_text(text)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    root.mkdir()
    runs = []
    for depth, shortcut, seed in itertools.product([8, 14], [True, False], [0, 1, 2]):
        overrides = {"model.depth": depth, "model.shortcut": shortcut, "train.seed": seed}
        runs.append({"name": run_name(depth, shortcut, seed), "overrides": overrides})
        write_run(root, depth, shortcut, seed, ODD.get((depth, shortcut, seed), "done"), wide_rows=depth == 14)
    (root / "sweep.json").write_text(
        json.dumps({"spec": "experiments/sweep_depth.py", "size": "smoke", "varied": VARIED, "runs": runs})
    )
    return root


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_collect_statuses_and_values(sweep):
    rows = collect(sweep)
    assert len(rows) == 12 and [r["name"] for r in rows][:2] == [run_name(8, True, 0), run_name(8, True, 1)]
    got = by_name(rows)
    for (d, s, seed), status in ODD.items():
        assert got[run_name(d, s, seed)]["status"] == status
    assert sum(r["status"] == "done" for r in rows) == 8
    r = got[run_name(8, True, 0)]
    assert r["model.depth"] == 8 and r["model.shortcut"] is True and r["train.seed"] == 0
    assert r["test_accuracy"] == pytest.approx(acc_of(8, True, 0)) and r["step"] == 40 and r["wall_time"] == 10.0
    assert r["final_batch_loss"] == pytest.approx(2.0 / 36)  # last logged step 35
    assert got[run_name(8, True, 1)]["final_batch_loss"] == pytest.approx(2.0 / 36)  # torn line skipped
    assert got[run_name(14, True, 0)]["final_batch_loss"] == pytest.approx(2.0 / 36)  # multi-KB rows
    failed = got[run_name(14, False, 0)]
    assert failed["error"] == "RuntimeError: out of memory" and failed["test_accuracy"] is None and failed["step"] == 7
    diverged = got[run_name(14, False, 1)]
    assert "non-finite" in diverged["message"] and np.isnan(diverged["final_batch_loss"])
    missing = got[run_name(8, False, 2)]
    assert missing["step"] is None and missing["final_batch_loss"] is None
    running = got[run_name(14, True, 2)]
    assert running["step"] == 20 and running["wall_time"] is None and running["test_accuracy"] is None


def test_a_running_run_without_a_live_lock_reads_interrupted(sweep):
    lock = sweep / run_name(14, True, 2) / "lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))  # its trainer was killed
    assert by_name(collect(sweep))[run_name(14, True, 2)]["status"] == "interrupted"
    lock.unlink()
    assert by_name(collect(sweep))[run_name(14, True, 2)]["status"] == "interrupted"
    assert "1 interrupted" in report(sweep)


def test_aggregate_means_and_stds_match_numpy(sweep):
    rows = collect(sweep)
    agg = aggregate(rows, over="train.seed")
    assert [(g["model.depth"], g["model.shortcut"]) for g in agg] == [(8, False), (8, True), (14, False), (14, True)]
    assert all("train.seed" not in g for g in agg)
    g = {(g["model.depth"], g["model.shortcut"]): g for g in agg}
    full = g[(8, True)]
    accs = [acc_of(8, True, s) for s in range(3)]
    assert full["n"] == 3 and full["done"] == 3 and full["runs"] == 3
    assert full["test_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert full["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-12)  # sample std
    assert full["wall_time_mean"] == pytest.approx(11.0)
    partial = g[(14, False)]  # seed 0 failed, seed 1 diverged: only seed 2 counts
    assert (partial["n"], partial["done"], partial["failed"], partial["diverged"]) == (1, 1, 1, 1)
    assert partial["test_accuracy_mean"] == pytest.approx(acc_of(14, False, 2)) and partial["test_accuracy_std"] == 0.0
    assert g[(8, False)]["missing"] == 1 and g[(8, False)]["n"] == 2
    assert g[(14, True)]["running"] == 1 and g[(14, True)]["n"] == 2
    # The short name works for `over`, and over=None keeps every run its own group.
    assert aggregate(rows, over="seed") == agg
    assert len(aggregate(rows, over=None)) == 12
    # Grouping over depth instead: numeric sort puts shortcut=False first, then True (booleans).
    by_depth = aggregate(rows, over="depth")
    assert [(g["model.shortcut"], g["train.seed"]) for g in by_depth][:2] == [(False, 0), (False, 1)]


def test_aggregate_with_no_done_run(tmp_path):
    rows = [{"name": "a", "status": "failed", "model.depth": 8, "train.seed": 0, "test_accuracy": None}]
    (g,) = aggregate(rows)
    assert g["n"] == 0 and g["failed"] == 1 and g["test_accuracy_mean"] is None and g["test_accuracy_std"] is None


def test_report_writes_csvs_and_table(sweep):
    table = report(sweep)
    with open(sweep / "results.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 12
    assert list(runs[0])[:5] == ["name", "status", "model.depth", "model.shortcut", "train.seed"]
    assert {"test_accuracy", "final_batch_loss", "error", "message"} <= set(runs[0])
    assert runs[0]["model.shortcut"] == "true" and float(runs[0]["test_accuracy"]) == acc_of(8, True, 0)
    assert by_name(runs)[run_name(14, False, 0)]["error"] == "RuntimeError: out of memory"
    with open(sweep / "results_agg.csv", newline="") as f:
        agg_rows = list(csv.reader(f))
    header = agg_rows[0]
    assert header[:11] == [
        "model.depth",
        "model.shortcut",
        "n",
        "runs",
        "done",
        "diverged",
        "failed",
        "missing",
        "running",
        "interrupted",
        "test_accuracy_mean",
    ]
    assert len(agg_rows) == 5 and agg_rows[1][:3] == ["8", "false", "2"]
    mean = float(agg_rows[2][header.index("test_accuracy_mean")])
    assert mean == pytest.approx(np.mean([acc_of(8, True, s) for s in range(3)]), abs=1e-15)

    lines = table.splitlines()
    assert (
        lines[0].startswith("sweep_depth (smoke): 12 runs") and "train.seed" in lines[0]
    )  # no data.name in these configs
    assert lines[1].split()[:3] == ["depth", "shortcut", "test_accuracy"]
    assert "±" in table and "3/3 done" in table
    assert "1 done, 1 diverged, 1 failed" in table and "2 done, 1 missing" in table and "2 done, 1 running" in table
    assert "RuntimeError: out of memory" in table
    # Sorted numerically, not as text: depth 8 before 14.
    body = [l.split()[0] for l in lines[3:7]]
    assert body == ["8", "8", "14", "14"]


def test_report_sorts_many_rows_numerically(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    runs = []
    for lr in [0.003, 0.01, 0.1, 1.0, 0.03, 0.3]:
        for width in range(8, 200, 8):
            name = f"lr={lr:g}-width={width}"
            runs.append({"name": name, "overrides": {"optim.lr": lr, "model.width": width}})
            (root / name).mkdir()
            (root / name / "summary.json").write_text(
                json.dumps({"status": "done", "step": 1, "total_steps": 1, "test_accuracy": 0.5, "test_loss": 1.0})
            )
    (root / "sweep.json").write_text(json.dumps({"varied": ["optim.lr", "model.width"], "runs": runs}))
    table = report(root)
    lines = table.splitlines()[3 : 3 + len(runs)]
    keys = [(float(l.split()[0]), int(l.split()[1])) for l in lines]
    assert len(keys) == 144 and keys == sorted(keys)
    assert len({len(l) for l in lines}) == 1  # aligned columns
    assert "1/1 done" in lines[0] and "train.seed" not in table.splitlines()[0]  # no seed: nothing averaged


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_files_and_short_names(sweep):
    paths = plot_sweep(sweep, x="depth", y="test_accuracy", hue="shortcut")
    assert [p.name for p in paths] == [
        "test_accuracy_vs_depth_by_shortcut.png",
        "test_accuracy_vs_depth_by_shortcut.pdf",
    ]
    assert all(str(p.parent) == str(sweep / "plots") and os.path.getsize(p) > 1000 for p in paths)
    assert is_png(paths[0]) and paths[1].read_bytes()[:5] == b"%PDF-"
    # Dotted names, a categorical (boolean) x, no hue, log x.
    cat = plot_sweep(sweep, x="model.shortcut", y="test_loss", hue="model.depth")
    assert cat[0].name == "test_loss_vs_shortcut_by_depth.png" and is_png(cat[0])
    plain = plot_sweep(sweep, x="depth", y="final_batch_loss", log_x=True)
    assert plain[0].name == "final_batch_loss_vs_depth.png" and is_png(plain[0])


def test_categorical_x_draws_points_with_error_bars_and_no_line(sweep, monkeypatch):
    from matplotlib.axes import Axes

    calls = {"plot": 0, "errorbar": 0}
    for name in calls:
        original = getattr(Axes, name)

        def counted(self, *a, _name=name, _original=original, **kw):
            calls[_name] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(Axes, name, counted)
    plot_sweep(sweep, x="model.shortcut", y="test_loss", hue="model.depth")
    assert calls["plot"] == 0 and calls["errorbar"] > 0
    plot_sweep(sweep, x="depth", y="test_loss", hue="model.shortcut")
    assert calls["plot"] > 0  # a numeric x keeps its lines


def test_plot_panels_for_extra_varied_keys(tmp_path):
    # Varies lr too: x=depth, hue=shortcut leaves lr as panels rather than averaging over it.
    root = tmp_path / "s"
    root.mkdir()
    runs = []
    for depth, lr, shortcut, seed in itertools.product([8, 14, 20], [0.1, 0.3], [True, False], [0, 1]):
        name = f"d{depth}-lr{lr}-s{shortcut}-{seed}"
        runs.append(
            {
                "name": name,
                "overrides": {"model.depth": depth, "optim.lr": lr, "model.shortcut": shortcut, "train.seed": seed},
            }
        )
        (root / name).mkdir()
        (root / name / "summary.json").write_text(json.dumps({"status": "done", "test_accuracy": 0.5 + seed / 10}))
    (root / "sweep.json").write_text(
        json.dumps({"varied": ["model.depth", "optim.lr", "model.shortcut", "train.seed"], "runs": runs})
    )
    png, pdf = plot_sweep(root, x="depth", y="test_accuracy", hue="shortcut")
    assert is_png(png) and os.path.getsize(pdf) > 0


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs(sweep, tmp_path):
    msg = one_line_error(report, tmp_path)
    assert "is not a sweep directory (no sweep.json)" in msg and "--workdir" in msg
    assert "no sweep.json" in one_line_error(collect, tmp_path / "nope")
    assert "no sweep.json" in one_line_error(plot_sweep, tmp_path, x="depth", y="test_accuracy")
    msg = one_line_error(plot_sweep, sweep, x="width", y="test_accuracy")
    assert "'width'" in msg and "model.depth" in msg and "train.seed" in msg
    msg = one_line_error(plot_sweep, sweep, x="depth", y="accuracy")
    assert "'accuracy'" in msg and "test_accuracy" in msg and "final_batch_loss" in msg
    msg = one_line_error(plot_sweep, sweep, x="depth", y="test_accuracy", hue="colour")
    assert "'colour'" in msg and "model.shortcut" in msg
    assert "same key" in one_line_error(plot_sweep, sweep, x="depth", y="test_accuracy", hue="model.depth")
    assert "log_x" in one_line_error(plot_sweep, sweep, x="shortcut", y="test_accuracy", log_x=True)
    from normjax.sweep.plot import parse_refs

    for bad in ("0.94", "=0.94", "CNN=high", "CNN=nan"):
        assert "is not LABEL=Y with a finite number Y" in one_line_error(parse_refs, [bad])
    assert parse_refs(["a=b=1"]) == {"a=b": 1.0}
    assert is_png(plot_sweep(sweep, x="depth", y="test_accuracy", refs={"published": 0.5})[0])
    assert "'seeds'" in one_line_error(aggregate, collect(sweep), over="seeds")
    (sweep / "sweep.json").write_text("{not json")
    assert "sweep.json" in one_line_error(collect, sweep)


def test_plot_with_nothing_done(sweep):
    for d in sweep.iterdir():
        if (d / "summary.json").exists():
            (d / "summary.json").write_text(json.dumps({"status": "failed", "step": 0, "error": "boom"}))
    msg = one_line_error(plot_sweep, sweep, x="depth", y="test_accuracy")
    assert "nothing to plot" in msg and "11 failed" in msg and "1 missing" in msg


def test_ambiguous_short_name(tmp_path):
    root = tmp_path / "amb"
    root.mkdir()
    runs = [{"name": f"r{i}", "overrides": {"model.width": i, "data.width": i, "train.seed": 0}} for i in (1, 2)]
    (root / "sweep.json").write_text(json.dumps({"varied": ["model.width", "data.width", "train.seed"], "runs": runs}))
    msg = one_line_error(plot_sweep, root, x="width", y="test_accuracy")
    assert "ambiguous" in msg and "model.width" in msg and "data.width" in msg


def test_hook_summaries_become_columns(sweep):
    """Values a metric hook adds to summary.json (here the ELR hook's) are collected, averaged, shown."""
    for d in sweep.iterdir():
        f = d / "summary.json"
        if f.exists() and json.loads(f.read_text())["status"] == "done":
            s = json.loads(f.read_text())
            s["elr_log_spread"] = s["train.seed"] if "train.seed" in s else float(d.name.split("seed=")[1][0])
            f.write_text(json.dumps(s))
    rows = collect(sweep)
    assert sum(r.get("elr_log_spread") is not None for r in rows) == 8  # the done runs
    g = next(g for g in aggregate(rows) if g["model.depth"] == 8 and g["model.shortcut"] is True)
    assert (
        g["n"] == 3 and g["elr_log_spread_mean"] == pytest.approx(1.0) and g["elr_log_spread_std"] == pytest.approx(1.0)
    )
    table = report(sweep)
    assert "elr_log_spread" in table.splitlines()[1] and "1.0000 ± 1.0000" in table


def write_done(root: Path, name: str, config: dict, acc: float) -> None:
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "summary.json").write_text(
        json.dumps({"status": "done", "step": 10, "test_accuracy": acc, "test_loss": 1.0 - acc, "train_accuracy": acc})
    )


def lr_invocation(root: Path, epochs: float, seeds: list[int], tag: str, done: bool = True) -> dict:
    """This invocation's manifest (as run_sweep builds it); its runs written as done (or not at all)."""
    overrides = [] if epochs == 1.0 else [f"train.epochs={epochs:g}"]
    runs = []
    for seed in seeds:
        name = f"lr=0.1-seed={seed}-{tag}"  # the label repeats, the config hash differs
        runs.append({"name": name, "overrides": {"optim.lr": 0.1, "train.seed": seed}})
        if done:
            write_done(
                root,
                name,
                {"optim": {"lr": 0.1}, "train": {"seed": seed, "epochs": epochs}},
                0.5 + epochs / 10 + seed / 100,
            )
    return {
        "spec": "experiments/sweep_lr.py",
        "size": "smoke",
        "overrides": overrides,
        "varied": ["optim.lr", "train.seed"],
        "runs": runs,
    }


def test_rerun_with_another_set_groups_apart_and_keeps_both_invocations(tmp_path):
    root = tmp_path / "lr"
    root.mkdir()
    manifest = merge_manifest(None, lr_invocation(root, 1.0, [0, 1], "aaaa1111"))
    manifest = merge_manifest(manifest, lr_invocation(root, 5.0, [0, 1], "bbbb2222"))
    (root / "sweep.json").write_text(json.dumps(manifest))
    assert [i["overrides"] for i in manifest["invocations"]] == [[], ["train.epochs=5"]]
    assert [r["set"] for r in manifest["runs"]] == [[], [], ["train.epochs=5"], ["train.epochs=5"]]

    agg = aggregate(collect(root))
    assert [(g["optim.lr"], g["train.epochs"], g["runs"], g["done"]) for g in agg] == [
        (0.1, 1.0, 2, 2),
        (0.1, 5.0, 2, 2),
    ]
    assert agg[0]["test_accuracy_mean"] == pytest.approx(0.6 + 0.005)
    assert agg[0]["test_accuracy_std"] == pytest.approx(np.std([0.6, 0.61], ddof=1))
    lines = report(root).splitlines()
    assert "train.epochs" in lines[1] and lines[2].split()[:3] == ["lr", "epochs", "test_accuracy"]
    assert [l.split()[:2] for l in lines[4:6]] == [["0.1", "1"], ["0.1", "5"]]
    assert "2/2 done" in lines[4] and "4/4" not in "\n".join(lines)


def test_legacy_manifest_is_grouped_by_config_files(tmp_path):
    # A sweep.json from before `invocations`: only config.json tells the runs apart; the later
    # run used other seeds, so the seed would pool them if it were not excluded from the test.
    root = tmp_path / "lr"
    root.mkdir()
    old, new = lr_invocation(root, 1.0, [0, 1], "aaaa1111"), lr_invocation(root, 5.0, [2, 3], "bbbb2222")
    (root / "sweep.json").write_text(json.dumps({**new, "runs": old["runs"] + new["runs"]}))
    agg = aggregate(collect(root))
    assert [(g["train.epochs"], g["runs"]) for g in agg] == [(1.0, 2), (5.0, 2)]
    # Averaging over nothing, the seeds tell every run apart: no column is needed.
    rows = collect(root, over=None)
    assert "train.epochs" not in rows[0] and len(aggregate(rows, over=None)) == 4


def test_missing_runs_take_their_set_values(tmp_path):
    root = tmp_path / "lr"
    root.mkdir()
    manifest = merge_manifest(None, lr_invocation(root, 1.0, [0, 1], "aaaa1111"))
    manifest = merge_manifest(manifest, lr_invocation(root, 5.0, [0, 1], "bbbb2222", done=False))
    (root / "sweep.json").write_text(json.dumps(manifest))
    agg = aggregate(collect(root))
    assert [(g["train.epochs"], g["done"], g["missing"]) for g in agg] == [(1.0, 2, 0), (5.0, 0, 2)]


def test_settings_a_varied_key_determines_are_no_columns(tmp_path):
    # A bundle label (data.task) stands for data.name; `pretrain` runs start from a base run per
    # seed. Neither separates anything the varied keys do not: no extra column.
    root = tmp_path / "apl"
    root.mkdir()
    runs = []
    for task, seed in itertools.product(["digits", "hard"], [0, 1]):
        name = f"task={task}-seed={seed}"
        runs.append({"name": name, "overrides": {"data.task": task, "train.seed": seed}})
        write_done(
            root,
            name,
            {
                "data": {"name": "digits" if task == "digits" else "synthetic"},
                "train": {"seed": seed, "init_from": str(root / "pretrain" / f"base-{task}{seed}")},
            },
            0.9,
        )
    (root / "sweep.json").write_text(json.dumps({"varied": ["data.task", "train.seed"], "runs": runs}))
    rows = collect(root)
    assert [k for k in rows[0] if "." in k] == ["data.task", "train.seed"]
    assert [(g["data.task"], g["runs"]) for g in aggregate(rows)] == [("digits", 2), ("hard", 2)]


def test_merge_manifest_keeps_runs_once_and_reads_old_manifests():
    legacy = {
        "spec": "a.py",
        "size": "smoke",
        "overrides": ["x.y=1"],
        "varied": ["optim.lr"],
        "runs": [{"name": "r1", "overrides": {"optim.lr": 0.1}}],
    }
    new = {
        "spec": "b.py",
        "size": "full",
        "overrides": [],
        "varied": ["model.depth"],
        "runs": [{"name": "r1", "overrides": {"optim.lr": 0.1}}, {"name": "r2", "overrides": {"model.depth": 8}}],
    }
    before = json.dumps([legacy, new])
    m = merge_manifest(legacy, new)
    assert json.dumps([legacy, new]) == before  # the arguments are left as they were
    assert m["invocations"] == [
        {"spec": "a.py", "size": "smoke", "overrides": ["x.y=1"]},
        {"spec": "b.py", "size": "full", "overrides": []},
    ]
    assert m["runs"] == [
        {"name": "r1", "overrides": {"optim.lr": 0.1}, "set": []},
        {"name": "r2", "overrides": {"model.depth": 8}, "set": []},
    ]
    assert m["varied"] == ["optim.lr", "model.depth"] and (m["spec"], m["size"], m["overrides"]) == ("b.py", "full", [])
    again = merge_manifest(m, new)  # the same invocation again adds nothing
    assert again["invocations"] == m["invocations"] and again["runs"] == m["runs"]
    assert merge_manifest(None, new)["invocations"] == [{"spec": "b.py", "size": "full", "overrides": []}]
