"""A run directory: `config.json`, `layers.json`, `graph.json`, `metrics.jsonl`, `summary.json`, `checkpoints/`.

Whole files are written atomically (temp file + rename), so a killed run never leaves a
half-written config or summary; `metrics.jsonl` is append-only and trimmed on resume to the
steps the restored checkpoint had reached.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from normjax.errors import UserError

STATUSES = ("running", "done", "diverged", "failed")


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


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunDir:
    """Paths and I/O of one run directory.

    Example:
      >>> run = RunDir.create("runs/demo")
      >>> run.append_metrics([{"step": 0, "loss": 2.3}])
    """

    def __init__(self, path: Path):
        self.path = path
        self.config = path / "config.json"
        self.layers = path / "layers.json"
        self.graph = path / "graph.json"
        self.metrics = path / "metrics.jsonl"
        self.summary = path / "summary.json"
        self.checkpoints = path / "checkpoints"

    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        path = Path(path).expanduser().absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write_probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"workdir {str(path)!r} is not writable ({e.strerror or e}); give a writable --workdir") from None
        return cls(path)

    def read_summary(self) -> dict | None:
        return read_json(self.summary) if self.summary.exists() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def append_metrics(self, rows: list[dict]) -> None:
        if rows:
            with self.metrics.open("a") as f:
                f.writelines(json.dumps(_jsonable(r)) + "\n" for r in rows)

    def read_metrics(self) -> Iterator[dict]:
        if self.metrics.exists():
            for line in self.metrics.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    def trim_metrics(self, before_step: int) -> None:
        """Keep only rows with step < before_step (drops what was logged past the restored checkpoint)."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines()
                if line.strip() and _row_step(line) < before_step]
        tmp = self.metrics.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics)


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it
