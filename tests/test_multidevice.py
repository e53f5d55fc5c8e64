"""Data parallelism on 8 fake CPU devices: the same training on 1 and on 8 devices gives the same
result. Each device count runs in its own process (XLA_FLAGS must be set before jax is imported)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from conftest import small_config
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
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    rundir = tmp_path / f"d{devices}{per_device_bn}"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(rundir), str(devices), str(int(per_device_bn))], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(f"{rundir}.npz") as f:
        return json.loads(out.stdout.strip().splitlines()[-1]), dict(f)


def test_one_and_eight_devices_agree(tmp_path):
    """Every logged metric, the final parameters and BN statistics, and the summary."""
    (one, p1), (eight, p8) = _run(tmp_path, 1), _run(tmp_path, 8)
    assert one["step"] == eight["step"] == 24
    assert len(one["rows"]) == len(eight["rows"]) == 13  # steps 0-9 (dense), 14, 19, 23
    # Sums over 8 shards: measured up to 1.4e-7 relative in the metrics and losses, up to
    # 2.4e-7 absolute in the parameters and 3.6e-7 in the BN statistics.
    exact = {"step", "epoch", "lr", "accuracy"}
    for a, b in zip(eight["rows"], one["rows"], strict=True):
        assert a.keys() == b.keys() == exact | {"loss", "w_norm", "g_norm", "l2_grads", "l2_params", "l2_updates"}
        for k in a:
            if k in exact:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"step {a['step']} {k}")
            else:
                np.testing.assert_allclose(a[k], b[k], rtol=3e-7, atol=0, err_msg=f"step {a['step']} {k}")
    assert p8.keys() == p1.keys() and len(p1) == 12  # 8 parameter and 4 BN statistics leaves
    for k in p1:
        np.testing.assert_allclose(p8[k], p1[k], rtol=0, atol=5e-7, err_msg=k)
    s1, s8 = one["summary"], eight["summary"]
    assert (s8["test_accuracy"], s8["train_accuracy"]) == (s1["test_accuracy"], s1["train_accuracy"])
    np.testing.assert_allclose([s8["test_loss"], s8["train_loss"]], [s1["test_loss"], s1["train_loss"]], rtol=3e-7)
    # Per-device BN normalizes 8-example slices: a different (and still learning) model.
    ghost, _ = _run(tmp_path, 8, per_device_bn=True)
    loss, ghost_loss = [r["loss"] for r in one["rows"]], [r["loss"] for r in ghost["rows"]]
    assert ghost_loss[-1] < ghost_loss[0] and not np.allclose(ghost_loss, loss, rtol=1e-3)


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "normjax", "train", "experiments/mlp_digits.py", "--workdir",
                          str(tmp_path / "w"), "--set", "train.batch_size=60"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "batch_size=60" in err[0] and "8" in err[0], out.stderr
    assert not (tmp_path / "w").exists()
