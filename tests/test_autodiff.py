"""Forward-mode and second-order autodiff through the models: forward-over-reverse on the fast
path (`conv`, `normalize` with their custom backward passes), every mode under `plain_autodiff`.

References are the plain ops: `lax.conv_general_dilated` and the batch-norm formula written with
`jnp.var`, differentiated by JAX itself. Inputs come from NumPy: no JAX compile per random shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from normjax.models import BatchNorm, build_model, plain_autodiff
from normjax.models.layers import conv, normalize, use_custom_conv


def _ref_conv(x, w, stride):
    p = (w.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), [(p, p)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _ref_normalize(x, axes, eps):
    mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps), jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


# A jvp's primal (or a tangent of a linear map) against the plain forward pass: two programs that
# differ only in fusion and reduction order (tests/helpers.py); a few ulps of the outputs' scale.
ULPS_JVP = 4


def _rand(seed, shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _assert_trees_close(a, b, rtol, atol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        assert np.abs(y).max() > 1e-3  # a real derivative, not zeros on both sides
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.cross_program
def test_conv_forward_mode_under_plain_autodiff():
    x, w = _rand(0, (2, 7, 7, 3)), _rand(1, (3, 3, 3, 4), 0.3)
    dx, dw = _rand(2, x.shape), _rand(3, w.shape)
    jvp = jax.jit(lambda f, *a: jax.jvp(lambda x, w: f(x, w, 2), a[:2], a[2:]), static_argnums=0)
    with pytest.raises(TypeError, match="forward-mode"):
        jvp(conv, x, w, dx, dw)  # custom_vjp: reverse mode only
    with plain_autodiff():
        y, dy = jvp(conv, x, w, dx, dw)
    y_ref, dy_ref = jvp(_ref_conv, x, w, dx, dw)
    # Equal up to rounding: the jvp of our conv and of the reference are two programs (one XLA
    # conv each, fused with other ops), and so is the jvp's primal against the plain forward pass.
    assert_close((y, dy), (y_ref, dy_ref), ULPS_JVP, "jvp vs reference")
    assert_close(y, jax.jit(conv, static_argnums=2)(x, w, 2), ULPS_JVP, "primal vs fast path")
    assert use_custom_conv()
    with plain_autodiff():
        assert not use_custom_conv()  # `Conv` too; the program cache key says so


def test_conv_hessian_vector_products_on_the_fast_path_vmapped():
    """Forward-over-reverse runs through the custom backward pass (no switch), vmapped over runs as
    in a sweep with one direction per run or one for all; it stays one conv per run and equals the
    plain ops' Hessian-vector products."""
    x, w = _rand(0, (2, 2, 5, 5, 2)), _rand(1, (2, 3, 3, 2, 3), 0.3)  # [runs, ...]
    vx, vw = _rand(2, x.shape), _rand(3, w.shape)

    def hvp(f, shared=False):
        loss = lambda x, w: jnp.sum(jnp.tanh(f(x, w, 2)) ** 2)
        one = lambda x, w, vx, vw: jax.jvp(jax.grad(loss, (0, 1)), (x, w), (vx, vw))[1]
        return jax.jit(jax.vmap(one, in_axes=(0, 0) + ((None, None) if shared else (0, 0))))

    ref = hvp(_ref_conv)
    for shared in (False, True):
        v = (vx[0], vw[0]) if shared else (vx, vw)
        compiled = hvp(conv, shared).lower(x, w, *v).compile()
        assert "group_count" not in compiled.as_text()  # no grouped convs (XLA's own batching of convs)
        v_ref = tuple(np.broadcast_to(a[0], a.shape) for a in (vx, vw)) if shared else (vx, vw)
        _assert_trees_close(compiled(x, w, *v), ref(x, w, *v_ref), rtol=1e-5, atol=1e-5)
    assert "group_count=2" in ref.lower(x, w, vx, vw).compile().as_text()  # the check above can fail


def test_hessian_on_the_fast_path_and_reverse_over_forward_under_the_switch():
    """`jax.hessian` (forward-over-reverse) through `conv` and `normalize` on the fast path, and
    reverse-over-forward under `plain_autodiff`, equal the plain ops' Hessian."""
    x, w, v = _rand(0, (2, 4, 4, 1)), _rand(1, (3, 3, 1, 1), 0.3), _rand(2, (3, 3, 1, 1))

    def loss(conv, normalize):
        return lambda w: jnp.sum(jnp.sin(normalize(conv(x, w, 1), (0, 1, 2), 1e-5)[0]) * x)

    h = jax.jit(jax.hessian(loss(conv, normalize)))(w)
    h_ref = np.asarray(jax.jit(jax.hessian(loss(_ref_conv, _ref_normalize)))(w))
    _assert_trees_close(h, h_ref, rtol=1e-4, atol=1e-5)
    rev_over_fwd = jax.jit(jax.grad(lambda w: jax.jvp(loss(conv, normalize), (w,), (v,))[1]))
    with pytest.raises(NotImplementedError, match="custom_lin"):  # the custom backward pass is not linearizable
        rev_over_fwd(w)
    with plain_autodiff():
        hv = rev_over_fwd(w)
    _assert_trees_close(hv, np.tensordot(h_ref, v, 4), rtol=1e-4, atol=1e-5)


@pytest.mark.cross_program
def test_batchnorm_forward_mode_train_and_eval():
    groups = 2  # ghost BN: the reshape and the per-group axes
    x, dx = _rand(0, (8, 3, 3, 5), 2.0) + 0.5, _rand(1, (8, 3, 3, 5))
    bn = BatchNorm(5, groups=groups)
    bn.mean[...], bn.var[...] = _rand(2, (5,)), np.exp(_rand(3, (5,)))
    bn.scale[...], bn.bias[...] = _rand(4, (5,)) + 1, _rand(5, (5,))
    scale, bias, rmean, rvar = (np.asarray(v[...]) for v in (bn.scale, bn.bias, bn.mean, bn.var))
    graphdef, state = nnx.split(bn)

    def ours(x, train):
        return nnx.merge(graphdef, jax.tree.map(lambda a: a, state))(x, train=train)

    def ref(x, train):
        if not train:  # the running statistics
            return (x - rmean) / jnp.sqrt(rvar + 1e-5) * scale + bias
        xg = x.reshape((groups, -1) + x.shape[1:])
        return _ref_normalize(xg, (1, 2, 3), 1e-5)[0].reshape(x.shape) * scale + bias

    jvp = jax.jit(lambda f, x, dx, train: jax.jvp(lambda x: f(x, train), (x,), (dx,)), static_argnums=(0, 3))
    with pytest.raises(TypeError, match="forward-mode"):
        jvp(ours, x, dx, True)
    with plain_autodiff():
        y, dy = jvp(ours, x, dx, True)
        out_eval = jvp(ours, x, dx, False)
    assert_close(y, jax.jit(ours, static_argnums=1)(x, True), ULPS_JVP, "primal vs fast path")  # two programs
    _assert_trees_close((y, dy), jvp(ref, x, dx, True), rtol=1e-5, atol=1e-5)
    # Eval mode: plain ops on either path.
    _assert_trees_close(out_eval, jvp(ref, x, dx, False), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jvp(ours, x, dx, False)[1], out_eval[1])  # bitwise: the same program again


def test_normalize_statistics_carry_no_tangent():
    x, dx = _rand(0, (6, 4)), _rand(1, (6, 4))
    with plain_autodiff():
        _, (dxhat, dmean, dvar) = jax.jit(lambda x, dx: jax.jvp(lambda x: normalize(x, (0,), 1e-5), (x,), (dx,)))(x, dx)
    np.testing.assert_array_equal(dmean, 0.0)  # exact (no tangent flows): as the fast path's backward pass
    np.testing.assert_array_equal(dvar, 0.0)
    assert np.abs(dxhat).max() > 0.1


@pytest.mark.cross_program
def test_jit_retraces_under_the_switch():
    """The switch is part of jit's cache key: a function jitted on the fast path is retraced."""
    x, w = _rand(0, (2, 5, 5, 3)), _rand(1, (3, 3, 3, 2))
    f = jax.jit(lambda x: conv(x, w, 1))
    y = f(x)
    with plain_autodiff():
        _, dy = jax.jvp(f, (x,), (x,))
        with plain_autodiff(False):
            with pytest.raises(TypeError, match="forward-mode"):
                jax.jvp(f, (x,), (x,))
    assert_close(dy, y, ULPS_JVP, "tangent of a linear map")  # linear in x; the jvp is another program
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (x,), (x,))


@pytest.mark.parametrize(
    "name,depth",
    [
        ("mlp", 2),
        pytest.param("resnet", 8, marks=pytest.mark.slow),
        pytest.param("plain_cnn", 3, marks=pytest.mark.slow),
    ],
)
@pytest.mark.cross_program
def test_model_forward_mode_and_hessian_vector_products(model_cfg, name, depth):
    """A whole model in train mode (BN over the batch, scanned layers): the jvp under
    `plain_autodiff` keeps the fast path's values and is the transpose of its gradient; the
    Hessian-vector product on the fast path (forward-over-reverse) equals the plain ops' one."""
    model = nnx.eval_shape(
        lambda: build_model(
            model_cfg(name=name, depth=depth, width=4), num_classes=3, image_shape=(6, 6, 2), rngs=nnx.Rngs(0)
        )
    )
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    stats = jax.tree.map(lambda s: jnp.asarray(np.ones(s.shape, s.dtype)), stats)  # unused in train mode
    shapes, treedef = jax.tree.flatten(nnx.to_pure_dict(params))
    pure = jax.tree.unflatten(treedef, [_rand(i, s.shape, 0.5) for i, s in enumerate(shapes)])
    v = jax.tree.unflatten(treedef, [_rand(100 + i, s.shape, 0.1) for i, s in enumerate(shapes)])
    x, y = _rand(200, (6, 6, 6, 2)), np.arange(6) % 3

    def logits(p):
        st = jax.tree.map(lambda a: a, params)
        nnx.replace_by_pure_dict(st, p)
        return nnx.merge(graphdef, st, jax.tree.map(lambda a: a, stats))(x, train=True)

    def loss(p):
        out = logits(p)
        return jnp.mean(jax.nn.logsumexp(out, -1) - jnp.take_along_axis(out, y[:, None], -1)[:, 0])

    fwd = jax.jit(lambda p: jax.jvp(lambda p: (logits(p), loss(p)), (p,), (v,)))
    hvp = jax.jit(lambda p: jax.jvp(jax.grad(loss), (p,), (v,)))  # (gradient, Hessian-vector product)

    assert "custom_vjp_call" in str(jax.make_jaxpr(logits)(pure))  # training keeps the fast backward passes
    with plain_autodiff():
        assert "custom_vjp_call" not in str(jax.make_jaxpr(logits)(pure))
        (out, _), (_, dloss) = fwd(pure)
        g_plain, hv_plain = hvp(pure)
    with pytest.raises(TypeError, match="forward-mode"):
        fwd(pure)
    g_fast, hv_fast = hvp(pure)

    assert_close(out, jax.jit(logits)(pure), ULPS_JVP, "primal vs fast path")  # the same forward values, two programs
    _assert_trees_close(g_fast, g_plain, rtol=1e-5, atol=1e-6)
    _assert_trees_close(hv_fast, hv_plain, rtol=1e-4, atol=1e-5)
    # d loss . v by forward mode = <grad, v> by the fast reverse mode used in training.
    pairs = list(zip(jax.tree.leaves(g_fast), jax.tree.leaves(v), strict=True))
    np.testing.assert_allclose(dloss, sum(np.vdot(a, b) for a, b in pairs), rtol=1e-5)
