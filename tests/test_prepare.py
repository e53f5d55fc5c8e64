"""`normjax prepare fashion_mnist`: the TFDS dataset written offline from Debian's IDX files.

The dataset is prepared once per module into a temporary data dir (seconds). Tests that need the
IDX files skip where Debian's `dataset-fashion-mnist` is not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil

import numpy as np
import pytest

from normjax import cli
from normjax.data import load_dataset
from normjax.data import prepare as prep

SOURCE = prep.debian_source_dir()
NO_SOURCE = f"Debian's Fashion-MNIST IDX files are absent; install them with: {prep.INSTALL_COMMAND}"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def source() -> str:
    if SOURCE is None:
        pytest.skip(NO_SOURCE)
    return SOURCE


@pytest.fixture(scope="module")
def idx(source):
    """{split: (images, labels)} as the IDX files hold them."""
    return prep.read_fashion_mnist(source)


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    result = prep.prepare("fashion_mnist", data_dir=data_dir)
    return data_dir, result


@pytest.fixture(scope="module")
def loaded(prepared):
    return load_dataset("fashion_mnist", data_dir=prepared[0])


def _pairs(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Sorted hashes of (image, label) pairs: the records as a multiset."""
    return sorted(hashlib.sha1(x.tobytes() + bytes([int(y)])).digest() for x, y in zip(images, labels))


def _tree(root) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its (size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _fails(argv: list[str], capsys) -> str:
    """Runs `normjax ARGV`, checks exit code 2 and one line on stderr; returns the message."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith("\n")
    msg = err[len("error: ") : -1]
    assert "\n" not in msg and msg
    return msg


def test_records_equal_the_idx_files(idx, loaded):
    ds = loaded
    for split, images, labels in (
        ("train", ds.train_images, ds.train_labels),
        ("test", ds.test_images, ds.test_labels),
    ):
        want_images, want_labels = idx[split]
        assert len(labels) == len(want_labels) == prep.FASHION_MNIST_SIZES[split]
        assert _pairs(images, labels) == _pairs(want_images, want_labels), split
        assert np.array_equal(np.bincount(labels, minlength=10), np.bincount(want_labels, minlength=10))


def test_info_equals_tfds_own_builder(prepared, tmp_path):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist

    data_dir, result = prepared
    own = tfds.builder_cls("fashion_mnist")(data_dir=str(tmp_path)).info  # the code's info, no download
    ours = tfds.builder("fashion_mnist", data_dir=str(data_dir)).info
    assert result.path == os.path.join(str(data_dir), "fashion_mnist", str(own.version))
    assert (ours.name, str(ours.version), ours.file_format.value) == (own.name, str(own.version), "array_record")
    assert ours.features.to_json() == own.features.to_json()
    assert ours.features["image"].shape == (28, 28, 1) and ours.features["image"].np_dtype == np.uint8
    assert ours.features["label"].names == own.features["label"].names == NAMES
    assert (ours.description, ours.citation, ours.homepage) == (own.description, own.citation, own.homepage)
    assert ours.supervised_keys == own.supervised_keys
    sizes = {s: ours.splits[s].num_examples for s in ours.splits}
    assert sizes == {"train": mnist._TRAIN_EXAMPLES, "test": mnist._TEST_EXAMPLES} == result.splits
    assert sorted(os.listdir(data_dir)) == ["fashion_mnist"]  # no temporary folder left


def test_load_dataset_reads_it(loaded):
    ds = loaded
    assert (ds.image_shape, ds.num_classes) == ((28, 28, 1), 10)
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert 0.28 < ds.mean[0] < 0.29 and 0.35 < ds.std[0] < 0.36  # Fashion-MNIST's pixel statistics


def test_second_prepare_keeps_it(prepared, capsys):
    data_dir, result = prepared
    before = _tree(data_dir)
    with pytest.raises(SystemExit) as e:
        cli.main(["prepare", "fashion_mnist", "--data-dir", str(data_dir)])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"fashion_mnist is already prepared in {result.path}; nothing to do\n"
    assert _tree(data_dir) == before


def test_only_fashion_mnist(tmp_path, capsys):
    msg = _fails(["prepare", "mnist", "--data-dir", str(tmp_path / "d")], capsys)
    assert msg == "dataset 'mnist' cannot be prepared by normjax; allowed: fashion_mnist"
    assert not (tmp_path / "d").exists()


def test_empty_from_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    data_dir = tmp_path / "data"
    msg = _fails(["prepare", "fashion_mnist", "--from", str(tmp_path / "empty"), "--data-dir", str(data_dir)], capsys)
    assert f"{tmp_path / 'empty' / 'train-images-idx3-ubyte.gz'} is missing" in msg
    assert prep.INSTALL_COMMAND in msg and "tfds build fashion_mnist" in msg
    assert not data_dir.exists() and sorted(os.listdir(tmp_path / "empty")) == []


def test_from_is_not_a_dir(tmp_path, capsys):
    msg = _fails(
        ["prepare", "fashion_mnist", "--from", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d")], capsys
    )
    assert f"{tmp_path / 'nope'} is not a directory" in msg and prep.INSTALL_COMMAND in msg
    assert sorted(os.listdir(tmp_path)) == []


def test_no_debian_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prep, "debian_source_dir", lambda: None)
    msg = _fails(["prepare", "fashion_mnist", "--data-dir", str(tmp_path / "d")], capsys)
    assert "missing" in msg and prep.INSTALL_COMMAND in msg and "tfds build fashion_mnist" in msg
    assert sorted(os.listdir(tmp_path)) == []


def _copy(source, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for pair in prep.FASHION_MNIST_FILES.values():
        for name in pair:
            shutil.copy(os.path.join(source, name), src / name)
    return src


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_gzip(path):
    path.write_bytes(b"not a gzip file" * 100)


def _labels_for_images(path):
    shutil.copy(path.parent / "t10k-labels-idx1-ubyte.gz", path)


def _drop_a_record(path):
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(data[: -28 * 28])


@pytest.mark.parametrize(
    "damage, says",
    [
        (_truncate, "is truncated"),
        (_not_gzip, "could not be read"),
        (_labels_for_images, "is not an IDX images file (magic 2049, expected 2051)"),
        (_drop_a_record, "its header says 60000 images of 28x28"),
    ],
)
def test_broken_source_file(source, tmp_path, capsys, damage, says):
    src = _copy(source, tmp_path)
    damage(src / "train-images-idx3-ubyte.gz")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    msg = _fails(["prepare", "fashion_mnist", "--from", str(src), "--data-dir", str(data_dir)], capsys)
    assert msg.startswith(str(src / "train-images-idx3-ubyte.gz")) and says in msg
    assert sorted(os.listdir(data_dir)) == []


def test_unwritable_data_dir(source, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    data_dir = tmp_path / "file.txt" / "sub"
    msg = _fails(["prepare", "fashion_mnist", "--data-dir", str(data_dir)], capsys)
    assert msg.startswith(f"data dir {data_dir} is not writable")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"] and (tmp_path / "file.txt").read_text() == "x"


def test_failure_while_writing_leaves_nothing(source, tmp_path, capsys, monkeypatch):
    png, calls = prep._png, []

    def failing(image):
        calls.append(1)
        if len(calls) > 3000:
            raise OSError(28, "No space left on device")
        return png(image)

    monkeypatch.setattr(prep, "_png", failing)
    data_dir = tmp_path / "new" / "data"
    msg = _fails(["prepare", "fashion_mnist", "--data-dir", str(data_dir)], capsys)
    assert msg == f"fashion_mnist could not be written into {data_dir} (No space left on device)"
    assert len(calls) > 3000 and sorted(os.listdir(tmp_path)) == []  # even the data dir it made is gone


def test_a_version_folder_that_is_no_dataset(tmp_path, capsys):
    version = tmp_path / "fashion_mnist" / "3.0.1"
    version.mkdir(parents=True)
    (version / "train.tfrecord").write_bytes(b"")
    msg = _fails(["prepare", "fashion_mnist", "--data-dir", str(tmp_path)], capsys)
    assert msg.startswith(f"{version} exists but is not a prepared array_record dataset")
    assert sorted(_tree(tmp_path)) == ["fashion_mnist", "fashion_mnist/3.0.1", "fashion_mnist/3.0.1/train.tfrecord"]
