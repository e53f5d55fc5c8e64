"""The ELR study's decisive tests in `normjax elr-report --decisive`: per-arm train loss and test
accuracy from the runs, each arm against plain SGD with the smallest difference the seeds could
detect, and whether the critical-LR cap bound; the uniform-ELR early-only arm is SGD after its end."""

import json
from pathlib import Path

import numpy as np
import pytest

from normjax.errors import UserError
from normjax.studies.elr.report import decisive_section, report
from normjax.sweep.results import collect
from normjax.sweep.runner import run_sweep

ROOT = Path(__file__).parents[1]
SWEEP = """
def get_sweep(size):
    return {"base": %r,
            "grid": {"optim.arm": [{"name": "sgd", "optim.name": "sgd"},
                                   {"name": "critical_warmup", "optim.name": "sgd_critical_warmup", "optim.lr": 50.0},
                                   {"name": "uniform_early", "optim.name": "sgd_uniform_elr",
                                    "optim.elr_reference": "geometric_mean", "optim.elr_until": 0.25}],
                     "train.seed": [0, 1]},
            "set": {"model.name": "mlp", "model.depth": 4, "model.width": 16, "model.shortcut": False,
                    "optim.lr": 1.0, "optim.momentum": 0.9, "train.steps": 24, "train.batch_size": 64,
                    "train.steps_per_dispatch": 1, "log.metrics": [], "log.dense_steps": 0, "log.every": 1,
                    "checkpoint.every": 24}}
"""


pytestmark = pytest.mark.slow  # three compiled programs: about a minute on 2 idle cores


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("decisive")
    (d / "sweep_d.py").write_text(SWEEP % str(ROOT / "experiments" / "elr_resnet.py"))
    results = run_sweep(d / "sweep_d.py", workdir=d / "w")
    assert all(s["status"] in ("done", "diverged") for s in results.values()), results
    return d / "w"


def test_decisive_numbers_come_from_the_runs(sweep, tmp_path):
    res = report(out=tmp_path, decisive=sweep)
    sec = json.loads((tmp_path / "elr_report.json").read_text())["decisive"]
    rows = collect(sweep)
    for arm, a in sec["arms"].items():
        rs = [r for r in rows if r["optim.arm"] == arm]
        acc = [r["test_accuracy"] if r["status"] == "done" else 0.1 for r in rs]
        assert a["runs"] == 2 and a["test_accuracy"]["mean"] == pytest.approx(np.mean(acc))
        assert a["test_accuracy"]["stderr"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(2))
        d, ref = a["test_accuracy_vs_sgd"], sec["arms"]["sgd"]["test_accuracy"]
        se = np.hypot(a["test_accuracy"]["stderr"], ref["stderr"])
        assert d["difference"] == pytest.approx(a["test_accuracy"]["mean"] - ref["mean"])
        assert d["detectable"] == pytest.approx(2 * se) and d["decided"] == (abs(d["difference"]) > 2 * se)
    # at LR 50 the cap binds (at step 0 at least: the critical LR of a fresh BN net is far below); no cap elsewhere
    assert sec["arms"]["critical_warmup"]["cap_bound_runs"] == 2 and sec["arms"]["sgd"]["cap_bound_runs"] is None
    assert sorted(p.name for p in res["figures"]) == ["decisive_arms.pdf", "decisive_arms.png"]


def test_a_sweep_without_arms_is_a_one_line_error(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": "x.py", "size": "smoke", "runs": [], "varied": []}))
    with pytest.raises(UserError, match="varies no optim.arm") as e:
        decisive_section(tmp_path)
    assert "\n" not in str(e.value)
