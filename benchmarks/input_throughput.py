"""Input throughput of the streaming path (`normjax.data.streaming`): images/s and device placement.

The training pipeline at `--size` (224): records read from a TFDS array_record dataset (written
once into a temporary data dir from generated JPEGs of ImageNet-like sizes, `--width` x
`--height` +- 20%, smooth content plus noise so they compress like photos), decoded, cropped
(Inception random-resized crop, JPEG `draft` decoding) and flipped, batched per `--batch`.

Cases: grain worker processes x reader threads per process (`Workers`). In each of `--rounds`
rounds every case in turn is started (its first batch, worker start-up included, is `first_s`),
runs `--warmup` batches untimed and `--batches` timed, and is closed; images/s is the median over
rounds (rounds interleave the cases, so drift on a shared machine hits them alike). `--memory`
reads the JPEGs from a Python list instead of array_record (no tfds read, no deserialization).

Placement: the median time of `jax.make_array_from_process_local_data` of one uint8 batch
(blocked until ready) on the default device, and the rate of the whole path (pipeline +
`DevicePrefetcher`) for the fastest case.

Usage:
    python -m benchmarks.input_throughput [--quick] [--batch 64] [--batches 6] [--rounds 3] [--size 224]
                                          [--cases 0x1 0x2 1x2 2x1] [--memory]
                                          [--out benchmarks/results-input-cpu.json]
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

DEFAULT_CASES = ["0x1", "0x2", "1x2", "2x1"]


def make_jpegs(n: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """n JPEGs (quality 90) of about width x height: smooth colour fields plus pixel noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (int(v * rng.uniform(0.8, 1.2)) for v in (width, height))
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        freq = rng.uniform(2, 12, (3, 2))
        img = np.stack([np.sin(freq[c, 0] * x + c) * np.cos(freq[c, 1] * y) for c in range(3)], -1)
        img = 127 + 80 * img + rng.normal(0, 12, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def tfds_source(jpegs: list[bytes], data_dir: str) -> Any:
    """The JPEGs as the train split of an array_record dataset 'nj_bench' in data_dir."""
    import logging

    import tensorflow_datasets as tfds

    from normjax.data.catalog import open_tfds

    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds's "downloaded and prepared" lines

    class NjBench(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        # tfds looks up the code of a builder defined in a package module through the
        # `importlib_resources` backport, which it does not install on Python >= 3.9; a
        # builder of `__main__` skips that lookup (it has no checksums file anyway).
        __module__ = "__main__"
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=1000),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0), "test": self._generate_examples(1)}

        def _generate_examples(self, part):
            for i, data in enumerate(jpegs if part == 0 else jpegs[:8]):
                yield i, {"image": data, "label": i % 1000}

    NjBench(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return open_tfds("nj_bench", "train", data_dir)


def time_cases(
    source: Any, cases: list[tuple[int, int]], batch: int, size: int, warmup: int, batches: int, rounds: int
) -> list[dict[str, Any]]:
    """Images/s per case, the median over `rounds`: each round starts every case's stream in turn
    (first batch timed apart), drops `warmup` batches, times `batches` and closes it (an idle
    started stream would keep reading ahead into its buffers and inflate its next timing)."""
    from normjax.data.streaming import Layout, TrainStream, Workers

    results = [{"processes": p, "threads": t, "first_s": [], "rounds_images_per_s": []} for p, t in cases]
    for _ in range(rounds):
        for (processes, threads), r in zip(cases, results):
            print(f"[input] {processes} workers x {threads} threads ...", file=sys.stderr, flush=True)
            stream = TrainStream(
                source,
                Layout(len(source), batch, seed=0),
                size=size,
                channels=3,
                workers=Workers(processes=processes, threads=threads, buffer=max(2, threads)),
            )
            try:
                t0 = time.perf_counter()
                next(stream)
                r["first_s"].append(time.perf_counter() - t0)
                for _ in range(warmup - 1):
                    next(stream)
                t0 = time.perf_counter()
                for _ in range(batches):
                    next(stream)
                r["rounds_images_per_s"].append(batches * batch / (time.perf_counter() - t0))
            finally:
                stream.close()
    for r in results:
        r["images_per_s"] = statistics.median(r["rounds_images_per_s"])
        r["ms_per_batch"] = 1e3 * batch / r["images_per_s"]
        r["first_s"] = statistics.median(r["first_s"])
    return results


def time_placement(batch: int, size: int, repeats: int) -> dict[str, Any]:
    """Median ms of one `make_array_from_process_local_data` of a uint8 [batch, size, size, 3]."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    host = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        jax.make_array_from_process_local_data(sharding, host).block_until_ready()
        times.append(time.perf_counter() - t0)
    times = times[1:]
    ms = statistics.median(times) * 1e3
    return {
        "batch": batch,
        "mb": host.nbytes / 1e6,
        "median_ms": ms,
        "min_ms": min(times) * 1e3,
        "gb_per_s": host.nbytes / 1e9 / (ms / 1e3),
        "device": str(jax.devices()[0]),
    }


def time_prefetched(
    source: Any, processes: int, threads: int, batch: int, size: int, warmup: int, batches: int
) -> dict[str, Any]:
    """Images/s through the pipeline and `DevicePrefetcher` (arrays ready on device)."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from normjax.data.streaming import DevicePrefetcher, Layout, TrainStream, Workers

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    stream = TrainStream(
        source,
        Layout(len(source), batch, seed=1),
        size=size,
        channels=3,
        workers=Workers(processes=processes, threads=threads, buffer=max(2, threads)),
    )
    with DevicePrefetcher(stream, NamedSharding(mesh, P("data")), size=2) as it:
        for _ in range(warmup):
            jax.block_until_ready(next(it))
        t0 = time.perf_counter()
        for _ in range(batches):
            jax.block_until_ready(next(it))
        elapsed = time.perf_counter() - t0
    return {"processes": processes, "threads": threads, "images_per_s": batches * batch / elapsed}


def format_table(cases: list[dict[str, Any]]) -> str:
    header = ("workers", "threads", "images/s", "ms/batch", "first batch s")
    rows = [
        (
            str(c["processes"]),
            str(c["threads"]),
            f"{c['images_per_s']:.0f}",
            f"{c['ms_per_batch']:.1f}",
            f"{c['first_s']:.1f}",
        )
        for c in cases
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.input_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer images and batches (a smoke run)")
    p.add_argument("--images", type=int, default=384, help="distinct JPEGs generated (default 384)")
    p.add_argument("--width", type=int, default=400)
    p.add_argument("--height", type=int, default=350)
    p.add_argument("--size", type=int, default=224, help="output side (default 224)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--batches", type=int, default=6, help="timed batches per case and round (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per case and round (default 3)")
    p.add_argument(
        "--cases", nargs="+", default=DEFAULT_CASES, help="PROCESSESxTHREADS per case (default: %(default)s)"
    )
    p.add_argument("--memory", action="store_true", help="read the JPEGs from a list, not array_record")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results-input-cpu.json"), help="JSON output")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.batches, args.batch, args.rounds = 96, 2, 16, 1
    try:
        cases = [tuple(int(v) for v in c.split("x")) for c in args.cases]
    except ValueError:
        p.error(f"--cases {args.cases}: each must be PROCESSESxTHREADS, e.g. 2x1")

    t0 = time.perf_counter()
    jpegs = make_jpegs(args.images, args.width, args.height)
    kb = statistics.mean(len(j) for j in jpegs) / 1e3
    print(
        f"[input] {len(jpegs)} JPEGs of ~{args.width}x{args.height} (mean {kb:.0f} kB) in "
        f"{time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            source = [{"image": j, "label": i % 1000} for i, j in enumerate(jpegs)]
        else:
            source = tfds_source(jpegs, tmp)
        results = time_cases(source, cases, args.batch, args.size, args.warmup, args.batches, args.rounds)
        placement = time_placement(args.batch, args.size, repeats=10)
        best = max(results, key=lambda r: r["images_per_s"])
        prefetched = time_prefetched(
            source, best["processes"], best["threads"], args.batch, args.size, args.warmup, args.batches
        )
    report = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"mean_jpeg_kb": kb},
        "cases": results,
        "placement": placement,
        "prefetched": prefetched,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    source_name = "list" if args.memory else "array_record"
    print(
        f"training pipeline, {args.size}x{args.size}, batch {args.batch}, {source_name} source, "
        f"JPEG ~{args.width}x{args.height} ({kb:.0f} kB):"
    )
    print(format_table(results))
    print(
        f"device placement of one batch ({placement['mb']:.1f} MB uint8) on {placement['device']}: "
        f"{placement['median_ms']:.2f} ms median ({placement['gb_per_s']:.2f} GB/s)"
    )
    print(
        f"pipeline + DevicePrefetcher ({prefetched['processes']} workers x {prefetched['threads']} threads): "
        f"{prefetched['images_per_s']:.0f} images/s"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
