"""Tests for normjax.data: digits, synthetic, TFDS reading, and on-device preprocessing."""

from __future__ import annotations

import functools
import io
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normjax.data import BUILT_IN, Dataset, load_dataset, preprocess
from normjax.errors import UserError


def _nearest_mean_accuracy(ds: Dataset) -> float:
    """Test accuracy of a nearest-class-mean classifier on raw pixels."""
    x_train = ds.train_images.reshape(len(ds.train_images), -1).astype(np.float64)
    x_test = ds.test_images.reshape(len(ds.test_images), -1).astype(np.float64)
    means = np.stack([x_train[ds.train_labels == k].mean(0) for k in range(ds.num_classes)])
    dists = ((x_test[:, None, :] - means[None]) ** 2).sum(-1)
    return float((dists.argmin(1) == ds.test_labels).mean())


def _check_layout(ds: Dataset, image_shape: tuple[int, int, int], num_classes: int) -> None:
    """Shapes, dtypes, label range and channel statistics of a loaded dataset."""
    assert ds.image_shape == image_shape
    assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
    assert ds.train_images.shape == (len(ds.train_labels), *image_shape)
    assert ds.test_images.shape == (len(ds.test_labels), *image_shape)
    assert ds.num_classes == num_classes
    for labels in (ds.train_labels, ds.test_labels):
        assert labels.min() >= 0 and labels.max() < num_classes
    pixels = ds.train_images.reshape(-1, image_shape[-1]).astype(np.float64) / 255.0
    assert all(isinstance(v, float) for v in ds.mean + ds.std)
    np.testing.assert_allclose(ds.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.std, pixels.std(0), rtol=1e-9)


def _assert_one_line_user_error(exc_info: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc_info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# ----------------------------------------------------------------- digits


def test_digits_layout_and_fixed_split() -> None:
    ds = load_dataset("digits")
    _check_layout(ds, (8, 8, 1), 10)
    assert (len(ds.train_labels), len(ds.test_labels)) == (1437, 360)
    # 0..16 mapped to round(v * 255 / 16): 0 and 255 both occur.
    assert ds.train_images.min() == 0 and ds.train_images.max() == 255
    again = load_dataset("digits")
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    np.testing.assert_array_equal(ds.test_labels, again.test_labels)
    # Every class appears in both splits of the fixed permutation.
    assert set(ds.test_labels.tolist()) == set(range(10))


def test_unknown_dataset(tmp_path) -> None:
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError) as exc:
        load_dataset("imagenet", data_dir=str(tmp_path))  # the TFDS name is imagenet2012
    _assert_one_line_user_error(exc, "'imagenet' is unknown", *BUILT_IN, "TFDS catalog")


def test_synthetic_options_ignored_for_other_datasets() -> None:
    # The config always carries a synthetic section, whatever the dataset.
    ds = load_dataset("digits", synthetic={"num_train": 5, "image_shape": [4, 4, 1]})
    assert len(ds.train_labels) == 1437


# -------------------------------------------------------------- synthetic


def test_synthetic_options_and_determinism() -> None:
    # image_shape as a list, as it arrives from a JSON config.
    opts = {"num_train": 40, "num_test": 12, "image_shape": [12, 10, 1], "num_classes": 4}
    ds = load_dataset("synthetic", synthetic=opts)
    _check_layout(ds, (12, 10, 1), 4)
    assert (len(ds.train_labels), len(ds.test_labels)) == (40, 12)
    assert np.bincount(ds.train_labels).tolist() == [10, 10, 10, 10]  # Balanced.

    same = load_dataset("synthetic", synthetic=opts)
    np.testing.assert_array_equal(ds.train_images, same.train_images)
    np.testing.assert_array_equal(ds.test_labels, same.test_labels)
    other = load_dataset("synthetic", synthetic={**opts, "seed": 1})
    assert not np.array_equal(ds.train_images, other.train_images)
    # Train and test have separate streams: more train data, same test set.
    bigger = load_dataset("synthetic", synthetic={**opts, "num_train": 80})
    np.testing.assert_array_equal(ds.test_images, bigger.test_images)


def test_synthetic_defaults() -> None:
    ds = load_dataset("synthetic")
    _check_layout(ds, (32, 32, 3), 10)
    assert (len(ds.train_labels), len(ds.test_labels)) == (2048, 512)


def test_synthetic_difficulty_controls_separability() -> None:
    sizes = {"num_train": 1000, "num_test": 300}
    easy = _nearest_mean_accuracy(load_dataset("synthetic", synthetic={**sizes, "difficulty": 0.0}))
    mid = _nearest_mean_accuracy(load_dataset("synthetic", synthetic={**sizes, "difficulty": 0.8}))
    hard = _nearest_mean_accuracy(load_dataset("synthetic", synthetic={**sizes, "difficulty": 1.0}))
    assert easy > 0.95
    assert 0.25 < mid < easy
    assert hard < 0.2  # Chance is 0.1: at difficulty 1 labels carry no signal.


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"colour": 1}, "'colour'"),
        ({"difficulty": 1.5}, "1.5"),
        ({"difficulty": -0.1}, "-0.1"),
        ({"difficulty": "hard"}, "'hard'"),
        ({"image_shape": (32, 32)}, "(32, 32)"),
        ({"image_shape": (2, 2, 3)}, "(2, 2, 3)"),
        ({"image_shape": (32, 32, 5)}, "(32, 32, 5)"),
        ({"num_train": 0}, "num_train 0"),
        ({"num_test": 2.5}, "num_test 2.5"),
        ({"num_classes": 1}, "num_classes 1"),
        ({"seed": -1}, "seed -1"),
    ],
)
def test_synthetic_bad_options(options: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        load_dataset("synthetic", synthetic=options)
    _assert_one_line_user_error(exc, needle, "allowed")


# ------------------------------------------------------------------- TFDS


@pytest.fixture
def tfds_mock():
    """`tfds.testing.mock_data` (USE_CODE: random records, no files), patched for batching.

    In tensorflow-datasets 4.9.10 the mock assigns `__getitems__` to a
    MagicMock as a bare functools.partial; MagicMock does not bind that dunder,
    so batched reads fail with "missing ... 'record_keys'". The patched mock
    binds it, leaving the rest of tfds's mock (and tfds.data_source) as is.
    """
    tfds = pytest.importorskip("tensorflow_datasets")

    class BoundGetitemsMock(tfds.testing.PickableDataSourceMock):
        def __setattr__(self, name, value):
            if name == "__getitems__":
                value = functools.partial(value, self)
            super().__setattr__(name, value)

    array_record_source = tfds.testing.PickableDataSourceMock()
    array_record_source.return_value = BoundGetitemsMock()
    with tfds.testing.mock_data(
        num_examples=6,
        policy=tfds.testing.MockPolicy.USE_CODE,
        mock_array_record_data_source=array_record_source,
    ):
        yield


@pytest.mark.parametrize(
    "name, image_shape, num_classes",
    [
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("mnist", (28, 28, 1), 10),
        ("fashion_mnist", (28, 28, 1), 10),
        ("svhn_cropped", (32, 32, 3), 10),
    ],
)
def test_tfds_mock_data(tfds_mock, tmp_path, name, image_shape, num_classes) -> None:
    ds = load_dataset(name, data_dir=str(tmp_path))
    _check_layout(ds, image_shape, num_classes)
    assert (len(ds.train_labels), len(ds.test_labels)) == (6, 6)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _expected_image(index: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A unique image per index: pixel [0, 0, 0] holds the index (< 256)."""
    image = np.random.default_rng(index).integers(0, 256, shape, dtype=np.uint8)
    image[0, 0, 0] = index
    return image


def _prepare_tiny(name: str, data_dir: pathlib.Path, num_train: int, num_test: int):
    """Prepares a tiny array_record copy of tfds dataset `name` offline.

    Subclasses the real builder (same name, version and features), replacing
    only the download with generated records. Images are passed as PNG bytes
    because encoding numpy images needs TensorFlow, which is not installed.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    dataset_name = name

    class Tiny(tfds.builder_cls(name), skip_registration=True):
        name = dataset_name

        def _split_generators(self, dl_manager):
            return {
                "train": self._examples(range(num_train)),
                "test": self._examples(range(num_train, num_train + num_test)),
            }

        def _examples(self, indices):
            features = self.info.features
            for i in indices:
                example = {"image": _png(_expected_image(i, features["image"].shape)), "label": i % 10}
                if "id" in features:
                    example["id"] = f"tiny_{i}"
                yield i, example

    builder = Tiny(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return tuple(builder.info.features["image"].shape)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_tfds_reads_prepared_array_record(tmp_path, name) -> None:
    # The real read path (tfds.data_source on disk, PNG decoding), not a mock.
    shape = _prepare_tiny(name, tmp_path, num_train=30, num_test=7)
    ds = load_dataset(name, data_dir=str(tmp_path))
    _check_layout(ds, shape, 10)
    assert (len(ds.train_labels), len(ds.test_labels)) == (30, 7)
    seen = []
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        for image, label in zip(images, labels):
            index = int(image[0, 0, 0])
            np.testing.assert_array_equal(image, _expected_image(index, shape))
            assert label == index % 10
            seen.append(index)
    assert sorted(seen) == list(range(37))


def test_tfds_default_data_dir_from_env(tmp_path, monkeypatch) -> None:
    _prepare_tiny("mnist", tmp_path, num_train=4, num_test=2)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert len(load_dataset("mnist").train_labels) == 4


def test_tfds_unprepared_data_dir(tmp_path) -> None:
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError) as exc:
        load_dataset("cifar10", data_dir=str(tmp_path))
    _assert_one_line_user_error(exc, "'cifar10'", str(tmp_path), "not prepared", "tfds build cifar10")
    with pytest.raises(UserError) as exc:
        load_dataset("mnist", data_dir=str(tmp_path / "missing"))
    _assert_one_line_user_error(exc, "'mnist'", str(tmp_path / "missing"))


def test_tfds_unprepared_is_quiet_and_the_readme_gives_the_same_recipe(tmp_path, caplog, capfd) -> None:
    pytest.importorskip("tensorflow_datasets")
    from normjax.data.catalog import PREPARE_COMMAND

    absl = logging.getLogger("absl")
    level = absl.level
    # A version folder without dataset_info.json: tfds warns about it through absl.
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    with caplog.at_level(logging.DEBUG), pytest.raises(UserError) as exc:
        load_dataset("cifar10", data_dir=str(tmp_path))
    _assert_one_line_user_error(exc, PREPARE_COMMAND.format(name="cifar10"))
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
    assert capfd.readouterr().err == "" and absl.level == level
    # An absl error still gets through inside the quiet block.
    from normjax.data.catalog import quiet_absl

    with caplog.at_level(logging.DEBUG), quiet_absl():
        absl.error("kept")
        absl.warning("dropped")
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["kept"]
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    assert PREPARE_COMMAND.format(name="cifar10") in readme
    assert "copy NEW_DIR/cifar10 to" in readme and "tfds.data_source(" not in readme


def test_tfds_tfrecord_only_copy(tmp_path) -> None:
    # A copy built without --file_format array_record has only tfrecord shards.
    version_dir = tmp_path / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text(json.dumps({"name": "mnist"}))
    (version_dir / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(UserError) as exc:
        load_dataset("mnist", data_dir=str(tmp_path))
    _assert_one_line_user_error(exc, "'mnist'", str(tmp_path), "array_record")


# ------------------------------------------------------------- preprocess

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def _images(batch: int = 16, size: int = 8) -> jax.Array:
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))


def _normalized(images: jax.Array) -> np.ndarray:
    x = np.asarray(images).astype(np.float64) / 255.0
    return (x - np.array(MEAN)) / np.array(STD)


def test_preprocess_eval_is_normalization() -> None:
    images = _images()
    out = preprocess(images, None, mean=MEAN, std=STD, crop_padding=2, flip=True)
    assert out.dtype == jnp.float32 and out.shape == images.shape
    # XLA's CPU float32 division is not correctly rounded, so allow ~2 ulp.
    np.testing.assert_allclose(np.asarray(out), _normalized(images), rtol=0, atol=1e-6)
    bf16 = preprocess(images, None, mean=MEAN, std=STD, dtype=jnp.bfloat16)
    assert bf16.dtype == jnp.bfloat16


def test_preprocess_flip_only_flips_some_examples() -> None:
    images = _images(batch=32)
    out = np.asarray(preprocess(images, jax.random.key(0), mean=MEAN, std=STD, flip=True))
    ref = _normalized(images)
    same = np.isclose(out, ref, atol=1e-6).all(axis=(1, 2, 3))
    flipped = np.isclose(out, ref[:, :, ::-1], atol=1e-6).all(axis=(1, 2, 3))
    assert (same | flipped).all()
    assert 0 < flipped.sum() < 32


def test_preprocess_crop_is_a_shifted_window_of_the_padded_image() -> None:
    images = _images(batch=32)
    pad = 2
    out = np.asarray(preprocess(images, jax.random.key(1), mean=MEAN, std=STD, crop_padding=pad))
    padded = np.pad(_normalized(images), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    for b in range(len(out)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.allclose(out[b], padded[b, dy : dy + 8, dx : dx + 8], atol=1e-6)
        ]
        assert matches, b
        offsets.add(matches[0])
    assert len(offsets) > 3  # Independent offsets per example.


def test_preprocess_deterministic_and_key_dependent() -> None:
    images = _images()
    kwargs = dict(mean=MEAN, std=STD, crop_padding=2, flip=True)
    a = preprocess(images, jax.random.key(3), **kwargs)
    b = preprocess(images, jax.random.key(3), **kwargs)
    c = preprocess(images, jax.random.key(4), **kwargs)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    legacy = preprocess(images, jax.random.PRNGKey(3), **kwargs)  # Raw uint32 keys work too.
    assert legacy.shape == images.shape


def test_preprocess_jit_and_vmap() -> None:
    images = _images()
    kwargs = dict(mean=MEAN, std=STD, crop_padding=2, flip=True)
    key = jax.random.key(5)
    eager = preprocess(images, key, **kwargs)
    jitted = jax.jit(lambda x, k: preprocess(x, k, **kwargs))(images, key)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)

    # vmap over a leading "device" axis: each slice equals its own call.
    stacked = images.reshape(2, 8, 8, 8, 3)
    keys = jax.random.split(key, 2)
    mapped = jax.jit(jax.vmap(lambda x, k: preprocess(x, k, **kwargs)))(stacked, keys)
    for i in range(2):
        single = preprocess(stacked[i], keys[i], **kwargs)
        np.testing.assert_allclose(np.asarray(mapped[i]), np.asarray(single), atol=1e-6)

    # mean/std may also be traced arrays.
    traced = jax.jit(lambda x, m, s: preprocess(x, None, mean=m, std=s))(images, jnp.asarray(MEAN), jnp.asarray(STD))
    np.testing.assert_allclose(np.asarray(traced), _normalized(images), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(mean=(0.5, 0.5), std=STD), "mean has 2 entries"),
        (dict(mean=MEAN, std=(0.2, 0.0, 0.2)), "std"),
        (dict(mean=MEAN, std=STD, crop_padding=-1), "crop_padding -1"),
    ],
)
def test_preprocess_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        preprocess(_images(), jax.random.key(0), **kwargs)
    _assert_one_line_user_error(exc, needle, "allowed")
