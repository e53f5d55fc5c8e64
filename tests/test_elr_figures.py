"""ELR figures of a run and a sweep, on hand-written run directories (no training)."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from normjax.errors import UserError
from normjax.metrics import mean_log_spread
from normjax.studies.elr.figures import elr_plot_main, read_run, run_figures, sweep_figures

LAYERS = [
    {"name": "conv0", "depth": 0, "scale_invariant": True},
    {"name": "conv1", "depth": 1, "scale_invariant": True},
    {"name": "dense", "depth": 2, "scale_invariant": False},
]
DENSE = 20
STEPS = list(range(DENSE)) + list(range(DENSE, DENSE + 50, 5))  # 30 logged rows: dense, then every 5


def elr_rows(lr: float, shortcut: bool, seed: int, diverge_at: int | None = None) -> list[dict]:
    """Rows whose ELRs relax like E_l(t) = (E_l(0)^-2 + 2t)^-1/2, the gradient-flow solution."""
    e0 = [lr * (2.0 if shortcut else 30.0), lr, lr * 0.5 * (1 + seed / 10)]
    rows = []
    for t in STEPS:
        if diverge_at is not None and t > diverge_at:
            break
        e = [(x**-2 + 2 * t) ** -0.5 for x in e0]
        spread = max(e[:2]) / min(e[:2])
        row = {
            "step": t,
            "epoch": t / 50,
            "wall_time": 0.01 * t,
            "loss": 2.0 / (t + 1),
            "accuracy": 0.5,
            "lr": lr,
            "w_norm": [1.0 + t / 10] * 3,
            "g_norm": [x / lr for x in e],
            "base_grad": [0.3] * 3,
            "layer_lr": [lr] * 3,
            "elr": e,
            "elr_classic": [lr / 4] * 3,
            "rel_step": e,
            "cos_gw": [0.0, 0.0, 0.2],
            "elr_spread": spread,
            "elr_log_std": abs(math.log10(e[0] / e[1])) / 2,
        }
        rows.append(row)
    if diverge_at is not None:
        rows[-1] |= {"loss": "nan", "elr": ["nan", "nan", "inf"], "elr_spread": "nan", "elr_log_std": "nan"}
    rows[3]["elr"] = [rows[3]["elr"][0], "nan", rows[3]["elr"][2]]  # a non-finite value in the middle
    return rows


def write_run(
    d: Path,
    lr: float = 0.1,
    shortcut: bool = False,
    seed: int = 0,
    status: str = "done",
    elr: bool = True,
    summary_spreads: bool = True,
) -> Path:
    d.mkdir(parents=True)
    cfg = {
        "model": {"name": "resnet", "depth": 8, "shortcut": shortcut},
        "data": {"name": "digits"},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 0.0},
        "train": {"seed": seed},
        "log": {"dense_steps": DENSE, "every": 5},
    }
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "layers.json").write_text(json.dumps(LAYERS))
    rows = elr_rows(lr, shortcut, seed, diverge_at=12 if status == "diverged" else None)
    if not elr:
        rows = [{k: r[k] for k in ("step", "epoch", "wall_time", "loss", "accuracy", "lr")} for r in rows]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 99, "lo')  # torn line
    summary = {"status": status, "step": rows[-1]["step"]}
    if status == "done":
        summary |= {"test_accuracy": 0.9 - 0.1 * (not shortcut) - 0.05 * lr + 0.01 * seed, "test_loss": 0.3}
    if elr and summary_spreads:
        summary |= {"elr_log_spread_early": mean_log_spread(rows, DENSE), "elr_log_spread": mean_log_spread(rows)}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def run_name(lr, shortcut, seed):
    return f"lr={lr:g}-shortcut={'true' if shortcut else 'false'}-seed={seed}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """2 LRs x 2 shortcut x 2 seeds: one run diverged, one missing, one without spreads in its summary."""
    root = tmp_path_factory.mktemp("elr_sweep")
    runs = []
    for lr, shortcut, seed in itertools.product([0.1, 1.0], [True, False], [0, 1]):
        name = run_name(lr, shortcut, seed)
        runs.append({"name": name, "overrides": {"optim.lr": lr, "model.shortcut": shortcut, "train.seed": seed}})
        if (lr, shortcut, seed) == (0.1, True, 1):
            continue  # missing: listed in sweep.json, never started
        status = "diverged" if (lr, shortcut, seed) == (1.0, False, 1) else "done"
        write_run(root / name, lr, shortcut, seed, status, summary_spreads=(lr, seed) != (1.0, 0))
    (root / "sweep.json").write_text(
        json.dumps(
            {
                "spec": "experiments/sweep_elr.py",
                "size": "smoke",
                "varied": ["optim.lr", "model.shortcut", "train.seed"],
                "runs": runs,
            }
        )
    )
    return root


def assert_written(paths, names):
    assert [p.name for p in paths] == names
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0


def test_mean_log_spread_is_the_mean_of_finite_log10_spreads():
    rows = [
        {"step": 0, "elr_spread": 10.0},
        {"step": 1, "elr_spread": "100"},
        {"step": 2, "elr_spread": "nan"},
        {"step": 3, "elr_spread": "inf"},
        {"step": 4},
        {"step": 5, "elr_spread": 1000.0},
        {"step": 6, "elr_spread": 0.0},
    ]
    assert mean_log_spread(rows) == (1.0 + 2.0 + 3.0) / 3
    assert mean_log_spread(rows, before_step=2) == 1.5
    assert math.isnan(mean_log_spread(rows, before_step=0))
    assert math.isnan(mean_log_spread([{"step": 0, "elr_spread": "nan"}]))


def test_mean_log_spread_of_a_run_matches_hand_computation(tmp_path):
    run = read_run(write_run(tmp_path / "run", status="diverged"))
    logs = [math.log10(r["elr_spread"]) for r in run.rows if r["elr_spread"] != "nan"]
    assert len(logs) == 12  # steps 0..11 finite, step 12 diverged (nan)
    assert mean_log_spread(run.rows) == pytest.approx(sum(logs) / len(logs), rel=1e-15)


def test_read_run_orders_layers_by_depth_and_parses_nan(tmp_path):
    d = write_run(tmp_path / "run")
    # layers.json (and so each metric list) in reverse depth order: the figures sort by "depth".
    (d / "layers.json").write_text(json.dumps(LAYERS[::-1]))
    run = read_run(d)
    assert run.names == ["conv0", "conv1", "dense"]
    assert list(run.scale_invariant) == [True, True, False]
    elr = run.layer_values("elr")
    assert elr.shape == (len(STEPS), 3) and math.isnan(elr[3, 1])
    assert elr[0, 0] == pytest.approx(0.05) and elr[0, 2] == pytest.approx(3.0)  # list entries 2 and 0


def test_run_figures_write_png_and_pdf(tmp_path):
    d = write_run(tmp_path / "run", status="diverged")
    paths = run_figures(d)
    assert_written(
        paths,
        ["elr_heatmap.png", "elr_heatmap.pdf", "elr_layers.png", "elr_layers.pdf", "elr_spread.png", "elr_spread.pdf"],
    )
    assert paths[0].parent == d / "figures"


def test_main_path_spread_figure_reads_its_own_key(tmp_path):
    d = write_run(tmp_path / "run")
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()[:-1]]
    for r in rows:  # a main path of one layer: spread 1
        r |= {"elr_spread_main": 1.0, "elr_log_std_main": 0.0}
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = run_figures(d, layers="main")
    assert [p.name for p in paths][-2:] == ["elr_spread_main.png", "elr_spread_main.pdf"]


def test_sweep_figures_handle_diverged_and_missing_runs(sweep):
    paths = sweep_figures(sweep)  # default hue: optim.lr, the first varied key other than the seed
    assert_written(
        paths,
        [
            "elr_spread_by_lr.png",
            "elr_spread_by_lr.pdf",
            "accuracy_vs_spread_by_lr.png",
            "accuracy_vs_spread_by_lr.pdf",
        ],
    )
    assert paths[0].parent == sweep / "figures"


def test_elr_plot_main_prints_written_paths(sweep, tmp_path, capsys):
    assert elr_plot_main([str(sweep), "--hue", "shortcut", "--out", str(tmp_path / "figs")]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert_written(
        printed,
        [
            "elr_spread_by_shortcut.png",
            "elr_spread_by_shortcut.pdf",
            "accuracy_vs_spread_by_shortcut.png",
            "accuracy_vs_spread_by_shortcut.pdf",
        ],
    )
    assert all(p.parent == tmp_path / "figs" for p in printed)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("neither", "neither a run directory"),
        ("no_elr", 'log.metrics=["elr"]'),
        ("bad_key", "allowed: elr, elr_classic"),
        ("hue_on_run", "applies to a sweep directory"),
        ("bad_hue", "not a varied key"),
        ("sweep_without_elr", 'log.metrics=["elr"]'),
        ("bad_layers", "spread layers 'proj' is unknown; allowed: all, main"),
        ("main_on_old_run", "logged no 'elr_spread_main'"),
        ("main_on_old_sweep", "logged no 'elr_spread_main'"),
    ],
)
def test_elr_plot_main_errors_are_one_line(tmp_path, sweep, case, needle):
    run = write_run(tmp_path / "run")
    argv = {
        "neither": [str(tmp_path)],
        "no_elr": [str(write_run(tmp_path / "plain", elr=False))],
        "bad_key": [str(run), "--key", "cos_gw"],
        "hue_on_run": [str(run), "--hue", "lr"],
        "bad_hue": [str(sweep), "--hue", "depth"],
        "sweep_without_elr": [str(tmp_path / "sw")],
        "bad_layers": [str(run), "--layers", "proj"],
        "main_on_old_run": [str(run), "--layers", "main"],
        "main_on_old_sweep": [str(sweep), "--layers", "main"],
    }[case]
    if case == "sweep_without_elr":
        write_run(tmp_path / "sw" / "a", elr=False)
        (tmp_path / "sw" / "sweep.json").write_text(
            json.dumps({"varied": [], "runs": [{"name": "a", "overrides": {}}]})
        )
    with pytest.raises(UserError) as e:
        elr_plot_main(argv)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---- normjax elr-report ----------------------------------------------------------------------


def test_rank_correlation_is_spearman_with_ties():
    from normjax.studies.elr.report import rank_correlation

    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    x, y = [0.0, 1.0, 1.0, 2.0], [0, 1, 2, 3]
    rx = np.array([0, 1.5, 1.5, 3])
    assert rank_correlation(x, y) == pytest.approx(np.corrcoef(rx, np.arange(4))[0, 1])
    assert math.isnan(rank_correlation([1, 2], [1, 2]))
    assert math.isnan(rank_correlation([1, 2, math.nan], [1, 2, 3]))  # two finite pairs


def test_elr_report_trajectories_from_a_sweep(sweep, tmp_path):
    from normjax.studies.elr.report import rank_correlation, report

    res = report(trajectories=str(sweep), out=tmp_path)
    t = res["trajectories"]
    runs = {r["name"]: r for r in t["runs"]}
    assert len(runs) == 7  # one of 8 is missing
    for name, r in runs.items():
        rows = elr_rows(
            r["optim.lr"], r["model.shortcut"], r["train.seed"], diverge_at=12 if r["status"] == "diverged" else None
        )
        spreads = [row["elr_spread"] for row in rows if row["step"] < DENSE and row["elr_spread"] != "nan"]
        assert r["mean_log_spread_early"] == pytest.approx(np.mean(np.log10(spreads)), rel=1e-9), name
        assert r["log_spread_first"] == pytest.approx(math.log10(spreads[0]))
        assert math.isnan(r["order_correlation"])  # two scale-invariant layers: too few to rank
        a0 = np.array(rows[0]["elr"][:2]) / r["optim.lr"]
        assert r["critical_lr_step0"] == pytest.approx(1 / math.sqrt(a0.max() * a0.min()), rel=1e-6)
        e_min = min(rows[0]["elr"][:2])  # the model's equalization time, 1/(2 E_min(0)^2)
        assert r["elr_min_step0"] == pytest.approx(e_min, rel=1e-6)
        assert r["equalization_steps"] == pytest.approx(1 / (2 * e_min**2), rel=1e-6)
    done = [r for r in runs.values() if r["status"] == "done"]
    assert t["spread_accuracy_runs"] == len(done) == 6
    assert t["spread_accuracy_rank_correlation"] == pytest.approx(
        rank_correlation([r["mean_log_spread_early"] for r in done], [r["test_accuracy"] for r in done])
    )
    assert [p.name for p in res["figures"]] == [
        "elr_order_flip.png",
        "elr_order_flip.pdf",
        "base_drift.png",
        "base_drift.pdf",
    ]
    saved = json.loads((tmp_path / "elr_report.json").read_text())
    assert saved["trajectories"]["spread_accuracy_runs"] == 6


def test_elr_report_regimes_are_mean_and_std_over_seeds(tmp_path):
    from normjax.studies.elr.report import report

    root = tmp_path / "regimes"
    runs = []
    for name, seed in itertools.product(["sgd", "sgd_uniform_elr"], [0, 1, 2]):
        d = write_run(root / f"{name}-{seed}", seed=seed)
        cfg = json.loads((d / "config.json").read_text())
        cfg["optim"] |= {"name": name, "warmup_steps": 0}
        (d / "config.json").write_text(json.dumps(cfg))
        summary = json.loads((d / "summary.json").read_text())
        summary["test_accuracy"] = 0.8 + 0.01 * seed + (0.05 if name != "sgd" else 0.0)
        summary["train_loss"] = 0.5 - 0.1 * seed
        (d / "summary.json").write_text(json.dumps(summary))
        runs.append({"name": d.name, "overrides": {"optim.name": name, "train.seed": seed}})
    (root / "sweep.json").write_text(json.dumps({"varied": ["optim.name", "train.seed"], "runs": runs}))
    res = report(regimes=[str(root)], out=tmp_path / "out")
    (section,) = res["regimes"]
    assert section["lr"] == 0.1  # write_run's: one LR, one section
    rows = {r["regime"]: r for r in section["rows"]}
    # every run is a point of the figure: its own accuracy and early spread
    assert [p.name for p in res["figures"]] == ["accuracy_vs_spread_regimes.png", "accuracy_vs_spread_regimes.pdf"]
    points = rows["sgd_uniform_elr"]["runs"]
    assert [p["test_accuracy"] for p in points] == pytest.approx([0.85, 0.86, 0.87])
    spreads = [json.loads((root / p["name"] / "summary.json").read_text())["elr_log_spread_early"] for p in points]
    assert [p["mean_log_spread_early"] for p in points] == spreads
    acc = rows["sgd_uniform_elr"]["test_accuracy"]
    assert rows["sgd"]["diverged"] == 0 and rows["sgd"]["statuses"] == ["done"] * 3
    assert acc["n"] == 3 and acc["mean"] == pytest.approx(0.86) and acc["std"] == pytest.approx(0.01)
    loss = rows["sgd"]["train_loss"]  # trainability beside accuracy
    assert loss["n"] == 3 and loss["mean"] == pytest.approx(0.4) and loss["std"] == pytest.approx(0.1)
    diff = rows["sgd_uniform_elr"]["accuracy_minus_sgd"]
    assert diff["diff"] == pytest.approx(0.05) and diff["se"] == pytest.approx(math.sqrt(2 * 0.01**2 / 3))
    # A second sweep at the same LR joins the section; a uniform-ELR reference other than `lr` is its own regime.
    other = tmp_path / "geo"
    d = write_run(other / "geo-0")
    cfg = json.loads((d / "config.json").read_text())
    cfg["optim"] |= {"name": "sgd_uniform_elr", "warmup_steps": 0, "elr_reference": "geometric_mean"}
    (d / "config.json").write_text(json.dumps(cfg))
    (other / "sweep.json").write_text(json.dumps({"varied": [], "runs": [{"name": "geo-0", "overrides": {}}]}))
    (section,) = report(regimes=[str(root), str(other)], out=tmp_path / "out2")["regimes"]
    geo = {r["regime"]: r for r in section["rows"]}["sgd_uniform_elr+geometric_mean"]
    assert geo["test_accuracy"]["n"] == 1 and geo["accuracy_minus_sgd"]["diff"] == pytest.approx(
        0.795 - 0.81
    )  # write_run: 0.9 - 0.1 - 0.05 lr


def test_elr_report_errors_are_one_line(tmp_path):
    from normjax.studies.elr.report import elr_report_main

    for argv, needle in (
        (["--out", str(tmp_path)], "give at least one of"),
        (["--out", str(tmp_path), "--explode", str(tmp_path)], "cannot read"),
        (["--out", str(tmp_path), "--critical", str(tmp_path / "nope")], "cannot read"),
    ):
        with pytest.raises(UserError) as e:
            elr_report_main(argv)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_elr_report_reads_explosion_and_critical_lr_outputs(tmp_path):
    from normjax.studies.elr.report import report

    rec = {
        "family": "mlp",
        "depth": 10,
        "factor": 1.41,
        "factor_seed_std": 0.02,
        "factor_base": 1.40,
        "dataset": "fashion_mnist",
        "seeds": [0, 1, 2],
    }
    (tmp_path / "explode").mkdir()
    (tmp_path / "explode" / "explosion.json").write_text(json.dumps({"config": "e.py", "records": [rec]}))
    crit = {
        "model": "mlp",
        "depth": 21,
        "shortcut": False,
        "dataset": "fashion_mnist",
        "warm_lr": 0.1,
        "at": [0, 10],
        "crit_predicted": [[1.0, 2.0], [1.0, 4.0]],
        "crit_measured": [[0.1, 2.0], [1.0, 4.0]],
        "spread_now": [[10.0, 5.0], [10.0, 5.0]],
    }
    (tmp_path / "crit.json").write_text(json.dumps({"results": [crit]}))
    res = report(explode=[str(tmp_path / "explode")], critical=[str(tmp_path / "crit.json")], out=tmp_path / "out")
    assert res["explosion"]["rows"][0] | {"seeds": 3} == res["explosion"]["rows"][0]
    assert res["explosion"]["rows"][0]["factor"] == 1.41
    first, second = res["critical_lr"]["rows"]
    assert (first["after_steps"], second["after_steps"]) == (0, 10)
    assert first["log10_ratio"]["mean"] == pytest.approx(-0.5) and first["log10_ratio"]["n"] == 2
    assert second["log10_ratio"]["mean"] == 0.0 and second["crit_predicted"]["mean"] == 3.0


def test_decisive_figure_orders_arms_as_the_page_and_shows_each_seed(tmp_path, monkeypatch):
    """Ticks in words and in the table's order, one grey dot per seed, train loss on a log axis
    (one exploded run would flatten every other arm on a linear one)."""
    import normjax.studies.elr.report as rep

    def arm(accs, losses):
        ms = lambda v: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "n": len(v), "values": v}  # noqa: E731
        a, lo = ms(accs), ms(losses)
        return {"runs": len(accs), "test_accuracy": a | {"stderr": a["std"]}, "train_loss": lo | {"stderr": lo["std"]}}

    names = ["uniform_whole_after", "sgd_m0_lr1", "critical_warmup", "sgd_residual", "uniform_early_before", "sgd"]
    section = {"sweep": "s", "title": "t", "reference": "sgd"}
    section["arms"] = {
        n: arm([0.1 + 0.1 * i, 0.2, 0.3], [2.3, 900.0 if n == "sgd_residual" else 1.0, 0.5])
        for i, n in enumerate(names)
    }
    figs = {}
    monkeypatch.setattr(rep, "save", lambda fig, out, stem: figs.setdefault(stem, fig) and [])
    rep.decisive_figure(section, tmp_path)
    acc_ax, loss_ax = figs["decisive_arms"].axes[:2]
    assert [t.get_text() for t in acc_ax.get_xticklabels()] == [
        "SGD",
        "residual twin (SGD)",
        "critical-LR warm-up",
        "uniform ELR, early only, before momentum",
        "uniform ELR, whole run, after momentum",
        "SGD, momentum 0, LR 1",
    ]
    seeds = [line for line in acc_ax.lines if line.get_marker() == "." and line.get_color() == "0.55"]
    assert [len(line.get_ydata()) for line in seeds] == [3] * 6
    assert loss_ax.get_yscale() == "log" and acc_ax.get_yscale() == "linear"
