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
    from normjax.training.loop import train
    from normjax.training.rundir import RunDir
    assert jax.device_count() == int(sys.argv[2]), jax.devices()
    cfg = small_config(model={"per_device_bn": sys.argv[3] == "1"}, train={"steps": 24, "batch_size": 64})
    s = train(cfg, sys.argv[1])
    rows = list(RunDir(__import__("pathlib").Path(sys.argv[1])).read_metrics())
    print(json.dumps({"summary": s, "loss": [r["loss"] for r in rows], "w": rows[-1]["w_norm"]}))
""")


def _run(tmp_path, devices: int, per_device_bn: bool = False) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"d{devices}{per_device_bn}"), str(devices),
                          str(int(per_device_bn))], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_and_eight_devices_agree(tmp_path):
    one, eight = _run(tmp_path, 1), _run(tmp_path, 8)
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(eight["w"], one["w"], rtol=2e-4)
    assert abs(eight["summary"]["test_accuracy"] - one["summary"]["test_accuracy"]) <= 1 / 360 + 1e-9
    # Per-device BN normalizes 8-example slices: a different (and still learning) model.
    ghost = _run(tmp_path, 8, per_device_bn=True)
    assert ghost["loss"][-1] < ghost["loss"][0] and not np.allclose(ghost["loss"], one["loss"], rtol=1e-3)


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "normjax", "train", "experiments/mlp_digits.py", "--workdir",
                          str(tmp_path / "w"), "--set", "train.batch_size=60"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "batch_size=60" in err[0] and "8" in err[0], out.stderr
    assert not (tmp_path / "w").exists()
