"""A run killed with SIGKILL and started again ends bitwise where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from helpers import assert_bitwise
from normjax.training.checkpoint import Checkpointer
from normjax.training.inputs import input_for
from normjax.training.loop import program_for, restore_state

ARGS = [
    "--set",
    "model.depth=4",
    "--set",
    "model.width=1024",
    "--set",
    "train.steps=600",
    "--set",
    "train.steps_per_dispatch=4",
    "--set",
    "checkpoint.every=8",
    "--set",
    "log.every=4",
]


def _train(workdir, wait=True, args=ARGS):
    cmd = [sys.executable, "-m", "normjax", "train", "experiments/mlp_digits.py", "--workdir", str(workdir)] + args
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    return p


def _state(workdir, args=ARGS):
    from normjax.config import load_config

    cfg = load_config("experiments/mlp_digits.py", overrides=[a for a in args if a != "--set"])
    state, *_ = restore_state(Checkpointer(workdir / "checkpoints"), program_for(cfg, input_for(cfg)))
    return jax.device_get(state)


def _rows(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in __import__("json").loads(l).items() if k != "wall_time"} for l in lines]


def test_sigkill_and_restart_matches_uninterrupted(tmp_path):
    _kill_and_restart(tmp_path, ARGS)


@pytest.mark.slow
def test_a_streamed_run_killed_and_restarted_matches_uninterrupted(tmp_path):
    """Streamed data (grain over a prepared TFDS dataset, random-resized crops and flips, one
    worker process): the restarted run reads the batches the uninterrupted one read."""
    pytest.importorskip("grain")
    pytest.importorskip("tensorflow_datasets")
    from tfds_fake import prepare_digits

    prepare_digits(tmp_path / "tfds")
    args = ARGS + [
        "--set",
        "data.name=nj_digits",
        "--set",
        f"data.data_dir={tmp_path / 'tfds'}",
        "--set",
        "data.pipeline=stream",
        "--set",
        "data.workers=1",
        "--set",
        "data.flip=true",
        "--set",
        "data.crop_scale_min=0.5",
        "--set",
        "train.eval_train_examples=256",
    ]
    _kill_and_restart(tmp_path, args, streamed=True)


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{pid}\n" in status.read_text():
                out.append(int(status.parent.name))
        except OSError:
            continue
    return out


def _kill_and_restart(tmp_path, args, streamed=False):
    _train(tmp_path / "ref", args=args)
    p = _train(tmp_path / "killed", wait=False, args=args)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        steps = [int(d.name) for d in ckpt_dir.glob("*") if d.name.isdigit()] if ckpt_dir.exists() else []
        if steps and max(steps) >= 40:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    children = _children(p.pid)  # grain's worker processes, when the run streams
    assert not streamed or children, "a streamed run with data.workers=1 has a worker process"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 30  # they die with the run (PR_SET_PDEATHSIG), none is left behind
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], "orphaned worker processes"
    killed_at = Checkpointer(ckpt_dir, read_only=True).latest_step()
    assert killed_at is not None and killed_at < 600
    _train(tmp_path / "killed", args=args)
    a, b = _state(tmp_path / "ref", args), _state(tmp_path / "killed", args)
    assert int(a.step) == int(b.step) == 600
    assert_bitwise(a, b, "final state")  # bitwise by construction: the same program, resumed
    assert _rows(tmp_path / "ref") == _rows(tmp_path / "killed")


def test_sigterm_stops_the_run_as_interrupted(tmp_path):
    """A preempted job (SIGTERM) records `interrupted` with the step it resumes from, exit 130."""
    p = _train(tmp_path / "run", wait=False)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if ckpt_dir.exists() and any(d.name.isdigit() for d in ckpt_dir.glob("*")):
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be stopped"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    summary = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["step"] == Checkpointer(ckpt_dir, read_only=True).latest_step() > 0
    assert not (tmp_path / "run" / "lock").exists()
