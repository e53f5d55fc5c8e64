"""`normjax critical-lr`: the post-step spread against LR on a real network, and the model's minimum."""

import json

import numpy as np
import pytest

from helpers import assert_close
from normjax.cli import run as cli
from normjax.config import load_config
from normjax.errors import UserError
from normjax.studies.elr.critical_lr import measure

TINY = ["model.name=mlp", "model.depth=6", "model.width=32", "model.shortcut=false", "train.batch_size=64"]
LRS = np.logspace(-2, 3, 81)  # 16 a decade
ULPS_PROGRAMS = 8


@pytest.fixture(scope="module")
def result():
    cfg = load_config("experiments/elr_resnet.py", size="smoke", overrides=TINY)
    return measure(cfg, seeds=(0, 1), at=(0, 3), lrs=LRS)


def test_predicted_critical_lr_is_where_the_model_spread_is_smallest(result):
    a = result["a"]
    assert a.shape == (2, 2, 6) and result["layers"] == [f"fc{i}" for i in range(6)]  # the main path, no head
    np.testing.assert_allclose(result["crit_predicted"], 1 / np.sqrt(a.max(-1) * a.min(-1)), rtol=1e-12)
    f = a[..., None, :] / (1 + (LRS[:, None] * a[..., None, :]) ** 2)  # the SGD map's ELRs, per unit LR
    np.testing.assert_allclose(result["spread_model"], f.max(-1) / f.min(-1), rtol=1e-5)
    # docs/science.md#critical-lr: the model's post-step spread is smallest at 1/sqrt(a_max a_min),
    # so on the grid its minimum sits within one grid step (1/16 dex) of it.
    gap = np.abs(np.log10(result["crit_model"] / result["crit_predicted"]))
    assert gap.max() <= 1 / 16 + 1e-9


def test_measured_post_step_spread_is_a_real_step(result):
    s = result["spread_measured"]
    assert s.shape == (2, 2, len(LRS)) and np.isfinite(s[..., :40]).all()
    # A tiny step leaves the state: the post-step spread is the spread on the next batch, close to
    # the spread now; a huge step changes it (lower layers overshoot).
    np.testing.assert_allclose(np.log10(s[..., 0]), np.log10(result["spread_now"]), atol=0.3)
    assert (np.abs(np.log10(s[..., -1] / s[..., 0])) > 0.1).all()
    assert set(np.unique(result["crit_measured"])) <= set(LRS)
    assert not np.array_equal(result["a"][:, 0], result["a"][:, 1])  # 3 SGD steps moved the state


@pytest.mark.cross_program
def test_scale_invariant_scope_moves_only_the_normalized_kernels(result):
    cfg = load_config("experiments/elr_resnet.py", size="smoke", overrides=TINY)
    si = measure(cfg, seeds=(0, 1), at=(0, 3), lrs=LRS, scope="scale_invariant")
    assert si["scope"] == "scale_invariant" and result["scope"] == "all"
    # The same states; `a` comes out of two compiled programs (the step's mask differs), so equal
    # up to rounding, not bitwise (docs/design.md, "Exact or close").
    assert_close(si["a"], result["a"], ULPS_PROGRAMS, "a")
    assert_close(si["spread_model"], result["spread_model"], ULPS_PROGRAMS, "spread_model")
    assert not np.allclose(si["spread_measured"], result["spread_measured"])  # the head and BN held or moved
    with pytest.raises(UserError, match="--scope 'head' is unknown; allowed: all, scale_invariant"):
        measure(cfg, seeds=(0,), scope="head")


def test_critical_lr_command_writes_json_and_figure(tmp_path, capsys):
    argv = [
        "critical-lr",
        "experiments/elr_resnet.py",
        *sum((["--set", o] for o in TINY), []),
        "--seeds",
        "1",
        "--at",
        "0",
        "--out",
        str(tmp_path),
    ]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "mlp plain depth 6, after 0 steps: predicted" in out
    data = json.loads((tmp_path / "critical_lr.json").read_text())
    assert data["results"][0]["depth"] == 6 and len(data["results"][0]["lrs"]) == 97
    assert (tmp_path / "critical_lr.png").stat().st_size > 0


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--at", "5,2"], "increasing step counts"),
        (["--at", "x"], "comma-separated step counts"),
        (["--warm-lr", "-1"], "a finite LR > 0"),
        (["--seeds", "0"], "an integer >= 1"),
        (["--set", "model.depth=1", "--out", "/nonexistent-unused"], "main-path scale-invariant layers"),
    ],
)
def test_critical_lr_errors_are_one_line(extra, needle):
    with pytest.raises(UserError) as e:
        cli(["critical-lr", "experiments/elr_resnet.py", *sum((["--set", o] for o in TINY), []), *extra])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_critical_lr_of_a_1d_resnet(tmp_path, capsys):
    """The 1-D ResNet of the mnist1d size (1x3 convs on MNIST-1D) goes through the same measurement."""
    argv = ["critical-lr", "experiments/elr_resnet.py", "--size", "mnist1d", "--set", "model.depth=8"]
    argv += ["--set", "model.width=8", "--seeds", "1", "--at", "0", "--out", str(tmp_path)]
    assert cli(argv) == 0
    assert "resnet residual depth 8, after 0 steps: predicted" in capsys.readouterr().out
    data = json.loads((tmp_path / "critical_lr.json").read_text())
    r = data["results"][0]
    assert (r["depth"], r["dataset"], len(r["layers"])) == (8, "mnist1d", 7) and np.isfinite(r["crit_predicted"]).all()
