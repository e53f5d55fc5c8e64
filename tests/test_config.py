from pathlib import Path

import pytest

from normjax.config import DEFAULTS, load_config, merge, parse_override
from normjax.errors import UserError

EXPERIMENTS = sorted(p for p in Path(__file__).parents[1].joinpath("experiments").glob("*.py") if not p.stem.startswith("sweep_"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("size", ["smoke", "full"])
def test_every_experiment_loads_in_both_sizes(path, size):
    cfg = load_config(path, size=size)
    assert set(cfg) == set(DEFAULTS)


def test_overrides_are_typed():
    cfg = load_config(None, overrides=["optim.lr=0.05", "model.shortcut=false", "train.steps=7",
                                       "data.name=synthetic", "optim.momentum=0"])
    assert cfg["optim"]["lr"] == 0.05 and cfg["model"]["shortcut"] is False and cfg["train"]["steps"] == 7
    assert cfg["data"]["name"] == "synthetic" and isinstance(cfg["optim"]["momentum"], float)
    assert parse_override("log.metrics=[\"layer_norms\"]") == {"log": {"metrics": ["layer_norms"]}}


@pytest.mark.parametrize("override,words", [
    ("optim.lrr=0.1", ["optim.lrr", "unknown", "lr"]),
    ("train.steps=abc", ["train.steps", "expected int"]),
    ("model.depth=21", ["model.depth=21", "6n+2"]),
    ("model.name=vgg", ["model.name", "resnet"]),
    ("optim.schedule=exp", ["optim.schedule", "cosine"]),
    ("optim.momentum=1.5", ["momentum"]),
    ("train.dtype=float16", ["train.dtype", "bfloat16"]),
    ("optim", ["key=value"]),
    ("model=3", ["section"]),
])
def test_bad_values_give_one_line_naming_them(override, words):
    with pytest.raises(UserError) as e:
        load_config(None, overrides=[override])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_missing_config_file():
    with pytest.raises(UserError, match="does not exist"):
        load_config("experiments/nope.py")
    with pytest.raises(UserError, match="size"):
        load_config(EXPERIMENTS[0], size="huge")


def test_merge_keeps_defaults_intact():
    merged = merge(DEFAULTS, {"optim": {"lr": 1.0}})
    assert DEFAULTS["optim"]["lr"] == 0.1 and merged["optim"]["lr"] == 1.0
