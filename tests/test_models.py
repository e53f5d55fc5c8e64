import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from normjax.models import (
    BatchNorm,
    ChannelPReLU,
    build_model,
    per_layer,
    per_layer_sums,
    prelu_mask,
    scale_invariant_mask,
)
from normjax.models.structure import get_path

ULPS_SCAN = 4  # scanned against unrolled blocks: two programs (tests/helpers.py)


def _build(cfg, shape=(32, 32, 3), seed=0):
    return build_model(cfg, num_classes=10, image_shape=shape, rngs=nnx.Rngs(seed))


def _params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("depth,expected", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_resnet_parameter_counts_match_cifar_resnets(model_cfg, depth, expected):
    model = nnx.eval_shape(lambda: _build(model_cfg(depth=depth)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert abs(n - expected) / expected < 0.05, n


def test_resnet_layers_in_depth_order(model_cfg):
    model = nnx.eval_shape(lambda: _build(model_cfg(depth=20)))
    layers = model.layers()
    assert len(layers) == 19 + 2 + 1  # convs, two projection shortcuts, classifier
    assert [l.depth for l in layers] == sorted(l.depth for l in layers)
    assert layers[-1].name == "head" and not layers[-1].scale_invariant
    assert sum(l.scale_invariant for l in layers) == 21
    plain = nnx.eval_shape(lambda: _build(model_cfg(depth=20, shortcut=False)))
    assert len(plain.layers()) == 20 and not any("proj" in l.name for l in plain.layers())


@pytest.mark.cross_program
@pytest.mark.parametrize("train", [False, True])
def test_scanned_blocks_equal_the_unrolled_network(model_cfg, train):
    """The stacked/scanned stage computes exactly what applying its blocks one by one computes, and
    in training updates the same BN statistics."""
    model = _build(model_cfg(depth=14))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    h = model.stage1(model.stem_act(model.stem_bn(model.stem_conv(x), train=False)), False)
    before = nnx.to_pure_dict(nnx.state(model.stage2, nnx.BatchStat))
    stage, unrolled = nnx.clone(model.stage2), nnx.clone(model.stage2)  # each call updates its own statistics
    out = stage(h, train)
    graphdef, state = nnx.split(unrolled.rest)
    blocks = [nnx.merge(graphdef, jax.tree.map(lambda v: v[i], state)) for i in range(model.n - 1)]
    assert len(blocks) == 1 and model.n == 2  # stage2 of ResNet-14: first + one stacked block
    ref = unrolled.first(h, train)
    for block in blocks:
        ref = block(ref, train)
    # Equal up to rounding: the scanned stage and its blocks applied one by one are two programs
    # (the batch variance is reduced in another order); a few ulps of the activations' scale.
    assert_close(out, ref, ULPS_SCAN, "scanned vs unrolled output")
    stats = nnx.to_pure_dict(nnx.state(stage, nnx.BatchStat))
    ref_stats = {
        "first": nnx.to_pure_dict(nnx.state(unrolled.first, nnx.BatchStat)),
        "rest": jax.tree.map(lambda *v: jnp.stack(v), *[nnx.to_pure_dict(nnx.state(b, nnx.BatchStat)) for b in blocks]),
    }
    assert len(jax.tree.leaves(stats)) == 10  # mean and var: first's bn1, bn2, proj_bn; the stacked bn1, bn2
    assert_close(stats, ref_stats, ULPS_SCAN, "scanned vs unrolled BN statistics")
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), stats, before)
    assert all(jax.tree.leaves(changed)) if train else not any(jax.tree.leaves(changed))


@pytest.mark.parametrize("name,depth", [("resnet", 8), ("resnet", 20), ("mlp", 4), ("plain_cnn", 5)])
def test_scale_invariance_orthogonal_gradients(model_cfg, name, depth):
    """docs/science.md#scale-invariance: L(c w) = L(w), <grad, w> = 0 and ||grad L(c w)|| = ||grad L(w)|| / c."""
    model = _build(model_cfg(name=name, depth=depth, width=16, bn_eps=1e-12), shape=(8, 8, 3))
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    pure = nnx.to_pure_dict(params)
    layers = model.layers()
    x = jax.random.normal(jax.random.key(0), (32, 8, 8, 3))
    y = jnp.arange(32) % 10

    def loss(p):
        st = jax.tree.map(lambda v: v, params)
        nnx.replace_by_pure_dict(st, p)
        logits = nnx.merge(graphdef, st, jax.tree.map(lambda v: v, stats))(x, train=True)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])

    mask = scale_invariant_mask(pure, layers)
    c = 3.0
    scaled = jax.tree.map(lambda w, m: w * c if m else w, pure, mask)
    l0, g0 = jax.value_and_grad(loss)(pure)
    l1, g1 = jax.value_and_grad(loss)(scaled)
    np.testing.assert_allclose(l0, l1, rtol=1e-5)
    inner = per_layer_sums((g0, pure), layers, lambda g, w: (g * w,))[0]
    gnorm0, gnorm1 = np.sqrt(per_layer(g0, layers)), np.sqrt(per_layer(g1, layers))
    wnorm = np.sqrt(per_layer(pure, layers))
    si = np.array([l.scale_invariant for l in layers])
    cos = np.abs(inner) / (gnorm0 * wnorm)
    assert np.all(cos[si] < 1e-4), cos[si]
    np.testing.assert_allclose(gnorm1[si], gnorm0[si] / c, rtol=1e-3)
    assert cos[~si].max() > 1e-3  # the classifier is not scale-invariant


def test_masks_select_kernels_and_slopes(model_cfg):
    model = _build(model_cfg(depth=8, activation="prelu", prelu_init=0.25))
    pure = _params(model)
    si = scale_invariant_mask(pure, model.layers())
    pm = prelu_mask(pure)
    assert si["stem_conv"]["kernel"] and not si["head"]["kernel"] and not si["stem_bn"]["scale"]
    assert pm["stem_act"]["slope"] and not pm["stem_conv"]["kernel"]
    slopes = [x for x, m in zip(jax.tree.leaves(pure), jax.tree.leaves(pm)) if m]
    assert slopes and all(np.all(np.asarray(s) == 0.25) for s in slopes)


def test_channel_prelu_limits():
    x = jnp.linspace(-2, 2, 24).reshape(3, 8)
    relu, lin = ChannelPReLU(8, init=0.0), ChannelPReLU(8, init=1.0)
    np.testing.assert_array_equal(relu(x), jax.nn.relu(x))
    np.testing.assert_array_equal(lin(x), x)


def test_grouped_batchnorm_is_per_slice_batchnorm():
    x = jax.random.normal(jax.random.key(0), (8, 5, 5, 4)) * 3 + 1
    grouped = BatchNorm(4, groups=4)(x, train=True)
    single = jnp.concatenate([BatchNorm(4)(x[i : i + 2], train=True) for i in range(0, 8, 2)])
    np.testing.assert_allclose(grouped, single, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params(model_cfg):
    model = build_model(model_cfg(depth=8), num_classes=10, image_shape=(8, 8, 3), rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert model(jnp.ones((2, 8, 8, 3)), train=True).dtype == jnp.bfloat16


def test_per_layer_reads_stacked_slices(model_cfg):
    model = _build(model_cfg(name="mlp", depth=4, width=8), shape=(2, 2, 1))
    pure = _params(model)
    layers = model.layers()
    got = per_layer(pure, layers)
    for i, l in enumerate(layers):
        leaf = np.asarray(get_path(pure, l.path))
        leaf = leaf if l.index is None else leaf[l.index]
        np.testing.assert_allclose(got[i], np.sum(leaf**2), rtol=1e-6)


# (kh, kw), stride, (H, W): square kernels on images, and 1 x k kernels on 1-D signals (height 1).
CONV_CASES = [
    ((1, 1), 1, (6, 6)),
    ((3, 3), 1, (6, 6)),
    ((3, 3), 2, (8, 8)),
    ((1, 1), 2, (8, 8)),
    ((3, 3), 2, (7, 7)),
    ((1, 3), 1, (1, 40)),
    ((1, 3), 2, (1, 40)),
    ((1, 5), 2, (1, 21)),
    ((1, 1), 2, (1, 10)),
]


@pytest.mark.parametrize("k,stride,size", CONV_CASES)
def test_conv_gradients_equal_xla_rule(k, stride, size):
    """The loop-friendly backward pass computes XLA's gradients (inside lax.scan, as in training)."""
    from normjax.models.layers import _conv, conv

    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (3, 4, *size, 5))
    w = jax.random.normal(kw, (*k, 5, 5)) * 0.3

    def net(f):
        def loss(w, x):
            _, ys = jax.lax.scan(lambda c, xi: (c, jnp.tanh(f(xi, w))), 0.0, x)
            return jnp.sum(ys**2)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    ours = net(lambda h, w: conv(h, w, stride))(w, x)
    ref = net(lambda h, w: _conv(h, w, stride))(w, x)
    assert ours[1].shape == x.shape and ours[0].shape == w.shape
    for a, b in zip(ours, ref):
        assert np.abs(b).max() > 1e-2  # a real gradient, not zeros on both sides
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "k,stride,size", [((3, 3), 1, (8, 8)), ((3, 3), 2, (8, 8)), ((1, 1), 2, (8, 8)), ((1, 3), 2, (1, 12))]
)
def test_vmapped_conv_runs_per_slice_with_xla_gradients(k, stride, size):
    """Under vmap over runs (a sweep group), our conv stays one ungrouped conv per run, forward and
    backward, and its gradients equal XLA's own grouped-conv rule."""
    from normjax.models.layers import _conv, conv

    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (3, 2, 4, *size, 5))  # [runs, scan, batch, H, W, C]
    w = jax.random.normal(kw, (3, *k, 5, 5)) * 0.3

    def net(f):
        def loss(w, x):
            _, ys = jax.lax.scan(lambda c, xi: (c, jnp.tanh(f(xi, w))), 0.0, x)
            return jnp.sum(ys**2)

        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))

    ours = net(lambda h, w: conv(h, w, stride))

    def group_counts(f):
        return set(re.findall(r"(?:feature|batch)_group_count = (\d+)", f.lower(w, x).as_text()))

    assert group_counts(ours) == {"1"}
    ref = net(lambda h, w: _conv(h, w, stride))
    assert "3" in group_counts(ref)  # XLA's own batching: grouped convs over the 3 runs
    for a, b in zip(ours(w, x), ref(w, x)):
        assert np.abs(b).max() > 1e-2
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 4])
def test_batchnorm_closed_form_backward_equals_autodiff(groups):
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 5)) * 2 + 0.5
    proj = jax.random.normal(jax.random.key(1), (8, 3, 3, 5))

    def reference(x):
        xg = x.reshape((groups, -1) + x.shape[1:])
        mean = xg.mean((1, 2, 3), keepdims=True)
        var = jnp.square(xg - mean).mean((1, 2, 3), keepdims=True)
        return ((xg - mean) / jnp.sqrt(var + 1e-5)).reshape(x.shape)

    ours = lambda x: BatchNorm(5, groups=groups)(x, train=True)
    np.testing.assert_allclose(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(lambda x: jnp.sum(jnp.sin(ours(x)) * proj))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(reference(x)) * proj))(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-5)


def test_conv_impl_switch(monkeypatch):
    from normjax.errors import UserError
    from normjax.models.layers import use_custom_conv

    assert use_custom_conv()  # CPU default: the loop-safe, per-run conv
    monkeypatch.setenv("NORMJAX_CONV", "xla")
    assert not use_custom_conv()
    monkeypatch.setenv("NORMJAX_CONV", "cudnn")
    with pytest.raises(UserError, match="NORMJAX_CONV='cudnn' is not one of auto, custom, xla"):
        use_custom_conv()
