"""The APL report end to end on a seeded smoke sweep of the nonlinear synthetic task (parity: no
linear classifier beats chance, by construction), with its baselines: the collapse's direction
(all-linear far below unsparsified), the hook against the controller's count, the report's
numbers against the runs they come from, folding, and the figures."""

import json
from pathlib import Path

import numpy as np
import pytest

from normjax.cli import run as cli_run
from normjax.errors import UserError
from normjax.studies.apl.report import JSON_NAME, collapse_apl, report
from normjax.sweep.results import collect
from normjax.sweep.runner import run_sweep
from normjax.training.rundir import RunDir

ROOT = Path(__file__).parents[1]
PARITY = {
    "name": "parity",
    "data.name": "synthetic",
    "data.synthetic.task": "parity",
    "data.synthetic.num_classes": 4,
    "data.synthetic.difficulty": 0.5,
    "data.synthetic.image_shape": [8, 8, 1],
    "data.synthetic.num_train": 4096,
    "data.synthetic.num_test": 1024,
}
COMMON = {
    "model.name": "mlp",
    "model.depth": 3,
    "model.width": 64,
    "model.shortcut": False,
    "train.epochs": 0.0,
    "train.batch_size": 64,
    "train.steps_per_dispatch": 50,
    "optim.warmup_steps": 20,
    "log.every": 100,
    "checkpoint.every": 400,
}
TARGETS = """
def get_sweep(size):
    return {"base": %r,
            "grid": {"data.task": [%r],
                     "train.regime": [{"name": "during", "train.init_from": "", "train.steps": 400},
                                      {"name": "after", "train.init_from": "pretrain", "train.steps": 200}],
                     "optim.prelu_target": [0.5, 0.0], "train.seed": [0, 1]},
            "set": %r | {"optim.name": "sgd_prelu_target", "optim.prelu_l1": 0.01, "optim.prelu_gain": 0.1,
                         "optim.prelu_min_rate": 0.1},
            "pretrain": {"optim.prelu_target": 1.0, "train.steps": 400}}
"""
BASELINES = """
LINEAR = {"name": "linear", "model.width": 64, "model.activation": "prelu", "model.prelu_init": 1.0,
          "optim.name": "sgd_prelu_l1"}
def get_sweep(size):
    return {"base": %r,
            "grid": {"train.seed": [0, 1]},
            "zip": {"data.task": [%r] * 4,
                    "model.baseline": [{"name": "equal_width"}, {"name": "equal_width"}, {"name": "equal_width"}, LINEAR],
                    "model.depth": [1, 2, 3, 1]},
            "set": %r | {"model.activation": "relu", "optim.name": "sgd", "optim.prelu_l1": 0.0, "train.steps": 400}}
"""
CHANCE = 0.25


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    d = tmp_path_factory.mktemp("aplrep")
    base = str(ROOT / "experiments" / "apl_resnet.py")
    (d / "sweep_t.py").write_text(TARGETS % (base, PARITY, COMMON))
    (d / "sweep_b.py").write_text(BASELINES % (base, PARITY, COMMON))
    for name in ("t", "b"):
        results = run_sweep(d / f"sweep_{name}.py", workdir=d / name)
        assert all(s["status"] == "done" for s in results.values()), results
    return d / "t", d / "b"


def test_collapse_apl_walks_down_from_the_largest_apl():
    assert collapse_apl([4.0, 2.0, 0.0], [0.9, 0.8, 0.3], 0.55) == pytest.approx(1.0)
    assert collapse_apl([0.0, 4.0, 2.0], [0.3, 0.9, 0.8], 0.55) == pytest.approx(1.0)  # any order
    assert collapse_apl([4.0, 2.0], [0.9, 0.8], 0.5) is None  # never below: no collapse seen
    assert collapse_apl([4.0, 2.0], [0.4, 0.3], 0.5) == 4.0  # below from the start


def test_all_linear_is_far_below_unsparsified_on_parity(sweeps):
    targets, _ = sweeps
    rows = [r for r in collect(targets) if r["optim.prelu_target"] == 0.0]
    assert len(rows) == 4 and all(r["nonlinear_units"] == 0 and r["apl"] == 0 for r in rows)
    bases = [json.loads(p.read_text()) for p in (targets / "pretrain").glob("*/summary.json")]
    assert len(bases) == 2
    for b in bases:  # parity: a nonlinear net learns it, a linear one cannot beat chance
        assert b["test_accuracy"] > CHANCE + 0.5
    for r in rows:
        assert r["test_accuracy"] < CHANCE + 0.1
        assert min(b["test_accuracy"] for b in bases) - r["test_accuracy"] > 0.4


def test_the_hook_counts_what_the_controller_froze(sweeps):
    targets, _ = sweeps
    for r in collect(targets):
        rows = [m for m in RunDir(targets / r["name"]).read_metrics() if "nonlinear_units" in m]
        assert rows and all(m["nonlinear_units"] == 192 - m["prelu_frozen"] for m in rows), r["name"]
        keep = round(r["optim.prelu_target"] * 192)
        assert r["nonlinear_units"] == keep  # reached, never below: the controller does not overshoot


def test_report_numbers_come_from_the_runs(sweeps, tmp_path):
    targets, baselines = sweeps
    res = report([targets], baselines=baselines, out=tmp_path, fold=True)
    saved = json.loads((tmp_path / JSON_NAME).read_text())
    assert saved["sweeps"][0]["setting"] == "optim.prelu_target"
    t = saved["sweeps"][0]["tasks"]["parity"]
    bases = [json.loads(p.read_text()) for p in sorted((targets / "pretrain").glob("*/summary.json"))]
    assert t["unsparsified"]["mean"] == pytest.approx(np.mean([b["test_accuracy"] for b in bases]))
    lin = [r["test_accuracy"] for r in collect(baselines) if r["model.baseline"] == "linear"]
    assert t["linear_classifier"]["n"] == 2 and t["linear_classifier"]["mean"] == pytest.approx(np.mean(lin))
    assert t["linear_classifier"]["mean"] < CHANCE + 0.1
    assert t["halfway"] == pytest.approx((t["unsparsified"]["mean"] + t["linear_classifier"]["mean"]) / 2)
    rows = [r for r in collect(targets) if r["status"] == "done"]
    for regime, e in t["regimes"].items():
        assert [p["setting"] for p in e["points"]] == [0.5, 0.0]
        for p in e["points"]:
            accs = [
                r["test_accuracy"]
                for r in rows
                if r["train.regime"] == regime and r["optim.prelu_target"] == p["setting"]
            ]
            assert p["test_accuracy"]["n"] == 2 and p["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
            assert p["test_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
        # the all-linear point is far below halfway: the collapse lies between the last two points
        assert e["collapse_apl"] is not None and 0.0 <= e["collapse_apl"] <= e["points"][0]["apl"]["mean"]
        assert len(e["collapse_apl_per_seed"]) == 2 and all(c is not None for c in e["collapse_apl_per_seed"])
        assert {"equal_width"} == {k for k in e["vs_baselines"][0] if k not in ("setting", "apl", "test_accuracy")}
        for p in e["points"]:  # the step each run's count reached its final value, from its log
            met = []
            for r in rows:
                if r["train.regime"] == regime and r["optim.prelu_target"] == p["setting"]:
                    log = [m for m in RunDir(targets / r["name"]).read_metrics() if "prelu_frozen" in m]
                    met.append(next(m["step"] for m in log if m["prelu_frozen"] == log[-1]["prelu_frozen"]))
            assert p["met_step"]["mean"] == pytest.approx(np.mean(met)) and max(met) < 400
    (g0, g1) = t["gap"]
    for g in (g0, g1):
        d = g["matched_apl"]
        if g["gap_matched_apl"] is not None:
            assert d["difference"] == g["gap_matched_apl"] and d["decided"] == (abs(d["z"]) > 2)
            assert d["detectable"] == pytest.approx(2 * g["stderr_matched_apl"])
    after, during = (t["regimes"][k]["points"][0]["test_accuracy"] for k in ("after", "during"))
    assert g0["gap"] == pytest.approx(after["mean"] - during["mean"])
    assert g0["stderr"] == pytest.approx(np.sqrt(after["std"] ** 2 / 2 + during["std"] ** 2 / 2))
    d_pts = sorted(t["regimes"]["during"]["points"], key=lambda p: p["apl"]["mean"])
    xs, ys = [p["apl"]["mean"] for p in d_pts], [p["test_accuracy"]["mean"] for p in d_pts]
    for g, a in zip((g0, g1), t["regimes"]["after"]["points"]):
        x = a["apl"]["mean"]
        across = xs[0] < x < xs[-1] and (ys[0] - t["halfway"]) * (ys[-1] - t["halfway"]) < 0
        if xs[0] <= x <= xs[-1] and not across:  # the during curve read at the after run's APL
            assert g["gap_matched_apl"] == pytest.approx(a["test_accuracy"]["mean"] - np.interp(x, xs, ys))
        else:  # outside the during APLs, or a straight line across the collapse: no number
            assert g["gap_matched_apl"] is None
    assert g1["gap_matched_apl"] == pytest.approx(g1["gap"])  # all-linear: APL 0 in both regimes
    assert saved["sweeps"][0]["missed_target"] == [] and saved["sweeps"][0]["diverged"] == []
    assert [b["depth"] for b in t["baselines"]["equal_width"]] == [1, 2, 3] and "linear" not in t["baselines"]
    # folded: the all-linear MLP is one dense layer, with the linearized net's accuracy
    folded = {(f["train.regime"], f["nonlinear_units"]): f for f in t["folded"]}
    assert len(t["folded"]) == 4
    for regime in ("during", "after"):
        lin = folded[(regime, 0.0)]
        assert lin["folded"]["depth"] == 1 and lin["folded"]["nonlinear_nodes"] == 0
        assert lin["accuracy"]["folded"] == lin["accuracy"]["linearized"] and lin["max_rel_deviation"] < 1e-4
        assert folded[(regime, 96.0)]["folded"]["nonlinear_nodes"] == 3
    names = sorted(p.name for p in res["figures"])
    assert names == sorted(f"t_{s}.{e}" for s in ("collapse", "gap", "core", "vs_baselines") for e in ("png", "pdf"))


def test_cli_prints_the_headlines_and_bad_input_is_one_line(sweeps, tmp_path, capsys):
    targets, baselines = sweeps
    assert cli_run(["apl-report", str(targets), "--baselines", str(baselines), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "t parity: unsparsified" in out and "collapse at APL" in out and "after - during" in out
    with pytest.raises(UserError, match="not a sweep directory"):
        report([tmp_path], out=tmp_path / "x")
    with pytest.raises(UserError, match="--baselines .* is not a sweep directory"):
        report([targets], baselines=tmp_path, out=tmp_path / "x")
    with pytest.raises(UserError, match="varies none of"):
        report([baselines], out=tmp_path / "x")
