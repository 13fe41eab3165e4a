"""The reference problems of ``pyode.problems``: analytic Jacobians, batching, reference solutions,
closed forms and exact invariants.

Reference values are the IVP test set's (F. Mazzia, C. Magherini et al., "Test Set for IVP Solvers",
https://archimede.uniba.it/~testset/, problem files rober.f, hires.f, orego.f, pollu.f, vdpol.f;
computed there with RADAU5 in extended precision), stored in ``problems.STIFF_REFERENCE``. Our rhs
is integrated independently by SciPy's Radau IIA with the analytic Jacobian.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode import problems
from pyode.problems import STIFF_REFERENCE

F64 = torch.float64

# name -> constructor with its default settings
STIFF = {
    "robertson": problems.robertson,
    "hires": problems.hires,
    "orego": problems.orego,
    "pollu": problems.pollu,
    "van_der_pol_scaled": problems.van_der_pol_scaled,
    "van_der_pol": problems.van_der_pol,
    "van_der_pol_mu1e3": lambda **kw: problems.van_der_pol(mu=1e3, **kw),
}


def _t(u):
    return torch.zeros(u.shape[:-1], dtype=F64)


def _random_state(prob, gen, batch=()):
    """A positive state near the scale of ``u0`` (every component nonzero)."""
    u0 = prob.u0
    scale = u0.abs().max()
    r1 = torch.rand(*batch, *u0.shape, generator=gen, dtype=F64)
    r2 = torch.rand(*batch, *u0.shape, generator=gen, dtype=F64)
    return u0.abs() * (0.5 + r1) + 0.1 * scale * r2


def _perturbed_params(prob, gen, batch):
    """Parameters with a leading batch dimension, each entry perturbed by up to ±20%."""
    p0 = torch.as_tensor(prob.p, dtype=F64)
    return p0 * (0.8 + 0.4 * torch.rand(*batch, *p0.shape, generator=gen, dtype=F64))


def _assert_jac_equal(analytic, autodiff):
    # Same derivative, possibly summed in another order: agreement to rounding, entry by entry (the
    # entries range over 20 orders of magnitude in POLLU, so no common absolute tolerance).
    assert analytic.shape == autodiff.shape
    assert torch.equal(analytic == 0, autodiff == 0), "different sparsity patterns"
    torch.testing.assert_close(analytic, autodiff, rtol=1e-12, atol=0.0)


# ---- analytic Jacobians against torch.func.jacrev --------------------------------------------------

@pytest.mark.parametrize("name", list(STIFF))
def test_jacobian_matches_autodiff_single_state(name):
    prob = STIFF[name]()
    assert prob.jac is not None
    gen = torch.Generator().manual_seed(0)
    for u in (prob.u0, _random_state(prob, gen), _random_state(prob, gen)):
        t = _t(u)
        expected = torch.func.jacrev(lambda v: prob.f(v, prob.p, t))(u)
        _assert_jac_equal(prob.jac(u, prob.p, t), expected)


@pytest.mark.parametrize("name", list(STIFF))
def test_jacobian_matches_autodiff_batch(name):
    prob = STIFF[name]()
    gen = torch.Generator().manual_seed(1)
    B = 5
    u = _random_state(prob, gen, (B,))
    u[0] = prob.u0
    p = _perturbed_params(prob, gen, (B,))
    t = _t(u)
    expected = torch.func.vmap(torch.func.jacrev(lambda v, q, s: prob.f(v, q, s)))(u, p, t)
    J = prob.jac(u, p, t)
    assert J.shape == (B, u.shape[-1], u.shape[-1])
    _assert_jac_equal(J, expected)
    # Shared (unbatched) parameters with a batched state, too.
    expected = torch.func.vmap(torch.func.jacrev(lambda v, s: prob.f(v, prob.p, s)))(u, t)
    _assert_jac_equal(prob.jac(u, prob.p, t), expected)


def test_robertson_jacobian_columns_sum_to_zero():
    """``y1 + y2 + y3`` is conserved, so ``1ᵀ f = 0`` and ``1ᵀ J = 0``."""
    prob = problems.robertson()
    u = _random_state(prob, torch.Generator().manual_seed(2), (4,))
    J = prob.jac(u, prob.p, _t(u))
    assert float(J.sum(-2).abs().max()) <= 1e-12 * float(J.abs().max())


# ---- batching -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(STIFF))
def test_batched_rhs_and_jac_equal_per_member(name):
    """A batch of states with rate constants perturbed by ±20% gives, member by member, what each
    member gives alone; so do 2-d batch shapes and a batch of parameters with one shared state."""
    prob = STIFF[name]()
    gen = torch.Generator().manual_seed(3)
    u = _random_state(prob, gen, (2, 3))
    p = _perturbed_params(prob, gen, (2, 3))
    t = _t(u)
    f, J = prob.f(u, p, t), prob.jac(u, p, t)
    n = u.shape[-1]
    assert f.shape == (2, 3, n) and J.shape == (2, 3, n, n)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(f[i, j], prob.f(u[i, j], p[i, j], t[i, j]), rtol=1e-15, atol=0.0)
            torch.testing.assert_close(J[i, j], prob.jac(u[i, j], p[i, j], t[i, j]), rtol=1e-15, atol=0.0)
    if name.startswith("van_der_pol_mu") or name == "van_der_pol":
        return  # the pre-existing van_der_pol rhs needs u to carry the batch (torch.stack of y alone)
    # Batched parameters, one shared state: the result takes the parameters' batch shape.
    f = prob.f(prob.u0, p, _t(prob.u0))
    J = prob.jac(prob.u0, p, _t(prob.u0))
    assert f.shape == (2, 3, n) and J.shape == (2, 3, n, n)
    torch.testing.assert_close(f[1, 2], prob.f(prob.u0, p[1, 2], _t(prob.u0)), rtol=1e-15, atol=0.0)
    torch.testing.assert_close(J[1, 2], prob.jac(prob.u0, p[1, 2], _t(prob.u0)), rtol=1e-15, atol=0.0)


def test_constructors_accept_batched_u0_and_parameters():
    gen = torch.Generator().manual_seed(4)
    k = torch.tensor([0.04, 3e7, 1e4], dtype=F64) * (0.8 + 0.4 * torch.rand(6, 3, generator=gen, dtype=F64))
    u0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64).expand(6, 3)
    prob = problems.robertson(k=k, u0=u0)
    assert prob.batch_shape == (6,) and prob.p.shape == (6, 3)
    assert prob.f(prob.u0, prob.p, _t(prob.u0)).shape == (6, 3)
    assert prob.jac(prob.u0, prob.p, _t(prob.u0)).shape == (6, 3, 3)
    for ctor, nk in ((problems.hires, 12), (problems.orego, 3), (problems.pollu, 25)):
        base = ctor()
        n = base.u0.shape[-1]
        p = base.p * (0.8 + 0.4 * torch.rand(3, nk, generator=gen, dtype=F64))
        prob = ctor(u0=base.u0.expand(3, n), p=p)
        assert prob.f(prob.u0, prob.p, _t(prob.u0)).shape == (3, n)
        assert prob.jac(prob.u0, prob.p, _t(prob.u0)).shape == (3, n, n)
    eps = torch.tensor([1e-6, 1e-3], dtype=F64)
    prob = problems.van_der_pol_scaled(eps=eps, u0=torch.tensor([[2.0, -0.66], [2.0, 0.0]], dtype=F64))
    assert prob.jac(prob.u0, prob.p, _t(prob.u0)).shape == (2, 2, 2)


@pytest.mark.parametrize("name", list(STIFF))
def test_float32_problems(name):
    prob = STIFF[name](dtype=torch.float32)
    assert prob.u0.dtype == torch.float32
    t = _t(prob.u0)
    assert prob.f(prob.u0, prob.p, t).dtype == torch.float32
    J = prob.jac(prob.u0, prob.p, t)
    assert J.dtype == torch.float32 and bool(torch.isfinite(J).all())


def test_parameters_are_the_documented_constants():
    assert problems.robertson().p.tolist() == [0.04, 3e7, 1e4]
    assert problems.orego().u0.tolist() == [1.0, 2.0, 3.0]
    assert problems.orego().p.tolist() == [77.27, 8.375e-6, 0.161]
    assert problems.hires().tspan == (0.0, 321.8122)
    assert problems.hires().u0.tolist() == [1.0, 0, 0, 0, 0, 0, 0, 0.0057]
    pol = problems.pollu()
    assert pol.p.shape == (25,) and pol.u0.shape == (20,) and pol.tspan == (0.0, 60.0)
    assert float(pol.p[18]) == 4.44e11 and float(pol.p[0]) == 0.35 and float(pol.p[24]) == 3.12
    vdp = problems.van_der_pol_scaled()
    assert vdp.p == 1e-6 and vdp.u0.tolist() == [2.0, -0.66] and vdp.tspan == (0.0, 2.0)


# ---- reference solutions (SciPy Radau with the analytic Jacobian) ---------------------------------

def _radau(prob, rtol, atol, t1=None):
    p = prob.p
    t0 = torch.tensor(0.0, dtype=F64)

    def f(t, y):
        return prob.f(torch.from_numpy(y), p, t0).numpy()

    def jac(t, y):
        return prob.jac(torch.from_numpy(y), p, t0).numpy()

    span = (prob.tspan[0], prob.tspan[1] if t1 is None else t1)
    sol = solve_ivp(f, span, prob.u0.numpy(), method="Radau", rtol=rtol, atol=atol, jac=jac)
    assert sol.status == 0, sol.message
    return sol.y[:, -1]


def _assert_reference(name, y, rtol):
    ref = np.array(STIFF_REFERENCE[name][1])
    err = np.abs(y / ref - 1)
    assert err.max() < rtol, f"{name}: relative errors {err}"


def test_hires_reference_and_invariant():
    prob = problems.hires()
    assert prob.tspan[1] == STIFF_REFERENCE["hires"][0]
    y = _radau(prob, rtol=1e-10, atol=1e-12)
    # Test set hires.f: y8(321.8122) = 0.2850001604814231e-2, y1 = 0.7371312573325668e-3, ...
    _assert_reference("hires", y, 1e-8)  # measured: 5e-12
    assert abs(y[6] + y[7] - 0.0057) < 1e-13


def test_pollu_reference_and_invariants():
    prob = problems.pollu()
    assert prob.tspan[1] == STIFF_REFERENCE["pollu"][0]
    # atol below the smallest component (y16 ~ 4e-18) for relative accuracy in every component.
    y = _radau(prob, rtol=1e-10, atol=1e-20)
    _assert_reference("pollu", y, 1e-8)  # measured: 4e-12 (y16 included)
    # Carbon, nitrogen and sulfur balances (the stoichiometry's left null space).
    carbon = y[6] + y[7] + 2 * y[8] + y[9] + 2 * y[10] + y[11] + 2 * y[12] + y[13]
    nitrogen = y[0] + y[1] + y[12] + y[14] + y[18] + 2 * y[19]
    sulfur = y[16] + y[17]
    np.testing.assert_allclose([carbon, nitrogen, sulfur], [0.42, 0.2, 0.007], rtol=1e-12)
    # The reference solution satisfies them too (a check on the transcribed stoichiometry).
    r = np.array(STIFF_REFERENCE["pollu"][1])
    np.testing.assert_allclose([r[6] + r[7] + 2 * r[8] + r[9] + 2 * r[10] + r[11] + 2 * r[12] + r[13],
                                r[0] + r[1] + r[12] + r[14] + r[18] + 2 * r[19], r[16] + r[17]],
                               [0.42, 0.2, 0.007], rtol=1e-13)


def test_pollu_invariants_of_the_rhs():
    prob = problems.pollu()
    u = _random_state(prob, torch.Generator().manual_seed(5), (8,))
    f = prob.f(u, prob.p, _t(u))
    w = torch.zeros(3, 20, dtype=F64)
    w[0, [6, 7, 9, 11, 13]] = 1.0
    w[0, [8, 10, 12]] = 2.0
    w[1, [0, 1, 12, 14, 18]] = 1.0
    w[1, 19] = 2.0
    w[2, [16, 17]] = 1.0
    scale = (prob.jac(u, prob.p, _t(u)).abs() * u[..., None, :]).sum(-1).max()
    assert float((f @ w.T).abs().max()) < 1e-13 * float(scale)


def test_robertson_reference_at_1e11_and_conservation():
    prob = problems.robertson()
    assert prob.tspan == (0.0, 1e5)  # SciMLBenchmarks' span; the test set's runs to 1e11
    t1 = STIFF_REFERENCE["robertson"][0]
    # y2 ~ 8e-14 at the end: atol far below it.
    y = _radau(prob, rtol=1e-10, atol=1e-22, t1=t1)
    _assert_reference("robertson", y, 1e-7)  # measured: 2e-9
    assert abs(y.sum() - 1.0) < 1e-12


def test_robertson_conservation_on_default_span():
    prob = problems.robertson()
    y = _radau(prob, rtol=1e-10, atol=1e-20)
    assert abs(y.sum() - 1.0) < 1e-12
    assert np.all(y > 0) and 0.0 < y[1] < 1e-6


def test_orego_reference():
    prob = problems.orego()
    assert prob.tspan[1] == STIFF_REFERENCE["orego"][0]
    y = _radau(prob, rtol=1e-8, atol=1e-10)
    _assert_reference("orego", y, 1e-7)  # measured: 1e-10


def test_van_der_pol_scaled_reference():
    # The test set's vdpol.f starts from (2, 0), not Hairer's (2, -0.66).
    prob = problems.van_der_pol_scaled(u0=(2.0, 0.0))
    assert prob.tspan[1] == STIFF_REFERENCE["van_der_pol_scaled"][0]
    y = _radau(prob, rtol=1e-8, atol=1e-10)
    _assert_reference("van_der_pol_scaled", y, 1e-7)  # measured: 3e-11


@pytest.mark.slow
def test_orego_and_van_der_pol_scaled_reference_tight():
    _assert_reference("orego", _radau(problems.orego(), rtol=1e-10, atol=1e-12), 1e-9)  # measured: 3e-13
    y = _radau(problems.van_der_pol_scaled(u0=(2.0, 0.0)), rtol=1e-10, atol=1e-12)
    _assert_reference("van_der_pol_scaled", y, 1e-9)  # measured: 9e-14
    # Hairer's start (2, -0.66) is near the slow manifold: the same state at t = 2 up to ~3e-7.
    y = _radau(problems.van_der_pol_scaled(), rtol=1e-8, atol=1e-10)
    _assert_reference("van_der_pol_scaled", y, 1e-5)  # measured: 3.6e-7


# ---- damped oscillator, charged particle, spiral --------------------------------------------------

def _tight(prob, ts, alg=None):
    return pyode.solve(prob, alg or pyode.Vern7(), saveat=ts, reltol=1e-10, abstol=1e-12)


@pytest.mark.parametrize("m, c, k", [
    (1.0, 0.1, 1.0),   # underdamped (the default)
    (2.0, 4.0, 2.0),   # critically damped: c² = 4mk exactly
    (1.0, 5.0, 1.0),   # overdamped
    (0.5, 40.0, 3.0),  # strongly overdamped (fast mode -80)
])
def test_damped_oscillator_matches_closed_form(m, c, k):
    prob = problems.damped_oscillator(m=m, c=c, k=k, u0=(1.0, -0.5))
    ts = torch.linspace(0.0, 20.0, 81, dtype=F64)
    sol = _tight(prob, ts)
    exact = problems.damped_oscillator_exact(ts, m=m, c=c, k=k, u0=(1.0, -0.5))
    assert exact.shape == (81, 2)
    torch.testing.assert_close(sol.u, exact, rtol=0.0, atol=1e-8)  # measured: ≤ 9e-13


def test_damped_oscillator_exact_is_continuous_through_critical_damping():
    ts = torch.linspace(0.0, 10.0, 41, dtype=F64)
    critical = problems.damped_oscillator_exact(ts, m=1.0, c=2.0, k=1.0)
    for c in (2.0 * (1 - 1e-9), 2.0 * (1 + 1e-9)):
        torch.testing.assert_close(problems.damped_oscillator_exact(ts, c=c), critical, rtol=0.0, atol=1e-8)


def test_damped_oscillator_exact_satisfies_the_equation():
    # Central differences of x give v, and of v give -(c v + k x)/m, in every regime.
    h = 1e-5
    ts = torch.linspace(0.5, 8.0, 16, dtype=F64)
    for m, c, k in ((1.0, 0.3, 2.0), (1.0, 2.0, 1.0), (2.0, 7.0, 1.5)):
        u = problems.damped_oscillator_exact(ts, m=m, c=c, k=k, u0=(0.3, 1.2))
        du = (problems.damped_oscillator_exact(ts + h, m=m, c=c, k=k, u0=(0.3, 1.2))
              - problems.damped_oscillator_exact(ts - h, m=m, c=c, k=k, u0=(0.3, 1.2))) / (2 * h)
        torch.testing.assert_close(du[:, 0], u[:, 1], rtol=0.0, atol=1e-8)
        torch.testing.assert_close(du[:, 1], -(c * u[:, 1] + k * u[:, 0]) / m, rtol=0.0, atol=1e-8)


def test_damped_oscillator_exact_large_t_overdamped_does_not_overflow():
    u = problems.damped_oscillator_exact(torch.tensor([1e3, 1e5], dtype=F64), m=1.0, c=100.0, k=1.0)
    assert bool(torch.isfinite(u).all())


def test_damped_oscillator_batch_and_jacobian():
    c = torch.tensor([0.1, 2.0, 5.0], dtype=F64)
    prob = problems.damped_oscillator(c=c, u0=torch.tensor([1.0, 0.0], dtype=F64).expand(3, 2))
    assert prob.p.shape == (3, 3)
    u = prob.u0 + 0.1
    J = prob.jac(u, prob.p, _t(u))
    expected = torch.func.vmap(torch.func.jacrev(lambda v, q: prob.f(v, q, torch.zeros((), dtype=F64))))(u, prob.p)
    torch.testing.assert_close(J, expected, rtol=1e-15, atol=0.0)
    ts = torch.linspace(0.0, 5.0, 11, dtype=F64)
    sol = _tight(prob, ts)
    for i, ci in enumerate(c.tolist()):
        torch.testing.assert_close(sol.u[:, i], problems.damped_oscillator_exact(ts, c=ci), rtol=0.0, atol=1e-8)


def test_damped_oscillator_exact_rejects_nonpositive_mass():
    with pytest.raises(ValueError, match="m > 0"):
        problems.damped_oscillator_exact(1.0, m=0.0)


def _relative_drift(values):
    """max |I(t) - I(t0)| / max(|I(t0)|, 1), per invariant."""
    return ((values - values[0]).abs().max(0).values / values[0].abs().clamp_min(1.0))


@pytest.mark.parametrize("alg_name", ["Vern7", "DP8"])
def test_charged_particle_invariants_are_conserved(alg_name):
    prob = problems.charged_particle()
    ts = torch.linspace(*prob.tspan, 301, dtype=F64)
    sol = _tight(prob, ts, getattr(pyode, alg_name)())
    inv = problems.charged_particle_invariants(sol.u, prob.p, sol.t)
    assert inv.shape == (301, 2)
    assert float(_relative_drift(inv).max()) < 1e-8  # measured: 5e-12 (Vern7), 4e-10 (DP8)
    # A quantity that is not conserved does move, so the check above can fail: the kinetic energy
    # swings between 1 and 3.3, and so does the energy without the wave frame's terms.
    kinetic = 0.5 * sol.u[:, 2:].square().sum(-1, keepdim=True)
    assert float(_relative_drift(kinetic).max()) > 0.5
    q, m, B, E0, k, w = prob.p.tolist()
    lab_energy = kinetic + q * E0 / k * torch.cos(k * sol.u[:, :1] - w * sol.t[:, None])
    assert float(_relative_drift(lab_energy).max()) > 1e-2


def test_charged_particle_invariants_have_zero_time_derivative():
    """d/dt I(u(t), t) = ∇_u I · f + ∂_t I vanishes identically: random states, times and parameters,
    batched (independent of any solver)."""
    prob = problems.charged_particle()
    gen = torch.Generator().manual_seed(6)
    B = 16
    u = 4 * torch.rand(B, 4, generator=gen, dtype=F64) - 2
    p = prob.p * (0.5 + torch.rand(B, 6, generator=gen, dtype=F64))
    t = 10 * torch.rand(B, generator=gen, dtype=F64)

    def rate(u1, p1, t1):
        grads = torch.func.jacrev(problems.charged_particle_invariants, argnums=(0, 2))(u1, p1, t1)
        return grads[0] @ prob.f(u1, p1, t1) + grads[1]

    dI = torch.func.vmap(rate)(u, p, t)
    assert dI.shape == (B, 2)
    assert float(dI.abs().max()) < 1e-13
    # The kinetic energy has a nonzero rate (the wave does work), so the check is not vacuous.
    f = prob.f(u, p, t)
    assert float((u[:, 2:] * f[:, 2:]).sum(-1).abs().max()) > 1e-2


def test_charged_particle_batch_and_float32():
    prob = problems.charged_particle()
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(2, 3, 4, generator=gen, dtype=F64)
    p = prob.p * (0.8 + 0.4 * torch.rand(2, 3, 6, generator=gen, dtype=F64))
    t = torch.rand(2, 3, generator=gen, dtype=F64)
    f = prob.f(u, p, t)
    torch.testing.assert_close(f[1, 2], prob.f(u[1, 2], p[1, 2], t[1, 2]), rtol=1e-15, atol=0.0)
    inv = problems.charged_particle_invariants(u, p, t)
    torch.testing.assert_close(inv[0, 1], problems.charged_particle_invariants(u[0, 1], p[0, 1], t[0, 1]),
                               rtol=1e-15, atol=0.0)
    p32 = problems.charged_particle(dtype=torch.float32)
    assert p32.f(p32.u0, p32.p, _t(p32.u0)).dtype == torch.float32
    assert problems.charged_particle_invariants(p32.u0, p32.p, 0.0).dtype == torch.float32


def test_spiral_matches_torchdiffeq_demo_and_scipy():
    prob = problems.spiral()
    assert prob.u0.tolist() == [2.0, 0.0] and prob.tspan == (0.0, 25.0)
    assert prob.p.tolist() == [[-0.1, 2.0], [-2.0, -0.1]]
    # ode_demo.py's right-hand side, torch.mm(y**3, true_A), on a row vector.
    y = torch.tensor([[0.7, -1.3]], dtype=F64)
    torch.testing.assert_close(prob.f(y[0], prob.p, _t(y[0])), torch.mm(y ** 3, prob.p)[0], rtol=0.0, atol=0.0)
    ts = torch.linspace(0.0, 25.0, 101, dtype=F64)
    sol = _tight(prob, ts)
    ref = solve_ivp(lambda t, v: (v ** 3) @ np.array([[-0.1, 2.0], [-2.0, -0.1]]), (0.0, 25.0), [2.0, 0.0],
                    method="DOP853", t_eval=ts.numpy(), rtol=1e-12, atol=1e-14)
    assert ref.status == 0
    torch.testing.assert_close(sol.u, torch.from_numpy(ref.y.T), rtol=0.0, atol=1e-8)  # measured: 5e-11
    # It spirals in: the radius shrinks.
    r = sol.u.norm(dim=-1)
    assert float(r[-1]) < 0.5 * float(r[0])


def test_spiral_jacobian_and_batch():
    prob = problems.spiral()
    gen = torch.Generator().manual_seed(8)
    u = torch.randn(5, 2, generator=gen, dtype=F64)
    A = prob.p * (0.8 + 0.4 * torch.rand(5, 2, 2, generator=gen, dtype=F64))
    t = _t(u)
    expected = torch.func.vmap(torch.func.jacrev(lambda v, a, s: prob.f(v, a, s)))(u, A, t)
    _assert_jac_equal(prob.jac(u, A, t), expected)
    torch.testing.assert_close(prob.f(u, A, t)[3], prob.f(u[3], A[3], t[3]), rtol=1e-15, atol=0.0)
    torch.testing.assert_close(prob.jac(u, prob.p, t)[2], prob.jac(u[2], prob.p, t[2]), rtol=1e-15, atol=0.0)
