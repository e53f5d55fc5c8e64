"""Run and sweep directories: a run that training wrote reads back through `RunDir`, the files on
disk keep their names, and no module but `normjax/training/rundir.py` spells those names."""

import ast
import json
import os
from pathlib import Path

import pytest

from helpers import small_config
from normjax.sweep.results import load_sweep
from normjax.training.inputs import input_for
from normjax.training.loop import program_for, train
from normjax.training.rundir import RunDir, SweepDir

OWNER = Path("normjax/training/rundir.py")
# The names only the owner spells: files (any string equal to one, or a path ending in one) ...
FILE_NAMES = (
    "config.json",
    "layers.json",
    "graph.json",
    "metrics.jsonl",
    "summary.json",
    "error.txt",
    "sweep.json",
    "results.csv",
    "results_agg.csv",
)
# ... and folders and the lock, whose names are common words: flagged where they are joined to a path.
JOINED_NAMES = ("lock", "checkpoints", "figures", "plots", "pretrain")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = small_config(train={"steps": 24}, checkpoint={"every": 8})
    path = tmp_path_factory.mktemp("rundir") / "run"
    return cfg, path, train(cfg, path, progress=False)


def test_training_writes_the_layout(trained):
    _, path, summary = trained
    assert summary["status"] == "done"
    assert sorted(os.listdir(path)) == [
        "checkpoints",
        "config.json",
        "graph.json",
        "layers.json",
        "metrics.jsonl",
        "summary.json",
    ]
    run = RunDir(path)
    assert run.is_run() and run.checkpoints.is_dir() and not run.lock_path.exists()
    assert (run.config_path.name, run.metrics_path.name, run.figures.name) == (
        "config.json",
        "metrics.jsonl",
        "figures",
    )


def test_a_trained_run_reads_back(trained):
    cfg, path, summary = trained
    run = RunDir(path)
    assert run.read_config() == run.read_config(as_written=True) == json.loads(json.dumps(cfg))
    assert run.read_summary() == json.loads(json.dumps(summary))
    layers = run.read_layers()
    assert [l["name"] for l in layers] == ["fc0", "fc1", "fc2", "head"]
    assert set(layers[0]) == {"name", "depth", "scale_invariant", "projection"}
    program = program_for(cfg, input_for(cfg))
    assert run.read_graph() == program.graph  # graph.json round-trips to the model's Graph
    rows = list(run.read_metrics())
    assert [r["step"] for r in rows] == list(range(10)) + [14, 19, 23]  # the log cadence
    assert len(rows[0]["w_norm"]) == len(layers)
    assert run.last_metric("loss") == rows[-1]["loss"]
    assert run.last_metric("no_such_metric") is None


def test_absent_files_read_as_none(tmp_path):
    run = RunDir(tmp_path / "nothing")
    assert not run.is_run()
    assert run.read_summary() is run.read_layers() is run.read_graph() is None
    assert list(run.read_metrics()) == [] and run.last_metric("loss") is None
    sweep = SweepDir(tmp_path)
    assert not sweep.is_sweep() and sweep.read_manifest() is None


def test_metrics_skip_a_torn_line_and_read_past_long_rows(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.append_metrics([{"step": 0, "loss": 2.5}, {"step": 1, "elr": [0.1] * 8000}])  # row 2: ~40 KB
    with run.metrics_path.open("a") as f:
        f.write('{"step": 2, "loss": 1.')  # a writer killed mid-line
    assert [r["step"] for r in run.read_metrics()] == [0, 1]
    assert run.last_metric("loss") == 2.5  # past the torn line and the first 16 KB tail
    run.trim_metrics(2)  # a resume from step 2 drops the torn line
    assert [r["step"] for r in run.read_metrics()] == [0, 1]
    run.append_metrics([{"step": 2, "loss": float("inf")}])
    assert run.last_metric("loss") == "inf"  # as logged: JSON has no inf


def test_sweep_dir_layout_and_manifest(tmp_path):
    sweep = SweepDir(tmp_path / "sweep")
    sweep.path.mkdir()
    meta = {"spec": "s.py", "size": "smoke", "varied": ["optim.lr"], "runs": [{"name": "a", "overrides": {}}]}
    sweep.write_manifest(meta)
    assert sweep.is_sweep() and sweep.read_manifest() == meta
    assert load_sweep(tmp_path / "sweep") == (sweep.path, meta)
    assert sorted(os.listdir(sweep.path)) == ["sweep.json"]
    assert sweep.run("a").path == sweep.path / "a"
    assert sweep.base_run("base-1").path == sweep.path / "pretrain" / "base-1"
    names = [p.name for p in (sweep.results_path, sweep.results_agg_path, sweep.plots, sweep.figures, sweep.pretrain)]
    assert names == ["results.csv", "results_agg.csv", "plots", "figures", "pretrain"]


def _spellings(source: str) -> list[str]:
    """`line: name` for each place the source spells a run or sweep directory's file name."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in FILE_NAMES:
                v = node.value
                if v == name or v.endswith("/" + name) or v.startswith(name + "."):
                    found.append(f"{node.lineno}: {name}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in JOINED_NAMES + FILE_NAMES:
                found.append(f"{node.lineno}: {right.value}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("join", "joinpath", "with_name"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and arg.value in JOINED_NAMES:
                    found.append(f"{node.lineno}: {arg.value}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_the_spelling_check_sees_spellings():
    source = (
        'cfg = json.loads((path / "config.json").read_text())\n'
        'ckpt = run / "checkpoints"\n'
        'tmp = p.with_name(f"metrics.jsonl.{pid}.tmp")\n'
        'res["figures"] = []\n'  # a dict key, not a folder
        '"""A run has config.json."""\n'  # prose, not a spelling
    )
    assert _spellings(source) == ["1: config.json", "2: checkpoints", "3: metrics.jsonl"]


def test_only_rundir_spells_the_layout():
    root = Path(__file__).resolve().parents[1]
    offenders = {}
    for path in sorted((root / "normjax").rglob("*.py")):
        rel = path.relative_to(root)
        if rel == OWNER:
            continue
        found = _spellings(path.read_text())
        if found:
            offenders[str(rel)] = found
    assert not offenders, f"run/sweep directory names spelled outside {OWNER} (use RunDir/SweepDir): {offenders}"
