"""Figure helpers every figure command shares: an Agg figure (no display needed) and PNG + PDF
output into a local directory or a bucket (`gs://...`, through `normjax.paths`)."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from normjax.errors import missing_extra

try:
    from etils import epath
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.paths import as_path, is_remote


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.2), **kw) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure and its `[nrows, ncols]` array of axes.

    Example:
      >>> fig, axes = figure(1, 2)
      >>> axes.shape
      (1, 2)
    """
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def save(fig: Figure, out: str | os.PathLike, stem: str) -> list[pathlib.Path | epath.Path]:
    """Write `out/<stem>.png` and `out/<stem>.pdf` (the PDF byte-identical across reruns); their
    paths (`pathlib.Path` for a local `out`, `epath.Path` for a URL)."""
    out = as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    with paths[0].open("wb") as f:  # file objects: savefig cannot open a bucket URL itself
        fig.savefig(f, format="png", dpi=150)
    with paths[1].open("wb") as f:
        fig.savefig(f, format="pdf", metadata={"CreationDate": None})
    return paths if is_remote(out) else [pathlib.Path(p) for p in paths]
