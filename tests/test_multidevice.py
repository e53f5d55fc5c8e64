"""Data parallelism on 8 fake CPU devices: the same training on 1 and on 8 devices gives the same
result. Each device count runs in its own process (XLA_FLAGS must be set before jax is imported)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import assert_close, close_rows

# 1 device against 8: two programs (tests/helpers.py). Seen: 2.5 ulps on an AMD EPYC, 2026-12.
ULPS_DEVICES = 8

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from helpers import small_config
    from normjax.training.loop import read_run, train
    from normjax.training.rundir import RunDir
    assert jax.device_count() == int(sys.argv[2]), jax.devices()
    cfg = small_config(model={"per_device_bn": sys.argv[3] == "1"}, train={"steps": 24, "batch_size": 64})
    s = train(cfg, sys.argv[1])
    rows = [{k: v for k, v in r.items() if k != "wall_time"}
            for r in RunDir(__import__("pathlib").Path(sys.argv[1])).read_metrics()]
    _, _, _, step, items = read_run(sys.argv[1])  # the final parameters and BN statistics
    np.savez(sys.argv[1] + ".npz", **{jax.tree_util.keystr(p): np.asarray(x)
                                      for p, x in jax.tree_util.tree_leaves_with_path(items)})
    print(json.dumps({"summary": s, "rows": rows, "step": int(step)}))
""")


def _run(tmp_path, devices: int, per_device_bn: bool = False) -> tuple[dict, dict]:
    """The run's summary, metric rows and final step, and its final `{leaf path: array}`."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",  # keeps any flags given (make test-isa's instruction set)
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
    )
    rundir = tmp_path / f"d{devices}{per_device_bn}"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(rundir), str(devices), str(int(per_device_bn))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(f"{rundir}.npz") as f:
        return json.loads(out.stdout.strip().splitlines()[-1]), dict(f)


@pytest.mark.cross_program
def test_one_and_eight_devices_agree(tmp_path):
    """Every logged metric, the final parameters and BN statistics, and the summary."""
    (one, p1), (eight, p8) = _run(tmp_path, 1), _run(tmp_path, 8)
    assert one["step"] == eight["step"] == 24
    assert len(one["rows"]) == len(eight["rows"]) == 13  # steps 0-9 (dense), 14, 19, 23
    # Equal up to rounding (two programs: 1 device vs 8, whose BN statistics, loss and norms are
    # sums over 8 shards, reduced in another order). Accuracies are counts: a flipped example is
    # millions of ulps away. A wrong LR or a skipped step fails (tests/test_sweep.py shows it).
    close_rows(eight["rows"], one["rows"], ULPS_DEVICES)
    assert eight["rows"][0].keys() == {
        "step",
        "epoch",
        "lr",
        "accuracy",
        "loss",
        "w_norm",
        "g_norm",
        "l2_grads",
        "l2_params",
        "l2_updates",
    }
    assert p8.keys() == p1.keys() and len(p1) == 12  # 8 parameter and 4 BN statistics leaves
    assert_close(p8, p1, ULPS_DEVICES, "final parameters and BN statistics")
    assert_close(
        *[{k: v for k, v in s.items() if k != "wall_time"} for s in (eight["summary"], one["summary"])],
        ULPS_DEVICES,
        "summary",
    )
    # Per-device BN normalizes 8-example slices: a different (and still learning) model.
    ghost, _ = _run(tmp_path, 8, per_device_bn=True)
    loss, ghost_loss = [r["loss"] for r in one["rows"]], [r["loss"] for r in ghost["rows"]]
    assert ghost_loss[-1] < ghost_loss[0] and not np.allclose(ghost_loss, loss, rtol=1e-3)


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "normjax",
            "train",
            "experiments/mlp_digits.py",
            "--workdir",
            str(tmp_path / "w"),
            "--set",
            "train.batch_size=60",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "batch_size=60" in err[0] and "8" in err[0], out.stderr
    assert not (tmp_path / "w").exists()
