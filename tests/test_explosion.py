"""Gradient explosion at init (docs/science.md#gradient-explosion): the measured growth per layer
of ||∇_{w_l} L||²."""

import json
import math

import numpy as np
import pytest

from helpers import small_config
from normjax.errors import UserError
from normjax.studies.elr.explosion import MEAN_FIELD_FACTOR, explode_main, fit_growth, measure_init_gradients

SYNTHETIC = {"name": "synthetic", "synthetic": {"num_train": 1024, "num_test": 16, "image_shape": [16, 16, 2]}}


def test_fit_growth_recovers_a_geometric_factor():
    depths = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7])  # two layers at depth 7, as a projection beside a conv
    g = 3.0 * 1.37 ** -depths.astype(float)
    noise = np.exp(np.random.default_rng(0).normal(size=(2, 3, 1)))  # a per-(seed, batch) scale cancels in the fit
    mask = np.array([False, True, True, True, True, True, True, True, False])
    factor, ratios = fit_growth(g * noise, depths, mask)
    np.testing.assert_allclose(factor, 1.37, rtol=1e-6)
    np.testing.assert_allclose(ratios, np.full(6, 1.37), rtol=1e-6)
    with pytest.raises(ValueError, match="two or more depths"):
        fit_growth(g, depths, depths == 3)


def test_plain_bn_relu_mlp_grows_at_the_mean_field_rate():
    cfg = small_config(model={"name": "mlp", "depth": 12, "width": 512}, data=SYNTHETIC, train={"batch_size": 512})
    res = measure_init_gradients(cfg, seeds=(0,), batches=2)
    L = 13  # 12 hidden layers and the classifier
    assert res["grad_sq"].shape == (1, 2, L) and res["w_sq"].shape == (1, L)
    assert res["fit_mask"].tolist() == [False] + [True] * 10 + [False, False]  # first, last hidden, head out
    # Mean field (wide, large batch): π/(π−1) ≈ 1.467; width and batch 512 give a little less.
    assert 1.42 < res["factor"] < 1.475, res["factor"]
    assert abs(res["factor_base"] - res["factor"]) < 0.01  # equal widths: ||w_l|| is flat over depth
    assert MEAN_FIELD_FACTOR == pytest.approx(math.pi / (math.pi - 1))


@pytest.mark.parametrize(
    "data",
    [SYNTHETIC | {"synthetic": {"num_train": 256, "image_shape": [8, 8, 3]}}, {"name": "mnist1d"}],
    ids=["images", "signals_1d"],
)
def test_shortcuts_tame_the_growth(data):
    factors = {}
    for shortcut in (False, True):
        cfg = small_config(
            model={"name": "resnet", "depth": 14, "width": 8, "shortcut": shortcut}, data=data, train={"batch_size": 64}
        )
        res = measure_init_gradients(cfg, seeds=(0,), batches=2)
        assert ("s2.b0.proj" in res["layers"]) == shortcut and not res["fit_mask"][res["layers"].index("stem")]
        factors[shortcut] = res["factor"]
    assert factors[False] > 1.1 and factors[False] - factors[True] > 0.07, factors


def test_explode_main_writes_json_and_figures(tmp_path, capsys):
    out = tmp_path / "explode"
    argv = [
        "experiments/explode_depth.py",
        "--depths",
        "4,6",
        "--seeds",
        "2",
        "--batches",
        "1",
        "--set",
        "model.width=32",
        "--set",
        "train.batch_size=64",
        "--out",
        str(out),
    ]
    assert explode_main(argv) == 0
    data = json.loads((out / "explosion.json").read_text())
    assert [(r["model"], r["depth"], r["shortcut"]) for r in data["records"]] == [("mlp", 4, None), ("mlp", 6, None)]
    assert all(len(r["grad_sq_mean"]) == r["depth"] + 1 and r["factor"] > 1 for r in data["records"])
    for stem in ("explosion_layers", "explosion_factor"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "growth/layer" in printed and str(out / "explosion.json") in printed


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--depths", "4,x"], r"^--depths '4,x' is invalid; allowed: comma-separated positive integers"),
        (["--depths", "0"], r"^--depths '0' is invalid"),
        (["--depths", "2"], r"^model.depth=2 is too shallow"),
        (["--seeds", "0"], r"^--seeds '0' is invalid; allowed: an integer >= 1"),
        (["--set", "model.name=resnet", "--depths", "10"], r"^model.depth=10 is not valid for resnet"),
    ],
)
def test_explode_main_bad_input_is_one_line(argv, match, tmp_path):
    with pytest.raises(UserError, match=match) as e:
        explode_main(["experiments/explode_depth.py", "--out", str(tmp_path), *argv])
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing measured or written before the input is checked
