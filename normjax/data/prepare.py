"""Prepares TFDS datasets offline from local files, without TensorFlow: `fashion_mnist`.

`prepare('fashion_mnist')` writes the TFDS dataset `fashion_mnist` (TFDS's own builder's name,
version, features, splits, description and citation) as array_record into a TFDS data dir, from
the four IDX files of Debian's package `dataset-fashion-mnist` (`apt-get install
dataset-fashion-mnist`) or of any folder holding them. `tfds.data_source` and normjax
(`load_dataset('fashion_mnist')`, the streaming pipeline) then read it as if `tfds build` had
made it. TFDS's own preparation encodes the images with TensorFlow; here they are encoded as PNG
with Pillow, so tensorflow is not needed. tensorflow_datasets is imported lazily.

References:
  Han Xiao, Kashif Rasul, Roland Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
  Benchmarking Machine Learning Algorithms", 2017, arXiv:1708.07747.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from normjax.data.catalog import PREPARE_RECIPE, default_data_dir, quiet_absl
from normjax.errors import UserError

# The datasets `prepare` can write.
SUPPORTED: tuple[str, ...] = ("fashion_mnist",)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
INSTALL_COMMAND = f"apt-get install {DEBIAN_PACKAGE}"
# Split -> (images file, labels file): the IDX files' names, upstream's and Debian's.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Records per split and image side (Xiao et al., 2017; TFDS's builder has the same constants).
FASHION_MNIST_SIZES: dict[str, int] = {"train": 60000, "test": 10000}
IMAGE_SIDE = 28
NUM_CLASSES = 10
_IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension
_TMP_PREFIX = ".normjax-prepare-"


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `prepare` did.

    Attributes:
      name: the TFDS name.
      path: the prepared version folder (DATA_DIR/NAME/VERSION).
      already: True when it was already prepared and nothing was written.
      seconds: wall time of the preparation (0 when already prepared).
      splits: records per split.

    Example:
      >>> Prepared('fashion_mnist', '/d/fashion_mnist/3.0.1', True, 0.0, {}).message
      'fashion_mnist is already prepared in /d/fashion_mnist/3.0.1; nothing to do'
    """

    name: str
    path: str
    already: bool
    seconds: float
    splits: dict[str, int]

    @property
    def message(self) -> str:
        """One line for people: where the dataset is and what was done."""
        if self.already:
            return f"{self.name} is already prepared in {self.path}; nothing to do"
        counts = ", ".join(f"{split} {n}" for split, n in self.splits.items())
        return f"{self.name} prepared in {self.path} ({counts} records, array_record) in {self.seconds:.1f} s"


def prepare(
    name: str,
    *,
    source_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Prepared:
    """Writes TFDS dataset `name` as array_record into `data_dir` from local files; never downloads.

    An already prepared dataset (its version folder holds dataset_info.json and array_record
    files) is kept as it is. Everything is read and checked before anything is written; the
    dataset is written into a temporary folder inside `data_dir` and renamed into place at the
    end, so a failure leaves nothing behind.

    Args:
      name: the TFDS name; only 'fashion_mnist' (`SUPPORTED`).
      source_dir: the folder holding the four IDX files; None for the one Debian's package
        `dataset-fashion-mnist` installs (asked from `dpkg -L`).
      data_dir: the TFDS data dir; None or '' for $TFDS_DATA_DIR, else ~/tensorflow_datasets (as
        normjax's `data.data_dir`).

    Returns:
      A `Prepared`: the version folder, and whether it was already there.

    Raises:
      UserError: (one line) an unsupported name; missing source files (with the command that
        installs them); a truncated, corrupt or wrong-sized IDX file; an unwritable data dir; a
        version folder that is there but not a readable array_record dataset.

    Example:
      >>> prepare('fashion_mnist', data_dir='/tmp/tfds')  # doctest: +SKIP
      Prepared(name='fashion_mnist', path='/tmp/tfds/fashion_mnist/3.0.1', already=False, ...)
      >>> prepare('mnist')
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: dataset 'mnist' cannot be prepared by normjax; allowed: fashion_mnist

    References:
      Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
      Learning Algorithms", 2017, arXiv:1708.07747.
    """
    if name not in SUPPORTED:
        raise UserError(f"dataset {name!r} cannot be prepared by normjax; allowed: {', '.join(SUPPORTED)}")
    root = os.path.abspath(os.fspath(data_dir) if data_dir else default_data_dir())
    builder_cls = _fashion_mnist_builder()
    version_dir = os.path.join(root, name, str(builder_cls.VERSION))
    if os.path.exists(os.path.join(version_dir, "dataset_info.json")) and any(
        ".array_record" in f for f in os.listdir(version_dir)
    ):
        return Prepared(name, version_dir, True, 0.0, {})
    if os.path.lexists(version_dir):
        raise UserError(
            f"{version_dir} exists but is not a prepared array_record dataset; move it away and "
            f"run `normjax prepare {name}` again"
        )
    start = time.perf_counter()
    arrays = read_fashion_mnist(source_dir, root)
    _write(builder_cls, arrays, root, name, version_dir)
    splits = {split: len(labels) for split, (_, labels) in arrays.items()}
    return Prepared(name, version_dir, False, time.perf_counter() - start, splits)


def debian_source_dir() -> str | None:
    """The folder where Debian's `dataset-fashion-mnist` put the four IDX files, asked from `dpkg -L`.

    Returns:
      The folder, or None when dpkg is absent, the package is not installed or lists no such
      folder.

    Example:
      >>> debian_source_dir() is None or os.path.isdir(debian_source_dir())
      True
    """
    try:
        out = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    wanted = {f for pair in FASHION_MNIST_FILES.values() for f in pair}
    found: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        path = line.strip()
        if os.path.basename(path) in wanted:
            found.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    complete = [d for d, names in found.items() if names == wanted]
    return complete[0] if complete else (next(iter(found)) if found else None)


def read_fashion_mnist(
    source_dir: str | os.PathLike[str] | None = None, data_dir: str | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads and checks Fashion-MNIST's four IDX files: {split: (images, labels)}.

    Args:
      source_dir: the folder holding them; None for Debian's (`debian_source_dir`).
      data_dir: the TFDS data dir, only named in the error message's recipe (None: the default).

    Returns:
      For 'train' and 'test': uint8 images [N, 28, 28, 1] and int64 labels [N] in 0..9.

    Raises:
      UserError: (one line) a file is missing (with the install command), truncated, corrupt or
        of the wrong size.

    Example:
      >>> read_fashion_mnist('/nonexistent')  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: fashion_mnist source dir /nonexistent is not a directory; ...

    References:
      Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
      Learning Algorithms", 2017, arXiv:1708.07747.
    """
    target = os.path.join(data_dir or default_data_dir(), "fashion_mnist")
    how = (
        f"install them with: {INSTALL_COMMAND} (then run `normjax prepare fashion_mnist`); or "
        + PREPARE_RECIPE.format(name="fashion_mnist", target=target)
    )
    files = ", ".join(f for pair in FASHION_MNIST_FILES.values() for f in pair)
    if source_dir is None:
        found = debian_source_dir()
        if found is None:
            raise UserError(
                f"fashion_mnist source files ({files}) are missing: Debian package {DEBIAN_PACKAGE} is "
                f"not installed (`dpkg -L {DEBIAN_PACKAGE}` lists none); {how}"
            )
        source = found
    else:
        source = os.fspath(source_dir)
        if not os.path.isdir(source):
            raise UserError(f"fashion_mnist source dir {source} is not a directory; it must hold {files}; {how}")
    out = {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        paths = [os.path.join(source, images_file), os.path.join(source, labels_file)]
        for path in paths:
            if not os.path.isfile(path):
                raise UserError(f"fashion_mnist source file {path} is missing; {how}")
        images = read_idx_images(paths[0])
        labels = read_idx_labels(paths[1])
        expected = FASHION_MNIST_SIZES[split]
        for path, n in zip(paths, (len(images), len(labels))):
            if n != expected:
                raise UserError(
                    f"{path} holds {n} records; Fashion-MNIST {split} has {expected} (a different dataset?)"
                )
        if images.shape[1:3] != (IMAGE_SIDE, IMAGE_SIDE):
            raise UserError(
                f"{paths[0]} holds {images.shape[1]}x{images.shape[2]} images; Fashion-MNIST's are "
                f"{IMAGE_SIDE}x{IMAGE_SIDE}"
            )
        if labels.max(initial=0) >= NUM_CLASSES:
            raise UserError(f"{paths[1]} holds label {int(labels.max())}; Fashion-MNIST has {NUM_CLASSES} classes")
        out[split] = (images, labels)
    return out


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads a gzipped IDX image file (magic 2051, big-endian count, rows, cols, then pixels).

    Args:
      path: the .gz file.

    Returns:
      uint8 images [N, rows, cols, 1].

    Raises:
      UserError: (one line) unreadable, truncated or corrupt gzip data, a wrong magic number, or
        a size that disagrees with the header.

    Example:
      >>> read_idx_images('/nonexistent.gz')
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: /nonexistent.gz is missing
    """
    data = _gunzip(path)
    header = _header(path, data, 16, _IMAGES_MAGIC, "images")
    n, rows, cols = (int(v) for v in header[1:])
    _check_size(path, data, 16, n * rows * cols, f"{n} images of {rows}x{cols}")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols, 1)


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads a gzipped IDX label file (magic 2049, big-endian count, then one byte per label).

    Args:
      path: the .gz file.

    Returns:
      int64 labels [N].

    Raises:
      UserError: (one line) unreadable, truncated or corrupt gzip data, a wrong magic number, or
        a size that disagrees with the header.

    Example:
      >>> read_idx_labels('/nonexistent.gz')
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: /nonexistent.gz is missing
    """
    data = _gunzip(path)
    n = int(_header(path, data, 8, _LABELS_MAGIC, "labels")[1])
    _check_size(path, data, 8, n, f"{n} labels")
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def _gunzip(path: str | os.PathLike[str]) -> bytes:
    """The decompressed bytes of `path`; one-line UserErrors for unreadable or broken gzip data."""
    path = os.fspath(path)
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise UserError(f"{path} is missing") from err
    except EOFError as err:  # the stream ends early: a truncated file
        raise UserError(f"{path} is truncated ({err}); replace it with a complete copy") from err
    except (OSError, zlib.error) as err:  # BadGzipFile (an OSError), CRC errors, bad deflate data
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise UserError(f"{path} could not be read ({reason}); replace it with a complete copy") from err


def _header(path: str | os.PathLike[str], data: bytes, size: int, magic: int, what: str) -> np.ndarray:
    """The big-endian uint32 header of an IDX file, its magic number checked."""
    if len(data) < size:
        raise UserError(
            f"{os.fspath(path)} is too short for an IDX header ({len(data)} bytes); replace it with a complete copy"
        )
    header = np.frombuffer(data[:size], ">u4")
    if int(header[0]) != magic:
        raise UserError(f"{os.fspath(path)} is not an IDX {what} file (magic {int(header[0])}, expected {magic})")
    return header


def _check_size(path: str | os.PathLike[str], data: bytes, header: int, body: int, what: str) -> None:
    """Raises a one-line UserError unless `data` is exactly the header plus `body` bytes."""
    if len(data) != header + body:
        raise UserError(
            f"{os.fspath(path)} holds {len(data) - header} data bytes, its header says {what} "
            f"({body} bytes); replace it with a complete copy"
        )


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 1] image (TFDS's `Image` feature takes encoded bytes as they are)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0], mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _fashion_mnist_builder() -> Any:
    """TFDS's own `FashionMNIST` builder reading arrays in place of downloads (unregistered).

    Everything but where the data come from is inherited: name, VERSION, `_info` (features,
    class names, description, citation, homepage, supervised keys) and the record keys (the
    index in the IDX file, so TFDS's shuffle on write orders the records as `tfds build` does).
    """
    from tensorflow_datasets.image_classification import mnist

    class FashionMNISTFromIDX(mnist.FashionMNIST, skip_registration=True):
        name = "fashion_mnist"
        # Nothing is downloaded, so no checksums file is looked up (TFDS finds it from the code's
        # path, a lookup that needs importlib_resources for a module outside tensorflow_datasets).
        code_path = None

        def __init__(self, *, arrays: dict[str, tuple[np.ndarray, np.ndarray]], **kwargs: Any):
            self._arrays = arrays
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in self._arrays}

        def _generate_examples(self, split):
            images, labels = self._arrays[split]
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": _png(image), "label": int(label)}

    return FashionMNISTFromIDX


def _write(builder_cls: Any, arrays: dict, root: str, name: str, version_dir: str) -> None:
    """Prepares into a temporary folder inside `root` and renames its version folder to
    `version_dir`; on any failure removes the temporary folder and every folder it created."""
    import tensorflow_datasets as tfds

    created = _make_dirs(root)
    tmp = None
    try:
        try:
            tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=root)
        except OSError as err:
            raise UserError(f"data dir {root} is not writable ({err.strerror or err})") from err
        with quiet_absl():
            builder = builder_cls(arrays=arrays, data_dir=tmp, file_format="array_record")
            config = tfds.download.DownloadConfig(try_download_gcs=False)
            # tfds prints where it writes (the temporary folder); `Prepared.message` says where it is.
            with _no_progress_bar(), contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare(download_config=config)
        dataset_dir = os.path.dirname(version_dir)
        if not os.path.isdir(dataset_dir):
            os.mkdir(dataset_dir)
            created.append(dataset_dir)
        os.rename(os.path.join(tmp, name, os.path.basename(version_dir)), version_dir)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                os.rmdir(d)  # only if still empty
            except OSError:
                break
        if isinstance(err, OSError):
            raise UserError(f"{name} could not be written into {root} ({err.strerror or err})") from err
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _make_dirs(root: str) -> list[str]:
    """Creates `root` and its missing parents; returns the folders created, outermost first."""
    missing = []
    d = root
    while not os.path.lexists(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    if os.path.lexists(d) and not os.path.isdir(d):
        raise UserError(f"data dir {root} is not writable ({d} is not a directory)")
    created = []
    try:
        for d in reversed(missing):
            os.mkdir(d)
            created.append(d)
    except OSError as err:
        for c in reversed(created):
            os.rmdir(c)
        raise UserError(f"data dir {root} is not writable ({err.strerror or err})") from err
    return created


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Hides tfds's progress bars inside the block (they would print dozens of lines)."""
    from tensorflow_datasets.core.utils import tqdm_utils

    was = tqdm_utils._active
    tqdm_utils.display_progress_bar(False)
    try:
        yield
    finally:
        tqdm_utils.display_progress_bar(was)
