"""Tests for normjax.data.streaming: the grain input path over TFDS array_record datasets.

The datasets are tiny real ones, prepared offline in a temporary data dir by builders defined
here (variable-size JPEG images, fixed-size grey PNG images, one without a label feature), so
`tfds.data_source` reads real array_record files and the workers decode real JPEGs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grain")
tfds = pytest.importorskip("tensorflow_datasets")

from normjax.data import catalog  # noqa: E402
from normjax.data import streaming as st  # noqa: E402
from normjax.errors import UserError  # noqa: E402
from tfds_fake import builder as _builder  # noqa: E402
from tfds_fake import jpeg as _jpeg  # noqa: E402
from tfds_fake import png as _png  # noqa: E402
from tfds_fake import smooth as _smooth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUM_TRAIN, NUM_TEST, NUM_CLASSES = 40, 11, 5
SIZE = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A TFDS data dir with 'nj_images' (variable-size RGB JPEG), 'nj_grey' (16x16x1 PNG) and
    'nj_unlabelled' (no 'label' feature), all array_record."""
    root = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)

    def images(n: int, offset: int) -> list[dict]:
        out = []
        for i in range(n):
            h, w = (int(v) for v in rng.integers(24, 72, 2))
            out.append({"image": _jpeg(_smooth(rng, h, w)), "label": (i + offset) % NUM_CLASSES})
        return out

    specs = {
        "nj_images": (
            {
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            },
            {"train": images(NUM_TRAIN, 0), "test": images(NUM_TEST, NUM_TRAIN)},
        ),
        "nj_grey": (
            {"image": tfds.features.Image(shape=(16, 16, 1)), "label": tfds.features.ClassLabel(num_classes=3)},
            {
                "train": [{"image": _png(np.full((16, 16, 1), 10 * i, np.uint8)), "label": i % 3} for i in range(6)],
                "validation": [{"image": _png(np.zeros((16, 16, 1), np.uint8)), "label": 0}] * 2,
            },
        ),
        "nj_like_imagenet": (  # a test split without labels (-1), as ImageNet's
            {"image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(num_classes=2)},
            {
                "train": [{"image": _png(np.zeros((8, 8, 3), np.uint8)), "label": i % 2} for i in range(4)],
                "validation": [{"image": _png(np.zeros((8, 8, 3), np.uint8)), "label": 1}] * 3,
                "test": [{"image": _png(np.zeros((8, 8, 3), np.uint8)), "label": -1}] * 2,
            },
        ),
        "nj_unlabelled": (
            {"image": tfds.features.Image(shape=(8, 8, 3)), "target": tfds.features.ClassLabel(num_classes=2)},
            {
                "train": [{"image": _png(np.zeros((8, 8, 3), np.uint8)), "target": 0}],
                "test": [{"image": _png(np.zeros((8, 8, 3), np.uint8)), "target": 1}],
            },
        ),
    }
    for name, (features, examples) in specs.items():
        builder = _builder(name, features, examples)(data_dir=str(root), file_format="array_record")
        builder.download_and_prepare()
    return root


@pytest.fixture(scope="module")
def train_source(data_dir):
    return catalog.open_tfds("nj_images", "train", data_dir)


def _stream(source, seed=0, global_batch=8, index=0, count=1, start=0, **kw) -> st.TrainStream:
    layout = st.Layout(len(source), global_batch, seed=seed, process_index=index, process_count=count)
    return st.TrainStream(source, layout, size=SIZE, channels=3, start=start, **kw)


def _take(stream, n: int) -> list[dict]:
    try:
        return [next(stream) for _ in range(n)]
    finally:
        stream.close()


def _equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.exit_code == 2, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# ------------------------------------------------------------------ metadata


def test_info_of_any_image_dataset(data_dir) -> None:
    info = catalog.tfds_image_info("nj_images", data_dir)
    assert (info.num_train, info.num_test, info.image_shape, info.channels, info.num_classes) == (
        NUM_TRAIN,
        NUM_TEST,
        None,
        3,
        NUM_CLASSES,
    )
    assert info.splits == {"train": NUM_TRAIN, "test": NUM_TEST} and info.eval_split == "test"
    grey = catalog.tfds_image_info("nj_grey", data_dir)
    assert (grey.image_shape, grey.channels, grey.num_classes, grey.eval_split) == ((16, 16, 1), 1, 3, "validation")
    like_imagenet = catalog.tfds_image_info("nj_like_imagenet", data_dir)
    assert (like_imagenet.eval_split, like_imagenet.num_test) == ("validation", 3)


def test_bad_names_and_unprepared_data_are_one_line(data_dir, tmp_path) -> None:
    with pytest.raises(UserError) as exc:
        catalog.tfds_image_info("nj_no_such_dataset", data_dir)
    _one_line(exc, "'nj_no_such_dataset' is unknown", "digits, synthetic", "TFDS catalog")
    # A registered name with a folder but no prepared copy: the recipe.
    (tmp_path / "nj_images").mkdir()
    with pytest.raises(UserError) as exc:
        catalog.tfds_image_info("nj_images", tmp_path)
    _one_line(exc, "'nj_images'", "not prepared", "tfds build nj_images --file_format array_record")
    with pytest.raises(UserError) as exc:
        st.StreamingSource("cifar10", data_dir=tmp_path)
    _one_line(exc, "'cifar10'", str(tmp_path), "not prepared", "tfds build cifar10")
    with pytest.raises(UserError) as exc:
        catalog.tfds_image_info("nj_unlabelled", data_dir)
    _one_line(exc, "'nj_unlabelled'", "image, target", "'label'")


# --------------------------------------------------------------------- order


def test_order_and_augmentation_are_deterministic_per_seed(train_source) -> None:
    steps_per_epoch = NUM_TRAIN // 8
    a = _take(_stream(train_source, seed=1), 2 * steps_per_epoch)
    assert _equal(a, _take(_stream(train_source, seed=1), 2 * steps_per_epoch))
    batch = a[0]
    assert batch["image"].shape == (8, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    labels = np.array([train_source[i]["label"] for i in range(NUM_TRAIN)])
    assert all(np.array_equal(b["label"], labels[b["index"]]) for b in a)
    epochs = [np.concatenate([b["index"] for b in a[e * steps_per_epoch : (e + 1) * steps_per_epoch]]) for e in (0, 1)]
    for order in epochs:  # each epoch visits every record once
        assert sorted(order.tolist()) == list(range(NUM_TRAIN))
    assert not np.array_equal(epochs[0], epochs[1])  # and in a new order
    other = _take(_stream(train_source, seed=2), steps_per_epoch)
    assert not np.array_equal(np.concatenate([b["index"] for b in other]), epochs[0])
    # The augmentation is a function of (seed, epoch, record): the same record in the same epoch
    # is cropped alike in another batch position (another global batch), differently in another epoch.
    images = {
        (e, int(i)): b["image"][j]
        for e in (0, 1)
        for b in a[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        for j, i in enumerate(b["index"])
    }
    moved = _take(_stream(train_source, seed=1, global_batch=4), 1)[0]  # other batch positions
    for j, i in enumerate(moved["index"]):
        np.testing.assert_array_equal(moved["image"][j], images[(0, int(i))])
    assert sum(not np.array_equal(images[(0, r)], images[(1, r)]) for r in range(NUM_TRAIN)) > NUM_TRAIN // 2
    # Flips draw from the same generator without moving the crop: each image is its unflipped
    # twin or its mirror, and both occur.
    plain = _take(_stream(train_source, seed=1, flip=False), steps_per_epoch)
    mirrored = [
        not np.array_equal(x, y) and np.array_equal(x, y[:, ::-1])
        for b, c in zip(a, plain)
        for x, y in zip(b["image"], c["image"])
    ]
    same = [np.array_equal(x, y) for b, c in zip(a, plain) for x, y in zip(b["image"], c["image"])]
    assert all(m or s for m, s in zip(mirrored, same)) and 0 < sum(mirrored) < len(mirrored)


def test_shards_are_disjoint_cover_the_epoch_and_make_the_same_global_batch(train_source) -> None:
    steps_per_epoch = NUM_TRAIN // 8
    one = _take(_stream(train_source, seed=3), steps_per_epoch)
    shards = [_take(_stream(train_source, seed=3, index=p, count=2), steps_per_epoch) for p in (0, 1)]
    seen = [set(np.concatenate([b["index"] for b in s]).tolist()) for s in shards]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_TRAIN))
    for t in range(steps_per_epoch):  # process 0's block then process 1's: the one-process batch
        for k in ("image", "label", "index"):
            np.testing.assert_array_equal(np.concatenate([shards[0][t][k], shards[1][t][k]]), one[t][k])
    with pytest.raises(UserError, match="not divisible by the process count 3"):
        st.Layout(NUM_TRAIN, 8, seed=0, process_index=0, process_count=3)
    # 40 records, batch 12: 3 steps per epoch, 4 records left out of each epoch (a new 4 each time).
    layout = st.Layout(NUM_TRAIN, 12, seed=0)
    firsts = [np.concatenate([layout.records(e * 3 + b) for b in range(3)]) for e in range(2)]
    assert all(len(set(f.tolist())) == 36 for f in firsts) and set(firsts[0].tolist()) != set(firsts[1].tolist())


def test_eval_batches_are_ordered_padded_and_sharded(data_dir) -> None:
    src = catalog.open_tfds("nj_images", "test", data_dir)
    one = list(st.eval_batches(src, 4, size=SIZE, channels=3))
    assert len(one) == 3  # 11 records
    index = np.concatenate([b["index"] for b in one])
    assert index.tolist() == list(range(NUM_TEST)) + [-1]
    assert np.concatenate([b["label"] for b in one]).tolist() == [src[i]["label"] for i in range(NUM_TEST)] + [-1]
    assert not one[-1]["image"][-1].any()
    two = [list(st.eval_batches(src, 4, size=SIZE, channels=3, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(two[0]) == len(two[1]) == 3
    for t in range(3):
        np.testing.assert_array_equal(np.concatenate([two[0][t]["image"], two[1][t]["image"]]), one[t]["image"])
    grey = list(
        st.StreamingSource("nj_grey", data_dir=data_dir, size=8, eval_crop=1.0).eval(
            2, process_index=0, process_count=1
        )
    )
    assert [b["image"].shape for b in grey] == [(2, 8, 8, 1)]


# -------------------------------------------------------------------- resume


def test_resume_from_a_checkpoint_sees_the_same_batches(train_source, tmp_path) -> None:
    from normjax.training.checkpoint import Checkpointer

    full = _take(_stream(train_source, seed=5), 9)
    first = _stream(train_source, seed=5)
    head = [next(first) for _ in range(3)]
    assert _equal(head, full[:3])
    state = first.get_state()
    first.close()  # the run is killed here
    assert state["next_step"] == 3
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(3, {"params": {"w": np.ones(2, np.float32)}, "data": {"state": st.state_to_array(state)}})
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        step, items = ckpt.restore({"data": {"state": np.zeros(st.STATE_BYTES, np.uint8)}})
    restored = st.state_from_array(items["data"]["state"])
    assert step == 3 and restored == state
    resumed = _stream(train_source, seed=5)  # a new run, the same settings
    resumed.set_state(restored)
    assert _equal(_take(resumed, 6), full[3:])
    with pytest.raises(UserError) as exc:
        _stream(train_source, seed=6).set_state(restored)
    _one_line(exc, "seed 5 (now 6)")


def test_workers_and_device_prefetch_give_the_same_batches(train_source) -> None:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    ref = _take(_stream(train_source, seed=7), 6)
    with_workers = _take(_stream(train_source, seed=7, workers=st.Workers(processes=1, threads=2)), 6)
    assert _equal(with_workers, ref)
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = NamedSharding(mesh, P(None, "data"))
    stream = _stream(train_source, seed=7)
    with st.DevicePrefetcher(stream, sharding, stack=2, size=2) as batches:
        chunks = [next(batches) for _ in range(2)]
        assert batches.get_state()["next_step"] == 4  # handed out, not prefetched
    assert stream.next_step == 4  # closing rewinds the stream to what was handed out
    for c, chunk in enumerate(chunks):
        assert chunk["image"].shape == (2, 8, SIZE, SIZE, 3) and chunk["image"].sharding == sharding
        for s in range(2):
            np.testing.assert_array_equal(np.asarray(chunk["image"][s]), ref[2 * c + s]["image"])
            np.testing.assert_array_equal(np.asarray(chunk["label"][s]), ref[2 * c + s]["label"])


TWO_PROCESSES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    from normjax.data import streaming as st
    src = st.StreamingSource("nj_images", data_dir=sys.argv[3], size=16)
    stream = src.train(global_batch=8, seed=3)  # process index and count from jax
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    with st.DevicePrefetcher(stream, NamedSharding(mesh, P("data")), keys=("image", "label")) as batches:
        out = [multihost_utils.process_allgather(next(batches), tiled=True) for _ in range(5)]
    if jax.process_index() == 0:
        np.savez(sys.argv[4], **{f"{k}{t}": np.asarray(b[k]) for t, b in enumerate(out) for k in b})
    read = [b["index"].tolist() for b in [next(stream) for _ in range(5)]]  # steps 5-9, host side
    print(json.dumps({"process": jax.process_index(), "read": read}))
""")


def test_two_processes_read_disjoint_shards_into_the_one_process_batches(data_dir, train_source, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "global.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, f"localhost:{port}", str(i), str(data_dir), str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(o.strip().splitlines()[-1]) for o, _ in results]
    assert [r["process"] for r in reports] == [0, 1]
    ref = _take(_stream(train_source, seed=3), 10)
    for t in range(5):  # each process read its own half of the step's global batch
        assert reports[0]["read"][t] + reports[1]["read"][t] == ref[5 + t]["index"].tolist()
    with np.load(out) as got:
        for t in range(5):
            np.testing.assert_array_equal(got[f"image{t}"], ref[t]["image"])
            np.testing.assert_array_equal(got[f"label{t}"], ref[t]["label"])


# ----------------------------------------------------------------- image ops


def test_random_resized_crop_box_stays_in_range() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(8, 500, 2))
        left, top, right, bottom = st.random_resized_crop_box(rng, w, h)
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        cw, ch = right - left, bottom - top
        if (cw, ch) != (w, h) and not (cw == w or ch == h):  # not the fallback
            assert 0.08 * w * h * 0.8 <= cw * ch and 0.7 <= cw / ch <= 1.45
    # A very wide image: no try fits, the fallback is the centred box of ratio 4/3.
    assert st.random_resized_crop_box(np.random.default_rng(0), 1000, 10, scale=(1.0, 1.0)) == (493, 0, 506, 10)


def test_jpeg_draft_decoding_matches_the_full_decode() -> None:
    """The reduced-resolution JPEG decode crops the same region as the full decode."""
    img = _smooth(np.random.default_rng(1), 300, 400)
    data = _jpeg(img, quality=95)
    for box in [(0, 0, 400, 300), (100, 50, 260, 170), (13, 200, 77, 264)]:
        fast = st.decode_crop_resize(data, lambda w, h, b=box: b, SIZE, 3)
        full = st.decode_crop_resize(img, lambda w, h, b=box: b, SIZE, 3)
        assert np.abs(fast.astype(int) - full.astype(int)).mean() < 4, box
    grey = st.decode_crop_resize(data, lambda w, h: (0, 0, w, h), SIZE, 1)
    assert grey.shape == (SIZE, SIZE, 1)
    box = st.center_crop_box(400, 300)
    assert box == (68.75, 18.75, 331.25, 281.25)
