"""normjax.transforms on 8 fake CPU devices: state shapes, dtypes and shardings are the same after
init and after update, with and without jit (as optax's sharding tests check its own transforms).
Runs in a subprocess: XLA_FLAGS must be set before jax is imported."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, optax
    import normjax.transforms as njt
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    P = jax.sharding.PartitionSpec
    mask = {"stack": True, "kernel": True, "slope": False}
    slope_mask = {"stack": False, "kernel": False, "slope": True}
    axes = {"stack": 1, "kernel": 0, "slope": 0}
    transforms = {
        "uniform_elr": optax.masked(njt.scale_by_uniform_elr(layer_axes=axes), mask),
        "uniform_elr_geomean": optax.masked(njt.scale_by_uniform_elr("classic", "geometric_mean", layer_axes=axes), mask),
        "critical_lr": njt.scale_by_critical_lr(0.1, mask, layer_axes=axes),
        "prelu_prior": optax.masked(njt.prelu_sparsity_prior(0.1, 0.1), slope_mask),
    }
    checked = 0
    with jax.set_mesh(mesh):
        for stack_spec in (P("x"), P(None, None, "x")):  # stacked-layer axis sharded, or a feature axis
            params = {"stack": jnp.ones((8, 4, 8), jnp.float32, out_sharding=jax.NamedSharding(mesh, stack_spec)),
                      "kernel": jnp.ones((4, 8), jnp.bfloat16, out_sharding=jax.NamedSharding(mesh, P(None, "x"))),
                      "slope": jnp.full((8,), 0.5, jnp.float32, out_sharding=jax.NamedSharding(mesh, P("x")))}
            grads = jax.tree.map(lambda p: p * 0.1, params)
            for name, tx in transforms.items():
                s0 = tx.init(params)
                s1 = jax.jit(tx.init)(params)
                s_abs = tx.init(jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=p.sharding), params))
                u2, s2 = tx.update(grads, s0, params)
                u3, s3 = jax.jit(tx.update)(grads, s0, params)
                types = [jax.tree.map(jax.typeof, s) for s in (s0, s1, s2, s3)]
                assert all(t == types[0] for t in types), (name, stack_spec, types)
                assert jax.tree.map(lambda a: (a.shape, a.dtype), s_abs) == jax.tree.map(lambda a: (a.shape, a.dtype), s0)
                assert jax.tree.map(jax.typeof, u2) == jax.tree.map(jax.typeof, params), name  # updates keep sharding
                assert jax.tree.map(jax.typeof, u3) == jax.tree.map(jax.typeof, params), name
                checked += 1
    print("checked", checked)
""")


def test_state_sharding_stable_on_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "checked 8"
