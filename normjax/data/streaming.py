"""Streaming input: TFDS image datasets read, decoded and augmented on host workers with grain.

The second input path, for datasets too large to hold in memory (ImageNet and the like). The
in-memory path (`normjax.data.sources`) puts a whole uint8 dataset on every device once; this one
reads records at random from a `tfds.data_source` (array_record), decodes and augments them in
grain worker processes, and hands the training loop one batch per step, placed with the step's
batch sharding and prefetched by a background thread.

Design:
  * grain's dataset API (`grain.MapDataset` -> `to_iter_dataset` -> `mp_prefetch`), not
    `grain.DataLoader`. A `MapDataset` is random access: local batch `t` is a pure function of
    (seed, t, process index), so the iterator's whole state is the next batch's number. Resume
    rebuilds the pipeline from that number (an O(1) slice) and continues bit for bit, with any
    worker count. The DataLoader batches inside each worker, so its batches change with
    `worker_count`, and its (and `mp_prefetch`'s) saved state holds one position per worker and
    must be restored with the same worker count. Our state is a small JSON dict, stored in a
    checkpoint as a fixed-size uint8 array (`state_to_array`), as Orbax templates need fixed
    shapes.
  * Order: epoch `e` visits the training records in a permutation drawn from (seed, e) (numpy,
    built once per epoch in each worker); steps per epoch are `num_train // global_batch` and the remainder of each
    epoch's permutation is dropped, as the in-memory path does. Global batch `t` is the slice
    `[b * G, (b + 1) * G)` of its epoch's permutation (b = t mod steps per epoch); process `p`
    of `P` reads only the contiguous block `[p * G / P, (p + 1) * G / P)` of it, so the processes'
    shards are disjoint, their union is the global batch, and the global batch (the processes'
    blocks in process order, as `jax.make_array_from_process_local_data` lays them out) is the
    same for every process count.
  * Augmentation (training): Inception-style random-resized crop (area scale (0.08, 1), aspect
    ratio (3/4, 4/3), ten tries, then a centre crop) to `size` x `size` and a horizontal flip with
    probability 1/2, drawn from a numpy generator seeded by (seed, epoch, record index): the same
    record gets the same augmentation in the same epoch whatever the process count, worker count
    or resume point. Evaluation: the centre `eval_crop` fraction of the shorter side, resized to
    `size` x `size` (256 -> 224 for 0.875), no randomness.
  * Decode: images are read undecoded (`tfds.decode.SkipDecoding`) and decoded with PIL inside
    the worker; for JPEG the crop is chosen first, and PIL's `draft` decodes at the largest
    power-of-2 reduction (at most 8) that still leaves the crop at least `size` pixels on each
    side, then one `resize(box=...)` crops and resizes (bilinear, antialiased).
  * Output: uint8 HWC, not normalized. Normalization stays on device (`normjax.data.preprocess`,
    the same code as the in-memory path, fused by XLA into the first layer): uint8 is a quarter
    of the float32 bytes per image (half of bfloat16) on the host-to-device link and in the
    worker-to-main-process shared memory, and the host workers spend their time on decoding.
  * Placement: `DevicePrefetcher` calls `jax.make_array_from_process_local_data` in a background
    thread and keeps `size` batches (or stacks of a chunk's batches) on device ahead of the step.

grain is imported lazily (only the functions that build pipelines need it): `import normjax.data`
and the in-memory path work without it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import math
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from normjax.data.catalog import channel_stats, default_data_dir, open_tfds, tfds_image_info
from normjax.errors import UserError

# Inception-style random-resized crop: area fraction and aspect-ratio (w / h) ranges, tries.
CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
_CROP_TRIES = 10
# Evaluation: the centre `EVAL_CROP` of the shorter side, i.e. resize to size / EVAL_CROP, then
# a centre crop of `size` (256 -> 224).
EVAL_CROP = 0.875
# Bytes of the checkpointed pipeline state: zero-padded JSON (Orbax templates need fixed shapes).
STATE_BYTES = 512
_STATE_VERSION = 1
# Stream tags mixed into the seeds, so the order and the augmentation draw independent numbers.
_ORDER_STREAM = 0x6F72
_AUGMENT_STREAM = 0x6175
# The stop of the endless training range (grain never materializes a range).
_ENDLESS = 2**62


# -------------------------------------------------------------- image ops


def random_resized_crop_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """An Inception-style random crop box (left, top, right, bottom) of a width x height image.

    Up to ten tries of an area fraction uniform in `scale` and an aspect ratio (w / h)
    log-uniform in `ratio`; the first box that fits is placed uniformly. When none fits, the
    largest centred box whose ratio lies within `ratio` (torchvision's fallback).

    Args:
      rng: the generator to draw from (consumed deterministically).
      width: image width in pixels.
      height: image height in pixels.
      scale: range of the crop's area as a fraction of the image's.
      ratio: range of the crop's aspect ratio (width / height).

    Returns:
      Integer pixel box (left, top, right, bottom), right and bottom exclusive.

    Example:
      >>> random_resized_crop_box(np.random.default_rng(0), 400, 300)
      (52, 133, 155, 270)
    """
    area = float(width * height)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_CROP_TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, fraction: float = EVAL_CROP) -> tuple[float, float, float, float]:
    """The centred square box of side `fraction` x the shorter side (the evaluation crop).

    Resizing this box to size x size equals resizing the shorter side to size / fraction and
    cropping the centre size x size (for 0.875 and 224: resize to 256, crop 224).

    Args:
      width: image width in pixels.
      height: image height in pixels.
      fraction: the crop's side over the shorter side, in (0, 1].

    Returns:
      Float box (left, top, right, bottom).

    Example:
      >>> center_crop_box(400, 300)
      (68.75, 18.75, 331.25, 281.25)
    """
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode_crop_resize(
    image: bytes | np.ndarray,
    box_fn: Any,
    size: int,
    channels: int,
    flip: bool = False,
) -> np.ndarray:
    """Decodes `image`, crops the box `box_fn(width, height)` and resizes it to size x size.

    One PIL `resize(box=...)` crops and resizes (bilinear, antialiased when shrinking). A JPEG is
    decoded with `draft`: at the largest power-of-2 reduction (1 to 8) that keeps at least
    `size` pixels across the crop, which cuts decode time for large images and small crops.

    Args:
      image: encoded bytes (PNG, JPEG, anything PIL reads) or a decoded uint8 [H, W, C] array.
      box_fn: (width, height) -> crop box (left, top, right, bottom) in pixels of the image.
      size: output side in pixels.
      channels: output channels, 1 (grey) or 3 (RGB); other modes are converted.
      flip: mirror left-right.

    Returns:
      uint8 [size, size, channels].

    Example:
      >>> img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
      >>> decode_crop_resize(img, lambda w, h: (0, 0, w, h), 2, 3).shape
      (2, 2, 3)
    """
    from PIL import Image  # Lazy: PIL is only needed where images are decoded.

    mode = "L" if channels == 1 else "RGB"
    if isinstance(image, np.ndarray):
        img = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
        box = box_fn(img.width, img.height)
    else:
        img = Image.open(io.BytesIO(image))
        width, height = img.size
        box = box_fn(width, height)
        if img.format == "JPEG":
            reduce = min(box[2] - box[0], box[3] - box[1]) / size
            if reduce >= 2:
                drafted = img.draft(mode, (math.ceil(width / reduce), math.ceil(height / reduce)))
                if drafted is not None:
                    # draft's box is the full image in reduced pixels: (0, 0, W / s, H / s).
                    factor = drafted[1][2] / width
                    box = tuple(v * factor for v in box)
    if img.mode != mode:
        img = img.convert(mode)
    out = img.resize((size, size), Image.BILINEAR, box=box)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


# ------------------------------------------------------------------ order


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the records of each step's batch come from, for one process.

    Epoch `e` visits the `num_records` records in a permutation drawn from (seed, e); it has
    `steps_per_epoch = num_records // global_batch` steps and drops the rest of its
    permutation. Step t's global batch is the slice [b G, (b + 1) G) of epoch t //
    steps_per_epoch's permutation (b = t mod steps_per_epoch); process p reads its block
    [p L, (p + 1) L) of that slice, L = G / process_count.

    Attributes:
      num_records: records in the split.
      global_batch: G, the batch over all processes.
      seed: the seed of the order and the augmentation.
      process_index: p.
      process_count: the number of processes; must divide G.

    Example:
      >>> layout = Layout(10, 4, seed=0, process_index=1, process_count=2)
      >>> layout.steps_per_epoch, layout.local_batch, layout.positions(0).tolist()
      (2, 2, [2, 3])
      >>> sorted(layout.permutation(0).tolist()) == list(range(10))
      True
    """

    num_records: int
    global_batch: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self) -> None:
        for key in ("num_records", "global_batch", "process_count"):
            _check_int(key, getattr(self, key), 1)
        _check_int("seed", self.seed, 0)
        _check_int("process_index", self.process_index, 0)
        if self.process_index >= self.process_count:
            raise UserError(f"process_index {self.process_index} is invalid; allowed: 0 to {self.process_count - 1}")
        if self.global_batch % self.process_count:
            raise UserError(
                f"global batch {self.global_batch} is not divisible by the process count "
                f"{self.process_count}; use a multiple of {self.process_count}"
            )
        if self.global_batch > self.num_records:
            raise UserError(f"global batch {self.global_batch} exceeds the {self.num_records} records of the split")

    @property
    def local_batch(self) -> int:
        """L, the records per step this process reads."""
        return self.global_batch // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        """Steps per pass over the records (the rest of each epoch's permutation is dropped)."""
        return self.num_records // self.global_batch

    def epoch(self, step: int) -> int:
        """The epoch step `step` belongs to."""
        return step // self.steps_per_epoch

    def positions(self, step: int) -> np.ndarray:
        """Positions in the epoch's permutation of this process's records at `step`: int64 [L]."""
        b = step % self.steps_per_epoch
        start = b * self.global_batch + self.process_index * self.local_batch
        return np.arange(start, start + self.local_batch, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s order of the record indices: int64 [num_records]."""
        return np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(self.num_records)

    def records(self, step: int) -> np.ndarray:
        """Record indices this process reads at `step`: int64 [L] (builds the permutation anew)."""
        return self.permutation(self.epoch(step))[self.positions(step)]


def _check_int(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"{key} {value!r} is invalid; allowed: an integer >= {low}")
    return int(value)


# ------------------------------------------------------------- transforms


class TrainBatch:
    """Local batch `t` of the training stream: reads, decodes and augments its records.

    A picklable callable (grain sends it to the worker processes); it caches the current
    epoch's permutation, so each worker builds one permutation per epoch.

    Args:
      source: random-access records with 'image' and 'label' (e.g. `open_tfds(...)`).
      layout: the `Layout` (order, process block).
      size: output side in pixels.
      channels: output channels (1 or 3).
      scale: random-resized-crop area range.
      ratio: random-resized-crop aspect-ratio range.
      flip: whether to flip with probability 1/2.

    Example:
      >>> src = [{'image': np.full((6, 8, 3), i, np.uint8), 'label': i % 2} for i in range(8)]
      >>> batch = TrainBatch(src, Layout(8, 4, seed=0), size=4, channels=3)(0)
      >>> batch['image'].shape, batch['label'].dtype, sorted(batch['index'].tolist()) == sorted(set(batch['index'].tolist()))
      ((4, 4, 4, 3), dtype('int32'), True)
    """

    def __init__(
        self,
        source: Sequence[dict],
        layout: Layout,
        *,
        size: int,
        channels: int,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        flip: bool = True,
    ) -> None:
        self.source, self.layout, self.size, self.channels = source, layout, size, channels
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), flip
        # (epoch, permutation), replaced as one tuple: grain's reader threads share this object.
        self._cache: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        # The permutation is rebuilt in each worker rather than pickled.
        return {**self.__dict__, "_cache": None}

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        step = int(step)
        epoch = self.layout.epoch(step)
        cache = self._cache
        if cache is None or cache[0] != epoch:
            cache = self._cache = (epoch, self.layout.permutation(epoch))
        indices = cache[1][self.layout.positions(step)]
        records = _read(self.source, indices)
        images = np.empty((len(indices), self.size, self.size, self.channels), np.uint8)
        labels = np.empty((len(indices),), np.int32)
        for j, (index, record) in enumerate(zip(indices.tolist(), records)):
            rng = np.random.default_rng([self.layout.seed, _AUGMENT_STREAM, epoch, index])
            flip = bool(rng.random() < 0.5) and self.flip  # drawn always: the box is the same either way
            box = functools.partial(random_resized_crop_box, rng, scale=self.scale, ratio=self.ratio)
            images[j] = decode_crop_resize(record["image"], box, self.size, self.channels, flip=flip)
            labels[j] = record["label"]
        return {"image": images, "label": labels, "index": indices.astype(np.int32)}


class EvalBatch:
    """Local batch `t` of an evaluation pass: records in order, resized and centre-cropped.

    Global batch t holds records [t G, (t + 1) G); process p reads its block [t G + p L,
    t G + (p + 1) L), L = G / process_count. Slots past the last record are padding: zero
    images, label -1 and index -1 (the convention of `Program.evaluate`).

    Args:
      source: random-access records with 'image' and 'label'.
      global_batch: G.
      size: output side in pixels.
      channels: output channels (1 or 3).
      crop: the centre crop's side over the shorter side (`EVAL_CROP`; 1.0 keeps it all).
      process_index: p.
      process_count: the number of processes; must divide G.

    Example:
      >>> src = [{'image': np.zeros((6, 8, 3), np.uint8), 'label': 1} for _ in range(5)]
      >>> EvalBatch(src, 4, size=4, channels=3)(1)['label'].tolist()
      [1, -1, -1, -1]
    """

    def __init__(
        self,
        source: Sequence[dict],
        global_batch: int,
        *,
        size: int,
        channels: int,
        crop: float = EVAL_CROP,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if global_batch % process_count:
            raise UserError(
                f"eval batch {global_batch} is not divisible by the process count {process_count}; "
                f"use a multiple of {process_count}"
            )
        if not 0.0 < crop <= 1.0:
            raise UserError(f"eval crop {crop!r} is invalid; allowed: a number in (0, 1]")
        self.source, self.global_batch, self.size, self.channels = source, global_batch, size, channels
        self.crop, self.process_index, self.process_count = crop, process_index, process_count

    def __len__(self) -> int:
        """The number of batches, the same on every process."""
        return -(-len(self.source) // self.global_batch)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        local = self.global_batch // self.process_count
        start = int(step) * self.global_batch + self.process_index * local
        indices = np.arange(start, start + local, dtype=np.int64)
        valid = indices[indices < len(self.source)]
        images = np.zeros((local, self.size, self.size, self.channels), np.uint8)
        labels = np.full((local,), -1, np.int32)
        box = functools.partial(center_crop_box, fraction=self.crop)
        for j, record in enumerate(_read(self.source, valid)):
            images[j] = decode_crop_resize(record["image"], box, self.size, self.channels)
            labels[j] = record["label"]
        index = np.where(indices < len(self.source), indices, -1).astype(np.int32)
        return {"image": images, "label": labels, "index": index}


def _read(source: Sequence[dict], indices: np.ndarray) -> list[dict]:
    """The records at `indices`, in one batched read when the source has one."""
    keys = [int(i) for i in indices]
    get_many = getattr(source, "__getitems__", None)
    return list(get_many(keys)) if get_many is not None and keys else [source[i] for i in keys]


# --------------------------------------------------------------- pipelines


@dataclasses.dataclass(frozen=True)
class Workers:
    """How the host work is spread: grain worker processes and reader threads.

    Attributes:
      processes: grain worker processes (`mp_prefetch`); 0 runs everything in this process.
      threads: reader threads per process, each making whole batches (PIL releases the GIL
        while it decodes and resizes, so threads run in parallel); 0 makes each batch when
        it is asked for, in the asking thread.
      buffer: batches each process keeps in flight ahead of the consumer (at least `threads`).

    Example:
      >>> Workers(processes=2).threads
      2
    """

    processes: int = 0
    threads: int = 2
    buffer: int = 2

    def __post_init__(self) -> None:
        _check_int("workers", self.processes, 0)
        _check_int("reader threads", self.threads, 0)
        _check_int("prefetch buffer", self.buffer, 1)


def _grain_iterator(batches: Any, count: tuple[int, int], workers: Workers) -> Iterator[dict[str, np.ndarray]]:
    """`batches(t)` for t in range(*count), made by grain with `workers`."""
    import grain  # Lazy: only the streaming path needs grain.
    from absl import flags

    # grain reads its absl flags (e.g. --grain_enable_multiprocess_worker_profiling once a
    # profiler is loaded) and fails on flags never parsed, as in any program not started by
    # absl.app: take the defaults, as a notebook does.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    ds = grain.MapDataset.range(*count).map(batches)
    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=workers.threads, prefetch_buffer_size=max(workers.buffer, workers.threads))
    )
    if workers.processes > 0:
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers.processes, per_worker_buffer_size=workers.buffer),
            worker_init_fn=_exit_with_parent,
        )
    return iter(it)


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
    """grain worker start-up: the worker dies with the training process, even when that is
    killed with SIGKILL (a preempted or `kill -9`-ed run leaves no orphaned workers; Linux)."""
    del worker_index, worker_count
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the line above ran
            os._exit(0)


class TrainStream:
    """This process's training batches from step `start` on: an endless, exactly resumable iterator.

    Each `next()` is the host batch of the next step: {'image': uint8 [L, size, size, C],
    'label': int32 [L], 'index': int32 [L] (record indices)}, a pure function of the layout and
    the augmentation settings (see `Layout`, `TrainBatch`), made by grain in `workers`.

    Args:
      source: random-access records with 'image' and 'label' (e.g. `open_tfds(name, 'train')`).
      layout: the `Layout` (records, global batch, seed, process).
      size: output side in pixels.
      channels: output channels (1 or 3).
      start: the first step.
      workers: the `Workers`.
      scale: random-resized-crop area range.
      ratio: random-resized-crop aspect-ratio range.
      flip: random horizontal flips.

    Example:
      >>> src = [{'image': np.full((6, 8, 3), i, np.uint8), 'label': i % 2} for i in range(8)]
      >>> stream = TrainStream(src, Layout(8, 4, seed=0), size=4, channels=3)
      >>> first = next(stream)
      >>> state = stream.get_state(); state['next_step']
      1
      >>> second = next(stream)
      >>> again = TrainStream(src, Layout(8, 4, seed=0), size=4, channels=3, start=1)
      >>> bool((next(again)['image'] == second['image']).all())
      True
    """

    def __init__(
        self,
        source: Sequence[dict],
        layout: Layout,
        *,
        size: int,
        channels: int,
        start: int = 0,
        workers: Workers = Workers(),
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        flip: bool = True,
    ) -> None:
        _check_int("input size", size, 1)
        if channels not in (1, 3):
            raise UserError(f"channels {channels!r} is invalid; allowed: 1, 3")
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise UserError(f"crop scale {scale} or ratio {ratio} is invalid; allowed: 0 < lo <= hi (scale hi <= 1)")
        self.source, self.layout, self.workers = source, layout, workers
        self._batch = TrainBatch(source, layout, size=size, channels=channels, scale=scale, ratio=ratio, flip=flip)
        self._fingerprint = {
            "num_records": layout.num_records,
            "global_batch": layout.global_batch,
            "seed": layout.seed,
            "size": size,
            "channels": channels,
            "scale": [float(v) for v in scale],
            "ratio": [float(v) for v in ratio],
            "flip": bool(flip),
        }
        self._next = _check_int("start step", start, 0)
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            # Endless: the largest stop a range takes; grain never materializes it.
            self._it = _grain_iterator(self._batch, (self._next, _ENDLESS), self.workers)
        batch = next(self._it)
        self._next += 1
        return batch

    @property
    def next_step(self) -> int:
        """The step whose batch `next()` returns."""
        return self._next

    def get_state(self) -> dict[str, Any]:
        """The iterator's state: the next step and what fixes the batches (JSON-able).

        Returns:
          {'version', 'next_step', and the settings that fix the batches}; the process count and
          the workers are not among them: the global batches do not depend on them.

        Example:
          >>> TrainStream([{'image': np.zeros((4, 4, 3), np.uint8), 'label': 0}] * 4,
          ...             Layout(4, 2, seed=3), size=2, channels=3).get_state()['next_step']
          0
        """
        return {"version": _STATE_VERSION, "next_step": self._next, **self._fingerprint}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a state `get_state` returned (possibly in another run of the program).

        Call it before iterating through a `DevicePrefetcher`, which reads ahead. The process
        count and the workers may differ from the saving run's: the global batches do not
        depend on them.

        Args:
          state: the saved state.

        Raises:
          UserError: the state was saved by a stream with other settings (dataset size, global
            batch, seed, input size, augmentation) or another state version.

        Example:
          >>> src = [{'image': np.zeros((4, 4, 3), np.uint8), 'label': 0}] * 4
          >>> stream = TrainStream(src, Layout(4, 2, seed=3), size=2, channels=3)
          >>> stream.set_state({**stream.get_state(), 'next_step': 5}); stream.next_step
          5
        """
        mine = self.get_state()
        theirs = {k: state.get(k) for k in mine if k != "next_step"}
        ours = {k: v for k, v in mine.items() if k != "next_step"}
        if theirs != ours:
            diff = ", ".join(f"{k} {theirs[k]!r} (now {ours[k]!r})" for k in ours if theirs[k] != ours[k])
            raise UserError(f"the saved input-pipeline state does not fit this pipeline: saved {diff}")
        self.close()
        self._next = _check_int("next_step", state.get("next_step"), 0)

    def close(self) -> None:
        """Stops the grain iterator (and its worker processes); `next()` restarts it.

        Example:
          >>> TrainStream([{'image': np.zeros((4, 4, 3), np.uint8), 'label': 0}] * 4,
          ...             Layout(4, 2, seed=3), size=2, channels=3).close()
        """
        it, self._it = self._it, None
        if it is not None:
            _close_grain(it)


def _close_grain(it: Any) -> None:
    """Ends a grain iterator's worker processes now rather than at garbage collection."""
    close = getattr(it, "close", None)
    if callable(close):
        close()


def eval_batches(
    source: Sequence[dict],
    global_batch: int,
    *,
    size: int,
    channels: int,
    crop: float = EVAL_CROP,
    process_index: int = 0,
    process_count: int = 1,
    workers: Workers = Workers(),
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `source` in order, in padded local batches (see `EvalBatch`).

    Every process yields the same number of batches, ceil(len(source) / global_batch).

    Args:
      source: random-access records with 'image' and 'label' (e.g. `open_tfds(name, 'test')`).
      global_batch: the batch over all processes.
      size: output side in pixels.
      channels: output channels (1 or 3).
      crop: the centre crop's side over the shorter side (`EVAL_CROP`; 1.0 keeps all).
      process_index: this process.
      process_count: the number of processes; must divide `global_batch`.
      workers: the `Workers`.

    Returns:
      An iterator of {'image': uint8 [L, size, size, C], 'label': int32 [L] (-1 = padding),
      'index': int32 [L] (-1 = padding)}.

    Example:
      >>> src = [{'image': np.zeros((6, 8, 3), np.uint8), 'label': 1} for _ in range(5)]
      >>> [b['label'].tolist() for b in eval_batches(src, 4, size=4, channels=3)]
      [[1, 1, 1, 1], [1, -1, -1, -1]]
    """
    batches = EvalBatch(
        source,
        global_batch,
        size=size,
        channels=channels,
        crop=crop,
        process_index=process_index,
        process_count=process_count,
    )
    return _grain_iterator(batches, (0, len(batches)), workers)


def state_to_array(state: dict[str, Any]) -> np.ndarray:
    """A pipeline state as uint8 [STATE_BYTES] (zero-padded JSON), a checkpoint leaf.

    Orbax restores into templates of fixed shape, so every state has the same size: save
    `{'data': {'state': state_to_array(s)}}` with the train state and restore with the template
    `{'data': {'state': np.zeros(STATE_BYTES, np.uint8)}}`.

    Args:
      state: a JSON-able dict (`TrainStream.get_state()`).

    Returns:
      uint8 [STATE_BYTES].

    Raises:
      ValueError: the JSON is longer than STATE_BYTES.

    Example:
      >>> state_from_array(state_to_array({'next_step': 7}))
      {'next_step': 7}
    """
    data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > STATE_BYTES:
        raise ValueError(f"pipeline state takes {len(data)} bytes; at most {STATE_BYTES} fit")
    out = np.zeros(STATE_BYTES, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


def state_from_array(array: Any) -> dict[str, Any]:
    """The state `state_to_array` stored.

    Args:
      array: uint8 [STATE_BYTES] (numpy or a jax.Array).

    Returns:
      The state dict.

    Raises:
      UserError: the bytes are not a stored state.

    Example:
      >>> state_from_array(state_to_array({'a': 1}))['a']
      1
    """
    data = bytes(np.asarray(array, np.uint8).reshape(-1)).rstrip(b"\0")
    try:
        state = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"the saved input-pipeline state is unreadable ({err})") from None
    if not isinstance(state, dict):
        raise UserError("the saved input-pipeline state is unreadable (not a JSON object)")
    return state


# --------------------------------------------------------------- placement


class DevicePrefetcher:
    """Places host batches on devices in a background thread, `size` batches ahead.

    Each host batch (this process's share) becomes a global `jax.Array` with
    `jax.make_array_from_process_local_data(sharding, ...)`; with `stack=k`, k consecutive host
    batches are stacked first ([k, L, ...], for a chunk of k fused steps: pass a sharding that
    shards axis 1). `stack` may also be an iterable of sizes, one per item (chunks cut at
    checkpoints), and `pad_to` pads each stack to a fixed length by repeating its last batch,
    so a compiled chunk sees one shape; the iteration ends with the sizes. When the wrapped iterator has `get_state`, this one's `get_state` is the
    wrapped state after the last batch handed out, not after the ones prefetched, so it is what
    a checkpoint taken now must hold.

    Args:
      batches: host batches (dicts of numpy arrays), e.g. a `TrainStream`.
      sharding: the batch sharding (e.g. `normjax.parallel.batch_sharded(mesh)`), or a dict
        key -> sharding.
      size: batches kept on device ahead of the consumer.
      keys: the keys placed; the others (e.g. 'index') are dropped.
      stack: k > 0 stacks k host batches per item; 0 places them one by one; or an iterable
        of per-item sizes.
      pad_to: stacks shorter than this are padded with copies of their last batch.

    Example:
      >>> import jax
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ('data',))
      >>> src = [{'image': np.zeros((4, 4, 3), np.uint8), 'label': 0}] * 8
      >>> stream = TrainStream(src, Layout(8, jax.device_count(), seed=0), size=2, channels=3)
      >>> with DevicePrefetcher(stream, NamedSharding(mesh, P('data'))) as batches:
      ...     batch = next(batches)
      >>> batch['image'].shape[1:], batches.get_state()['next_step']
      ((2, 2, 3), 1)
    """

    def __init__(
        self,
        batches: Iterator[dict[str, np.ndarray]],
        sharding: Any,
        *,
        size: int = 2,
        keys: Sequence[str] = ("image", "label"),
        stack: int | Iterable[int] = 0,
        pad_to: int = 0,
    ) -> None:
        _check_int("prefetch size", size, 1)
        if isinstance(stack, (int, np.integer)):
            self._sizes = itertools.repeat(_check_int("stack", stack, 0)) if stack else None
        else:
            self._sizes = iter(stack)
        self._pad_to = _check_int("pad_to", pad_to, 0)
        self._source, self._sharding, self._keys = batches, sharding, tuple(keys)
        get_state = getattr(batches, "get_state", None)
        self._get_state = get_state if callable(get_state) else None
        self._state = self._get_state() if self._get_state else None
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._fill, name="normjax-prefetch", daemon=True)
        self._thread.start()

    def _place(self, host: dict[str, np.ndarray]) -> dict[str, Any]:
        import jax

        out = {}
        for key in self._keys:
            sharding = self._sharding[key] if isinstance(self._sharding, dict) else self._sharding
            out[key] = jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(host[key]))
        return out

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sizes is not None:
                    n = _check_int("stack size", next(self._sizes), 1)
                    parts = [next(self._source) for _ in range(n)]
                    parts += parts[-1:] * (self._pad_to - n)
                    host = {k: np.stack([p[k] for p in parts]) for k in self._keys}
                else:
                    host = next(self._source)
                state = self._get_state() if self._get_state else None
                item = ("batch", self._place(host), state)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except StopIteration:
            self._put_final(("end", None, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            self._put_final(("error", err, None))

    def _put_final(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._done:
            raise StopIteration
        kind, value, state = self._queue.get()
        if kind == "end":
            self._done = True
            raise StopIteration
        if kind == "error":
            self._done = True
            raise value
        self._state = state
        return value

    def get_state(self) -> dict[str, Any] | None:
        """The wrapped iterator's state after the last batch handed out (None without one).

        Example:
          >>> DevicePrefetcher(iter([]), None).get_state() is None
          True
        """
        return self._state

    def close(self) -> None:
        """Stops the thread, drops the prefetched batches and closes the wrapped iterator.

        A wrapped iterator with `set_state` (a `TrainStream`) is rewound to just after the last
        batch handed out, so it continues there if iterated again.

        Example:
          >>> DevicePrefetcher(iter([]), None).close()
        """
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()
        set_state = getattr(self._source, "set_state", None)
        if self._state is not None and callable(set_state):
            set_state(self._state)
        close = getattr(self._source, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> DevicePrefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------ the facade


class StreamingSource:
    """A prepared TFDS image-classification dataset as a streaming input: train and eval batches.

    Args:
      name: the TFDS name (see `tfds_image_info`).
      data_dir: the TFDS data dir; None for $TFDS_DATA_DIR, else ~/tensorflow_datasets.
      size: the input side in pixels (random-resized crop for training, centre crop for eval).
      eval_crop: the eval crop's side over the shorter side (1.0 for small fixed-size images).
      workers: the `Workers` for both pipelines.

    Raises:
      UserError: (one line) as `tfds_image_info`.

    Example:
      >>> StreamingSource('cifar10', data_dir='/nonexistent')  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: dataset 'cifar10' is not prepared in /nonexistent; ...
      >>> # with a prepared dataset:
      >>> # src = StreamingSource('imagenet2012', size=224, workers=Workers(processes=8, threads=2))
      >>> # stream = src.train(global_batch=1024, seed=0)                       # this process's share
      >>> # batches = DevicePrefetcher(stream, batch_sharded(mesh), stack=steps_per_dispatch)
    """

    def __init__(
        self,
        name: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        size: int = 224,
        eval_crop: float = EVAL_CROP,
        workers: Workers = Workers(),
    ) -> None:
        self.data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
        self.info = tfds_image_info(name, self.data_dir)
        self.name, self.size, self.eval_crop, self.workers = name, _check_int("input size", size, 1), eval_crop, workers
        self._sources: dict[str, Sequence[dict]] = {}

    def source(self, split: str) -> Sequence[dict]:
        """The records of `split` (opened once)."""
        if split not in self._sources:
            self._sources[split] = open_tfds(self.name, split, self.data_dir)
        return self._sources[split]

    def train(
        self,
        global_batch: int,
        seed: int,
        *,
        start: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
        flip: bool = True,
        scale: tuple[float, float] = CROP_SCALE,
    ) -> TrainStream:
        """This process's endless training stream from step `start` (see `TrainStream`).

        `process_index`/`process_count` default to JAX's (`jax.process_index()`, ...).
        """
        index, count = _process(process_index, process_count)
        layout = Layout(self.info.num_train, global_batch, seed=seed, process_index=index, process_count=count)
        return TrainStream(
            self.source("train"),
            layout,
            size=self.size,
            channels=self.info.channels,
            start=start,
            workers=self.workers,
            flip=flip,
            scale=scale,
        )

    def eval(
        self,
        global_batch: int,
        *,
        split: str | None = None,
        limit: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """One ordered pass over `split` (default `info.eval_split`), or its first `limit` records,
        in padded batches (see `eval_batches`)."""
        index, count = _process(process_index, process_count)
        records = self.source(split or self.info.eval_split)
        if limit is not None and limit < len(records):
            records = _Head(records, _check_int("limit", limit, 1))
        return eval_batches(
            records,
            global_batch,
            size=self.size,
            channels=self.info.channels,
            crop=self.eval_crop,
            process_index=index,
            process_count=count,
            workers=self.workers,
        )

    def channel_stats(self, num_examples: int = 1024, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] units of a seeded sample of eval-transformed train images.

        The in-memory path computes them over the whole train split; a streamed one is too large
        to read for that, and a seeded sample is deterministic and close.

        Args:
          num_examples: the sample size (at most the train split).
          seed: the sample's seed.

        Returns:
          (mean, std), one value per channel, as `Dataset.mean`/`Dataset.std`.
        """
        src = self.source("train")
        n = min(num_examples, len(src))
        picks = np.sort(np.random.default_rng([seed, _ORDER_STREAM]).choice(len(src), n, replace=False))
        box = functools.partial(center_crop_box, fraction=self.eval_crop)
        images = np.stack(
            [decode_crop_resize(r["image"], box, self.size, self.info.channels) for r in _read(src, picks)]
        )
        return channel_stats(images)


class _Head(Sequence):
    """The first `n` records of a random-access source (picklable, for grain workers)."""

    def __init__(self, source: Sequence[dict], n: int) -> None:
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]

    def __getitems__(self, keys: Sequence[int]) -> list[dict]:
        if any(not 0 <= k < self.n for k in keys):
            raise IndexError(keys)
        return _read(self.source, np.asarray(keys, np.int64))


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    if index is None or count is None:
        import jax

        index = jax.process_index() if index is None else index
        count = jax.process_count() if count is None else count
    return int(index), int(count)
