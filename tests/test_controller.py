"""normjax.transforms.prelu_sparsity_controller: it reaches a target count of nonlinear units without
overshoot, keeps the optax conventions, and is the fixed-strength prior when it does not adapt."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normjax.transforms as njt
from helpers import assert_close
from normjax.config import DEFAULTS, merge
from normjax.errors import UserError
from normjax.training.optim import OptimizerContext, make_optimizer, optimizer_metrics

N, LR = 200, 0.1


def _toy(seed=0):
    """200 slopes, each held at its own optimum a_i < 1 by a quadratic loss whose pull at α = 1,
    c_i |1 - a_i|, spans three decades: the weaker the pull, the smaller the λ that linearizes it."""
    k = jax.random.split(jax.random.key(seed), 2)
    pull = jnp.exp(jax.random.uniform(k[0], (N,), minval=np.log(1e-3), maxval=0.0))
    a = jax.random.uniform(k[1], (N,), minval=-1.0, maxval=0.5)
    return pull, a, pull / jnp.abs(1 - a)


@functools.cache
def _toy_run(key: str, steps=300, sigma=0.3):
    """A jitted run of `steps` SGD steps on noisy gradients, the target (`key`: target or
    target_count) its argument: per step the frozen count and the applied λ."""
    pull, a, c = _toy()

    def run(value):
        tx = optax.chain(
            optax.sgd(LR),
            njt.prelu_sparsity_controller(learning_rate=LR, init_strength=1e-3, gain=0.05, **{key: value}),
        )

        def step(carry, k):
            p, s = carry
            u, s = tx.update(c * (p - a) + sigma * jax.random.normal(k, (N,)), s, p)
            return (optax.apply_updates(p, u), s), (s[1].num_frozen, s[1].strength)

        p = jnp.zeros(N)
        return jax.lax.scan(step, (p, tx.init(p)), jax.random.split(jax.random.key(1), steps))

    return jax.jit(run)


# ---- control -------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, keep", [("target", 0.5, 100), ("target", 0.9, 180), ("target_count", 37, 37)])
def test_reaches_the_target_from_above_and_stops(key, value, keep):
    (p, state), (num_frozen, strength) = _toy_run(key)(jnp.float32(value))  # the targets share one compile
    p, state, pull = np.asarray(p), state[1], np.asarray(_toy()[0])
    num_frozen, strength = np.asarray(num_frozen), np.asarray(strength)
    nonlinear = N - num_frozen
    assert nonlinear[0] == N and np.all(np.diff(nonlinear) <= 0)  # approached from above
    assert nonlinear.min() >= keep  # never overshoots: the target is a floor
    assert nonlinear[-1] == keep  # and is reached
    reached = int(np.argmax(nonlinear == keep))
    assert reached < 250  # with time to spare: the integral did not stall
    assert strength[0] > 0 and np.all(strength[reached + 1 :] == 0)  # then the prior is off
    assert float(state.strength) == 0 and int(state.num_frozen) == N - keep
    assert strength[:reached].max() > 30 * 1e-3  # λ had to grow well beyond its start to get there
    frozen = np.asarray(state.frozen)
    assert np.all(p[frozen] == 1.0) and not np.any(np.abs(p[~frozen] - 1) < 1e-6)
    assert int(state.num_units) == N and int(state.num_frozen) == frozen.sum() == N - keep
    assert pull[frozen].mean() < 0.5 * pull[~frozen].mean()  # the prior's order: weakly held units first


def test_a_burst_is_cut_to_the_budget_closest_to_one_first():
    """10 slopes all within the tolerance at once, keep 4: exactly the 6 closest to 1 freeze; the
    others take the plain update."""
    alpha = jnp.array([0.995, 0.9991, 1.004, 0.993, 0.998, 1.0015, 0.996, 1.007, 0.9999, 1.003])
    g = jnp.full(10, 1e-4)
    tx = optax.chain(optax.sgd(LR), njt.prelu_sparsity_controller(0.4, LR, init_strength=1e-6, gain=0.0))
    state, update = tx.init(alpha), jax.jit(tx.update)
    updates, state = update(g, state, alpha)
    new = np.asarray(optax.apply_updates(alpha, updates))
    frozen = np.asarray(state[1].frozen)
    closest = np.argsort(np.abs(np.asarray(alpha) - LR * 1e-4 - 1))[:6]
    assert int(state[1].num_frozen) == 6 and set(np.flatnonzero(frozen)) == set(closest)
    assert np.all(new[frozen] == 1.0)
    np.testing.assert_allclose(new[~frozen], np.asarray(alpha)[~frozen] - LR * 1e-4, rtol=0, atol=1e-7)
    updates, state = update(-g, state, optax.apply_updates(alpha, updates))
    assert int(state[1].num_frozen) == 6 and float(state[1].strength) == 0.0


@pytest.mark.parametrize("min_rate, rate", [(0.0, 4 / 5), (0.5, 4 / 5), (0.9, 0.9)])
def test_the_integral_law_in_log_strength(min_rate, rate):
    """s grows by gain times the share of the freezing left (at least `min_rate`); λ = λ0 e^s is
    applied the step after."""
    alpha = jnp.array([0.995] + [-5.0] * 9)  # one slope freezes at once, the others are far from 1
    lam0, gain = 0.01, 0.3
    tx = njt.prelu_sparsity_controller(
        target_count=5, learning_rate=LR, init_strength=lam0, gain=gain, min_rate=min_rate
    )
    state, update, s_expected = tx.init(alpha), jax.jit(tx.update), 0.0
    for _ in range(4):
        u, state = update(jnp.zeros(10), state, alpha)
        alpha = optax.apply_updates(alpha, u)
        np.testing.assert_allclose(float(state.strength), lam0 * np.exp(s_expected), rtol=1e-6)
        s_expected += gain * rate  # 1 of the 5 to freeze is done, 4 left
        np.testing.assert_allclose(float(state.log_scale), s_expected, rtol=1e-6)
    assert int(state.num_frozen) == 1 and int(state.count) == 4


def test_target_one_freezes_nothing():
    """Keep all: no push and no freezing, even for slopes already within the tolerance of 1."""
    alpha = jnp.array([1.0, 0.995, 1.003, 0.5, -0.2, 1.4])
    tx = optax.chain(optax.sgd(LR), njt.prelu_sparsity_controller(1.0, LR, init_strength=10.0, gain=1.0))
    ref = optax.chain(optax.sgd(LR), njt.prelu_sparsity_prior(0.0, LR, tolerance=0.0))
    p, q, s, r = alpha, alpha, tx.init(alpha), ref.init(alpha)
    for t in range(20):
        g = 0.01 * jnp.sin(jnp.arange(6.0) + t)
        u, s = jax.jit(tx.update)(g, s, p)
        v, r = jax.jit(ref.update)(g, r, q)
        np.testing.assert_array_equal(u, v)  # bitwise: no push passes the SGD update through untouched
        p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    assert int(s[1].num_frozen) == 0 and not np.any(np.asarray(s[1].frozen))
    assert float(s[1].strength) == 0.0 and float(s[1].log_scale) == 0.0  # no wind-up either
    assert float(p[0]) != 1.0  # the slope that sat on 1 moved with its gradient


@pytest.mark.cross_program
@pytest.mark.parametrize("mode, power", [("proximal", 1.0), ("proximal", 0.5), ("subgradient", 1.0)])
def test_constant_strength_is_the_prior(mode, power):
    """gain 0 and a target that lets every unit freeze: `prelu_sparsity_prior(λ0)`, bit for bit.

    Jitted, on the same inputs each step. There the square-root form's transcendental ops (arccos,
    cos, powers) may be fused differently in the two programs (the controller's ranking reads d),
    so it is equal to within an ulp jitted, and bit for bit eagerly."""
    params = {
        "s1": jax.random.uniform(jax.random.key(0), (40,), minval=0.0, maxval=1.6),
        "s2": jax.random.uniform(jax.random.key(1), (2, 5), minval=0.5, maxval=1.2),
    }
    kw = dict(tolerance=0.02, mode=mode, power=power)
    ctl = optax.chain(optax.sgd(LR, 0.9), njt.prelu_sparsity_controller(0.0, LR, init_strength=0.3, gain=0.0, **kw))
    pri = lambda lam: optax.chain(optax.sgd(LR, 0.9), njt.prelu_sparsity_prior(lam, LR, **kw))  # noqa: E731
    # jitted, the prior gets λ0 as an argument (a runtime value, as in the controller), not a constant
    pri_jit = jax.jit(lambda lam, *a: pri(lam).update(*a))
    exact = np.testing.assert_array_equal
    # p = 1: the same correctly rounded elementwise ops in the same order, no reductions: bitwise
    # on any CPU. p = 0.5: a chain of transcendental ops (arccos, cos, powers), which XLA:CPU
    # approximates with code that differs by instruction set and fusion, compounded over 12 steps
    # of the prox: 64 ulps of the update's scale (seen, AMD EPYC, 2026-12: 6.5 natively, 0 under
    # SSE4_2, 28 under AVX2); a strength off by 0.1% is thousands of ulps away.
    close = exact if power == 1.0 else lambda a, b: assert_close(a, b, 64, "update")
    eager = [(ctl.update, pri(0.3).update, 1, exact)] if power != 1.0 else []  # (eager dispatch is slow)
    for ctl_update, pri_update, steps, same in eager + [
        (jax.jit(ctl.update), functools.partial(pri_jit, 0.3), 12, close)
    ]:
        p, s, r = params, ctl.init(params), pri(0.3).init(params)
        for t in range(steps):
            g = jax.tree.map(lambda x: 0.2 * jnp.cos(3 * x + t), p)
            (u, s), (v, r) = ctl_update(g, s, p), pri_update(g, r, p)
            jax.tree.map(same, u, v)
            p = optax.apply_updates(p, u)
        jax.tree.map(exact, s[1].frozen, r[1].frozen)
        assert int(s[1].num_frozen) == int(r[1].num_frozen) > (2 if steps > 1 else 0)
        assert float(s[1].strength) == np.float32(0.3)


# ---- optax conventions -----------------------------------------------------------------------
PARAMS = {"w": jnp.ones((3, 4)), "slope": jnp.linspace(0.0, 1.2, 7), "stack": jnp.full((2, 3), 0.98)}
MASK = {"w": False, "slope": True, "stack": True}


def _injected(target=0.4, gain=0.2, init_strength=0.05):
    return optax.inject_hyperparams(
        lambda target, gain, init_strength, lr: optax.chain(
            optax.sgd(lr),
            optax.masked(njt.prelu_sparsity_controller(target, lr, init_strength=init_strength, gain=gain), MASK),
        )
    )(target=target, gain=gain, init_strength=init_strength, lr=LR)


def _grads(t):
    return jax.tree.map(lambda x: 0.05 * jnp.sin(x + t), PARAMS)


def test_chain_masked_inject_jit_and_abstract_init():
    tx = _injected()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    s_abstract = jax.eval_shape(tx.init, abstract)  # inject_hyperparams needs eval_shape for abstract params
    plain = optax.chain(optax.sgd(LR), optax.masked(njt.prelu_sparsity_controller(0.4, LR), MASK))
    s_plain = plain.init(abstract)  # without it, init takes ShapeDtypeStructs directly
    assert all(
        jax.tree.leaves(
            jax.tree.map(
                lambda a, b: (jnp.shape(a), jnp.result_type(a)) == (jnp.shape(b), jnp.result_type(b)),
                s_plain,
                plain.init(PARAMS),
            )
        )
    )
    s_init = tx.init(PARAMS)
    p, s, update = PARAMS, s_init, jax.jit(tx.update)
    for t in range(5):
        u, s = update(_grads(t), s, p)
        p = optax.apply_updates(p, u)
    assert jax.tree.structure(s_abstract) == jax.tree.structure(s_init) == jax.tree.structure(s)
    same = lambda a, b: (jnp.shape(a), jnp.result_type(a)) == (jnp.shape(b), jnp.result_type(b))
    assert all(jax.tree.leaves(jax.tree.map(same, s_init, s)))
    assert all(jax.tree.leaves(jax.tree.map(same, s_abstract, s_init)))
    ctl = [
        x
        for x in jax.tree.leaves(s, is_leaf=lambda x: isinstance(x, njt.PReLUControllerState))
        if isinstance(x, njt.PReLUControllerState)
    ]
    assert len(ctl) == 1
    ctl = ctl[0]
    assert [x.dtype for x in (ctl.count, ctl.strength, ctl.log_scale, ctl.num_frozen, ctl.num_units)] == [
        jnp.int32,
        jnp.float32,
        jnp.float32,
        jnp.int32,
        jnp.int32,
    ]
    assert int(ctl.num_units) == 13 and int(ctl.num_frozen) > 0  # the masked-out kernel is not counted
    assert int(optax.tree_utils.tree_get(s, "num_frozen")) == int(ctl.num_frozen)
    assert float(ctl.strength) > 0  # 13 * 0.4 -> 5 kept: not there yet after 5 steps
    w = PARAMS["w"]  # the unmasked leaf: plain SGD
    for t in range(5):
        w = w - LR * 0.05 * jnp.sin(PARAMS["w"] + t)
    np.testing.assert_allclose(p["w"], w, rtol=1e-6)


def test_traced_target_gain_and_strength_do_not_recompile():
    tx = _injected()

    @jax.jit
    def run(state):
        def body(carry, t):
            p, s = carry
            u, s = tx.update(jax.tree.map(lambda x: 0.05 * jnp.sin(x + t), p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (PARAMS, state), jnp.arange(40.0))[0]

    frozen, strength = [], []
    for values in (
        {"target": 0.4},
        {"target": 0.75},
        {"target": 1.0},
        {"gain": 0.0, "init_strength": 1e-4},
        {"gain": 0.0, "init_strength": 0.3},
    ):
        state = optax.tree_utils.tree_set(tx.init(PARAMS), **{k: jnp.float32(v) for k, v in values.items()})
        out = run(state)[1]
        frozen.append(int(optax.tree_utils.tree_get(out, "num_frozen")))
        strength.append(float(optax.tree_utils.tree_get(out, "strength")))
    assert run._cache_size() == 1
    # vmapped over runs with different targets (a sweep's run group): each run as alone
    states = [optax.tree_utils.tree_set(tx.init(PARAMS), target=jnp.float32(v)) for v in (0.4, 0.75, 1.0)]
    group = jax.jit(jax.vmap(run))(jax.tree.map(lambda *x: jnp.stack(x), *states))
    assert list(np.asarray(optax.tree_utils.tree_get(group[1], "num_frozen"))) == frozen[:3]
    # round(0.4 * 13) = 5 kept; at 1.0 all; without gain 1e-4 does too little. At 0.75, 3 to freeze:
    # the slope at 1.0 goes, then the six identical slopes of "stack" (0.98, the same gradients) tie
    # on every key and exceed the budget of 2, so they wait: no position decides between equal units.
    assert frozen[:4] == [13 - 5, 1, 0, 1]
    assert strength[3] == pytest.approx(1e-4) and frozen[4] > frozen[3]  # (the 1 is the slope 0.98 + its step)


def test_argument_errors():
    with pytest.raises(ValueError, match="exactly one of target"):
        njt.prelu_sparsity_controller(0.5, LR, target_count=3)
    with pytest.raises(ValueError, match="exactly one of target"):
        njt.prelu_sparsity_controller(learning_rate=LR)
    with pytest.raises(ValueError, match="learning_rate is required"):
        njt.prelu_sparsity_controller(0.5)
    with pytest.raises(ValueError, match="mode='l0' is unknown"):
        njt.prelu_sparsity_controller(0.5, LR, mode="l0")
    tx = njt.prelu_sparsity_controller(0.5, LR)
    with pytest.raises(ValueError, match="params"):
        tx.update(PARAMS, tx.init(PARAMS), None)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(target=1.5), "target=1.5 is not allowed; allowed: a fraction in [0, 1]"),
        (dict(target=-0.1), "target=-0.1 is not allowed; allowed: a fraction in [0, 1]"),
        (dict(target=float("nan")), "target=nan is not allowed"),
        (dict(target=None, target_count=-1), "target_count=-1 is not allowed; allowed: a number >= 0"),
        (dict(learning_rate=-0.1), "learning_rate=-0.1 is not allowed; allowed: a number >= 0"),
        (dict(init_strength=-1e-3), "init_strength=-0.001 is not allowed; allowed: a number >= 0"),
        (dict(gain=-0.01), "gain=-0.01 is not allowed; allowed: a number >= 0"),
        (dict(min_rate=1.5), "min_rate=1.5 is not allowed; allowed: a number in [0, 1]"),
        (dict(min_rate=-0.1), "min_rate=-0.1 is not allowed"),
        (dict(tolerance=1.0), "tolerance=1.0 is not allowed; allowed: a number in [0, 1)"),
        (dict(tolerance=-0.01), "tolerance=-0.01 is not allowed"),
    ],
)
def test_a_number_outside_what_an_argument_allows_is_a_one_line_value_error(kwargs, words):
    """As optax checks its arguments: at construction, naming the value and what is allowed."""
    with pytest.raises(ValueError, match=re.escape(words)) as e:
        njt.prelu_sparsity_controller(**({"target": 0.5, "learning_rate": LR} | kwargs))
    assert "\n" not in str(e.value)


def test_schedules_and_arrays_are_not_checked_at_construction():
    """A schedule or an array (what optax.inject_hyperparams injects, traced under jit) cannot be
    read at construction; the bounds of a number are its only check (the config checks its own)."""
    njt.prelu_sparsity_controller(lambda t: 1.5, LR, gain=jnp.asarray(-1.0), tolerance=optax.constant_schedule(2.0))
    tx = optax.inject_hyperparams(njt.prelu_sparsity_controller, static_args=("power", "max_strength"))(
        target=0.5, learning_rate=LR
    )
    jax.jit(tx.update)(PARAMS, tx.init(PARAMS), PARAMS)


# ---- the registered optimizer ----------------------------------------------------------------
def _opt_params():
    return {"a": jax.random.normal(jax.random.key(0), (4, 3)), "b": {"c": jnp.linspace(0.0, 0.8, 10)}}


CTX = OptimizerContext({"a": True, "b": {"c": False}}, {"a": False, "b": {"c": True}}, [], 0)


def _opt_run(cfg, steps=60):
    tx = make_optimizer(merge(DEFAULTS["optim"], cfg), total_steps=steps, context=CTX)
    params, state = _opt_params(), tx.init(_opt_params())
    update = jax.jit(tx.update)
    for i in range(steps):
        grads = jax.tree.map(lambda p: 0.01 * jnp.sin(p * (i + 1)), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_sgd_prelu_target_reaches_its_target_and_logs_it():
    cfg = dict(
        name="sgd_prelu_target",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-2,
        schedule="constant",
        prelu_l1=1e-2,
        prelu_target=0.3,
        prelu_gain=0.2,
    )
    params, state = _opt_run(cfg)
    m = optimizer_metrics(state, None)
    assert int(m["prelu_frozen"]) == 7 and float(m["prelu_strength"]) == 0.0  # 3 of 10 kept, then off
    assert int(np.sum(np.asarray(params["b"]["c"]) == 1.0)) == 7
    # keep all: SGD with weight decay on the kernel only, as sgd_prelu_l1 at zero strength
    keep, s_keep = _opt_run(cfg | {"prelu_target": 1.0})
    ref, _ = _opt_run(dict(cfg, name="sgd_prelu_l1", prelu_l1=0.0, prelu_tolerance=0.0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), keep, ref)
    assert int(optimizer_metrics(s_keep, None)["prelu_frozen"]) == 0


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["optim.prelu_target=1.5"], "optim.prelu_target=1.5 is not a fraction; allowed: 0 to 1"),
        (["optim.prelu_target=-0.1"], "optim.prelu_target=-0.1 is not a fraction"),
        (["optim.prelu_gain=-1.0"], "optim.prelu_gain=-1.0 is negative; allowed: >= 0"),
        (["optim.prelu_l1=0.0"], "optim.prelu_l1=0.0 is sgd_prelu_target's initial strength"),
        (["model.activation=relu"], "set model.activation=prelu"),
    ],
)
def test_bad_sgd_prelu_target_config_is_a_one_line_error(overrides, words):
    from normjax.config import load_config

    base = ["model.activation=prelu", "optim.name=sgd_prelu_target", "optim.prelu_l1=0.001", "optim.prelu_target=0.5"]
    assert load_config(overrides=base)["optim"]["prelu_target"] == 0.5
    with pytest.raises(UserError, match=words) as e:
        load_config(overrides=base + overrides)
    assert "\n" not in str(e.value)


def test_apl_hook_counts_a_free_slope_near_one_as_nonlinear():
    """The hook asks the freezing optimizer which units are linear: once the controller's target is
    met it stops freezing, and a free slope that drifts within the tolerance of 1 is still a
    nonlinear unit (it can drift away again); without a freezing optimizer the tolerance decides."""
    from normjax.analysis.graph import Edge, Graph, Node, Op
    from normjax.metrics import StepInfo, compute

    g = Graph(
        (
            Node("in", 2, "input", ()),
            Node("a", 3, "prelu", (Edge(0, (Op("dense", ("d",)),)),), ("act",)),
            Node("out", 1, "output", (Edge(1, (Op("dense", ("h",)),)),)),
        )
    )
    params = {"act": {"slope": jnp.array([1.0, 0.995, 0.5])}, "d": {"kernel": jnp.ones((2, 3))}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    mask = {"act": {"slope": True}, "d": {"kernel": False}}
    tx = optax.masked(njt.prelu_sparsity_controller(1 / 3, 0.1), mask)
    state = tx.init(params)
    frozen = {"act": {"slope": jnp.array([True, False, False])}, "d": {"kernel": optax.MaskedNode()}}
    state = state._replace(inner_state=state.inner_state._replace(frozen=frozen, num_frozen=jnp.int32(1)))

    def units(opt_state):
        return int(compute(("apl",), StepInfo(params, zeros, zeros, opt_state, [], None, g))["nonlinear_units"])

    assert units(state) == 2  # the frozen slope only; 0.995 is free
    assert units(optax.EmptyState()) == 1  # by the tolerance 0.01, 0.995 counts as linear


def test_a_rate_floor_meets_a_target_the_vanishing_rate_stalls_at():
    # 999 free slopes freeze early; the last is held away from 1 by a constant pull of 2 per unit
    # LR. Without a floor the integral's rate falls to gain/1000 per step: the prior stays at about
    # 1.1 < 2 and the unit never freezes. A floor of 0.1 grows it past 2 and meets the target.
    n = 1000

    def run(min_rate):
        params = {"slope": jnp.linspace(-0.5, 0.5, n)}
        grads = {"slope": jnp.zeros(n).at[0].set(2.0)}
        tx = optax.chain(
            optax.sgd(0.1), njt.prelu_sparsity_controller(0.0, 0.1, init_strength=0.1, gain=0.1, min_rate=min_rate)
        )
        state, update = tx.init(params), jax.jit(tx.update)
        for _ in range(400):
            updates, state = update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return state[1], params["slope"]

    stalled, slopes = run(0.0)
    assert int(stalled.num_frozen) == n - 1 and 1.0 < float(stalled.strength) < 2.0 and float(slopes[0]) < 0
    met, slopes = run(0.1)
    assert int(met.num_frozen) == n and float(met.strength) == 0.0 and bool(jnp.all(slopes == 1.0))


# ---- issue 31: no order artifacts, a gradual target, a floor that also lowers λ ---------------
def test_which_units_freeze_does_not_depend_on_leaf_or_index_order():
    """A strong prior puts every slope exactly on 1 in one step and 2 may freeze: the 2 that were
    closest to 1 before the step (0.95 and 0.9) freeze, however the tree orders them."""
    values = {"p": 0.5, "q": 0.95, "r": 0.9, "s": 0.7}
    frozen_sets = []
    for layout in ({"a": "pq", "b": "rs"}, {"a": "rs", "b": "pq"}, {"a": "sr", "b": "qp"}):
        params = {leaf: jnp.array([values[n] for n in names]) for leaf, names in layout.items()}
        tx = optax.chain(
            optax.sgd(LR), njt.prelu_sparsity_controller(target_count=2, learning_rate=LR, init_strength=10.0)
        )
        _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
        frozen = state[1].frozen
        frozen_sets.append({n for leaf, names in layout.items() for n, f in zip(names, np.asarray(frozen[leaf])) if f})
    assert frozen_sets == [{"q", "r"}] * 3


def test_a_gradual_target_is_tracked_over_its_ramp():
    """With `gradual_target` the count follows the cubic schedule (never ahead of it: the budget;
    once λ has climbed from λ0 to a useful level, at most a few units behind) and meets the target
    near the ramp's end (not before the schedule allows), not within tens of steps as a fixed
    target does."""
    pull, a, c = _toy()
    steps, begin, ramp, final = 600, 50, 400, 0.1
    sched = njt.gradual_target(final, begin, ramp)

    def run(target):
        tx = optax.chain(
            optax.sgd(LR),
            njt.prelu_sparsity_controller(target, LR, init_strength=1e-3, gain=0.05, min_rate=0.1),
        )

        def step(carry, k):
            p, s = carry
            u, s = tx.update(c * (p - a) + 0.3 * jax.random.normal(k, (N,)), s, p)
            return (optax.apply_updates(p, u), s), s[1].num_frozen

        p = jnp.zeros(N)
        return jax.lax.scan(step, (p, tx.init(p)), jax.random.split(jax.random.key(1), steps))[1]

    gradual, fixed = np.asarray(jax.jit(lambda: run(sched))()), np.asarray(jax.jit(lambda: run(final))())
    wanted = N - np.round(np.asarray(jax.vmap(sched)(jnp.arange(steps))) * N).astype(int)
    caught_up = int(np.argmax((gradual == wanted) & (np.arange(steps) > begin)))
    assert np.all(gradual <= wanted) and caught_up < begin + ramp // 2
    assert np.max(wanted[caught_up:] - gradual[caught_up:]) <= 5
    met = lambda frozen: int(np.argmax(frozen == N - round(final * N)))
    assert int(np.argmax(wanted == N - round(final * N))) <= met(gradual) <= begin + ramp + 5
    assert met(fixed) < met(gradual) - 150  # a fixed target: met at the controller's own pace


def test_gradual_target_values():
    sched = njt.gradual_target(0.2, begin_step=10, ramp_steps=40)
    got = [float(sched(t)) for t in (0, 10, 20, 30, 50, 99)]
    np.testing.assert_allclose(got, [1.0, 1.0, 0.2 + 0.8 * 0.75**3, 0.2 + 0.8 * 0.5**3, 0.2, 0.2], rtol=1e-6)
    at_once = njt.gradual_target(0.2, begin_step=10, ramp_steps=0)
    assert [float(at_once(t)) for t in (9, 10, 11)] == [1.0, pytest.approx(0.2), pytest.approx(0.2)]
    assert float(njt.gradual_target(0.3, 0, 0)(0)) == np.float32(0.3)  # no ramp: the target itself, exactly


def test_the_rate_floor_lowers_lambda_after_a_step_that_met_its_need():
    """Tracking a falling target, λ settles where the units keep pace: each update that freezes
    all it needed lowers log λ by gain * floor (it used to stay at its first burst's level)."""
    alpha = jnp.array([0.999, 0.9995, 0.9998, -5.0, -5.0])  # one slope a step is within reach
    lam0, gain, floor = 0.01, 0.3, 0.2
    tx = njt.prelu_sparsity_controller(
        lambda t: jnp.where(t < 3, 1.0 - (t + 1) / 5.0, 0.4), LR, init_strength=lam0, gain=gain, min_rate=floor
    )
    state, update = tx.init(alpha), jax.jit(tx.update)
    for t in range(3):  # the target asks for one more linear unit each step; each step freezes it
        u, state = update(jnp.zeros(5), state, alpha)
        alpha = optax.apply_updates(alpha, u)
        assert int(state.num_frozen) == t + 1
        np.testing.assert_allclose(float(state.log_scale), -gain * floor * (t + 1), rtol=1e-6)


def test_the_ramp_from_the_config():
    """`optim.prelu_ramp` (or `prelu_ramp_steps`) gives the controller the gradual target: a ramp
    over half the run meets the fixed target's count; one longer than the run freezes fewer."""
    cfg = dict(name="sgd_prelu_target", lr=0.05, momentum=0.9, schedule="constant", prelu_l1=1e-2, prelu_target=0.3)
    cfg["prelu_gain"] = 0.2
    frozen = lambda state: int(optimizer_metrics(state, None)["prelu_frozen"])
    _, fixed = _opt_run(cfg)
    _, half = _opt_run(cfg | {"prelu_ramp": 0.5})
    _, long = _opt_run(cfg | {"prelu_ramp_steps": 200})  # 60 steps: 0.3 + 0.7 * 0.7**3 = 54% kept
    assert frozen(fixed) == frozen(half) == 7 and frozen(long) == 10 - 5


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["optim.prelu_ramp=0.8", "optim.prelu_start=0.5"], "optim.prelu_ramp=0.8 with optim.prelu_start=0.5"),
        (["optim.prelu_ramp=0.5", "optim.prelu_ramp_steps=100"], "not both"),
        (["optim.prelu_ramp_steps=-1"], "optim.prelu_ramp_steps=-1"),
    ],
)
def test_a_bad_ramp_is_a_one_line_error(overrides, words):
    from normjax.config import load_config

    base = ["model.activation=prelu", "optim.name=sgd_prelu_target", "optim.prelu_l1=0.001", "optim.prelu_target=0.5"]
    with pytest.raises(UserError, match=words) as e:
        load_config(overrides=base + overrides)
    assert "\n" not in str(e.value)
