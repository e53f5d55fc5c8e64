"""The APL study end to end on a tiny sweep: the in-step hook against the checkpoint, regimes
(during, after from a shared base, from half-way), `normjax apl`, `normjax eval` after hard
linearization, and the figures."""

import json
from pathlib import Path

import pytest

from normjax.cli import run as cli_run
from normjax.errors import UserError
from normjax.studies.apl.baselines import count_params, matched_width_mult
from normjax.studies.apl.figures import apl_figures
from normjax.studies.apl.nonlinear_units import run_apl
from normjax.studies.apl.report import fill_tasks, sweep_section
from normjax.sweep.plot import plot_sweep
from normjax.sweep.results import collect
from normjax.sweep.runner import run_sweep
from normjax.training.loop import evaluate_run
from normjax.training.rundir import RunDir

ROOT = Path(__file__).parents[1]
SWEEP = """
def get_sweep(size):
    return {"base": "%s",
            "grid": {"data.task": [{"name": "digits", "data.name": "digits"}],
                     "train.regime": [{"name": "during", "train.init_from": ""},
                                      {"name": "after", "train.init_from": "pretrain", "train.steps": 12},
                                      {"name": "from_half", "train.init_from": "", "optim.prelu_start": 0.5}],
                     "optim.prelu_l1": [0.5, 4.0]},
            "set": {"model.depth": 3, "model.width": 16, "model.activation": "prelu", "optim.name": "sgd_prelu_l1",
                    "optim.lr": 0.1, "train.steps": 24, "train.batch_size": 64, "train.steps_per_dispatch": 4,
                    "log.metrics": ["apl"], "log.dense_steps": 4, "log.every": 4, "checkpoint.every": 12},
            "pretrain": {"optim.prelu_l1": 0.0, "train.steps": 24}}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("apl")
    spec = d / "sweep_apl_t.py"
    spec.write_text(SWEEP % (ROOT / "experiments" / "mlp_digits.py"))
    results = run_sweep(spec, workdir=d / "w")
    assert len(results) == 6 and all(s["status"] == "done" for s in results.values()), results
    return d / "w", results


def _runs(sweep_dir, regime):
    return sorted(p for p in sweep_dir.iterdir() if p.name.startswith(f"task=digits-regime={regime}-"))


def test_hook_matches_the_checkpoint_and_summary(sweep):
    sweep_dir, results = sweep
    for name, summary in results.items():
        rows = list(RunDir(sweep_dir / name).read_metrics())
        last = rows[-1]
        report = run_apl(sweep_dir / name)  # from the checkpoint, read-only
        # The hook measures w_{t+1} on the last step: the final parameters the checkpoint holds.
        assert last["nl_count"] == report["counts"] and len(report["counts"]) == 3
        assert summary["apl"] == last["apl"] == pytest.approx(report["apl"], abs=1e-6)
        assert summary["nonlinear_units"] == report["nonlinear_units"] == sum(report["counts"])
        assert summary["apl_unnormalized"] == pytest.approx(report["apl_unnormalized"], rel=1e-5)
        assert summary["effective_width"] == pytest.approx(report["effective_width"])
        assert last["prelu_frozen"] == report["units"] - report["nonlinear_units"]
    graph = json.loads((sweep_dir / name / "graph.json").read_text())
    assert [n["name"] for n in graph] == ["input", "fc0", "fc1", "fc2", "logits"]


def test_regimes_order_the_sparsity(sweep):
    sweep_dir, results = sweep
    apl = {r: [results[p.name]["apl"] for p in _runs(sweep_dir, r)] for r in ("during", "after", "from_half")}
    assert all(len(v) == 2 for v in apl.values())
    for regime, (weak, strong) in apl.items():  # λ = 0.5, 4.0 in name order
        assert strong < weak <= 3.0, regime
    assert min(apl["during"]) < 3.0  # the prior linearized units
    # From half-way: the first half logs every unit nonlinear (the prior is off), then units freeze.
    rows = list(RunDir(_runs(sweep_dir, "from_half")[1]).read_metrics())
    assert all(r["prelu_frozen"] == 0 for r in rows if r["step"] < 11)
    assert rows[-1]["prelu_frozen"] > 0
    # After: every "after" run started from the one base run (trained once).
    bases = list((sweep_dir / "pretrain").iterdir())
    assert len(bases) == 1
    assert {json.loads((p / "config.json").read_text())["train"]["init_from"] for p in _runs(sweep_dir, "after")} == {
        str(bases[0])
    }


def test_eval_shows_hard_linearization_and_apl_command(sweep, capsys):
    sweep_dir, _ = sweep
    run = _runs(sweep_dir, "during")[0]
    res = evaluate_run(run)
    lin = res["linearized"]
    assert lin["tolerance"] == 0.01 and lin["units"] == 48
    assert set(res) >= {"test_accuracy", "train_accuracy"} and 0 <= lin["test_accuracy"] <= 1
    assert lin["apl"] == run_apl(run)["apl"]
    assert cli_run(["apl", str(run)]) == 0
    out = capsys.readouterr().out
    assert "APL (normalized)" in out and "fc0" in out and f"/{16}" in out
    assert cli_run(["apl", str(sweep_dir), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all("apl_unnormalized" in json.loads(x) for x in lines)
    with pytest.raises(UserError, match="tolerance"):
        run_apl(run, tolerance=2.0)


def test_figures_and_table(sweep, tmp_path):
    sweep_dir, results = sweep
    paths = apl_figures(sweep_dir, out=tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [f"{s}.{e}" for s in ("accuracy_vs_apl", "core_profile", "core_size", "advantage_gap") for e in ("png", "pdf")]
        + ["apl_table.csv"]
    )
    # Each figure is titled with the sweep's size, data and seeds; a panel by its dataset, not "all".
    section = sweep_section(sweep_dir, {})
    assert section["title"] == "sweep_apl_t (smoke; data digits), 1 seed"
    rows = [{k: v for k, v in r.items() if k != "data.task"} for r in collect(sweep_dir)]
    assert {r["data.task"] for r in fill_tasks(sweep_dir, rows)} == {"digits"}  # a sweep without a task bundle
    assert list(section["tasks"]) == ["digits"] and section["tasks"]["digits"]["test_examples"] == 360
    table = (tmp_path / "apl_table.csv").read_text().strip().splitlines()
    assert len(table) == 1 + len(results)
    with pytest.raises(UserError, match="not a sweep"):
        apl_figures(tmp_path)
    # The generic sweep plot takes the hook's summary values as axes: x = reached APL.
    shown = plot_sweep(sweep_dir, x="apl", y="test_accuracy", hue="train.regime")
    assert [p.name for p in shown] == ["test_accuracy_vs_apl_by_regime.png", "test_accuracy_vs_apl_by_regime.pdf"]
    assert plot_sweep(sweep_dir, x="optim.prelu_l1", y="apl", hue="regime")[0].name == "apl_vs_prelu_l1_by_regime.png"
    with pytest.raises(UserError, match="panel"):
        plot_sweep(sweep_dir, x="optim.prelu_l1", y="apl", panel="regime")


def test_matched_width():
    target = {"name": "resnet", "depth": 8, "width": 8}
    m = matched_width_mult({"name": "plain_cnn", "depth": 4, "width": 8}, target)
    n, t = count_params({"name": "plain_cnn", "depth": 4, "width": 8, "width_mult": m}), count_params(target)
    for other in (m - 1 / 8, m + 1 / 8):  # the closest integer width
        assert abs(n - t) <= abs(count_params({"name": "plain_cnn", "depth": 4, "width": 8, "width_mult": other}) - t)


@pytest.mark.parametrize("sweep_file", ["sweep_apl_targets.py", "sweep_apl_sparsity.py"])
@pytest.mark.parametrize("size", ["medium", "mnist1d", "fmnist_conv"])
def test_the_after_regime_is_a_fair_continuation(sweep_file, size):
    """Issue 31: "after" continues the trained base with no warm-up restart, on the during runs' LR
    schedule, and gets as many steps after its target is met as "during" gets after its own (same
    length, same ramp of the target, in fractions of the run)."""
    from normjax.sweep.spec import expand

    runs, _ = expand(ROOT / "experiments" / sweep_file, size)
    by_regime = {}
    for r in runs:
        by_regime.setdefault(r.overrides["train.regime"], []).append(r.config)
    assert set(by_regime) == {"during", "after"}
    for during, after in zip(by_regime["during"], by_regime["after"]):
        o, t = after["optim"], after["train"]
        assert after["train"]["init_from"] == "pretrain" and during["train"]["init_from"] == ""
        assert o["warmup_steps"] == 0 < during["optim"]["warmup_steps"]
        assert (o["schedule"], o["lr"]) == (during["optim"]["schedule"], during["optim"]["lr"])
        assert t["epochs"] == during["train"]["epochs"] and t["steps"] == during["train"]["steps"] == 0
        ramp_end = lambda c: c["optim"]["prelu_start"] + c["optim"]["prelu_ramp"]
        assert ramp_end(after) == ramp_end(during) and ramp_end(during) < 1
        if sweep_file == "sweep_apl_targets.py":  # the target falls over a span of the run
            assert during["optim"]["prelu_ramp"] >= 0.25
