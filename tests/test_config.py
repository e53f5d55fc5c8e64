from pathlib import Path

import pytest

from normjax.config import DEFAULTS, FILE_SIZES, SIZES, load_config, merge, parse_override
from normjax.errors import UserError
from normjax.sweep.spec import config_hash, expand
from run_names import stored, sweep_names

EXPERIMENTS = sorted(
    p for p in Path(__file__).parents[1].joinpath("experiments").glob("*.py") if not p.stem.startswith("sweep_")
)
SWEEPS = sorted(p for p in Path(__file__).parents[1].joinpath("experiments").glob("sweep_*.py"))


def _sizes(path: Path) -> tuple:
    """The sizes a file declares (module-level SIZES), read without running it."""
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SIZES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return FILE_SIZES


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("size", SIZES)
def test_every_experiment_loads_in_its_sizes(path, size):
    if size not in _sizes(path):
        with pytest.raises(UserError) as e:
            load_config(path, size=size)
        assert str(e.value) == f"config file {str(path)!r} has no size {size!r}; it has: {', '.join(_sizes(path))}"
        return
    cfg = load_config(path, size=size)
    assert set(cfg) == set(DEFAULTS)
    # the config hash (run directory names) as stored: `tests/run_names.py` says how to regenerate
    assert config_hash(cfg) == stored()[f"{path.stem}:{size}"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_expands_in_its_sizes(path):
    for size in _sizes(path):
        runs, varied = expand(path, size)
        assert runs and len({r.name for r in runs}) == len(runs), size
        assert all(set(r.config) == set(DEFAULTS) for r in runs), size
        # no run renamed (users' run directories stay theirs): `tests/run_names.py` regenerates
        assert sweep_names(runs) == stored()[f"{path.stem}:{size}"], size


def test_the_stored_run_names_cover_every_file_and_size():
    found = {f"{p.stem}:{s}" for p in EXPERIMENTS + SWEEPS for s in _sizes(p)}
    assert found == set(stored())


def test_the_elr_study_has_an_imagenet_size():
    """ResNet-50 with and without shortcuts on ImageNet, streamed, per-layer ELRs logged."""
    for name in ("sweep_elr_regimes", "sweep_elr_trajectories"):
        runs, varied = expand(Path(__file__).parents[1] / "experiments" / f"{name}.py", "imagenet")
        assert "model.shortcut" in varied and {r.config["model"]["shortcut"] for r in runs} == {True, False}
        for r in runs:
            m, d = r.config["model"], r.config["data"]
            assert (m["block"], m["depth"], d["name"], d["pipeline"], d["input_size"]) == (
                "bottleneck",
                50,
                "imagenet2012",
                "stream",
                224,
            )
            assert "elr" in r.config["log"]["metrics"]
    assert [p.stem for p in SWEEPS if "imagenet" in _sizes(p)] == ["sweep_elr_regimes", "sweep_elr_trajectories"]


def test_the_gpu_size_is_cifar_resnets_on_fashion_mnist():
    """The studies' gpu size: the paper's ResNets (20/56/110) on the medium data, no other dataset."""
    depths = {}
    for name in ("sweep_elr_trajectories", "sweep_elr_regimes", "sweep_apl_sparsity"):
        runs, _ = expand(Path(__file__).parents[1] / "experiments" / f"{name}.py", "gpu")
        assert {r.config["model"]["name"] for r in runs} == {"resnet"}
        assert {r.config["data"]["name"] for r in runs} <= {"fashion_mnist", "synthetic"}
        depths[name] = sorted({r.config["model"]["depth"] for r in runs})
    assert depths == {"sweep_elr_trajectories": [20, 56, 110], "sweep_elr_regimes": [56], "sweep_apl_sparsity": [20]}
    assert [p.stem for p in SWEEPS if "gpu" in _sizes(p)] == [
        "sweep_apl_sparsity",
        "sweep_elr_regimes",
        "sweep_elr_trajectories",
    ]


def test_overrides_are_typed():
    cfg = load_config(
        None,
        overrides=["optim.lr=0.05", "model.shortcut=false", "train.steps=7", "data.name=synthetic", "optim.momentum=0"],
    )
    assert cfg["optim"]["lr"] == 0.05 and cfg["model"]["shortcut"] is False and cfg["train"]["steps"] == 7
    assert cfg["data"]["name"] == "synthetic" and isinstance(cfg["optim"]["momentum"], float)
    assert parse_override('log.metrics=["layer_norms"]') == {"log": {"metrics": ["layer_norms"]}}


@pytest.mark.parametrize(
    "override,words",
    [
        ("optim.lrr=0.1", ["optim.lrr", "unknown", "lr"]),
        ("train.steps=abc", ["train.steps", "expected int"]),
        ("model.depth=21", ["model.depth=21", "6n+2"]),
        ("model.name=vgg", ["model.name", "resnet"]),
        ("optim.schedule=exp", ["optim.schedule", "cosine"]),
        ("optim.momentum=1.5", ["momentum"]),
        ("train.dtype=float16", ["train.dtype", "bfloat16"]),
        ("optim", ["key=value"]),
        ("model=3", ["section"]),
    ],
)
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


@pytest.mark.parametrize(
    "command,source,where,words",
    [
        # A syntax error: the line Python reports.
        ("train", "def get_config(size):\n    return {'optim': {'lr': 0.1}\n", 2, ["SyntaxError"]),
        # An exception while importing the file.
        (
            "train",
            "import math\nX = 1 / 0\n\ndef get_config(size):\n    return {}\n",
            2,
            ["ZeroDivisionError: division by zero"],
        ),
        # An exception inside get_config: the innermost line of the file, not of the helper it called.
        (
            "train",
            "def helper(d):\n    return d['missing']\n\ndef get_config(size):\n    return helper({})\n",
            2,
            ["KeyError: 'missing'"],
        ),
        # Raised in the standard library: the file's line that called it.
        ("train", "import json\n\ndef get_config(size):\n    return json.loads('{')\n", 4, ["JSONDecodeError"]),
        (
            "sweep",
            "def get_sweep(size):\n    raise ValueError('no such size\\nsecond line')\n",
            2,
            ["ValueError: no such size"],
        ),
        ("sweep", "def get_sweep(size)\n    return {}\n", 1, ["SyntaxError"]),
    ],
)
def test_errors_in_experiment_and_sweep_files_are_one_line(tmp_path, capsys, command, source, where, words):
    from normjax.cli import main

    path = tmp_path / "broken.py"
    path.write_text(source)
    with pytest.raises(SystemExit) as e:
        main([command, str(path), "--workdir", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}:{where}: "), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_user_error_raised_by_a_file_passes_unchanged(tmp_path):
    path = tmp_path / "strict.py"
    path.write_text(
        "from normjax.errors import UserError\n\ndef get_config(size):\n    raise UserError('size smoke only')\n"
    )
    with pytest.raises(UserError) as e:
        load_config(path)
    assert str(e.value) == "size smoke only"


STUDY_FILES = ("elr_resnet", "apl_resnet", "explode_depth", "explode_resnet")


def test_every_study_file_has_the_conv_sizes():
    """The conv sizes of CPU-scale studies (1-D conv nets on MNIST-1D, small conv nets on Fashion-MNIST)
    are in every study experiment and sweep file, on their data, and say so in the docstring."""
    root = Path(__file__).parents[1] / "experiments"
    # The decisive ELR tests take their setting from the pilot (`sweep_elr_pilot.py`, which has the
    # conv sizes): mnist1d has its pilot's LR, fmnist_conv waits for its pilot.
    skip = ("sweep_references", "sweep_elr_decisive")
    files = [root / f"{n}.py" for n in STUDY_FILES] + [p for p in SWEEPS if p.stem not in skip]
    for path in files:
        import ast

        doc = ast.get_docstring(ast.parse(path.read_text()))
        for size, data in (("mnist1d", "mnist1d"), ("fmnist_conv", "fashion_mnist")):
            assert size in _sizes(path) and size in doc, (path.stem, size)
            if path.stem.startswith("sweep_"):
                runs, _ = expand(path, size)
                configs = [r.config for r in runs]
            else:
                configs = [load_config(path, size=size)]
            assert {c["data"]["name"] for c in configs} == {data}, (path.stem, size)
            if path.stem not in ("explode_depth", "sweep_apl_baselines"):
                assert {c["model"]["name"] for c in configs} <= {"resnet", "plain_cnn"}, (path.stem, size)
