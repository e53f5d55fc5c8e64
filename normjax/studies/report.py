"""What the two study reports (`normjax elr-report`, `normjax apl-report`) share: a sweep's rows,
mean ± std over seeds and its one-line form, and the report written as strict JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from normjax.sweep.results import collect, load_sweep


def sweep_rows(sweep: str | os.PathLike) -> tuple[Path, list[dict]]:
    """A sweep directory (as `load_sweep` resolves it) and its runs' rows (`collect`)."""
    path, _ = load_sweep(sweep)
    return path, collect(path)


def mean_std(values: list[float]) -> dict:
    """`{"mean", "std" (ddof=1), "n", "values"}` of the finite values (None where undefined).

    Example:
      >>> mean_std([1.0, 3.0, float("nan")])
      {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2, 'values': [1.0, 3.0]}
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "n": int(v.size),
        "values": [float(x) for x in v],
    }


def finite(x: Any) -> Any:
    """JSON-safe: numpy scalars as floats, non-finite floats as None (strict JSON has no NaN/Infinity).

    Example:
      >>> finite({"a": [np.float32(0.5), float("inf")], "b": np.int64(3)})
      {'a': [0.5, None], 'b': 3}
    """
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def fmt(ms: dict, digits: int = 3) -> str:
    """`mean ± std (n=N)` of a `mean_std` dict; `-` without values."""
    if ms["mean"] is None:
        return "-"
    return (
        f"{ms['mean']:.{digits}f}" + (f" ± {ms['std']:.{digits}f}" if ms["std"] is not None else "") + f" (n={ms['n']})"
    )


def write_report(out: str | os.PathLike, name: str, res: dict) -> Path:
    """`res` as strict JSON (`finite`) in `out/name`, the directory made if needed; its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(finite(res), indent=1))
    return out / name


def difference(diff: float | None, stderr: float | None) -> dict:
    """A difference of two means with its standard error, and whether the seeds decide it.

    A difference within 2 standard errors is *inconclusive*; `detectable` (2 s.e.) is the
    smallest difference these seeds could tell from none.

    Example:
      >>> difference(0.012, 0.004)
      {'difference': 0.012, 'stderr': 0.004, 'z': 3.0, 'decided': True, 'detectable': 0.008}
    """
    if diff is None or stderr is None:
        return {"difference": diff, "stderr": stderr, "z": None, "decided": None, "detectable": None}
    z = diff / stderr if stderr > 0 else math.copysign(math.inf, diff) if diff else 0.0
    return {"difference": diff, "stderr": stderr, "z": round(z, 6), "decided": abs(z) > 2, "detectable": 2 * stderr}
