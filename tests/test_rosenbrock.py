"""Rosenbrock methods: convergence order, stiff accuracy, Jacobian paths, failures, gradients."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode import ODEProblem, ReturnCode, solve

ROSENBROCKS = [pyode.Rosenbrock23(), pyode.Rodas4(), pyode.Rodas5P()]
by_alg = pytest.mark.parametrize("alg", ROSENBROCKS, ids=repr)


def slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def rober(u, k, t):
    y1, y2, y3 = u.unbind(-1)
    return torch.stack([-k[..., 0] * y1 + k[..., 2] * y2 * y3,
                        k[..., 0] * y1 - k[..., 1] * y2 ** 2 - k[..., 2] * y2 * y3,
                        k[..., 1] * y2 ** 2], -1)


K_ROBER = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64)


def rober_problem(k=K_ROBER, tspan=(0.0, 1e5), batch=()):
    u0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(*batch, 3).clone()
    return ODEProblem(rober, u0, tspan, k)


def scipy_reference(prob, t_eval, rtol=1e-10, atol=1e-14):
    def f(t, y):
        return prob.f(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=torch.float64)).numpy()

    ref = solve_ivp(f, prob.tspan, prob.u0.numpy(), method="Radau", t_eval=t_eval, rtol=rtol, atol=atol)
    assert ref.success
    return torch.from_numpy(ref.y.T)


# ---- order --------------------------------------------------------------------------------------

def stiff_linear_problem(lam=-1e4):
    # u' = A u, A = V diag(R, λ) V⁻¹ with a slowly decaying rotation R (eigenvalues -1 ± 5i) and a
    # fast mode λ; exact solution from the eigenvector form (torch.linalg.matrix_exp of the coupled
    # A loses ~1e-9 here, too much for a convergence ladder).
    V = torch.tensor([[1.0, 0.3, 1.0], [0.2, 1.0, -1.0], [1.0, -0.5, 2.0]], dtype=torch.float64)
    B = torch.tensor([[-1.0, 5.0, 0.0], [-5.0, -1.0, 0.0], [0.0, 0.0, lam]], dtype=torch.float64)
    A = V @ B @ torch.linalg.inv(V)
    u0 = torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64)
    c, s = math.cos(5.0), math.sin(5.0)
    expB = torch.tensor([[c * math.exp(-1), s * math.exp(-1), 0.0], [-s * math.exp(-1), c * math.exp(-1), 0.0],
                         [0.0, 0.0, math.exp(lam)]], dtype=torch.float64)
    exact = V @ expB @ torch.linalg.solve(V, u0)
    return ODEProblem(lambda u, p, t: u @ p.T, u0, (0.0, 1.0), A), exact


@by_alg
def test_order_on_stiff_linear_problem(alg):
    prob, exact = stiff_linear_problem()
    hs = [0.1, 0.05, 0.025, 0.0125] if alg.order < 5 else [0.2, 0.1, 0.05, 0.025]
    errs = [float((solve(prob, alg, adaptive=False, dt=h, saveat=[1.0]).u[-1] - exact).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - alg.order) < 0.25, (errs, slope(hs, errs))


# The ladders start where each method's error is in its asymptotic regime.
LADDER = {2: [0.1, 0.05, 0.025, 0.0125], 4: [0.05, 0.025, 0.0125, 0.00625], 5: [0.1, 0.05, 0.025, 0.0125]}


def nonautonomous(u, p, t):
    # y1' = cos(t) y1 (y1 = exp(sin t)), y2' = -y2^2 + cos(t) (nonlinear, t-dependent)
    return torch.stack([torch.cos(t) * u[..., 0], -u[..., 1] ** 2 + torch.cos(t) * (1 + 0 * u[..., 1])], -1)


@by_alg
def test_order_on_nonlinear_nonautonomous_problem(alg):
    # Exercises every stage coefficient, including the ∂f/∂t terms, with the exact Jacobian.
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 2.0))
    ref = solve(prob, pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[2.0]).u[-1]
    assert abs(float(ref[0]) - math.exp(math.sin(2.0))) < 1e-11
    hs = LADDER[alg.order]
    errs = [float((solve(prob, alg, adaptive=False, dt=h, saveat=[2.0]).u[-1] - ref).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - alg.order) < 0.3, (errs, slope(hs, errs))


def test_rosenbrock23_is_a_w_method():
    # With a wrong (here: zero) Jacobian Rosenbrock23 keeps its order 2; Rodas5P loses order 5.
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 2.0),
                      jac=lambda u, p, t: torch.zeros(*u.shape, u.shape[-1], dtype=u.dtype))
    ref = solve(prob.remake(jac=None), pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[2.0]).u[-1]
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = [float((solve(prob, pyode.Rosenbrock23(), adaptive=False, dt=h, saveat=[2.0]).u[-1] - ref).abs().max())
            for h in hs]
    assert abs(slope(hs, errs) - 2) < 0.25, errs
    errs = [float((solve(prob, pyode.Rodas5P(), adaptive=False, dt=h, saveat=[2.0]).u[-1] - ref).abs().max())
            for h in hs]
    assert slope(hs, errs) < 3, errs


# ---- stiff accuracy -----------------------------------------------------------------------------

@by_alg
def test_robertson_against_scipy_radau(alg):
    prob = rober_problem()
    ts = np.array([1e-4, 1.0, 1e2, 1e4, 1e5])
    ref = scipy_reference(prob, ts)
    tols = (1e-3, 1e-4, 1e-5) if alg.order < 3 else (1e-4, 1e-6, 1e-8)  # Rosenbrock23: loose tolerances
    errs = []
    for tol in tols:
        atol = tol * 1e-4
        sol = solve(prob, alg, reltol=tol, abstol=atol, saveat=torch.from_numpy(ts))
        # error in units of the requested tolerance, as the solver measures it
        scaled = float(((sol.u - ref).abs() / (atol + tol * ref.abs())).max())
        assert scaled < 50, (tol, scaled)
        errs.append(float((sol.u - ref).abs().max()))
        # mass conservation holds to round-off for linear invariants
        assert float((sol.u.sum(-1) - 1).abs().max()) < 1e-12
    assert errs[0] > 10 * errs[1] > 100 * errs[2] or errs[0] > 10 * errs[2], errs


def test_rodas5p_stiff_van_der_pol_against_radau():
    mu = 1e3
    prob = ODEProblem(lambda u, p, t: torch.stack([u[..., 1], p * (1 - u[..., 0] ** 2) * u[..., 1] - u[..., 0]], -1),
                      torch.tensor([2.0, 0.0], dtype=torch.float64), (0.0, 3000.0), mu)
    ts = np.array([500.0, 1500.0, 3000.0])
    ref = scipy_reference(prob, ts, rtol=1e-11, atol=1e-11)
    sol = solve(prob, pyode.Rodas5P(), reltol=1e-7, abstol=1e-7, saveat=torch.from_numpy(ts))
    assert float((sol.u[:, 0] - ref[:, 0]).abs().max()) < 1e-4
    explicit = solve(prob, pyode.Tsit5(), maxiters=5000, throw=False)
    assert explicit.retcode is ReturnCode.MaxIters


def test_dense_output_on_robertson():
    prob = rober_problem(tspan=(0.0, 100.0))
    sol = solve(prob, pyode.Rodas5P(), reltol=1e-8, abstol=1e-12)
    ts = np.array([0.013, 0.5, 7.7, 42.0])
    ref = scipy_reference(prob, ts)
    dense = sol(torch.from_numpy(ts))
    assert float(((dense - ref).abs() / (ref.abs() + 1e-10)).max()) < 1e-5


# ---- Jacobian paths ------------------------------------------------------------------------------

def rober_jac(u, k, t):
    y1, y2, y3 = u.unbind(-1)
    z = torch.zeros_like(y1)
    k1, k2, k3 = k[..., 0] + z, k[..., 1] + z, k[..., 2] + z
    return torch.stack([torch.stack([-k1, k3 * y3, k3 * y2], -1),
                        torch.stack([k1, -2 * k2 * y2 - k3 * y3, -k3 * y2], -1),
                        torch.stack([z, 2 * k2 * y2, z], -1)], -2)


def test_user_jacobian_and_finite_differences_agree_with_autodiff():
    prob = rober_problem(tspan=(0.0, 1e3))
    ad = solve(prob, pyode.Rodas5P(), reltol=1e-7, abstol=1e-11, saveat=[1.0, 1e3])
    user = solve(prob.remake(jac=rober_jac), pyode.Rodas5P(), reltol=1e-7, abstol=1e-11, saveat=[1.0, 1e3])
    fd = solve(prob, pyode.Rodas5P(autodiff=False), reltol=1e-7, abstol=1e-11, saveat=[1.0, 1e3])
    assert user.stats.naccept == ad.stats.naccept
    torch.testing.assert_close(user.u, ad.u, rtol=1e-12, atol=1e-16)
    torch.testing.assert_close(fd.u, ad.u, rtol=1e-5, atol=1e-10)
    assert fd.stats.nf > ad.stats.nf, "finite differences cost extra f evaluations"
    assert ad.stats.njac <= ad.stats.naccept + ad.stats.nreject
    assert ad.stats.nlu == ad.stats.naccept + ad.stats.nreject


def test_jacobian_is_reused_after_rejections():
    sol = solve(rober_problem(), pyode.Rodas5P(), reltol=1e-6, abstol=1e-10)
    assert sol.stats.nreject > 0
    assert sol.stats.njac == sol.stats.naccept


def test_bad_user_jacobian_shape():
    prob = rober_problem().remake(jac=lambda u, p, t: torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"jac returned \(3, 2\) for u of shape \(3,\); jac\(u, p, t\) must return shape \(3, 3\)"):
        solve(prob, pyode.Rodas5P())


def test_nan_jacobian_is_reported_not_raised():
    prob = rober_problem().remake(jac=lambda u, p, t: torch.full((3, 3), float("nan"), dtype=torch.float64))
    sol = solve(prob, pyode.Rodas5P(), throw=False)
    assert sol.retcode is ReturnCode.Unstable
    with pytest.raises(pyode.SolveError, match="Unstable at t=0"):
        solve(prob, pyode.Rodas5P())


def test_singular_jacobian_is_fine():
    # J = 0 everywhere (f independent of u): W = I/(hγ) stays invertible.
    prob = ODEProblem(lambda u, p, t: torch.cos(t)[..., None] * torch.ones_like(u),
                      torch.zeros(2, dtype=torch.float64), (0.0, 3.0))
    sol = solve(prob, pyode.Rodas5P(), reltol=1e-9, abstol=1e-12, saveat=[3.0])
    torch.testing.assert_close(sol.u[-1], torch.full((2,), math.sin(3.0), dtype=torch.float64), rtol=1e-7, atol=0)


def test_autodiff_failure_names_the_fix():
    # an autograd.Function without setup_context: torch.func's transforms (the Jacobian's) refuse it
    class NoForward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return -x

        @staticmethod
        def backward(ctx, g):
            return -g

    prob = ODEProblem(lambda u, p, t: NoForward.apply(u), torch.ones(2, dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(RuntimeError, match=r"automatic differentiation of f failed.*autodiff=False"):
        solve(prob, pyode.Rodas5P())
    sol = solve(prob, pyode.Rodas5P(autodiff=False), reltol=1e-8, abstol=1e-10, saveat=[1.0])
    torch.testing.assert_close(sol.u[-1], torch.full((2,), math.exp(-1.0), dtype=torch.float64), rtol=1e-6, atol=0)


# ---- batches, dtypes, gradients ----------------------------------------------------------------

def test_batch_of_perturbed_robertson_equals_one_by_one():
    gen = torch.Generator().manual_seed(0)
    k = K_ROBER * (1 + 0.2 * (2 * torch.rand(4, 3, generator=gen, dtype=torch.float64) - 1))
    prob = rober_problem(k=k, batch=(4,))
    ts = [1e-3, 1.0, 1e3, 1e5]
    sol = solve(prob, pyode.Rodas5P(), reltol=1e-6, abstol=1e-10, saveat=ts)
    for i in range(4):
        alone = solve(rober_problem(k=k[i]), pyode.Rodas5P(), reltol=1e-6, abstol=1e-10, saveat=ts)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=1e-11, atol=1e-18)


@by_alg
def test_float32_state(alg):
    prob = ODEProblem(rober, torch.tensor([1.0, 0.0, 0.0]), (0.0, 100.0), K_ROBER.float())
    sol = solve(prob, alg, reltol=1e-4, abstol=1e-8, saveat=[100.0])
    ref = scipy_reference(rober_problem(tspan=(0.0, 100.0)), np.array([100.0]))
    assert sol.u.dtype == torch.float32
    assert float(((sol.u.double() - ref).abs() / (ref.abs() + 1e-6)).max()) < 1e-2


def check_rober_log_rate_gradient(alg, t_end, ts, reltol, abstol, rtol):
    """Gradient of a loss on Robertson at log-spaced times with respect to log rate constants:
    autograd through the solver (Jacobians, LU solves, Newton iterations) vs central differences."""
    def loss(logk):
        sol = solve(rober_problem(k=logk.exp(), tspan=(0.0, t_end)), alg, reltol=reltol, abstol=abstol, saveat=ts)
        return (sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum()

    logk = K_ROBER.log().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(logk), logk)
    fd = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for i in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = 1e-6
            fd[i] = (loss(logk + e) - loss(logk - e)) / 2e-6
    torch.testing.assert_close(g, fd, rtol=rtol, atol=1e-8)


def test_gradient_through_rodas5p_matches_finite_differences():
    check_rober_log_rate_gradient(pyode.Rodas5P(), 1.0, [1e-3, 0.1, 1.0], 1e-9, 1e-13, rtol=1e-4)


def test_reverse_mode_jacobian_matches_forward_mode_and_differences():
    # the reference loop's Jacobian (batched vector-Jacobian products) against the fused path's
    # (forward mode) and central differences; both stay differentiable in y and the parameters
    from pyode.native._jacobian import JacobianEvaluator

    p = torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64, requires_grad=True)

    class Rhs:
        def uncounted(self, y, t):
            return torch.stack([p[0] * y[:, 0] * y[:, 1] + torch.sin(p[2] * t), p[1] * y[:, 0] ** 2 * t,
                                torch.tanh(y[:, 2] - y[:, 1])], -1)

    jac = JacobianEvaluator(Rhs(), None, autodiff=True)
    y = torch.tensor([[1.0, 2.0, 0.1], [0.5, -1.0, 0.3]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    J_rev, dt_rev = jac._reverse(y, t)
    J_fwd, dt_fwd = jac._forward(y, t)
    torch.testing.assert_close(J_rev, J_fwd, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dt_rev, dt_fwd, rtol=1e-14, atol=1e-14)
    eps = 1e-6
    with torch.no_grad():
        for j in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[j] = eps
            col = (Rhs().uncounted(y + e, t) - Rhs().uncounted(y - e, t)) / (2 * eps)
            torch.testing.assert_close(J_rev[:, :, j], col, rtol=1e-8, atol=1e-9)
        dt_fd = (Rhs().uncounted(y, t + eps) - Rhs().uncounted(y, t - eps)) / (2 * eps)
    torch.testing.assert_close(dt_rev, dt_fd, rtol=1e-8, atol=1e-9)
    w = torch.arange(18, dtype=torch.float64).reshape(2, 3, 3)
    g_rev = torch.autograd.grad((J_rev * w).sum() + dt_rev.sum(), (y, p))
    g_fwd = torch.autograd.grad((J_fwd * w).sum() + dt_fwd.sum(), (y, p))
    for a, b in zip(g_rev, g_fwd):
        assert float(a.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    with torch.no_grad():           # nothing to differentiate: no graph is kept
        assert not jac._reverse(y, t)[0].requires_grad
