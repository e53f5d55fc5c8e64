"""Sweeps: specs (grid x zip), a resumable, shardable, vectorizing runner, results tables and plots."""

from normjax.sweep.runner import run_sweep
from normjax.sweep.spec import expand

__all__ = ["expand", "run_sweep"]
