"""normjax.analysis.dynamics: the weight-dynamics model of early training (discrete SGD map, gradient
flow, random walk, critical LR, equilibrium with weight decay), checked against its own math,
hand-unrolled loops, numerical ODE integration and SGD on a truly scale-invariant loss.

Shapes and step counts repeat across tests on purpose: the jitted scans then compile once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normjax.analysis import (
    classic_elr,
    critical_lr,
    discrete_norms,
    discrete_norms_from_grads,
    elr_from_norms,
    elr_map,
    equilibrium_angular_step,
    equilibrium_elr,
    equilibrium_norm,
    gradient_flow_elr,
    gradient_flow_norms,
    log_spread_std,
    ode_norms,
    predict,
    random_walk,
    spread,
)

# Four layers whose initial ELRs E0 = lr * C / U0 span 0.01 ... 50 (a deep BN net's spread).
LR, T = 0.1, 300
U0 = np.array([1.0, 4.0, 0.25, 2.0], np.float32)
C = np.array([0.1, 20.0, 5.0, 1000.0], np.float32)
E0 = LR * C / U0  # [0.01, 0.5, 2, 50]


# ---------------------------------------------------------------------------------------------
# The one-step ELR map and the discrete SGD map
# ---------------------------------------------------------------------------------------------


def test_elr_map_is_symmetric_under_inversion():
    E = np.logspace(-3, 3, 61).astype(np.float32)
    f = np.asarray(elr_map(E))
    np.testing.assert_allclose(f, np.asarray(elr_map(1 / E)), rtol=1e-6)
    np.testing.assert_allclose(f, E / (1 + E * E), rtol=1e-6)
    assert float(elr_map(1.0)) == 0.5 and np.all(f <= 0.5)  # its maximum, at E = 1
    # with weight decay: E / ((1 - lr wd)^2 + E^2)
    np.testing.assert_allclose(np.asarray(elr_map(E, 0.5, 0.2)), E / (0.81 + E * E), rtol=1e-6)


def test_discrete_norms_follow_the_elr_map():
    u = np.asarray(discrete_norms(U0, C, LR, T))
    assert u.shape == (T + 1, 4) and u.dtype == np.float32
    np.testing.assert_array_equal(u[0], U0)
    np.testing.assert_allclose(u[1], U0 * (1 + E0**2), rtol=1e-6)  # u_{t+1} = u_t (1 + E_t^2)
    E = np.asarray(elr_from_norms(u, C, LR))
    np.testing.assert_allclose(E[0], E0, rtol=1e-6)
    np.testing.assert_allclose(E[1:], np.asarray(elr_map(E[:-1])), rtol=1e-5)
    # overshoot: the layer at E0 = 50 lands near 1/50, below the layers that started at 0.5 and 2
    assert abs(E[1, 3] - 1 / 50) < 1e-4 and E[1, 3] < E[1, 1] and E[1, 3] < E[1, 2]


def test_discrete_norms_with_weight_decay_match_a_hand_loop():
    lam = 0.05
    u = np.asarray(discrete_norms(U0, C, LR, T, 0.0, lam))
    ref = [U0.astype(np.float64)]
    for _ in range(T):
        ref.append((1 - LR * lam) ** 2 * ref[-1] + (LR * C) ** 2 / ref[-1])
    np.testing.assert_allclose(u, np.stack(ref), rtol=2e-5)
    np.testing.assert_allclose(u[:20], np.stack(ref[:20]), rtol=2e-6)
    E = np.asarray(elr_from_norms(u, C, LR))
    np.testing.assert_allclose(E[1:], np.asarray(elr_map(E[:-1], LR, lam)), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Gradient flow
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta,lam", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_gradient_flow_elr_is_the_elr_of_the_gradient_flow_norms(beta, lam):
    t = np.array([0.0, 1.0, 10.0, 1e3, 1e5], np.float32)[:, None]
    u = gradient_flow_norms(U0, C, LR, t, beta, lam)
    np.testing.assert_allclose(
        np.asarray(gradient_flow_elr(E0, t, beta, LR, lam)), np.asarray(elr_from_norms(u, C, LR)), rtol=2e-5
    )
    np.testing.assert_allclose(np.asarray(u[0]), U0, rtol=1e-6)


def test_gradient_flow_elrs_equalize_as_one_over_sqrt_2t():
    t = np.array([0.0, 1e2, 1e4, 1e6, 1e8], np.float32)[:, None]
    E = np.asarray(gradient_flow_elr(E0, t))
    np.testing.assert_allclose(E[0], E0, rtol=1e-6)
    np.testing.assert_allclose(E[-1], (2 * 1e8) ** -0.5, rtol=1e-3)  # -> (2t)^(-1/2)
    ratio = np.asarray(spread(E))
    assert ratio[0] == pytest.approx(5000, rel=1e-5)
    assert np.all(np.diff(ratio) < 0) and ratio[-1] < 1 + 1e-3  # ratios -> 1
    # the ordering of the ELRs is kept under gradient flow (no overshoot)
    assert np.all(np.argsort(E[1:], axis=1) == np.argsort(E0))


@pytest.mark.parametrize("beta,lam", [(0.0, 0.0), (0.9, 0.0), (0.0, 5e-3), (0.9, 5e-4)])
def test_gradient_flow_norms_solve_the_ode(beta, lam):
    """RK4 in float64 on du/dt = -2 lr_e lam u + lr_e^2 c^2 / u, lr_e = lr / (1 - beta)."""
    u0, c = U0[:3], C[:3]  # E0 <= 2 (E0 = 50 is very stiff)
    lr_e, u, t_end = LR / (1 - beta), u0.astype(np.float64), 200.0

    def f(u):
        return -2 * lr_e * lam * u + (lr_e * c) ** 2 / u

    for h in np.diff(t_end * np.linspace(0, 1, 3001) ** 2):  # small steps first, where it is stiffest
        k1 = f(u)
        k2 = f(u + h / 2 * k1)
        k3 = f(u + h / 2 * k2)
        k4 = f(u + h * k3)  # noqa: E702
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert np.max(np.abs(u / u0 - 1)) > 5  # far from the start
    np.testing.assert_allclose(np.asarray(gradient_flow_norms(u0, c, LR, t_end, beta, lam)), u, rtol=1e-5)
    if lam:  # long-time limit u_inf^2 = lr_e c^2 / (2 lam)
        np.testing.assert_allclose(
            np.asarray(gradient_flow_norms(U0, C, LR, 1e7, beta, lam)), np.sqrt(lr_e * C**2 / (2 * lam)), rtol=1e-5
        )


def test_ode_matches_discrete_at_small_elr_and_not_at_large():
    c_small = (U0 / LR * np.array([0.02, 0.01, 0.005, 0.002])).astype(np.float32)  # E0 = 0.02 ... 0.002
    disc, ode = np.asarray(discrete_norms(U0, c_small, LR, T)), np.asarray(ode_norms(U0, c_small, LR, T))
    assert ode.shape == (T + 1, 4)
    np.testing.assert_allclose(
        ode, np.asarray(gradient_flow_norms(U0, c_small, LR, np.arange(T + 1.0)[:, None])), rtol=1e-6
    )
    assert ode[-1, 0] / ode[0, 0] > 1.1  # it did move
    np.testing.assert_allclose(disc, ode, rtol=1e-4)
    # stiffness: at E0 = 50 one SGD step multiplies u by 1 + E0^2 ~ 2500, the flow by ~ sqrt(5000)
    disc, ode = discrete_norms(U0, C, LR, T), ode_norms(U0, C, LR, T)
    assert float(disc[1, 3] / ode[1, 3]) > 30
    e_disc, e_ode = elr_from_norms(disc[1], C, LR), elr_from_norms(ode[1], C, LR)
    assert float(e_disc[3]) < float(e_disc[1]) and float(e_ode[3]) > float(e_ode[1])  # flipped vs kept
    # the momentum model tracks the effective-LR ODE when E << 1, after the buffer's warm-up
    # (~ beta / (1 - beta) steps late)
    disc = np.asarray(discrete_norms(U0, c_small, LR / 10, T, 0.9))
    ode = np.asarray(ode_norms(U0, c_small, LR / 10, T, 0.9))
    assert ode[-1, 0] / ode[0, 0] > 1.1
    np.testing.assert_allclose(disc[50:], ode[50:], rtol=6e-3)
    late = np.asarray(gradient_flow_norms(U0, c_small, LR / 10, np.arange(T + 1.0)[:, None] - 9, 0.9))
    np.testing.assert_allclose(disc[50:], late[50:], rtol=2.5e-3)


# ---------------------------------------------------------------------------------------------
# Feeding measured gradient norms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr_kind", ["scalar", "per_step", "per_layer"])
@pytest.mark.parametrize("lam", [0.0, 0.02])
def test_discrete_norms_from_grads_match_a_hand_loop(lr_kind, lam):
    rng = np.random.default_rng(0)
    steps, L = 12, 3
    g = rng.uniform(0.1, 5.0, (steps, L)).astype(np.float32)
    lr = {
        "scalar": np.float32(0.3),
        "per_step": rng.uniform(0.01, 1, steps).astype(np.float32),
        "per_layer": rng.uniform(0.01, 1, (steps, L)).astype(np.float32),
    }[lr_kind]
    lr_tl = np.broadcast_to(lr if lr_kind != "per_step" else lr[:, None], (steps, L))
    u0 = np.array([0.5, 1.0, 3.0], np.float32)
    ref = [u0]
    for t in range(steps):
        ref.append((1 - lr_tl[t] * np.float32(lam)) ** 2 * ref[-1] + (lr_tl[t] * g[t]) ** 2)
    u = np.asarray(discrete_norms_from_grads(u0, g, lr, weight_decay=lam))
    assert u.shape == (steps + 1, L) and u.dtype == np.float32
    np.testing.assert_allclose(u, np.stack(ref), rtol=1e-6)


def test_discrete_norms_from_grads_is_discrete_norms_at_constant_base_gradient():
    u = discrete_norms(U0, C, LR, T, 0.0, 0.05)
    g = C / np.sqrt(np.asarray(u[:-1]))  # ||g_t|| = c / ||w_t||
    np.testing.assert_allclose(np.asarray(discrete_norms_from_grads(U0, g, LR, 0.05)), np.asarray(u), rtol=1e-5)


def test_discrete_norms_from_grads_reproduce_a_scale_invariant_run_in_float64():
    """Plain SGD on scale-invariant losses L_l(w) = (sum sin(A_l w / ||w||))^2, two layers, float64."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2, 5, 40))
    ws = [0.3 * rng.standard_normal(40), 3.0 * rng.standard_normal(40)]

    def grad(a, w):  # exact gradient of h(w / ||w||): (I - v v^T) grad h(v) / ||w||
        n = np.linalg.norm(w)
        v = w / n
        gh = 2 * np.sum(np.sin(a @ v)) * (a.T @ np.cos(a @ v))
        return (gh - (gh @ v) * v) / n

    lrs = np.linspace(0.5, 2.0, 25)
    norms, gnorms = [[w @ w for w in ws]], []
    for lr in lrs:
        gs = [grad(a, w) for a, w in zip(A, ws)]
        gnorms.append([np.linalg.norm(g) for g in gs])
        ws = [w - lr * g for w, g in zip(ws, gs)]
        norms.append([w @ w for w in ws])
    norms = np.array(norms)
    assert norms[-1, 0] / norms[0, 0] > 1.5  # the norm grew substantially
    with jax.enable_x64(True):
        u = discrete_norms_from_grads(norms[0], np.array(gnorms), lrs)
        assert u.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(u), norms, rtol=1e-12)
    u = discrete_norms_from_grads(norms[0], np.array(gnorms), lrs)  # float32 by default
    assert u.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(u), norms, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Random walk and the equilibrium with weight decay
# ---------------------------------------------------------------------------------------------

# One random-walk configuration for all tests (one compilation): layers of 1024 entries and a small
# one of 96 (padded with a mask), initial ELRs 0.05 ... 40 at lr 0.5.
RW_SIZES, RW_LR = (1024, 1024, 1024, 96), 0.5
C_EQ = np.array([0.1, 20.0, 1.0, 20.0], np.float32)


def _walk(beta, lam, seed=0):
    u, ang = random_walk(
        jax.random.key(seed), np.sqrt(U0), RW_SIZES, C_EQ, RW_LR, T, beta, lam, num_walks=8, return_angular_step=True
    )
    assert u.shape == (8, T + 1, 4) and ang.shape == (8, T, 4)
    return np.asarray(u), np.asarray(ang)


@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_random_walk_without_momentum_is_the_discrete_map_per_walk(lam):
    u, _ = _walk(0.0, lam)
    np.testing.assert_allclose(u[:, 0], np.broadcast_to(U0, (8, 4)), rtol=1e-5)
    # each walk, from its own (rounded) start, follows the map exactly
    model = jax.vmap(lambda u0: discrete_norms(u0, C_EQ, RW_LR, T, 0.0, lam))(u[:, 0])
    np.testing.assert_allclose(u, np.asarray(model), rtol=2e-5)


def test_random_walk_with_momentum_has_the_discrete_model_as_expectation():
    beta, lam = 0.9, 0.01
    u, _ = _walk(beta, lam)
    model = np.asarray(discrete_norms(U0, C_EQ, RW_LR, T, beta, lam))
    err = np.abs(u.mean(0) / model - 1)  # fluctuations ~ 0.6 / sqrt(size) per walk
    assert np.all(err[:, :3].max(0) < 0.03) and err[:, 3].max() < 0.1
    assert np.all(err[:, :3].mean(0) < 0.01)
    # walks fluctuate as 1 / sqrt(size): the padded small layer has ~ sqrt(1024 / 96) = 3.3x the spread
    rel_std = (u.std(0) / model)[-100:].mean(0)
    assert 2 < rel_std[3] / rel_std[:3].mean() < 5
    # the effective-LR shortcut (plain SGD at lr / (1 - beta)) is far off: the model is not trivial
    shortcut = np.asarray(discrete_norms(U0, C_EQ, RW_LR / (1 - beta), T, 0.0, lam))
    assert np.all(np.abs(u.mean(0) / shortcut - 1).max(0) > 0.2)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_random_walk_angular_step_reaches_the_equilibrium(beta):
    lam = 0.01
    _, ang = _walk(beta, lam, seed=1)
    target = float(equilibrium_angular_step(RW_LR, lam, beta))
    np.testing.assert_allclose(ang[:, -100:].mean((0, 1)), target, rtol=0.03)
    assert np.all(np.abs(ang[:, 0].mean(0) / target - 1) > 0.2)  # it started far from it


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_discrete_model_settles_at_the_equilibrium(beta):
    lam = 0.01
    u, ang = discrete_norms(U0, C_EQ, RW_LR, 5 * T, beta, lam, return_angular_step=True)
    np.testing.assert_allclose(
        np.sqrt(np.asarray(u[-1])), np.asarray(equilibrium_norm(C_EQ, RW_LR, lam, beta)), rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray(ang[-1]), float(equilibrium_angular_step(RW_LR, lam, beta)), rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray(elr_from_norms(u[-1], C_EQ, RW_LR)), float(equilibrium_elr(RW_LR, lam, beta)), rtol=1e-4
    )
    if beta == 0:  # closed forms: u_inf^2 = lr c^2 / (lam (2 - lr lam)), angular step sqrt(2 lr lam)
        np.testing.assert_allclose(np.asarray(u[-1]), np.sqrt(RW_LR * C_EQ**2 / (lam * (2 - RW_LR * lam))), rtol=1e-4)
        assert float(equilibrium_angular_step(RW_LR, lam)) == pytest.approx(0.1, rel=1e-6)
    else:  # and to first order in lr * lam, the gradient-flow fixed point lr c^2 / (2 lam (1 - beta))
        np.testing.assert_allclose(
            np.asarray(u[-1]), np.sqrt(RW_LR * C_EQ**2 / (2 * lam * (1 - beta))), rtol=3 * RW_LR * lam
        )


def test_random_walk_he_init_and_padding():
    # He init N(0, 2 / fan_in): E||w||^2 = 2 * size / fan_in = [128, 32, 8, 16]; the padded layer of 96
    # would start ~ 1024 / 96 times too large if the padding leaked in
    fan_in = (16, 64, 256, 12)
    u, _ = random_walk(
        jax.random.key(1),
        None,
        RW_SIZES,
        C_EQ,
        RW_LR,
        T,
        0.0,
        0.0,
        num_walks=8,
        fan_in=fan_in,
        return_angular_step=True,
    )
    np.testing.assert_allclose(np.asarray(u[:, 0]).mean(0), [128.0, 32.0, 8.0, 16.0], rtol=0.15)
    with pytest.raises(ValueError):
        random_walk(jax.random.key(1), None, RW_SIZES, 1.0, 0.1, 3)
    with pytest.raises(ValueError):
        random_walk(jax.random.key(1), 1.0, (1, 4), 1.0, 0.1, 3)


# ---------------------------------------------------------------------------------------------
# Critical LR and spreads
# ---------------------------------------------------------------------------------------------


def test_critical_lr_minimizes_the_post_step_spread():
    a = np.array([0.02, 0.3, 1.0, 40.0], np.float32)
    eta_crit = float(critical_lr(a))
    assert eta_crit == pytest.approx(1 / np.sqrt(0.02 * 40.0), rel=1e-6)
    etas = np.logspace(-3, 3, 3001).astype(np.float32)
    spreads = np.asarray(spread(elr_map(etas[:, None] * a)))
    assert etas[np.argmin(spreads)] == pytest.approx(eta_crit, rel=0.01)
    assert spreads.min() < 0.5 * spreads[0] and spreads.min() < 0.5 * spreads[-1]


def test_critical_lr_mask_and_degenerate_layers():
    a = np.array([0.02, 0.3, 1.0, 40.0], np.float32)
    m = np.array([True, True, True, False])
    assert float(critical_lr(a, m)) == pytest.approx(1 / np.sqrt(0.02), rel=1e-6)
    assert float(critical_lr(np.array([0.0, 0.3, np.inf, 1.2]))) == pytest.approx(1 / 0.6, rel=1e-6)
    assert float(critical_lr(a, np.zeros(4, bool))) == np.inf
    eta = 1 / np.sqrt(0.8)
    np.testing.assert_allclose(np.asarray(critical_lr(np.stack([a, 4 * a]))), [eta, eta / 4], rtol=1e-6)


def test_spread_and_log_spread_std():
    E = np.array([[1.0, 10.0, 100.0, 1e6], [2.0, 2.0, 2.0, 2.0]], np.float32)
    m = np.array([True, True, True, False])
    np.testing.assert_allclose(np.asarray(spread(E, m)), [100.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(spread(E)), [1e6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(log_spread_std(E, m)), [np.sqrt(2 / 3), 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(log_spread_std(E)), [np.std([0, 1, 2, 6]), 0.0], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# predict, vmap
# ---------------------------------------------------------------------------------------------


def test_predict():
    w0 = np.sqrt(U0)
    out = predict(C, w0, 0.1, T, 0.9, 1e-3)
    u = discrete_norms(U0, C, LR, T, 0.9, 1e-3)
    np.testing.assert_allclose(np.asarray(out["norms"]), np.asarray(u), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["w_norm"]) ** 2, np.asarray(u), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["elr"]), LR * C / np.asarray(u), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["elr_classic"]), np.asarray(classic_elr(u, LR)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["spread"]), np.asarray(spread(out["elr"])), rtol=1e-6)
    assert out["spread"].shape == (T + 1,) and float(out["spread"][0]) == pytest.approx(5000, rel=1e-5)
    ode = predict(C, w0, LR, T, model="ode")
    np.testing.assert_allclose(np.asarray(ode["norms"]), np.asarray(ode_norms(U0, C, LR, T)), rtol=1e-6)
    with pytest.raises(ValueError):
        predict(C, w0, LR, T, model="euler")


def test_vmap_over_hyper_parameters_equals_the_loop():
    lrs = np.array([0.01, 0.1, 1.0], np.float32)
    batched = jax.jit(jax.vmap(lambda lr: predict(C, np.sqrt(U0), lr, T, 0.9, 1e-3)))(lrs)
    assert batched["norms"].shape == (3, T + 1, 4) and batched["spread"].shape == (3, T + 1)
    for i, lr in enumerate(lrs):
        single = predict(C, np.sqrt(U0), float(lr), T, 0.9, 1e-3)
        for k in single:
            np.testing.assert_allclose(np.asarray(batched[k][i]), np.asarray(single[k]), rtol=1e-5)
    betas = np.array([0.0, 0.5, 0.9], np.float32)
    u = jax.vmap(lambda b: discrete_norms(U0, C, LR, T, b, 0.05))(betas)
    for i, b in enumerate(betas):
        np.testing.assert_allclose(
            np.asarray(u[i]), np.asarray(discrete_norms(U0, C, LR, T, float(b), 0.05)), rtol=1e-5
        )
