"""Image-classification datasets as in-memory uint8 numpy arrays.

Three kinds of source:
  * `digits`: scikit-learn's bundled 8x8 digits (no download), a fixed split.
  * `synthetic`: a deterministic generated task with a difficulty knob: class prototypes
    (`task='prototypes'`), or a parity (XOR) of two prototype features that no least-squares or
    logistic linear classifier learns (`task='parity'`).
  * any TFDS image-classification dataset of fixed image size (`cifar10`, `emnist/balanced`,
    `stl10`, ...): read offline with `tfds.data_source` from an array_record copy prepared in
    a data dir (`normjax.data.catalog`); TensorFlow is not needed to read. Datasets too large
    for memory, or of varying image size, stream instead (`normjax.data.streaming`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from normjax.data.catalog import channel_stats, open_tfds, quiet_absl, tfds_image_info
from normjax.errors import UserError

SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "num_train": 2048,
    "num_test": 512,
    "image_shape": (32, 32, 3),
    "num_classes": 10,
    "difficulty": 0.5,
    "seed": 0,
    "task": "prototypes",
}
# What the labels of the synthetic task are a function of (`_synthetic_arrays`).
SYNTHETIC_TASKS: tuple[str, ...] = ("prototypes", "parity")

# Records fetched per `__getitems__` call: big enough to amortize the
# array_record lookups, small enough that one chunk's decoded dicts stay small.
_READ_CHUNK = 1024
# Synthetic samples generated at once (bounds float64 temporaries to ~100 MB).
_SYNTHETIC_CHUNK = 2048


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test image-classification dataset held in memory.

    Images are uint8 [N, H, W, C], labels int32 [N]; `mean`/`std` are the
    per-channel statistics of the train images in [0, 1] units (pixel / 255).

    Example:
      >>> ds = load_dataset('digits')
      >>> ds.image_shape, ds.num_classes
      ((8, 8, 1), 10)
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.train_images.shape[1:]
        return (int(h), int(w), int(c))

    def __repr__(self) -> str:
        # The default dataclass repr would print the pixel arrays.
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    synthetic: dict[str, Any] | None = None,
) -> Dataset:
    """Loads dataset `name` (built in, or a prepared TFDS dataset) fully into memory.

    `data_dir` is only used by the TFDS datasets; it defaults to $TFDS_DATA_DIR,
    else ~/tensorflow_datasets. `synthetic` holds options for 'synthetic' (see
    `SYNTHETIC_DEFAULTS`) and is ignored for other names, since a config
    always carries that section.

    Example:
      >>> ds = load_dataset('synthetic', synthetic={'num_train': 64, 'difficulty': 0.0})
      >>> ds.train_images.shape, ds.train_images.dtype
      ((64, 32, 32, 3), dtype('uint8'))
    """
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _load_synthetic(synthetic or {})
    return _load_tfds(name, data_dir)


def _make_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
) -> Dataset:
    """Packs arrays into a `Dataset`, computing the train-set channel statistics."""
    train_images, train_labels = train
    test_images, test_labels = test
    mean, std = channel_stats(train_images)
    return Dataset(
        name=name,
        train_images=np.ascontiguousarray(train_images, dtype=np.uint8),
        train_labels=np.asarray(train_labels, dtype=np.int32),
        test_images=np.ascontiguousarray(test_images, dtype=np.uint8),
        test_labels=np.asarray(test_labels, dtype=np.int32),
        num_classes=int(num_classes),
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------- digits


def _load_digits() -> Dataset:
    """sklearn digits: 1,797 8x8 images in 0..16, split 1,437 train / 360 test."""
    from sklearn.datasets import load_digits  # Lazy: sklearn import is slow.

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    # RandomState (not Generator): its stream is frozen by numpy's compat
    # policy, so the split stays the same across numpy versions.
    order = np.random.RandomState(0).permutation(len(labels))
    train, test = order[:1437], order[1437:]
    return _make_dataset("digits", (images[train], labels[train]), (images[test], labels[test]), 10)


# -------------------------------------------------------------- synthetic


def _load_synthetic(options: dict[str, Any]) -> Dataset:
    """Validates `options` and generates the synthetic task."""
    if not isinstance(options, dict):
        raise UserError(f"synthetic options {options!r} are not a dict; allowed keys: {', '.join(SYNTHETIC_DEFAULTS)}")
    for key in options:
        if key not in SYNTHETIC_DEFAULTS:
            raise UserError(f"synthetic option {key!r} is unknown; allowed: {', '.join(SYNTHETIC_DEFAULTS)}")
    opts = {**SYNTHETIC_DEFAULTS, **options}
    num_train = _check_int("num_train", opts["num_train"], 1)
    num_test = _check_int("num_test", opts["num_test"], 1)
    num_classes = _check_int("num_classes", opts["num_classes"], 2)
    seed = _check_int("seed", opts["seed"], 0)
    shape = _check_shape(opts["image_shape"])
    difficulty = opts["difficulty"]
    if (
        isinstance(difficulty, bool)
        or not isinstance(difficulty, (int, float, np.integer, np.floating))
        or not 0.0 <= float(difficulty) <= 1.0
    ):
        raise UserError(f"synthetic difficulty {difficulty!r} is invalid; allowed: a number in [0, 1]")
    task = opts["task"]
    if not isinstance(task, str) or task not in SYNTHETIC_TASKS:
        raise UserError(f"synthetic task {task!r} is unknown; allowed: {', '.join(SYNTHETIC_TASKS)}")
    train, test = _synthetic_arrays(num_train, num_test, shape, num_classes, float(difficulty), seed, task)
    return _make_dataset("synthetic", train, test, num_classes)


def _check_int(key: str, value: Any, low: int) -> int:
    """Returns `value` as int if it is an integer >= low, else raises UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"synthetic {key} {value!r} is invalid; allowed: an integer >= {low}")
    return int(value)


def _check_shape(value: Any) -> tuple[int, int, int]:
    """Checks image_shape is (H, W, C) with H, W >= 4 and 1 <= C <= 4."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        and value[0] >= 4
        and value[1] >= 4
        and 1 <= value[2] <= 4
    )
    if not ok:
        raise UserError(
            f"synthetic image_shape {value!r} is invalid; allowed: (H, W, C) integers with H, W >= 4 and 1 <= C <= 4"
        )
    return (int(value[0]), int(value[1]), int(value[2]))


def _smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int, int], max_freq: int) -> np.ndarray:
    """n random periodic low-frequency images [n, H, W, C], each zero-mean, unit-std."""
    h, w, c = shape
    fy = np.abs(np.fft.fftfreq(h, 1.0 / h))
    fx = np.fft.rfftfreq(w, 1.0 / w)
    low = (fy[:, None] <= max_freq) & (fx[None, :] <= max_freq)
    low[0, 0] = False  # No DC term: the mean is set by the pixel offset.
    k = int(low.sum())
    spectrum = np.zeros((n, h, w // 2 + 1, c), np.complex128)
    spectrum[:, low, :] = rng.standard_normal((n, k, c)) + 1j * rng.standard_normal((n, k, c))
    fields = np.fft.irfft2(spectrum, s=(h, w), axes=(1, 2))
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    return fields


def _balanced_within(rng: np.random.Generator, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample a value in 0..k-1, uniform and balanced within each label (counts differ by <= 1).

    Args:
      rng: the random stream (one permutation per label is drawn from it).
      labels: int labels [N], >= 0.
      k: the number of values.

    Returns:
      int64 [N]: within each label, a random permutation of 0, 1, ..., k-1, 0, 1, ...

    Example:
      >>> a = _balanced_within(np.random.default_rng(0), np.array([0, 0, 1, 1, 1, 1]), 2)
      >>> sorted(a[:2].tolist()), sorted(a[2:].tolist())
      ([0, 1], [0, 0, 1, 1])
    """
    out = np.empty(len(labels), np.int64)
    for label in range(int(labels.max(initial=-1)) + 1):
        where = np.flatnonzero(labels == label)
        out[where] = rng.permutation(np.arange(len(where)) % k)
    return out


def _synthetic_arrays(
    num_train: int,
    num_test: int,
    shape: tuple[int, int, int],
    num_classes: int,
    difficulty: float,
    seed: int,
    task: str = "prototypes",
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Generates the synthetic train and test splits of `task` ('prototypes' or 'parity').

    Args:
      num_train: train examples.
      num_test: test examples.
      shape: (H, W, C) of an image.
      num_classes: K, the number of (balanced) classes.
      difficulty: d in [0, 1] (below).
      seed: the generator's seed.
      task: 'prototypes' (the class is a prototype) or 'parity' (the class is
        the sum mod K of two prototype features).

    Returns:
      ((train images, train labels), (test images, test labels)): uint8
      [N, H, W, C] and int32 [N].

    Example:
      >>> (x, y), _ = _synthetic_arrays(8, 4, (8, 8, 1), 2, 0.0, 0, 'parity')
      >>> x.shape, x.dtype, sorted(y.tolist())
      ((8, 8, 8, 1), dtype('uint8'), [0, 0, 0, 0, 1, 1, 1, 1])

    'prototypes': each class has a smooth random prototype P (a periodic
    low-frequency field), S_y = P_y. 'parity': there are two sets of K
    prototypes, A_0..A_{K-1} and B_0..B_{K-1}, and a sample of class y shows
    S_y = (A_a + B_b) / sqrt(2) with a uniform in 0..K-1 (balanced within each
    class) and b = (y - a) mod K: the label is (a + b) mod K, for K = 2 the XOR
    (parity) of two binary features. Given y, a and b are each uniform, so every
    class has the same mean image (mixture and distractors below included, up to
    the clipping of < 1% of the pixels): least-squares and
    logistic (softmax) regression on the pixels are then at chance in the
    population (their optimum is a constant; a finite train set lets them fit
    noise a little), and so is an all-linear network trained with cross-entropy.
    That is not a bound on every linear classifier: a hand-built one can beat
    chance (on noiseless K = 2, a half-space around one of the four clusters
    scores 3/4). A linear read-out sees a and b, not their sum mod K; a small
    ReLU network learns it.

    With d = difficulty, a sample of class y is
      (sqrt(1-d) S_y + 0.5 d u S'_z + sqrt(d) g R) / sqrt(1 - d + d g^2)
      + (0.1 + 0.5 d) * white pixel noise,
    with z another random class (S'_z: a fresh draw of its a for 'parity'),
    u ~ U(0, 1), and R a fresh smooth random
    field drawn like the prototypes, then circularly shifted by up to
    min(H, W) // 16 pixels per axis (so convolutions help). R lives in the same
    frequencies as the signal, so no filter removes it: at d = 1 the labels
    carry no information (chance), at d = 0 the classes are separable.
    g = sqrt(dims / 48) grows with the number of low-frequency dimensions, so a
    given d is about as hard for 8x8x1 as for 32x32x3 images. A small MLP's test
    accuracy against d (measured once, for all three shapes, on 'prototypes')
    is in benchmarks/RESULTS.md, "Numbers moved out of the code". On an
    8x8x1 image the low frequencies hold 8 dimensions (24 on 16x16, 144 on
    32x32x3): the 2K prototypes of 'parity' need larger images for many classes.

    Prototypes, train and test use separate seeded streams, so changing
    num_train does not change the test set. Samples are built in chunks to
    bound memory for large N.
    """
    h, w, c = shape
    max_freq = max(1, min(3, min(h, w) // 8))
    dims = ((2 * max_freq + 1) ** 2 - 1) * c
    signal_w = math.sqrt(1.0 - difficulty)
    distractor_w = math.sqrt(difficulty * dims / 48.0)
    norm = math.sqrt(signal_w**2 + distractor_w**2)
    noise_std = 0.1 + 0.5 * difficulty
    shift = min(h, w) // 16
    parity = task == "parity"
    prototypes = _smooth_fields(np.random.default_rng([seed, 0]), num_classes * (2 if parity else 1), shape, max_freq)

    def signal(labels: np.ndarray, first: np.ndarray | None, part: slice) -> np.ndarray:
        """S_y of `labels[part]`: the prototypes, or (A_a + B_(y - a)) / sqrt(2), a = first[part]."""
        if first is None:
            return prototypes[labels[part]]
        a = first[part]
        return (prototypes[a] + prototypes[num_classes + (labels[part] - a) % num_classes]) / math.sqrt(2.0)

    def split(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, stream])
        labels = rng.permutation(np.arange(n) % num_classes)  # Balanced classes.
        others = (labels + rng.integers(1, num_classes, n)) % num_classes
        mix = 0.5 * difficulty * rng.uniform(0.0, 1.0, (n, 1, 1, 1))
        dy = rng.integers(-shift, shift + 1, n)
        dx = rng.integers(-shift, shift + 1, n)
        # 'parity': a of each sample and of its mixed-in class (drawn last: 'prototypes' keeps its stream).
        first = _balanced_within(rng, labels, num_classes) if parity else None
        other_first = _balanced_within(rng, others, num_classes) if parity else None
        images = np.empty((n, h, w, c), np.uint8)
        for chunk, start in enumerate(range(0, n, _SYNTHETIC_CHUNK)):
            part = slice(start, start + _SYNTHETIC_CHUNK)
            chunk_rng = np.random.default_rng([seed, stream, chunk])
            m = len(labels[part])
            x = signal_w * signal(labels, first, part) + mix[part] * signal(others, other_first, part)
            x += distractor_w * _smooth_fields(chunk_rng, m, shape, max_freq)
            x /= norm
            x += noise_std * chunk_rng.standard_normal(x.shape)
            rows = (np.arange(h)[None, :] - dy[part, None]) % h
            cols = (np.arange(w)[None, :] - dx[part, None]) % w
            x = x[np.arange(m)[:, None, None], rows[:, :, None], cols[:, None, :]]
            # ~unit std around mid-grey: 40 levels per std leaves < 1% clipped.
            images[part] = np.clip(np.rint(128.0 + 40.0 * x), 0, 255)
        return images, labels.astype(np.int32)

    return split(num_train, 1), split(num_test, 2)


# ------------------------------------------------------------------- TFDS


def _load_tfds(name: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Reads every train and evaluation record of TFDS dataset `name` from data_dir."""
    info = tfds_image_info(name, data_dir)  # one-line errors: unknown, unprepared, no image/label
    if info.image_shape is None:
        raise UserError(
            f"dataset {name!r} has images of varying size; it can only stream: "
            "data.pipeline=stream with data.input_size (e.g. 224)"
        )
    with quiet_absl():
        train = _read_all(open_tfds(name, "train", data_dir, decode=True))
        test = _read_all(open_tfds(name, info.eval_split, data_dir, decode=True))
    return _make_dataset(name, train, test, info.num_classes)


def _read_all(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Decodes all records of a tfds data source into (uint8 images, int32 labels)."""
    n = len(source)
    shape = tuple(source.dataset_info.features["image"].shape)
    images = np.empty((n, *shape), np.uint8)
    labels = np.empty((n,), np.int32)
    # Batched reads are faster than one `source[i]` per record.
    get_many = getattr(source, "__getitems__", None)
    for start in range(0, n, _READ_CHUNK):
        keys = list(range(start, min(n, start + _READ_CHUNK)))
        records = get_many(keys) if get_many else [source[i] for i in keys]
        for i, record in zip(keys, records):
            images[i] = record["image"]
            labels[i] = record["label"]
    return images, labels
