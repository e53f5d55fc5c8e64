"""MNIST-1D served as the `mnist1d` package makes it, and 1-D conv nets trained on it end to end."""

import json

import numpy as np
import pytest

from normjax import cli
from normjax.data import load_dataset
from normjax.data.sources import mnist1d_arrays
from normjax.errors import UserError


@pytest.fixture(scope="module")
def package():
    """The package's frozen dataset, made by its own calls (not through normjax)."""
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def test_served_dataset_is_the_packages_frozen_dataset(package):
    state = np.random.get_state()
    ds = load_dataset("mnist1d")
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(state[1:2], after[1:2]))  # numpy's global stream untouched
    assert ds.train_images.shape == (4000, 1, 40, 1) and ds.test_images.shape == (1000, 1, 40, 1)
    assert ds.train_images.dtype == np.float32 and ds.image_shape == (1, 40, 1) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.train_images[:, 0, :, 0], package["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.test_images[:, 0, :, 0], package["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.train_labels, package["y"])
    np.testing.assert_array_equal(ds.test_labels, package["y_test"])
    # label counts per split, as the package's (balanced overall: 500 a class)
    assert np.bincount(ds.train_labels).tolist() == np.bincount(package["y"]).tolist()
    assert (np.bincount(ds.train_labels) + np.bincount(ds.test_labels)).tolist() == [500] * 10
    # train statistics in the data's own units (the package standardizes the whole set)
    assert ds.mean[0] == pytest.approx(float(package["x"].mean()), abs=1e-6)
    assert ds.std[0] == pytest.approx(float(package["x"].std()), rel=1e-6)


def test_larger_variant_and_other_seed():
    big = load_dataset("mnist1d", mnist1d={"num_samples": 10000})
    assert len(big.train_labels) == 8000 and len(big.test_labels) == 2000
    other = mnist1d_arrays(5000, 7)
    assert other["x"].shape == (4000, 40) and not np.array_equal(other["x"], load_dataset("mnist1d").train_images)


@pytest.mark.parametrize(
    "options,words",
    [
        ({"num_samples": 10}, "data.mnist1d.num_samples=10 is invalid; allowed: an integer >= 50"),
        ({"num_samples": 1e4}, "data.mnist1d.num_samples=10000.0 is invalid"),
        ({"seed": -1}, "data.mnist1d.seed=-1 is invalid"),
        ({"length": 80}, "data.mnist1d.length is unknown; allowed: num_samples, seed"),
    ],
)
def test_bad_options_are_one_line(options, words):
    with pytest.raises(UserError) as e:
        load_dataset("mnist1d", mnist1d=options)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "sets,words",
    [
        (
            ["model.block=bottleneck", "model.depth=50"],
            "model.block='bottleneck' needs 2-D images; data.name='mnist1d' holds 1-D signals (1x40x1)",
        ),
        (["data.flip=true"], "data.flip=true flips 2-D images left to right; data.name='mnist1d' holds 1-D signals"),
        (["data.mnist1d.num_samples=20"], "data.mnist1d.num_samples=20 is invalid"),
    ],
)
def test_2d_options_on_1d_data_are_one_line_and_create_nothing(tmp_path, capsys, sets, words):
    args = ["train", "experiments/mnist1d.py", "--workdir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        cli.main(args + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["resnet", "plain_cnn"])
def test_1d_conv_nets_learn_mnist1d_and_checkpoint_their_1xk_kernels(tmp_path, capsys, model):
    """A 1-D ResNet-8 (or plain CNN) far above chance in a few seconds (with the 1-D random
    translation); its checkpoint restores the 1 x 3 kernels; a rerun is bitwise the same."""
    import jax

    from normjax.config import load_config
    from normjax.training.checkpoint import Checkpointer
    from normjax.training.inputs import input_for
    from normjax.training.loop import program_for, restore_state

    sets = ["model.name=" + model, "model.depth=8" if model == "resnet" else "model.depth=3", "model.width=8"]
    sets += ["train.steps=150", "train.epochs=0", "checkpoint.every=75", "data.crop_padding=2"]
    common = ["train", "experiments/mnist1d.py", "--json"] + [a for s in sets for a in ("--set", s)]
    runs = []
    for name in ("a", "b"):
        assert cli.run(common + ["--workdir", str(tmp_path / name)]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["test_accuracy"] > 0.5  # chance is 0.1; a linear classifier reaches about 0.3
    assert runs[0]["test_loss"] == runs[1]["test_loss"]  # the same program on the same inputs
    cfg = load_config("experiments/mnist1d.py", overrides=sets)
    program = program_for(cfg, input_for(cfg))
    state, *_ = restore_state(Checkpointer(tmp_path / "a" / "checkpoints"), program)
    assert int(state.step) == 150
    kernels = [x.shape for p, x in jax.tree_util.tree_leaves_with_path(state.params) if "kernel" in str(p[-1])]
    convs = [s for s in kernels if len(s) >= 4]
    assert convs and all(s[-4:-2] in ((1, 3), (1, 1)) for s in convs), kernels
