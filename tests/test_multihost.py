"""Multi-host for real: two processes (two CPU devices each) started with jax.distributed and
gloo collectives, as on a TPU VM slice. One run, killed and resumed, and a small sweep end
where the same work ends in one process over four devices."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_close, close_rows

ULPS_PROCESSES = 8  # two processes against one: two programs (tests/helpers.py)

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--set",
    "model.depth=3",
    "--set",
    "model.width=512",
    "--set",
    "train.steps=48",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.steps_per_dispatch=4",
    "--set",
    "checkpoint.every=8",
    "--set",
    "log.every=4",
    "--set",
    "log.dense_steps=8",
    "--set",
    "train.eval_train_examples=256",
]


def _env(devices: int, **extra) -> dict:
    env = dict(
        os.environ,
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
    )
    env.pop("NORMJAX_DISTRIBUTED", None)
    return env | extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], processes: int) -> list[subprocess.Popen]:
    """`normjax <cmd>` in `processes` processes of 2 devices each (one process of 4 when 1)."""
    argv = [sys.executable, "-m", "normjax"] + cmd
    if processes == 1:
        return [
            subprocess.Popen(argv, env=_env(4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ]
    port = _free_port()
    return [
        subprocess.Popen(
            argv + ["--distributed"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                2,
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                NORMJAX_NUM_PROCESSES=str(processes),
                NORMJAX_PROCESS_ID=str(i),
            ),
        )
        for i in range(processes)
    ]


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(err)
    return outs


def _rows(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "wall_time"}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def _params(run: Path) -> dict:
    from normjax.training.loop import read_run

    _, _, _, step, items = read_run(run)
    import jax

    return {
        "step": step,
        **{
            "/".join(map(str, k)): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(jax.device_get(items))[0]
        },
    }


def _same(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb) > 0
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == sorted({r["step"] for r in ra})
    # Equal up to rounding: two processes against one are two programs (the batch's sums are
    # taken over two shards); accuracies are counts, so a flipped example fails.
    close_rows(rb, ra, ULPS_PROCESSES)
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    assert_close(pb, pa, ULPS_PROCESSES, "final parameters and BN statistics")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["status"] == sb["status"] == "done"
    assert_close(
        *[{k: s[k] for k in ("test_accuracy", "train_accuracy", "step", "train_loss")} for s in (sb, sa)],
        ULPS_PROCESSES,
        "summary",
    )


SMALL = [
    "--set",
    "model.depth=2",
    "--set",
    "model.width=64",
    "--set",
    "train.steps=16",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.steps_per_dispatch=4",
    "--set",
    "checkpoint.every=8",
    "--set",
    "train.eval_train_examples=256",
]


@pytest.mark.cross_program
def test_two_processes_train_one_run_as_one_process_does(tmp_path):
    """The fast case (`make test`): one small run in two processes equals it in this process,
    only process 0 writes, and a rerun of the finished run is "already done" on both."""
    from normjax.config import load_config
    from normjax.training.loop import train

    train(load_config("experiments/mlp_digits.py", overrides=SMALL[1::2]), tmp_path / "ref", progress=False)
    errs = _wait(_start(["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "multi")] + SMALL, 2))
    assert "compiling" in errs[0] and "compiling" not in errs[1], errs
    _same(tmp_path / "ref", tmp_path / "multi")
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == sorted(
        p.name for p in (tmp_path / "ref").iterdir()
    )
    procs = _start(["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "multi")] + SMALL, 2)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert "already done" in outs[0]


@pytest.mark.slow
def test_a_streamed_run_in_two_processes_equals_it_in_one(tmp_path):
    """Streamed data (grain over a prepared TFDS dataset): each of two processes reads only its
    half of every batch; the run equals the same run in this process reading whole batches."""
    pytest.importorskip("grain")
    pytest.importorskip("tensorflow_datasets")
    from normjax.config import load_config
    from normjax.training.loop import train
    from tfds_fake import prepare_digits

    prepare_digits(tmp_path / "tfds")
    stream = SMALL + [
        "--set",
        "data.name=nj_digits",
        "--set",
        f"data.data_dir={tmp_path / 'tfds'}",
        "--set",
        "data.pipeline=stream",
        "--set",
        "data.workers=0",
        "--set",
        "data.flip=true",
    ]
    ref = train(load_config("experiments/mlp_digits.py", overrides=stream[1::2]), tmp_path / "ref", progress=False)
    assert ref["status"] == "done"
    _wait(_start(["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "multi")] + stream, 2))
    _same(tmp_path / "ref", tmp_path / "multi")


@pytest.mark.slow
def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
    ref, multi = tmp_path / "ref", tmp_path / "multi"
    _wait(_start(["train", "experiments/mlp_digits.py", "--workdir", str(ref)] + ARGS, 1))
    procs = _start(["train", "experiments/mlp_digits.py", "--workdir", str(multi)] + ARGS, 2)
    ckpt, deadline = multi / "checkpoints", time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs):
        steps = [int(d.name) for d in ckpt.glob("*") if d.name.isdigit()] if ckpt.exists() else []
        if steps and max(steps) >= 16:
            break
        time.sleep(0.02)
    assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    errs = _wait(_start(["train", "experiments/mlp_digits.py", "--workdir", str(multi)] + ARGS, 2))
    assert "resuming" in errs[0] and "resuming" not in errs[1]  # process 0 speaks
    assert not list(multi.glob("*.tmp"))
    _same(ref, multi)


@pytest.mark.slow
def test_two_process_sweep_equals_one_process(tmp_path):
    spec = tmp_path / "sweep_mh.py"
    spec.write_text(f"""
def get_sweep(size):
    return {{"base": "{ROOT / "experiments" / "mlp_digits.py"}", "grid": {{"optim.lr": [0.05, 0.2]}},
            "set": {{"model.depth": 2, "model.width": 64, "train.steps": 24, "train.batch_size": 64,
                     "train.steps_per_dispatch": 4, "checkpoint.every": 8, "train.eval_train_examples": 256}}}}
""")
    _wait(_start(["sweep", str(spec), "--workdir", str(tmp_path / "one"), "--group-size", "2"], 1))
    _wait(_start(["sweep", str(spec), "--workdir", str(tmp_path / "two"), "--group-size", "2"], 2))
    names = sorted(d.name for d in (tmp_path / "one").iterdir() if d.is_dir())
    assert len(names) == 2 and names == sorted(d.name for d in (tmp_path / "two").iterdir() if d.is_dir())
    for n in names:
        _same(tmp_path / "one" / n, tmp_path / "two" / n)
