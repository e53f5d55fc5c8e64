"""normjax.transforms: the math each transform promises, equivalences with optax, and the optax
conventions (chain, masked, inject_hyperparams, jit, abstract init, stable state, dtypes, vmap)."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normjax.transforms as njt

# A params tree as normjax stores it: a leaf of 3 stacked layers, single layers, a bias, slopes.
MASK = {"stack": True, "conv": True, "dense": True, "bias": False, "slope": False}
AXES = {"stack": 1, "conv": 0, "dense": 0, "bias": 0, "slope": 0}


def _params(seed=0, dtype=jnp.float32):
    k = jax.random.split(jax.random.key(seed), 5)
    scales = jnp.array([0.1, 1.0, 30.0])[:, None, None, None, None]  # very different layer norms
    return {
        "stack": (jax.random.normal(k[0], (3, 3, 3, 4, 4)) * scales).astype(dtype),
        "conv": jax.random.normal(k[1], (3, 3, 2, 4)).astype(dtype),
        "dense": (3 * jax.random.normal(k[2], (16, 8))).astype(dtype),
        "bias": jax.random.normal(k[3], (8,)).astype(dtype),
        "slope": jax.random.uniform(k[4], (6,), minval=-0.5, maxval=1.5).astype(dtype),
    }


def _grads(seed=1, params=None):
    params = params or _params()
    keys = jax.random.split(jax.random.key(seed), len(params))
    g = {n: jax.random.normal(k, p.shape, p.dtype) for (n, p), k in zip(sorted(params.items()), keys)}
    scales = jnp.array([100.0, 1.0, 0.01])[:, None, None, None, None]  # and gradient norms
    g["stack"] = (g["stack"] * scales).astype(g["stack"].dtype)
    return g


def _layers(tree):
    """Per layer (stacked slices each their own) of the masked leaves, in a fixed order."""
    return [tree["stack"][i] for i in range(3)] + [tree["conv"], tree["dense"]]


def _norm(x):
    return float(np.linalg.norm(np.asarray(x, np.float64)))


# ---- uniform effective learning rate --------------------------------------------------------
@pytest.mark.parametrize("position", ["before_momentum", "after_momentum"])
@pytest.mark.parametrize("reference", ["lr", "geometric_mean"])
def test_uniform_elr_gives_every_layer_the_same_relative_step(position, reference):
    params, lr = _params(), 0.01
    elr = optax.masked(njt.scale_by_uniform_elr(reference=reference, layer_axes=AXES), MASK)
    tx = optax.chain(
        *([elr] if position == "before_momentum" else []),
        optax.trace(0.9),
        *([elr] if position == "after_momentum" else []),
        optax.scale(-lr),
    )
    updates, state = jax.jit(tx.update)(_grads(), tx.init(params), params)
    steps = [_norm(u) / _norm(w) for u, w in zip(_layers(updates), _layers(params), strict=True)]
    assert len(steps) == 5
    before = [_norm(g) / _norm(w) for g, w in zip(_layers(_grads()), _layers(params), strict=True)]
    assert max(before) / min(before) > 1e6  # the spread it removes
    target = lr if reference == "lr" else lr * float(np.exp(np.mean(np.log(before))))
    np.testing.assert_allclose(steps, target, rtol=2e-6)
    np.testing.assert_array_equal(updates["bias"], -lr * _grads()["bias"])  # unmasked: global LR
    common = optax.tree_utils.tree_get(state, "common_elr")
    np.testing.assert_allclose(float(common) * lr, target, rtol=2e-6)


@pytest.mark.parametrize("position", ["before_momentum", "after_momentum"])
def test_uniform_elr_early_only_is_sgd_from_its_end_step(position):
    """`end_step=k`: the first k updates are the whole-run uniform ELR's; from update k on the
    layers' relative steps spread again and the common ELR reads 1; `end_step=0` is SGD (different
    programs: to a few ulps)."""
    params, k = _params(), 3

    def run(end_step, elr=True, steps=6):
        kw = dict(scale_invariant_mask=MASK, layer_axes=AXES, position=position, end_step=end_step)
        tx = njt.sgd_uniform_elr(0.01, 0.9, **kw) if elr else njt.sgd(0.01, 0.9)
        p, s, out = params, tx.init(params), []
        for t in range(steps):
            u, s = jax.jit(tx.update)(_grads(t + 1, params), s, p)
            p = optax.apply_updates(p, u)
            out.append((u, float(optax.tree_utils.tree_get(s, "common_elr")) if elr else None))
        return p, out

    _, early = run(jnp.int32(k))
    _, whole = run(None)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for t in range(k):
        jax.tree.map(close, early[t][0], whole[t][0])
    steps = lambda u: [_norm(x) / _norm(w) for x, w in zip(_layers(u), _layers(params), strict=True)]
    np.testing.assert_allclose(steps(early[0][0]), 0.01, rtol=1e-5)  # uniform before the end step
    assert max(steps(early[k + 1][0])) / min(steps(early[k + 1][0])) > 10  # then the spread is back
    assert all(c == 1.0 for _, c in early[k:])
    never, _ = run(jnp.int32(0))
    sgd, _ = run(None, elr=False)
    jax.tree.map(close, never, sgd)


def test_uniform_elr_classic_definition_equalizes_lr_over_squared_norm():
    params, lr = _params(), 0.01
    tx = optax.chain(optax.masked(njt.scale_by_uniform_elr("classic", layer_axes=AXES), MASK), optax.scale(-lr))
    grads = _grads()
    updates, _ = tx.update(grads, tx.init(params), params)
    # Per-layer LR η_l = ||Δw_l|| / ||g_l||; classic ELR η_l / ||w_l||² is the chain's LR for all.
    elr = [
        _norm(u) / _norm(g) / _norm(w) ** 2
        for u, g, w in zip(_layers(updates), _layers(grads), _layers(params), strict=True)
    ]
    assert len(elr) == 5
    np.testing.assert_allclose(elr, lr, rtol=2e-6)


def test_uniform_elr_equals_optax_trust_ratio_on_unstacked_leaves():
    """Relative definition, reference lr: LARS's trust ratio with coefficient 1 (optax)."""
    params = {k: v for k, v in _params().items() if k != "stack"}
    mask = {k: MASK[k] for k in params}
    ours = optax.chain(optax.trace(0.9), optax.masked(njt.scale_by_uniform_elr(), mask), optax.scale(-0.1))
    ref = optax.chain(
        optax.trace(0.9), optax.masked(optax.scale_by_trust_ratio(trust_coefficient=1.0), mask), optax.scale(-0.1)
    )
    p1, p2, s1, s2 = params, params, ours.init(params), ref.init(params)
    for t in range(4):
        g = {k: v for k, v in _grads(t, _params()).items() if k in params}
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = ref.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p1, p2)


def test_stacked_leaf_equals_its_layers_as_separate_leaves():
    params, grads = _params(), _grads()
    split = lambda t: {f"l{i}": t["stack"][i] for i in range(3)}
    stacked = njt.scale_by_uniform_elr(reference="geometric_mean", layer_axes=1)
    single = njt.scale_by_uniform_elr(reference="geometric_mean")
    u_stacked, _ = stacked.update(
        {"stack": grads["stack"]}, stacked.init({"stack": params["stack"]}), {"stack": params["stack"]}
    )
    u_single, _ = single.update(split(grads), single.init(split(params)), split(params))
    for i in range(3):
        np.testing.assert_allclose(u_stacked["stack"][i], u_single[f"l{i}"], rtol=1e-6)


# ---- critical-LR warm-up --------------------------------------------------------------------
def test_critical_lr_is_one_over_sqrt_of_extreme_rates():
    params, grads = _params(), _grads()
    a = [_norm(g) / _norm(w) for g, w in zip(_layers(grads), _layers(params), strict=True)]
    expected = 1 / np.sqrt(max(a) * min(a))
    for target in (expected / 3, 3 * expected):
        tx = njt.scale_by_critical_lr(target, MASK, layer_axes=AXES)
        updates, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(float(state.critical_lr), expected, rtol=1e-5)
        np.testing.assert_allclose(float(state.applied_lr), min(target, expected), rtol=1e-5)
        jax.tree.map(
            lambda u, g: np.testing.assert_allclose(u, -float(state.applied_lr) * g, rtol=1e-6), updates, grads
        )  # applied to every leaf, masked or not


def test_critical_lr_post_step_spread_is_smallest_there():
    """docs/science.md#critical-lr: the spread of E/(1+E²) over layers is minimal at η_crit."""
    a = np.array([_norm(g) / _norm(w) for g, w in zip(_layers(_grads()), _layers(_params()))])
    etas = np.geomspace(1e-6, 1e6, 2001)
    e = etas[:, None] * a[None]
    post = e / (1 + e**2)
    best = etas[np.argmin(post.max(1) / post.min(1))]
    np.testing.assert_allclose(best, 1 / np.sqrt(a.max() * a.min()), rtol=0.02)


def test_critical_lr_needs_a_mask_that_selects_something():
    tx = njt.scale_by_critical_lr(0.1, jax.tree.map(lambda _: False, MASK))
    with pytest.raises(ValueError, match="selects no leaf"):
        tx.update(_grads(), tx.init(_params()), _params())


# ---- PReLU sparsity prior -------------------------------------------------------------------
def _prior_step(params, grads, lr, **kw):
    tx = optax.chain(optax.sgd(lr), njt.prelu_sparsity_prior(learning_rate=lr, **kw))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def test_proximal_step_is_the_soft_threshold():
    alpha = jnp.linspace(-1.0, 3.0, 41)
    g = jnp.sin(jnp.arange(41.0))
    lr, lam = 0.1, 2.0
    new, state = _prior_step(alpha, g, lr, strength=lam, tolerance=1e-9)
    z = np.asarray(alpha, np.float64) - lr * np.asarray(g, np.float64) - 1
    expected = 1 + np.sign(z) * np.maximum(np.abs(z) - lr * lam, 0)
    assert (expected == 1).sum() >= 4  # some units made exactly linear
    np.testing.assert_allclose(new, expected, rtol=0, atol=3e-7)
    assert np.all(np.asarray(new)[expected == 1] == 1.0)
    assert int(state[1].num_frozen) == (expected == 1).sum()


def test_half_threshold_is_the_proximal_map_of_the_square_root_prior():
    t = 0.2
    d = np.linspace(-2, 2, 81)
    x = np.linspace(-2.5, 2.5, 500001)
    brute = np.array([x[np.argmin(0.5 * (x - di) ** 2 + t * np.sqrt(np.abs(x)))] for di in d])
    np.testing.assert_allclose(njt.half_threshold(jnp.asarray(d, jnp.float32), t), brute, atol=2e-5)


def test_slopes_within_tolerance_land_on_one_and_stay():
    params = jnp.array([0.995, 1.004, 0.5, 1.2, 0.9999, 0.0])
    tx = optax.chain(optax.sgd(0.1), njt.prelu_sparsity_prior(0.01, 0.1, tolerance=0.01))
    state = tx.init(params)
    frozen_at = None
    for t in range(30):
        grads = jnp.full(6, 0.3 * (-1) ** t) * (t > 0)  # then gradients that would push slopes off 1
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if t == 0:
            frozen_at = np.asarray(params)
            assert np.all(frozen_at[[0, 1, 4]] == 1.0)  # exactly, bitwise
            assert int(optax.tree_utils.tree_get(state, "num_frozen")) == 3
    assert np.all(np.asarray(params)[[0, 1, 4]] == 1.0)
    assert np.all(np.asarray(params)[[2, 3, 5]] != 1.0)


def test_subgradient_mode_equals_adding_the_sign_to_the_gradient():
    alpha = jnp.array([-1.0, 0.0, 0.3, 1.7, 2.5])  # every |α − 1| > lr·(|g| + λ): no slope crosses 1
    g = jnp.array([0.5, -0.2, 0.1, 0.3, -0.4])
    lr, lam = 0.1, 0.5
    new, _ = _prior_step(alpha, g, lr, strength=lam, mode="subgradient", tolerance=0.0)
    ref = optax.apply_updates(alpha, optax.sgd(lr).update(g + lam * jnp.sign(alpha - 1), optax.sgd(lr).init(alpha))[0])
    np.testing.assert_allclose(new, ref, rtol=1e-6)


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_subgradient_step_never_carries_a_slope_across_one(power):
    alpha = jnp.array([0.999, 1.001, 0.9, 1.1])
    new, _ = _prior_step(alpha, jnp.zeros(4), 0.1, strength=1.0, mode="subgradient", power=power, tolerance=0.0)
    assert np.all((np.asarray(new) - 1) * (np.asarray(alpha) - 1) >= 0)
    assert np.all(np.abs(np.asarray(new) - 1) <= np.abs(np.asarray(alpha) - 1))


def test_prior_strength_zero_is_plain_sgd():
    params, grads = _params()["slope"], _grads()["slope"]
    new, _ = _prior_step(params, grads, 0.1, strength=0.0, tolerance=0.0)
    np.testing.assert_allclose(new, params - 0.1 * grads, rtol=1e-6)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: njt.prelu_sparsity_prior(-0.1, 0.1), "strength=-0.1 is not allowed; allowed: a number >= 0"),
        (lambda: njt.prelu_sparsity_prior(0.1, -0.1), "learning_rate=-0.1 is not allowed; allowed: a number >= 0"),
        (
            lambda: njt.prelu_sparsity_prior(0.1, 0.1, tolerance=1.0),
            "tolerance=1.0 is not allowed; allowed: a number in [0, 1)",
        ),
        (lambda: njt.prelu_sparsity_prior(0.1, 0.1, tolerance=-0.5), "tolerance=-0.5 is not allowed"),
        (lambda: njt.prelu_sparsity_prior(float("nan"), 0.1), "strength=nan is not allowed"),
        (lambda: njt.scale_by_critical_lr(-1.0, MASK), "learning_rate=-1.0 is not allowed; allowed: a number >= 0"),
    ],
)
def test_a_number_outside_what_an_argument_allows_is_a_one_line_value_error(make, words):
    """As optax checks its arguments: at construction, naming the value and what is allowed."""
    with pytest.raises(ValueError, match=re.escape(words)) as e:
        make()
    assert "\n" not in str(e.value)


def test_schedules_and_arrays_are_not_checked_at_construction():
    """Only a number's bounds are checked: a schedule, or an array (what optax.inject_hyperparams
    injects, traced under jit), cannot be read at construction."""
    njt.prelu_sparsity_prior(lambda t: -1.0, jnp.asarray(-0.1), tolerance=optax.constant_schedule(2.0))
    njt.scale_by_critical_lr(optax.constant_schedule(-1.0), MASK)
    tx = optax.inject_hyperparams(njt.prelu_sparsity_prior, static_args="power")(strength=0.5, learning_rate=0.1)
    params = _params()["slope"]
    jax.jit(tx.update)(params, tx.init(params), params)


# ---- optax conventions, for every transform -------------------------------------------------
TRANSFORMS = {
    "uniform_elr": lambda: optax.masked(njt.scale_by_uniform_elr(layer_axes=AXES), MASK),
    "uniform_elr_geomean_classic": lambda: optax.masked(
        njt.scale_by_uniform_elr("classic", "geometric_mean", layer_axes=AXES), MASK
    ),
    "critical_lr": lambda: njt.scale_by_critical_lr(optax.linear_schedule(0.0, 1.0, 10), MASK, layer_axes=AXES),
    "prelu_prior": lambda: optax.masked(
        njt.prelu_sparsity_prior(optax.constant_schedule(0.5), 0.1), {k: k == "slope" for k in MASK}
    ),
    "prelu_prior_sqrt_subgradient": lambda: optax.masked(
        njt.prelu_sparsity_prior(0.5, 0.1, mode="subgradient", power=0.5), {k: k == "slope" for k in MASK}
    ),
}
INJECTED = {  # the same under optax.inject_hyperparams, numbers as traced state values
    "uniform_elr": lambda **h: optax.inject_hyperparams(
        lambda lr: optax.chain(optax.masked(njt.scale_by_uniform_elr(layer_axes=AXES), MASK), optax.scale(-lr))
    )(lr=h.get("lr", 0.1)),
    "critical_lr": lambda **h: optax.inject_hyperparams(lambda lr: njt.scale_by_critical_lr(lr, MASK, layer_axes=AXES))(
        lr=h.get("lr", 0.1)
    ),
    "prelu_prior": lambda **h: optax.inject_hyperparams(
        lambda lam, lr, tol: optax.chain(
            optax.sgd(lr),
            optax.masked(njt.prelu_sparsity_prior(lam, lr, tolerance=tol), {k: k == "slope" for k in MASK}),
        )
    )(lam=h.get("lam", 0.5), lr=h.get("lr", 0.1), tol=h.get("tol", 0.01)),
}


def _steps(tx, params, n=3, jit=True):
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    for t in range(n):
        updates, state = update(_grads(t, params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_conventions(name):
    tx = TRANSFORMS[name]()
    params = _params()
    # inside optax.chain, with and without jit: the same result
    chain = optax.chain(
        optax.trace(0.5), tx, optax.scale(-0.1) if "prior" not in name and "critical" not in name else optax.identity()
    )
    p_jit, s_jit = _steps(chain, params)
    p_eager, s_eager = _steps(chain, params, jit=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_jit, p_eager)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(p_jit))
    # init from ShapeDtypeStruct, shapes and dtypes stable between init and update
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    s_abstract = chain.init(abstract)
    s_init = chain.init(params)
    assert jax.tree.structure(s_abstract) == jax.tree.structure(s_init) == jax.tree.structure(s_jit)
    same = lambda a, b: (jnp.shape(a), jnp.result_type(a)) == (jnp.shape(b), jnp.result_type(b))
    assert all(jax.tree.leaves(jax.tree.map(same, s_init, s_jit))), (s_init, s_jit)
    assert all(jax.tree.leaves(jax.tree.map(same, s_abstract, s_init)))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bfloat16_params_keep_their_dtype(name):
    params = _params(dtype=jnp.bfloat16)
    tx = TRANSFORMS[name]()
    updates, state = jax.jit(tx.update)(_grads(0, params), tx.init(params), params)
    for u, _ in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert u.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(u, np.float32)))
    new = optax.apply_updates(params, updates)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_zero_norms_give_finite_updates(name):
    params = _params()
    params["conv"] = jnp.zeros_like(params["conv"])  # a dead layer
    grads = _grads()
    grads["dense"] = jnp.zeros_like(grads["dense"])  # a zero gradient
    grads["stack"] = grads["stack"].at[1].set(0.0)
    tx = TRANSFORMS[name]()
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
    np.testing.assert_array_equal(updates["dense"], 0.0) if "prior" not in name else None


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_missing_params_raise_optax_error(name):
    tx = TRANSFORMS[name]()
    with pytest.raises(ValueError, match="params"):
        tx.update(_grads(), tx.init(_params()), None)


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_inject_hyperparams_compiles_once_and_vmaps_over_runs(name):
    params = _params()
    traces = []

    def step(state, params):
        traces.append(1)
        updates, state = INJECTED[name]().update(_grads(0, params), state, params)
        return optax.apply_updates(params, updates), state

    jstep = jax.jit(step)
    values = [0.05, 0.2, 0.8]
    key = "lam" if name == "prelu_prior" else "lr"
    outs = []
    for v in values:
        state = INJECTED[name](**{key: v}).init(params)
        outs.append(jstep(state, params))
    assert len(traces) == 1  # a sweep over the value compiles once
    assert not np.allclose(
        outs[0][0]["slope" if key == "lam" else "dense"], outs[1][0]["slope" if key == "lam" else "dense"]
    )
    # vmapped over runs (params and states stacked) equals run by run
    states = jax.tree.map(lambda *x: jnp.stack(x), *[INJECTED[name](**{key: v}).init(params) for v in values])
    stacked = jax.tree.map(lambda x: jnp.stack([x] * 3), params)
    vp, vs = jax.jit(jax.vmap(step))(states, stacked)
    for i, (p, s) in enumerate(outs):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), vp, p)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), vs, s)


# ---- packaging ------------------------------------------------------------------------------
def test_import_transforms_loads_no_training_stack():
    code = (
        "import sys, normjax.transforms, normjax; normjax.scale_by_uniform_elr; "
        "print(' '.join(m for m in ('flax', 'orbax', 'tensorflow_datasets', 'matplotlib', 'sklearn', "
        "'normjax.training', 'normjax.models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_public_api_and_version():
    import normjax

    assert normjax.__version__ == "0.1.0"
    assert normjax.prelu_sparsity_prior is njt.prelu_sparsity_prior
    assert set(njt.__all__) <= set(dir(normjax))
    with pytest.raises(AttributeError):
        normjax.no_such_name  # noqa: B018 - the lookup is what raises


def test_every_prior_hyperparameter_takes_a_schedule():
    params, grads = jnp.array([0.995, 0.5, 1.3, -0.2]), jnp.array([0.1, -0.2, 0.3, 0.0])
    numbers, _ = _prior_step(params, grads, 0.1, strength=0.5, tolerance=0.01)
    const = optax.constant_schedule
    scheduled, _ = _prior_step(params, grads, const(0.1), strength=const(0.5), tolerance=const(0.01))
    np.testing.assert_array_equal(scheduled, numbers)
    # a strength schedule that starts at zero: no prior on the first step (the "from epoch k" regime)
    late, _ = _prior_step(params, grads, 0.1, strength=lambda t: jnp.where(t < 1, 0.0, 0.5), tolerance=0.0)
    np.testing.assert_allclose(late, params - 0.1 * grads, rtol=1e-6)
