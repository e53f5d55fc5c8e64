"""`normjax ode`: the weight-dynamics model against a real run, and the model alone."""

import numpy as np
import pytest

from helpers import small_config
from normjax.cli import run as cli
from normjax.errors import UserError
from normjax.studies.elr.ode import compare_run
from normjax.training.loop import train


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ode") / "run"
    cfg = small_config(
        optim={"momentum": 0.0, "weight_decay": 0.0, "lr": 0.3},
        train={"steps": 16},
        log={"metrics": ["elr"], "dense_steps": 16},
    )
    train(cfg, d, progress=False)
    return d


def test_sgd_map_on_measured_gradients_reproduces_every_scale_invariant_norm(sgd_run):
    c = compare_run(sgd_run)
    assert len(c.steps) == 16 and len(c.names) == 3  # three BN hidden layers; the classifier is left out
    assert c.measured["w_norm"].shape == c.predicted["replay"]["w_norm"].shape == (16, 3)
    np.testing.assert_allclose(c.predicted["replay"]["w_norm"], c.measured["w_norm"], rtol=2e-6)
    assert c.spread_error["replay"] < 1e-5
    # the constant-base-gradient model starts exact and is then off by what the gradients changed
    np.testing.assert_allclose(c.predicted["model"]["elr"][0], c.measured["elr"][0], rtol=1e-6)
    assert 0 < c.spread_error["model"] < 1


def test_base_gradient_drift_is_the_median_layer_change_from_step_0(sgd_run):
    c = compare_run(sgd_run)
    base = c.measured["base_grad"]
    np.testing.assert_allclose(base, c.measured["elr"] * c.measured["w_norm"] ** 2 / 0.3, rtol=1e-5)  # c = E u^2 / lr
    expected = np.median(np.abs(np.log10(base / base[0])), axis=1)
    np.testing.assert_allclose(c.base_drift, expected, rtol=1e-12)
    assert c.base_drift[0] == 0 and c.base_drift[-1] > 0
    hit = np.nonzero(expected >= np.log10(2))[0]
    assert c.break_step == (int(hit[0]) if hit.size else None)
    c.base_drift = np.array([0.0, 0.1, 0.31, 0.2] + [0.0] * 12)
    assert c.break_step == 2  # the first step at a factor 2 (0.301 dex), even if it comes back


def test_main_path_comparison_leaves_out_projections(tmp_path):
    cfg = small_config(
        model={"name": "resnet", "depth": 8, "width": 8},
        optim={"momentum": 0.0, "lr": 0.3},
        train={"steps": 4},
        log={"metrics": ["elr"], "dense_steps": 4},
    )
    train(cfg, tmp_path / "run", progress=False)
    every, main = compare_run(tmp_path / "run"), compare_run(tmp_path / "run", layers="main")
    assert [n for n in every.names if n not in main.names] == ["s2.b0.proj", "s3.b0.proj"]
    np.testing.assert_allclose(
        main.measured["spread"], [r for r in _logged(tmp_path / "run", "elr_spread_main")], rtol=1e-5
    )
    with pytest.raises(UserError, match="spread layers 'proj' is unknown"):
        compare_run(tmp_path / "run", layers="proj")


def _logged(rundir, key):
    from normjax.training.rundir import RunDir

    return [r[key] for r in RunDir(rundir).read_metrics()]


def test_replay_is_not_exact_with_momentum(tmp_path):
    cfg = small_config(
        optim={"momentum": 0.9, "weight_decay": 0.0, "lr": 0.3},
        train={"steps": 8},
        log={"metrics": ["elr"], "dense_steps": 8},
    )
    train(cfg, tmp_path / "run", progress=False)
    assert compare_run(tmp_path / "run").norm_error["replay"].max() > 1e-3  # the map has no momentum term


def test_ode_command_on_a_run_and_simulated(sgd_run, tmp_path, capsys):
    assert cli(["ode", str(sgd_run), "--model", "ode"]) == 0
    out = capsys.readouterr().out
    assert "spread error" in out and (sgd_run / "figures" / "ode_ode.png").stat().st_size > 0
    assert cli(["ode", "--simulate", "--depth", "6", "--sim-steps", "50", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ode_simulation.pdf").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ode"], "give a run or sweep directory"),
        (["ode", "--simulate", "--c0", "1,x"], "comma-separated"),
        (["ode", "--simulate", "--c0", "1,2", "--w0", "1"], "one per layer"),
        (["ode", "--simulate", "--momentum", "1.5"], "momentum"),
        (["ode", ".", "--model", "rk4"], "allowed: discrete, ode"),
    ],
)
def test_ode_command_errors_are_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        cli(argv)
    assert "\n" not in str(e.value)


def test_ode_needs_elr_metrics(tmp_path):
    train(small_config(train={"steps": 4}), tmp_path / "run", progress=False)  # default hooks: layer_norms
    with pytest.raises(UserError, match='log.metrics=\\["elr"\\]'):
        compare_run(tmp_path / "run")


def test_ode_on_a_sweep_writes_errors_and_figures(sgd_run, tmp_path, capsys):
    import json
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(sgd_run, sweep / "lr=0.3")
    (sweep / "sweep.json").write_text(
        json.dumps(
            {
                "runs": [
                    {"name": "lr=0.3", "overrides": {"optim.lr": 0.3}},
                    {"name": "missing", "overrides": {"optim.lr": 1.0}},
                ],
                "varied": ["optim.lr"],
            }
        )
    )
    assert cli(["ode", str(sweep)]) == 0
    assert "lr=0.3: spread error" in capsys.readouterr().out
    lines = (sweep / "figures" / "ode_discrete_errors.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("lr=0.3,0.3,16,")
    assert lines[0].endswith(",base_drift_end,base_drift_break_step")
    assert (sweep / "figures" / "ode_discrete_spread.png").stat().st_size > 0


def test_ode_sweep_scatter_legend_is_one_entry_per_lr_and_per_other_setting(sgd_run, tmp_path, monkeypatch):
    """Colour = LR, marker = the other varied keys: 2 LRs x plain/residual x 2 seeds give 2 + 2
    legend entries, not one per run or per setting."""
    import json
    import shutil

    import normjax.studies.elr.ode as ode

    runs = []
    for lr in (0.3, 1.0):
        for sc in (False, True):
            for seed in (0, 1):
                name = f"lr={lr},shortcut={sc},seed={seed}"
                shutil.copytree(sgd_run, tmp_path / "sweep" / name)
                runs.append({"name": name, "overrides": {"optim.lr": lr, "model.shortcut": sc, "train.seed": seed}})
    (tmp_path / "sweep" / "sweep.json").write_text(
        json.dumps({"runs": runs, "varied": ["optim.lr", "model.shortcut", "train.seed"]})
    )
    figs = {}
    monkeypatch.setattr(ode, "save", lambda fig, out, stem: figs.setdefault(stem, fig) and [])
    ode.compare_sweep(tmp_path / "sweep")
    fig = figs["ode_discrete_spread"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "prediction = measurement",
        "lr=0.3",
        "lr=1",
        "plain",
        "residual",
    ]
    markers = {line.get_marker() for line in fig.axes[0].lines if line.get_linestyle() == "None"}
    assert len(fig.axes[0].lines) == 8 + 1 and len(markers) == 2  # a point per run, the diagonal
