"""Run and sweep directories: their layout, and the one module that reads and writes them.

A run directory (`RunDir`)::

  config.json     the run's config                       write_config / read_config
  layers.json     the weight layers, in the order the    write_layers / read_layers
                  per-layer metrics list them
  graph.json      the model's graph                      write_graph / read_graph
  metrics.jsonl   one JSON row per logged step           append_metrics / read_metrics / last_metric
  summary.json    status, final metrics, hook summaries  write_summary / read_summary
  error.txt       a failed sweep run's traceback         write_error
  lock            who trains the run now                 lock_path (`normjax.training.lock`)
  checkpoints/    Orbax checkpoints                      checkpoints (`normjax.training.checkpoint`)
  figures/        the study commands' figures            figures

A sweep directory (`SweepDir`)::

  sweep.json                    the runs and the keys they vary   write_manifest / read_manifest
  <run name>/                   one run directory per run         run(name)
  pretrain/<base run>/          the base runs of warm starts      pretrain / base_run(name)
  results.csv, results_agg.csv  `normjax results`                 results_path / results_agg_path
  plots/, figures/              `normjax plot`, study figures     plots / figures

No other module spells these names (`tests/test_rundir.py` checks it).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from normjax.errors import UserError
from normjax.paths import as_path, is_remote

if TYPE_CHECKING:
    from normjax.analysis.graph import Graph

STATUSES = ("running", "done", "diverged", "failed", "interrupted")
_TAIL_BYTES = 16 * 1024


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
    """Write `obj` as JSON to `path` atomically (a temp file, then a rename).

    Args:
      path: a local path or URL.
      obj: JSON-ready values; numpy values become Python ones, non-finite floats the strings
        'nan'/'inf' (JSON has neither).

    Example:
      >>> write_json("/tmp/normjax_doctest.json", {"loss": float("nan")})
      >>> read_json("/tmp/normjax_doctest.json")
      {'loss': 'nan'}
    """
    path = as_path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")  # per process: no two writers share a temp
    tmp.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON file at `path` (a local path or URL); raises OSError or ValueError."""
    return json.loads(as_path(path).read_text())


class RunDir:
    """The files of one run directory (see the module's docstring for its layout), and their I/O.

    Readers of optional files (`read_summary`, `read_layers`, `read_graph`) return None when the
    file is absent; a file that is there but unreadable raises (OSError, ValueError).

    Args:
      path: the run directory, a local path or a URL (`gs://...`).

    Example:
      >>> run = RunDir("gs://bucket/sweeps/lr/run-1")
      >>> str(run.summary_path), run.checkpoints.name
      ('gs://bucket/sweeps/lr/run-1/summary.json', 'checkpoints')
      >>> run = RunDir.create("runs/demo")  # doctest: +SKIP
      >>> run.append_metrics([{"step": 0, "loss": 2.3}])  # doctest: +SKIP
      >>> list(run.read_metrics())  # doctest: +SKIP
      [{'step': 0, 'loss': 2.3}]
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path = as_path(path)
        self.config_path = path / "config.json"
        self.layers_path = path / "layers.json"
        self.graph_path = path / "graph.json"
        self.metrics_path = path / "metrics.jsonl"
        self.summary_path = path / "summary.json"
        self.error_path = path / "error.txt"
        self.lock_path = path / "lock"
        self.checkpoints = path / "checkpoints"
        self.figures = path / "figures"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, path: str | os.PathLike) -> RunDir:
        """The run directory at `path`, made (with its parents) and checked to be writable.

        Raises:
          UserError: (one line) when the directory cannot be made or written to.
        """
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

    def is_run(self) -> bool:
        """Whether the directory holds a run: its config.json is there (written when it opens)."""
        return self.config_path.is_file()

    # config.json, layers.json, graph.json: written when the run opens

    def write_config(self, cfg: dict) -> None:
        write_json(self.config_path, cfg)

    def read_config(self, *, as_written: bool = False) -> Any:
        """config.json, read with today's meaning of its keys.

        An mlp run written while `model.shortcut` was resnet only (it stored the resnet default,
        true) trained the plain MLP, which its graph.json shows (no identity shortcut), so it
        reads `shortcut: false`; the `model.mlp_shortcut` key of the runs written before it
        became `model.shortcut` is dropped.

        Args:
          as_written: the JSON as stored, old keys kept as they are.

        Returns:
          The config (a dict for any run normjax wrote).

        Example:
          >>> RunDir("runs/demo").read_config()["optim"]["lr"]  # doctest: +SKIP
          0.1
        """
        cfg = read_json(self.config_path)
        m = cfg.get("model") if isinstance(cfg, dict) else None
        if as_written or not isinstance(m, dict) or m.get("name") != "mlp":
            return cfg
        m = {k: v for k, v in m.items() if k != "mlp_shortcut"}
        if m.get("shortcut") is True:
            try:
                graph = read_json(self.graph_path)
                plain = all(e["ops"] for n in graph for e in n["operands"])  # an identity edge has no ops
            except (OSError, ValueError, KeyError, TypeError):
                plain = False  # no readable graph.json: as written
            if plain:
                m["shortcut"] = False
        return {**cfg, "model": m}

    def write_layers(self, layers: list[dict]) -> None:
        """layers.json: per weight layer `name`, `depth`, `scale_invariant`, `projection`."""
        write_json(self.layers_path, layers)

    def read_layers(self) -> list[dict] | None:
        """layers.json (the weight layers in the order per-layer metrics list them); None when absent.

        Example:
          >>> [l["name"] for l in RunDir("runs/demo").read_layers()][:2]  # doctest: +SKIP
          ['conv_init', 'stage1_block1_conv1']
        """
        return read_json(self.layers_path) if self.layers_path.exists() else None

    def write_graph(self, graph: Graph) -> None:
        """graph.json: `graph.to_json()`."""
        write_json(self.graph_path, graph.to_json())

    def read_graph(self) -> Graph | None:
        """graph.json as a `normjax.analysis.graph.Graph`; None when absent.

        Example:
          >>> RunDir("runs/demo").read_graph().names()[:2]  # doctest: +SKIP
          ['stage1_block1_act1', 'stage1_block1_act2']
        """
        if not self.graph_path.exists():
            return None
        from normjax.analysis.graph import Graph  # jax: only for the readers that need the graph

        return Graph.from_json(read_json(self.graph_path))

    # summary.json, error.txt

    def read_summary(self) -> dict | None:
        """summary.json (status, step, final metrics, hook summaries); None before the run opened."""
        return read_json(self.summary_path) if self.summary_path.exists() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def write_error(self, text: str) -> None:
        """error.txt: the traceback of a run that raised (the summary holds its one-line form)."""
        self.error_path.write_text(text)

    # metrics.jsonl

    def append_metrics(self, rows: list[dict]) -> None:
        """Append rows (one JSON line each) to metrics.jsonl; on a remote store the file is rewritten."""
        if not rows:
            return
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in rows)
        if is_remote(self.metrics_path):  # objects cannot be appended to
            old = self.metrics_path.read_text() if self.metrics_path.exists() else ""
            self.metrics_path.write_text(old + text)
        else:
            with self.metrics_path.open("a") as f:
                f.write(text)

    def read_metrics(self) -> Iterator[dict]:
        """metrics.jsonl's rows in file order (none when absent); a torn line (a killed writer) is skipped.

        Example:
          >>> [r["loss"] for r in RunDir("runs/demo").read_metrics()][:2]  # doctest: +SKIP
          [2.31, 2.27]
        """
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text().splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    yield row

    def last_metric(self, key: str) -> Any:
        """The value of `key` in the last complete metrics.jsonl row that has it, reading only the file's tail.

        The tail grows until it holds such a row, since rows with many per-layer values can be
        several KB long; a torn last line (a killed writer) is skipped.

        Returns:
          The value as logged (non-finite floats are the strings 'nan'/'inf'); None without such a
          row or file.

        Example:
          >>> RunDir("runs/demo").last_metric("loss")  # doctest: +SKIP
          0.031
        """
        try:
            with self.metrics_path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                span = _TAIL_BYTES
                while True:
                    start = max(0, size - span)
                    f.seek(start)
                    lines = f.read(size - start).splitlines()
                    if start > 0:
                        lines = lines[1:]  # the first line of a tail is most likely cut
                    for line in reversed(lines):
                        try:
                            row = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(row, dict) and key in row:
                            return row[key]
                    if start == 0:
                        return None
                    span *= 4
        except OSError:
            return None

    def trim_metrics(self, before_step: int) -> None:
        """Keep only rows with step < before_step (drops what was logged past the restored checkpoint)."""
        if not self.metrics_path.exists():
            return
        kept = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and _row_step(line) < before_step
        ]
        tmp = self.metrics_path.with_name(f"{self.metrics_path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.metrics_path)


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it


class SweepDir:
    """The files of a sweep directory (see the module's docstring for its layout), and their I/O.

    `normjax.sweep.results.load_sweep` reads a sweep directory checked (one-line errors); this
    class only names its files and reads and writes them.

    Args:
      path: the sweep directory (`normjax sweep --workdir`), a local path or a URL.

    Example:
      >>> sweep = SweepDir("gs://bucket/sweeps/lr")
      >>> str(sweep.manifest_path), str(sweep.run("lr=0.1-1a2b3c4d").summary_path)
      ('gs://bucket/sweeps/lr/sweep.json', 'gs://bucket/sweeps/lr/lr=0.1-1a2b3c4d/summary.json')
      >>> str(sweep.base_run("base-5e6f7a8b").path)
      'gs://bucket/sweeps/lr/pretrain/base-5e6f7a8b'
    """

    PRETRAIN = "pretrain"  # the folder of the base runs (`train.init_from="pretrain"`)

    def __init__(self, path: str | os.PathLike):
        self.path = path = as_path(path)
        self.manifest_path = path / "sweep.json"
        self.results_path = path / "results.csv"
        self.results_agg_path = path / "results_agg.csv"
        self.pretrain = path / self.PRETRAIN
        self.plots = path / "plots"
        self.figures = path / "figures"

    def __repr__(self) -> str:
        return f"SweepDir({str(self.path)!r})"

    def is_sweep(self) -> bool:
        """Whether the directory holds a sweep: its sweep.json is there."""
        return self.manifest_path.is_file()

    def run(self, name: str) -> RunDir:
        """The run directory of the run `name` (as sweep.json lists it)."""
        return RunDir(self.path / name)

    def base_run(self, name: str) -> RunDir:
        """The run directory of the base run `name` (under pretrain/)."""
        return RunDir(self.pretrain / name)

    def read_manifest(self) -> Any:
        """sweep.json as written (`runs`, `varied`, `invocations`, ...), unchecked; None when absent.

        Example:
          >>> [r["name"] for r in SweepDir("runs/sweep_lr").read_manifest()["runs"]][:1]  # doctest: +SKIP
          ['lr=0.1-1a2b3c4d']
        """
        return read_json(self.manifest_path) if self.manifest_path.exists() else None

    def write_manifest(self, manifest: dict) -> None:
        """Write sweep.json atomically (`normjax.sweep.spec.merge_manifest` makes it)."""
        write_json(self.manifest_path, manifest)
