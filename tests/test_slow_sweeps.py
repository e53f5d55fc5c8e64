"""Slow end-to-end checks (`make test-slow`): the depth sweep of the ELR study at smoke size,
plain and residual ResNets on the embedded data, then its results table and figure."""

from pathlib import Path

import pytest

from normjax.sweep.plot import plot_sweep
from normjax.sweep.results import aggregate, collect, report
from normjax.sweep.runner import run_sweep

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_depth_sweep_smoke_end_to_end(tmp_path):
    out = run_sweep(ROOT / "experiments" / "sweep_depth.py", size="smoke", workdir=tmp_path)
    assert len(out) == 12 and all(s["status"] == "done" for s in out.values()), out
    rows = aggregate(collect(tmp_path))
    assert len(rows) == 6 and all(r["n"] == 2 for r in rows)
    assert all(r["test_accuracy_mean"] > 0.5 for r in rows)  # 3 epochs of digits: every net learns
    assert "±" in report(tmp_path)
    assert all(
        p.stat().st_size > 0 for p in plot_sweep(tmp_path, x="model.depth", y="test_accuracy", hue="model.shortcut")
    )
