"""The training step with streamed data against the same step with the data held on device.

Both cases run the loop's own pieces (`normjax.training.inputs`: `MemoryInput.feed` and
`StreamInput.feed`, `Program.run_chunk`) on one model and one dataset: in memory, the whole uint8
set sits on the device and the compiled step picks, crops and flips each batch itself; streamed,
grain reads, decodes, random-resized-crops and flips each batch on the host (`--workers`
processes x `--threads` reader threads), and a background thread places each chunk's stacked
batches on the device ahead of the step. Logging, checkpoints and evaluation are left out (they
are the same in both). A third case, `stream_placed`, runs the streamed program on its first
chunk again and again, already on device: the streamed step without any host work, which
separates the program's cost from the input's. ms/step is the wall time of `--chunks` chunks of `--dispatch` fused steps
after `--warmup` chunks (compile and worker start-up), until the last chunk's state is ready;
cases alternate over `--rounds` rounds and the median is reported, with the stream/memory ratio.

Data (`--source`):
  * `tfds`: generated PNGs written once as a TFDS array_record dataset in a temporary data dir
    and read through `tfds.data_source`, as a real dataset is (needs tensorflow-datasets).
  * `list`: the same records from a Python list (no tfds: the GPU image lacks it); the reading
    is the only difference.
Images are `--image` pixels square (JPEG of about --image x 0.9 --image when --image > 64, else
PNG); the in-memory case holds them decoded and resized to `--size`.

Usage:
    python -m benchmarks.stream_step [--model resnet20|resnet50] [--batch 128] [--size 32] [--image 32]
        [--source tfds|list] [--workers 0] [--threads 2] [--dispatch 5] [--warmup 2] [--chunks 6]
        [--rounds 3] [--dtype float32] [--out benchmarks/results-stream-cpu.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import machine_info

MODELS = {
    "resnet20": {"name": "resnet", "depth": 20, "width": 16},
    "resnet50": {"name": "resnet", "block": "bottleneck", "depth": 50, "width": 64, "stem": "imagenet"},
}
NUM_CLASSES = 10


def make_images(n: int, side: int, seed: int = 0) -> tuple[list[bytes], np.ndarray, str]:
    """n encoded images (smooth colour fields plus noise, so they compress like photos), their
    labels, and the format: PNG of side x side up to 64, else JPEG of about side x 0.9 side."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    fmt = "png" if side <= 64 else "jpeg"
    out = []
    for _ in range(n):
        h, w = (side, side) if fmt == "png" else (int(0.9 * side), side)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        freq = rng.uniform(2, 12, (3, 2))
        img = np.stack([np.sin(freq[c, 0] * x + c) * np.cos(freq[c, 1] * y) for c in range(3)], -1)
        img = np.clip(127 + 80 * img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
        out.append(buf.getvalue())
    return out, rng.integers(0, NUM_CLASSES, n), fmt


def tfds_dataset(images: list[bytes], labels: np.ndarray, fmt: str, data_dir: str) -> str:
    """The images as train and test splits of TFDS dataset 'nj_stream_bench' in data_dir; its name."""
    import logging

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.ERROR)

    class NjStreamBench(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        __module__ = "__main__"  # as in benchmarks.input_throughput: skips tfds's code lookup
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                disable_shuffling=True,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format=fmt),
                        "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(len(images)), "test": self._generate_examples(64)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": images[i], "label": int(labels[i])}

    NjStreamBench(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return "nj_stream_bench"


def list_source(images: list[bytes], labels: np.ndarray, size: int, workers: Any) -> Any:
    """A `StreamingSource` over Python lists (no tfds), for machines without tensorflow-datasets."""
    from normjax.data.catalog import ImageInfo
    from normjax.data.streaming import StreamingSource

    records = [{"image": im, "label": int(y)} for im, y in zip(images, labels)]

    class ListSource(StreamingSource):
        def __init__(self):  # noqa: D107 - what StreamingSource.__init__ sets, from the lists
            self.data_dir, self.name, self.size, self.eval_crop, self.workers = None, "list", size, 1.0, workers
            self.info = ImageInfo(
                "list", len(records), 64, None, 3, NUM_CLASSES, {"train": len(records), "test": 64}, "test"
            )
            self._sources = {"train": records, "test": records[:64]}

    return ListSource()


def decoded(images: list[bytes], size: int) -> np.ndarray:
    """The images decoded and resized to size x size (the in-memory case's uint8 arrays)."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.BILINEAR)) for b in images]
    )


def build_inputs(args: argparse.Namespace) -> tuple[dict, Any, Any, dict, str]:
    """The streamed run config, the two inputs (memory, stream) over the same images, the
    in-memory config, and the image format."""
    from normjax.config import DEFAULTS, merge
    from normjax.data import Dataset, Workers
    from normjax.data.catalog import channel_stats
    from normjax.training.inputs import MemoryInput, StreamInput, input_for

    n = args.batch * args.epoch_batches
    images, labels, fmt = make_images(n, args.image)
    arrays = decoded(images, args.size)
    mean, std = channel_stats(arrays)
    ds = Dataset(
        "bench", arrays, labels.astype(np.int32), arrays[:64], labels[:64].astype(np.int32), NUM_CLASSES, mean, std
    )
    cfg = merge(
        DEFAULTS,
        {
            "model": MODELS[args.model],
            "data": {
                "name": "bench",
                "pipeline": "stream",
                "input_size": args.size,
                "eval_crop": 1.0,
                "flip": True,
                "workers": args.workers,
                "worker_threads": args.threads,
                "prefetch": args.prefetch,
            },
            "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "constant"},
            "train": {
                "batch_size": args.batch,
                "steps": 10**6,
                "steps_per_dispatch": args.dispatch,
                "dtype": args.dtype,
            },
            "log": {"metrics": []},
            "checkpoint": {"every": 10**6},
        },
    )
    workers = Workers(processes=args.workers, threads=args.threads)
    if args.source == "tfds":
        data_dir = tempfile.mkdtemp(prefix="nj_stream_bench_")
        cfg["data"].update(name=tfds_dataset(images, labels, fmt, data_dir), data_dir=data_dir)
        stream = input_for(cfg)
    else:
        stream = StreamInput(list_source(images, labels, args.size, workers), prefetch=args.prefetch)
    memory_cfg = merge(cfg, {"data": {"pipeline": "memory", "crop_padding": 4 if args.size <= 64 else 0}})
    return cfg, MemoryInput(ds), stream, memory_cfg, fmt


def time_case(cfg: dict, inp: Any, args: argparse.Namespace, reuse: bool = False) -> float:
    """ms/step of `args.chunks` chunks after `args.warmup`, fed by `inp` (`reuse`: its first
    chunk again and again, already on device: the streamed program without host work)."""
    import jax

    from normjax.training.loop import program_for

    program = program_for(cfg, inp)
    state = jax.tree.map(lambda x: x[None], program.init_state(cfg))
    feed = inp.feed(program, cfg, 0)
    first = next(feed) if reuse else None
    try:
        for k in range(args.warmup + args.chunks):
            if k == args.warmup:
                jax.block_until_ready(state)
                t0 = time.perf_counter()
            batch = first if reuse else next(feed)
            state, _ = program.run_chunk(state, batch["image"], batch["label"], args.dispatch)
        jax.block_until_ready(state)
        return 1e3 * (time.perf_counter() - t0) / (args.chunks * args.dispatch)
    finally:
        feed.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32, help="input side the model sees")
    p.add_argument("--image", type=int, default=32, help="stored image side (JPEG above 64)")
    p.add_argument("--epoch-batches", type=int, default=8, help="dataset size in batches")
    p.add_argument("--source", choices=["tfds", "list"], default="tfds")
    p.add_argument("--workers", type=int, default=0, help="grain worker processes")
    p.add_argument("--threads", type=int, default=2, help="reader threads per process")
    p.add_argument("--prefetch", type=int, default=2, help="chunks placed on device ahead")
    p.add_argument("--dispatch", type=int, default=5, help="steps fused per chunk")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--chunks", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", default="benchmarks/results-stream-cpu.json")
    args = p.parse_args(argv)

    stream_cfg, memory, stream, memory_cfg, fmt = build_inputs(args)
    cases = {
        "memory": (memory_cfg, memory, False),
        "stream": (stream_cfg, stream, False),
        "stream_placed": (stream_cfg, stream, True),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.rounds):
        for name, (cfg, inp, reuse) in cases.items():
            samples[name].append(time_case(cfg, inp, args, reuse))
            print(f"[stream_step] round {r}: {name} {samples[name][-1]:.1f} ms/step", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: [s / m for s, m in zip(samples[k], samples["memory"])] for k in ("stream", "stream_placed")}
    result = {
        "machine": machine_info(),
        "settings": vars(args),
        "image_format": fmt,
        "ms_per_step": med,
        "samples_ms_per_step": samples,
        "stream_over_memory": statistics.median(ratios["stream"]),
        "stream_placed_over_memory": statistics.median(ratios["stream_placed"]),
        "round_ratios": ratios,
        "images_per_s": {k: 1e3 * args.batch / v for k, v in med.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("ms_per_step", "stream_over_memory", "stream_placed_over_memory", "images_per_s")},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
