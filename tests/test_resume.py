"""A run killed with SIGKILL and started again ends bitwise where an uninterrupted run ends; one
stopped by SIGTERM saves the step it reached; a second process on a live run is refused at once."""

import json
import os
import signal
import socket
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
from normjax.training.rundir import RunDir

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
    return [{k: v for k, v in json.loads(l).items() if k != "wall_time"} for l in lines]


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


# A run of minutes whose first checkpoint would come only at its end.
LONG = ["--set", "model.depth=4", "--set", "model.width=256", "--set", "train.steps=100000"]
LONG += ["--set", "train.steps_per_dispatch=4", "--set", "checkpoint.every=100000", "--set", "log.every=1"]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A `normjax train` process with a few steps logged and no checkpoint yet (the tests below
    stop it)."""
    workdir = tmp_path_factory.mktemp("live") / "run"
    p = _train(workdir, wait=False, args=LONG)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and len(list(RunDir(workdir).read_metrics())) < 8:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1][-2000:]
    yield p, workdir
    if p.poll() is None:
        p.kill()
        p.communicate()


def test_a_second_process_on_a_live_run_is_refused_at_once(live_run):
    """Issue 33: it was refused after 11-25 s (imports, data, program). Now in one line before the
    training stack is even imported (`-X importtime` lists every module the process imported)."""
    p, workdir = live_run
    cmd = [sys.executable, "-X", "importtime", "-m", "normjax", "train", "experiments/mlp_digits.py"]
    t0 = time.monotonic()
    out = subprocess.run(cmd + ["--workdir", str(workdir)] + LONG, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    imported = {l.rsplit("|", 1)[-1].strip() for l in out.stderr.splitlines() if l.startswith("import time:")}
    err = [l for l in out.stderr.splitlines() if not l.startswith("import time:")]
    assert out.returncode == 2 and len(err) == 1, out.stderr[-2000:]
    assert err[0] == (
        f"error: workdir {str(workdir)!r} is being trained by another process ({socket.gethostname()}:{p.pid}); "
        "wait for it or give another --workdir"
    )
    assert "normjax.cli" in imported and "jax" not in imported, "refused after importing jax"
    assert took < 8, f"refused after {took:.1f} s"  # about 1 s; generous for a loaded 2-core machine
    assert p.poll() is None, "the live run goes on"


def test_sigterm_saves_the_step_reached_and_exits_143(live_run):
    """A preempted job (SIGTERM) stops at the end of its chunk, saves the step it reached (issue
    33: before its first periodic checkpoint it used to save nothing) and exits 128 + 15."""
    p, workdir = live_run
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    step = summary["step"]
    assert summary["status"] == "interrupted" and 8 <= step < 100000
    assert Checkpointer(workdir / "checkpoints", read_only=True).steps() == [step]
    assert err.splitlines()[-1] == (
        f"interrupted: SIGTERM at step {step} of 100000: saved in {workdir / 'checkpoints'}; "
        f"the same command resumes from step {step}"
    )
    assert [r["step"] for r in RunDir(workdir).read_metrics()] == list(range(step))  # each step up to it
    assert not (workdir / "lock").exists()
