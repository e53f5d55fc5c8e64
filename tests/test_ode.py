"""`normjax ode`: the weight-dynamics model against a real run, and the model alone."""

import numpy as np
import pytest

from conftest import small_config
from normjax.cli import run as cli
from normjax.errors import UserError
from normjax.studies.ode import compare_run
from normjax.training.loop import train


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ode") / "run"
    cfg = small_config(optim={"momentum": 0.0, "weight_decay": 0.0, "lr": 0.3},
                       train={"steps": 16}, log={"metrics": ["elr"], "dense_steps": 16})
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


def test_replay_is_not_exact_with_momentum(tmp_path):
    cfg = small_config(optim={"momentum": 0.9, "weight_decay": 0.0, "lr": 0.3},
                       train={"steps": 8}, log={"metrics": ["elr"], "dense_steps": 8})
    train(cfg, tmp_path / "run", progress=False)
    assert compare_run(tmp_path / "run").norm_error["replay"].max() > 1e-3  # the map has no momentum term


def test_ode_command_on_a_run_and_simulated(sgd_run, tmp_path, capsys):
    assert cli(["ode", str(sgd_run), "--model", "ode"]) == 0
    out = capsys.readouterr().out
    assert "spread error" in out and (sgd_run / "figures" / "ode_ode.png").stat().st_size > 0
    assert cli(["ode", "--simulate", "--depth", "6", "--sim-steps", "50", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ode_simulation.pdf").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["ode"], "give a run or sweep directory"),
    (["ode", "--simulate", "--c0", "1,x"], "comma-separated"),
    (["ode", "--simulate", "--c0", "1,2", "--w0", "1"], "one per layer"),
    (["ode", "--simulate", "--momentum", "1.5"], "momentum"),
    (["ode", ".", "--model", "rk4"], "allowed: discrete, ode"),
])
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
    (sweep / "sweep.json").write_text(json.dumps({"runs": [{"name": "lr=0.3", "overrides": {"optim.lr": 0.3}},
                                                           {"name": "missing", "overrides": {"optim.lr": 1.0}}],
                                                  "varied": ["optim.lr"]}))
    assert cli(["ode", str(sweep)]) == 0
    assert "lr=0.3: spread error" in capsys.readouterr().out
    lines = (sweep / "figures" / "ode_discrete_errors.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("lr=0.3,0.3,16,")
    assert (sweep / "figures" / "ode_discrete_spread.png").stat().st_size > 0
