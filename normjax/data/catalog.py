"""Where TFDS datasets are found and what normjax needs to know about them.

The one place that opens a prepared TFDS dataset (`open_tfds`, offline, array_record) and reads
its metadata (`tfds_image_info`); both input paths use it: the in-memory one
(`normjax.data.sources`) and the streaming one (`normjax.data.streaming`). An unknown or
unprepared dataset is a one-line `UserError` carrying the single preparation recipe,
`PREPARE_RECIPE`. tensorflow_datasets is imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from normjax.errors import UserError

# Built into normjax (no TFDS): scikit-learn's digits and the synthetic generator.
BUILT_IN: tuple[str, ...] = ("digits", "synthetic")

# The one way to prepare a TFDS dataset for normjax: the unprepared-dataset error prints it and
# the README's Data section shows it for cifar10 (tests/test_data.py checks that they agree).
PREPARE_COMMAND = "tfds build {name} --file_format array_record --data_dir NEW_DIR"
PREPARE_RECIPE = (
    "on a machine with internet and tensorflow run: " + PREPARE_COMMAND + ", then copy NEW_DIR/{name} to {target}"
)


def default_data_dir() -> str:
    """$TFDS_DATA_DIR if set, else ~/tensorflow_datasets (the tfds default).

    Example:
      >>> isinstance(default_data_dir(), str)
      True
    """
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Drops absl's INFO and WARNING records (tfds logs through absl) inside the block; errors stay.

    tfds warns, for instance, about every version folder without dataset_info.json; the
    one-line UserError already says what is wrong and how to fix it.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def not_prepared_message(name: str, data_dir: str, err: BaseException) -> str:
    """One line saying why TFDS dataset `name` cannot be read from `data_dir` and how to fix it.

    Args:
      name: the TFDS name.
      data_dir: the TFDS data dir searched.
      err: the error tfds raised.

    Returns:
      The message, with `PREPARE_RECIPE` filled in.
    """
    build = PREPARE_RECIPE.format(name=name, target=os.path.join(data_dir, name))
    dataset_dir = pathlib.Path(data_dir) / name
    versions = sorted(p.parent for p in dataset_dir.glob("*/dataset_info.json"))
    if not versions:
        return f"dataset {name!r} is not prepared in {data_dir}; {build}"
    if not any(any(v.glob("*.array_record*")) for v in versions):
        return (
            f"dataset {name!r} in {dataset_dir} has no array_record files "
            f"(tfds reads random-access formats only); {build}"
        )
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"dataset {name!r} in {dataset_dir} could not be read ({reason}); {build}"


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [..., C], in [0, 1] units (pixel / 255).

    Works from a 256-bin histogram per channel: exact, faster than
    float64 moments and without a float64 copy of the set (1.2 GB for CIFAR-10).

    Args:
      images: uint8 images, channels last.

    Returns:
      (mean, std): one float per channel.

    Example:
      >>> channel_stats(np.array([[[[0], [255]]]], np.uint8))
      ((0.5,), (0.5,))
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[-1]):
        hist = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        mean = float(p @ values)
        var = float(p @ (values - mean) ** 2)
        means.append(mean / 255.0)
        stds.append(math.sqrt(var) / 255.0)
    return tuple(means), tuple(stds)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What normjax needs to know about a prepared TFDS image-classification dataset.

    Attributes:
      name: the TFDS name (with config and version if given, e.g. 'imagenette/320px-v2').
      num_train: records in the train split.
      num_test: records in the evaluation split (`eval_split`).
      image_shape: (H, W, C) when every image has that shape, None when heights or widths vary.
      channels: C (1 or 3).
      num_classes: classes of the `label` feature.
      splits: every split's name and record count.
      eval_split: 'test' when the dataset has one, else 'validation' (ImageNet, Imagenette).

    Example:
      >>> info = ImageInfo('cifar10', 50000, 10000, (32, 32, 3), 3, 10, {'train': 50000, 'test': 10000}, 'test')
      >>> info.num_train, info.image_shape
      (50000, (32, 32, 3))
    """

    name: str
    num_train: int
    num_test: int
    image_shape: tuple[int, int, int] | None
    channels: int
    num_classes: int
    splits: dict[str, int]
    eval_split: str


def tfds_image_info(name: str, data_dir: str | os.PathLike[str] | None = None) -> ImageInfo:
    """Reads the metadata of prepared TFDS dataset `name`; never downloads.

    Any dataset prepared in `data_dir` as array_record with an `image` feature (an image of 1 or
    3 channels, any size) and a `label` class feature qualifies: `imagenet2012`, `imagenette`,
    `stl10`, `emnist/balanced`, `cifar10`, ... It needs a `train` split and a labelled `test`
    or `validation` one (`test` first; an unlabelled `test`, as ImageNet's, is skipped).

    Args:
      name: the TFDS name, optionally with config and version ('emnist/balanced:3.1.0').
      data_dir: the TFDS data dir; None for $TFDS_DATA_DIR, else ~/tensorflow_datasets.

    Returns:
      An `ImageInfo`.

    Raises:
      UserError: (one line) the dataset is unknown, unprepared, prepared without array_record
        files, lacks the features or splits, or its label is not a class label; an unprepared
        one's message carries the preparation recipe.

    Example:
      >>> tfds_image_info('cifar10', '/nonexistent')  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: dataset 'cifar10' is not prepared in /nonexistent; ... tfds build cifar10 ...
    """
    data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    sources = _open_tfds(name, None, data_dir)
    info = next(iter(sources.values())).dataset_info
    features = info.features
    found = sorted(features.keys()) if hasattr(features, "keys") else []
    if "image" not in found or "label" not in found:
        raise UserError(
            f"dataset {name!r} has features {', '.join(found) or 'none'}; "
            "normjax needs an 'image' and a 'label' feature"
        )
    label = features["label"]
    num_classes = getattr(label, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(
            f"dataset {name!r} has a label feature of type {type(label).__name__}; "
            "normjax needs a class label (tfds.features.ClassLabel) with at least 2 classes"
        )
    shape = tuple(features["image"].shape)
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise UserError(f"dataset {name!r} has images of shape {shape}; normjax needs (H, W, C) with C 1 or 3")
    splits = {str(k): len(v) for k, v in sources.items()}
    # A test split without labels (ImageNet's, when its tar was downloaded: every label is -1)
    # cannot be evaluated: where there is a validation split to fall back on, the test split's
    # first record tells (read decoded: tfds.testing.mock_data cannot serve encoded images).
    eval_split = next((s for s in ("test", "validation") if splits.get(s)), None)
    if eval_split == "test" and splits.get("validation"):
        first = _open_tfds(name, "test", data_dir, decode=True)[0]
        if int(first["label"]) < 0:
            eval_split = "validation"
    if "train" not in splits or eval_split is None:
        raise UserError(
            f"dataset {name!r} has splits {', '.join(sorted(splits))}; "
            "normjax needs 'train' and a labelled 'test' or 'validation'"
        )
    fixed = None if None in shape else (int(shape[0]), int(shape[1]), int(shape[2]))
    return ImageInfo(
        name=name,
        num_train=splits["train"],
        num_test=splits[eval_split],
        image_shape=fixed,
        channels=int(shape[-1]),
        num_classes=int(num_classes),
        splits=splits,
        eval_split=eval_split,
    )


def open_tfds(
    name: str, split: str, data_dir: str | os.PathLike[str] | None = None, *, decode: bool = False
) -> Sequence[dict]:
    """The random-access records of one split of prepared TFDS dataset `name`.

    Records are dicts with the dataset's features. By default the `image` of an image feature
    is left encoded (PNG or JPEG bytes), for the streaming workers to decode.

    Args:
      name: the TFDS name, as for `tfds_image_info`.
      split: the split name ('train', 'test', 'validation').
      data_dir: the TFDS data dir; None for $TFDS_DATA_DIR, else ~/tensorflow_datasets.
      decode: decode images to uint8 arrays on read (the in-memory path).

    Returns:
      A `tfds.data_source` (`len`, `[i]` and `__getitems__`), picklable into worker processes.

    Raises:
      UserError: (one line, with the preparation recipe) the dataset or split cannot be read.

    Example:
      >>> open_tfds('cifar10', 'train', '/nonexistent')  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: dataset 'cifar10' is not prepared in /nonexistent; ...
    """
    data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    return _open_tfds(name, split, data_dir, decode=decode)


def _open_tfds(name: str, split: str | None, data_dir: str, *, decode: bool = False) -> Any:
    """`tfds.data_source` of `split` (None: {split: source} of every split) without downloading;
    errors as one-line UserErrors."""
    import tensorflow_datasets as tfds  # Lazy: keeps `import normjax` light.

    try:
        with quiet_absl():
            builder = tfds.builder(name, data_dir=data_dir)
            image = builder.info.features["image"] if "image" in builder.info.features else None
            skip = not decode and isinstance(image, tfds.features.Image)
            decoders = {"image": tfds.decode.SkipDecoding()} if skip else None
            if split is not None:
                return tfds.data_source(name, split=split, data_dir=data_dir, download=False, decoders=decoders)
            names = sorted(builder.info.splits.keys())
            if names:
                found = tfds.data_source(name, split=names, data_dir=data_dir, download=False, decoders=decoders)
                return dict(zip(names, found))
            # No split metadata (tfds.testing.mock_data): the usual split names that open.
            out = {}
            for s in ("train", "test", "validation"):
                try:
                    out[s] = tfds.data_source(name, split=s, data_dir=data_dir, download=False, decoders=decoders)
                except (KeyError, ValueError):
                    continue
            return out or tfds.data_source(name, split=None, data_dir=data_dir, download=False, decoders=decoders)
    except tfds.core.registered.DatasetNotFoundError as err:
        # Neither a registered TFDS builder nor a prepared copy in data_dir: no recipe can help.
        if not (pathlib.Path(data_dir) / name.split(":")[0].split("/")[0]).exists():
            raise UserError(
                f"dataset {name!r} is unknown: not built in ({', '.join(BUILT_IN)}) and not a TFDS dataset "
                f"(the TFDS catalog lists them: https://www.tensorflow.org/datasets/catalog/overview)"
            ) from err
        raise UserError(not_prepared_message(name, data_dir, err)) from err
    # An unprepared, TFRecord-only or unreadable copy; KeyError: a split the dataset lacks.
    except (
        AssertionError,
        FileNotFoundError,
        RuntimeError,
        ValueError,
        KeyError,
    ) as err:
        raise UserError(not_prepared_message(name, data_dir, err)) from err
