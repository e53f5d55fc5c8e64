"""A run directory: `config.json`, `layers.json`, `graph.json`, `metrics.jsonl`, `summary.json`, `checkpoints/`.

Whole files are written atomically (temp file + rename), so a killed run never leaves a
half-written config or summary; `metrics.jsonl` is append-only and trimmed on resume to the
steps the restored checkpoint had reached.

Paths are `etils.epath` paths (`normjax.paths.as_path`), so a run directory may live in a bucket
(`gs://...`). What a remote store changes: a rename there is a copy and a delete (a reader
can see the old file or the new one, never a torn one), and an object cannot be appended to, so
each write of metrics rewrites `metrics.jsonl` (rows are written once per fetched chunk).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from normjax.errors import UserError
from normjax.paths import as_path, is_remote

STATUSES = ("running", "done", "diverged", "failed", "interrupted")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no NaN/inf; keep them readable
    return x


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON to `path` atomically (a temp file, then a rename)."""
    path = as_path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")  # per process: no two writers share a temp
    tmp.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(as_path(path).read_text())


class RunDir:
    """Paths and I/O of one run directory.

    Example:
      >>> run = RunDir.create("runs/demo")  # doctest: +SKIP
      >>> run.append_metrics([{"step": 0, "loss": 2.3}])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path = as_path(path)
        self.config = path / "config.json"
        self.layers = path / "layers.json"
        self.graph = path / "graph.json"
        self.metrics = path / "metrics.jsonl"
        self.summary = path / "summary.json"
        self.checkpoints = path / "checkpoints"

    @classmethod
    def create(cls, path: str | os.PathLike) -> RunDir:
        path = as_path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write_probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(
                f"workdir {str(path)!r} is not writable ({e.strerror or e}); give a writable --workdir"
            ) from None
        return cls(path)

    def read_config(self) -> Any:
        """config.json, read with today's meaning of its keys: an mlp run written while
        `model.shortcut` was resnet only (it stored the resnet default, true) trained the plain MLP,
        which its graph.json shows (no identity shortcut), so it reads `shortcut: false`; the
        `model.mlp_shortcut` key of the runs written before it became `model.shortcut` is dropped."""
        cfg = read_json(self.config)
        m = cfg.get("model") if isinstance(cfg, dict) else None
        if not isinstance(m, dict) or m.get("name") != "mlp":
            return cfg
        m = {k: v for k, v in m.items() if k != "mlp_shortcut"}
        if m.get("shortcut") is True:
            try:
                graph = read_json(self.graph)
                plain = all(e["ops"] for n in graph for e in n["operands"])  # an identity edge has no ops
            except (OSError, ValueError, KeyError, TypeError):
                plain = False  # no readable graph.json: as written
            if plain:
                m["shortcut"] = False
        return {**cfg, "model": m}

    def read_summary(self) -> dict | None:
        return read_json(self.summary) if self.summary.exists() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def append_metrics(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in rows)
        if is_remote(self.metrics):  # objects cannot be appended to
            old = self.metrics.read_text() if self.metrics.exists() else ""
            self.metrics.write_text(old + text)
        else:
            with self.metrics.open("a") as f:
                f.write(text)

    def read_metrics(self) -> Iterator[dict]:
        if self.metrics.exists():
            for line in self.metrics.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    def trim_metrics(self, before_step: int) -> None:
        """Keep only rows with step < before_step (drops what was logged past the restored checkpoint)."""
        if not self.metrics.exists():
            return
        kept = [
            line for line in self.metrics.read_text().splitlines() if line.strip() and _row_step(line) < before_step
        ]
        tmp = self.metrics.with_name(f"metrics.jsonl.{os.getpid()}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.metrics)


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it
