"""A run's data, held on device or streamed: one interface for the training loop.

`input_for(cfg)` resolves `data.pipeline`:
  * `MemoryInput`: the whole uint8 dataset (`normjax.data.load_dataset`) goes to every device
    once; the compiled step picks, augments and normalizes each batch itself
    (`Program.select_batch`), so a step never waits for the host.
  * `StreamInput`: a prepared TFDS dataset read by grain (`normjax.data.streaming`): host
    workers decode, random-resized-crop and flip; each chunk's batches arrive stacked
    ([steps_per_dispatch, B, ...]) and sharded over the batch, placed ahead of the step by a
    background thread; the step only normalizes.
  * `auto`: in memory when the dataset is built in, or its uint8 train and eval arrays at the
    native size fit in `data.memory_limit_mb` (and `data.input_size` asks for no other size);
    otherwise streamed.

Both paths are deterministic in the seed and resume exactly, but they draw different batches for
the same seed: the in-memory order is a permutation drawn on device inside the compiled step
(`jax.random`, no host round trip), the streamed order is drawn by numpy on the host workers
(`normjax.data.Layout`), and their augmentations differ (pad-and-crop vs random-resized crop).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from normjax.data import (
    BUILT_IN,
    STATE_BYTES,
    Dataset,
    DevicePrefetcher,
    StreamingSource,
    Workers,
    load_dataset,
    state_from_array,
    state_to_array,
    tfds_image_info,
)
from normjax.errors import UserError
from normjax.parallel import DATA, batch_sharded, put_replicated
from normjax.training.program import DataSpec, Program

# Streamed splits are decoded for `sample` up to this many records (host memory, not results).
SAMPLE_LIMIT = 2048

# An evaluation: `{"params", "batch_stats"}` -> `{"loss", "accuracy"}` (BN in inference mode).
EvalFn = Callable[[dict], dict]


def input_for(cfg: dict) -> MemoryInput | StreamInput:
    """The input a config's `data` section names (cached: a sweep asks once per dataset).

    Raises:
      UserError: (one line) unknown or unprepared dataset, or settings the pipeline cannot serve.

    Example:
      >>> from normjax.config import DEFAULTS
      >>> inp = input_for({"data": DEFAULTS["data"]})  # digits
      >>> inp.streaming, inp.spec.image_shape
      (False, (8, 8, 1))
    """
    return _input(json.dumps(cfg["data"], sort_keys=True))


@functools.lru_cache(maxsize=4)
def _input(data_json: str) -> MemoryInput | StreamInput:
    d = json.loads(data_json)
    name, pipeline, size = d["name"], d["pipeline"], d["input_size"]
    data_dir = d["data_dir"] or None
    if name in BUILT_IN:
        if pipeline == "stream":
            raise UserError(
                f"data.pipeline='stream' reads prepared TFDS datasets; {name!r} is built in and held in "
                "memory: use data.pipeline=memory or auto"
            )
        return MemoryInput(load_dataset(name, data_dir=data_dir, synthetic=d["synthetic"], mnist1d=d["mnist1d"]), size)
    info = tfds_image_info(name, data_dir)  # one-line errors: unknown, unprepared, wrong features
    native = info.image_shape
    if pipeline == "auto":
        fits = native is not None and (size == 0 or native[:2] == (size, size))
        nbytes = (info.num_train + info.num_test) * int(np.prod(native)) if native else 0
        pipeline = "memory" if fits and nbytes <= d["memory_limit_mb"] * 2**20 else "stream"
    if pipeline == "memory":
        return MemoryInput(load_dataset(name, data_dir=data_dir), size)
    if size == 0:
        if native is None or native[0] != native[1]:
            shape = "varying" if native is None else f"{native[0]}x{native[1]}"
            raise UserError(
                f"dataset {name!r} has {shape} images: streaming it needs data.input_size, the side of "
                "the square input (e.g. 224)"
            )
        size = native[0]
    workers = d["workers"] if d["workers"] >= 0 else max(0, _usable_cpus() - 1)
    return StreamInput(
        StreamingSource(
            name,
            data_dir=data_dir,
            size=size,
            eval_crop=d["eval_crop"],
            workers=Workers(processes=workers, threads=d["worker_threads"]),
        ),
        prefetch=d["prefetch"],
    )


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunk_sizes(start: int, total: int, chunk: int, every: int) -> Iterator[int]:
    """The steps of each dispatched chunk from `start` to `total`: at most `chunk`, and never
    across a multiple of `every` (the checkpoint cadence).

    Example:
      >>> list(chunk_sizes(0, 12, 4, 6))
      [4, 2, 4, 2]
    """
    step = start
    while step < total:
        n = min(chunk, total - step, every - step % every)
        yield n
        step += n


def eval_batch(program: Program, n: int, batch_size: int) -> int:
    """The global evaluation batch for `n` examples: at most `batch_size`, a multiple of the
    device count (the last batch is padded)."""
    n_dev = program.mesh.devices.size
    return max(n_dev, min(batch_size, n) // n_dev * n_dev)


class MemoryInput:
    """A dataset held in memory: uint8 arrays (float32 for 1-D signals) put on every device (see
    the module docstring).

    Args:
      ds: the dataset.
      input_size: `data.input_size`: 0 or the dataset's own (square) side.
    """

    streaming = False

    def __init__(self, ds: Dataset, input_size: int = 0):
        h, w, _ = ds.image_shape
        if input_size and (h, w) != (input_size, input_size):
            raise UserError(
                f"data.input_size={input_size} differs from {ds.name!r}'s {h}x{w} images: the in-memory "
                "path trains at the dataset's own size; use data.input_size=0 or data.pipeline=stream"
            )
        self.ds, self.name = ds, ds.name

    @property
    def spec(self) -> DataSpec:
        ds = self.ds
        return DataSpec(
            num_train=int(ds.train_images.shape[0]),
            image_shape=tuple(ds.image_shape),
            num_classes=int(ds.num_classes),
            mean=tuple(ds.mean),
            std=tuple(ds.std),
            dtype=str(ds.train_images.dtype),
        )

    @property
    def num_test(self) -> int:
        """Examples in the evaluation set (one of them is 1/num_test of the test accuracy)."""
        return int(self.ds.test_images.shape[0])

    def feed(self, program: Program, cfg: dict, start: int, saved: np.ndarray | None = None) -> _MemoryFeed:
        """The whole training set on device, handed to every chunk (the step selects its batch)."""
        del cfg, start, saved  # the step's batch is a function of the state alone
        return _MemoryFeed(
            {
                "image": put_replicated(self.ds.train_images, program.mesh),
                "label": put_replicated(self.ds.train_labels.astype(np.int32), program.mesh),
            }
        )

    def eval_sets(self, program: Program, cfg: dict) -> dict[str, EvalFn]:
        """The train subset (`train.eval_train_examples`) and the test split, on device once."""
        t, ds = cfg["train"], self.ds
        n = t["eval_train_examples"] or ds.train_images.shape[0]
        return {
            "train": self._eval_set(program, ds.train_images[:n], ds.train_labels[:n], t["eval_batch_size"]),
            "test": self._eval_set(program, ds.test_images, ds.test_labels, t["eval_batch_size"]),
        }

    def sample(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Host uint8 images and int32 labels of `split` ('train' or 'test'), all of them."""
        ds = self.ds
        return (ds.train_images, ds.train_labels) if split == "train" else (ds.test_images, ds.test_labels)

    @staticmethod
    def _eval_set(program: Program, images: np.ndarray, labels: np.ndarray, batch_size: int) -> EvalFn:
        batch = eval_batch(program, images.shape[0], batch_size)
        pad = (-images.shape[0]) % batch
        x = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
        y = np.concatenate([labels.astype(np.int32), -np.ones(pad, np.int32)])
        x, y = put_replicated(x, program.mesh), put_replicated(y, program.mesh)

        def run(items: dict) -> dict:
            res = jax.device_get(program.evaluate(items["params"], items["batch_stats"], x, y, batch))
            return {"loss": float(res["loss"]), "accuracy": float(res["accuracy"])}

        return run


@dataclasses.dataclass
class _MemoryFeed:
    arrays: dict

    def __iter__(self) -> _MemoryFeed:
        return self

    def __next__(self) -> dict:
        return self.arrays

    def get_state(self) -> None:
        return None

    def close(self) -> None:
        self.arrays = {}


class StreamInput:
    """A prepared TFDS dataset streamed by grain (see the module docstring).

    Args:
      source: the `StreamingSource` (dataset, input size, eval crop, workers).
      prefetch: chunks placed on device ahead of the step.
    """

    streaming = True

    def __init__(self, source: StreamingSource, prefetch: int = 2):
        self.source, self.name, self.prefetch = source, source.name, prefetch
        info = source.info
        # Normalization statistics of a seeded sample (deterministic: equal on every process).
        mean, std = source.channel_stats()
        self._spec = DataSpec(
            num_train=info.num_train,
            image_shape=(source.size, source.size, info.channels),
            num_classes=info.num_classes,
            mean=tuple(mean),
            std=tuple(std),
            streaming=True,
        )

    @property
    def num_test(self) -> int:
        """Examples in the evaluation split (one of them is 1/num_test of the test accuracy)."""
        return int(self.source.info.num_test)

    @property
    def spec(self) -> DataSpec:
        return self._spec

    def feed(self, program: Program, cfg: dict, start: int, saved: np.ndarray | None = None) -> DevicePrefetcher:
        """This process's batches from step `start`, one stacked chunk per `next()` (chunk sizes
        as `chunk_sizes`, padded to `steps_per_dispatch` slots), checked against the pipeline
        state `saved` in the checkpoint (`state_array`)."""
        d = cfg["data"]
        stream = self.source.train(
            program.batch_size, cfg["train"]["seed"], start=start, flip=d["flip"], scale=(d["crop_scale_min"], 1.0)
        )
        if saved is not None:
            state = state_from_array(saved)
            stream.set_state(state)  # one line when the pipeline's settings changed since the save
            if stream.next_step != start:
                raise UserError(
                    f"the checkpoint's input-pipeline state is at step {stream.next_step}, its train "
                    f"state at step {start}; the checkpoint is inconsistent"
                )
        sizes = chunk_sizes(start, program.total_steps, program.chunk, cfg["checkpoint"]["every"])
        return DevicePrefetcher(
            stream, NamedSharding(program.mesh, P(None, DATA)), size=self.prefetch, stack=sizes, pad_to=program.chunk
        )

    def eval_sets(self, program: Program, cfg: dict) -> dict[str, EvalFn]:
        """The train subset (its first `train.eval_train_examples` records, eval transform) and
        the eval split (`test` or `validation`), read anew on each `run`."""
        t, info = cfg["train"], self.source.info
        n = t["eval_train_examples"] or info.num_train
        return {
            "train": self._eval_set(program, "train", min(n, info.num_train), t["eval_batch_size"]),
            "test": self._eval_set(program, info.eval_split, info.num_test, t["eval_batch_size"]),
        }

    def sample(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Host uint8 images (eval transform) and int32 labels of the first `SAMPLE_LIMIT`
        records of `split` ('train' or 'test': the eval split)."""
        info = self.source.info
        name = "train" if split == "train" else info.eval_split
        n = min(SAMPLE_LIMIT, info.num_train if split == "train" else info.num_test)
        batches = list(self.source.eval(n, split=name, limit=n, process_index=0, process_count=1))
        return batches[0]["image"], batches[0]["label"]

    def _eval_set(self, program: Program, split: str, n: int, batch_size: int) -> EvalFn:
        batch = eval_batch(program, n, batch_size)

        def run(items: dict) -> dict:
            total = None
            with DevicePrefetcher(
                self.source.eval(batch, split=split, limit=n), batch_sharded(program.mesh), size=self.prefetch
            ) as batches:
                for b in batches:
                    sums = program.evaluate_batch(items["params"], items["batch_stats"], b["image"], b["label"])
                    total = sums if total is None else jax.tree.map(lambda a, c: a + c, total, sums)
            loss, correct, count = (float(v) for v in jax.device_get(total))
            return {"loss": loss / count, "accuracy": correct / count}

        return run


def state_array(feed: Any) -> np.ndarray | None:
    """A feed's pipeline state as a checkpoint leaf (uint8 [STATE_BYTES]), None for in-memory data."""
    state = feed.get_state()
    return None if state is None else state_to_array(state)


def state_template() -> jax.ShapeDtypeStruct:
    """The checkpoint template of `state_array`."""
    return jax.ShapeDtypeStruct((STATE_BYTES,), np.uint8)
