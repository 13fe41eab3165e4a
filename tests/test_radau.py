"""RadauIIA5: coefficients, convergence order, stiff accuracy, batches, gradients, failures."""
import math

import numpy as np
import pytest
import torch

import pyode
from pyode import ODEProblem, ReturnCode, problems, solve
from pyode.native._radau import RadauStepper
from pyode.native._saving import interpolate
from pyode.native.tableaus import radau5 as tab
from pyode.problems import STIFF_REFERENCE
from test_rosenbrock import (K_ROBER, check_rober_log_rate_gradient, nonautonomous, rober, rober_jac, rober_problem,
                             scipy_reference, slope, stiff_linear_problem)

F64 = torch.float64
# Fixed-step ladders: the Newton tolerance follows reltol, so keep it far below the step error (but
# above the round-off floor of the Newton increments, cond(γ/h I - J) eps).
NEWTON_TIGHT = dict(reltol=1e-12, abstol=1e-14)


# ---- coefficients ---------------------------------------------------------------------------------

def test_simplifying_assumptions_and_transformation():
    A, b, c = np.array(tab.A), np.array(tab.B), np.array(tab.C)
    assert np.array_equal(b, A[-1]) and c[-1] == 1.0            # stiffly accurate
    for k in range(1, 6):                                         # B(5): quadrature order 5 ...
        assert abs(b @ c ** (k - 1) - 1 / k) < 1e-15, k
    assert abs(b @ c ** 5 - 1 / 6) > 1e-4                         # ... and not 6
    for k in range(1, 4):                                         # C(3): stage order 3
        np.testing.assert_allclose(A @ c ** (k - 1), c ** k / k, rtol=0, atol=1e-15)
    for k in range(1, 3):                                         # D(2)
        np.testing.assert_allclose((b * c ** (k - 1)) @ A, b * (1 - c ** k) / k, rtol=0, atol=1e-15)
    # T⁻¹ A⁻¹ T is block diagonal with the real eigenvalue γ and the 2×2 block of α ± iβ.
    T, TI = np.array(tab.T), np.array(tab.TI)
    np.testing.assert_allclose(T @ TI, np.eye(3), rtol=0, atol=1e-15)
    blocks = np.array([[tab.GAMMA, 0, 0], [0, tab.ALPHA, -tab.BETA], [0, tab.BETA, tab.ALPHA]])
    np.testing.assert_allclose(TI @ np.linalg.inv(A) @ T, blocks, rtol=0, atol=1e-13)
    # Error weights: E = γ (b̂ - b)ᵀ A⁻¹ for the order-3 method with weight 1/γ on f(y0).
    V = np.vander(c, 3, increasing=True).T
    b_hat = np.linalg.solve(V, np.array([1 - 1 / tab.GAMMA, 1 / 2, 1 / 3]))
    np.testing.assert_allclose(tab.GAMMA * (b_hat - b) @ np.linalg.inv(A), tab.E, rtol=1e-13)


def test_dense_rows_are_the_collocation_polynomial():
    D = np.array(tab.DENSE)                                       # P_j(θ) = Σ_k D[j, k] θ^(k+1)
    assert RadauStepper.dense == tab.DENSE and D.shape == (3, 3)
    c = np.array(tab.C)
    P = np.stack([c, c ** 2, c ** 3], -1) @ D.T                   # P[i, j] = P_j(c_i)
    np.testing.assert_allclose(P, np.eye(3), rtol=0, atol=1e-14)
    # u'(c_i) = h f(Y_i) = Σ_j (A⁻¹)_ij Z_j: the polynomial's slopes are the collocation conditions.
    dP = np.stack([np.ones(3), 2 * c, 3 * c ** 2], -1) @ (D.T)    # dP[i, j] = P_j'(c_i)
    np.testing.assert_allclose(dP, np.linalg.inv(np.array(tab.A)), rtol=1e-13, atol=1e-13)
    # Through the loop's interpolate (K = Z / h): the stage values at θ = c_i, y0 at θ = 0.
    gen = torch.Generator().manual_seed(0)
    y0, Z = torch.randn(4, generator=gen, dtype=F64), torch.randn(3, 4, generator=gen, dtype=F64)
    h = torch.tensor(-0.37, dtype=F64)
    dense = torch.tensor(tab.DENSE, dtype=F64)
    for theta, want in zip([0.0, *tab.C], [y0, *(y0 + Z)]):
        got = interpolate(dense, torch.tensor(theta, dtype=F64), y0, h, Z / h)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


# ---- order ----------------------------------------------------------------------------------------

def test_order_five_on_stiff_linear_problem():
    # Linear constant-coefficient problems see the stability function only: order 5 even when stiff.
    # (This A = V diag(...) V⁻¹ is ill-conditioned, cond(V) ≈ 500: a Newton tolerance of 1e-12 would sit
    # below the round-off of the increments.)
    prob, exact = stiff_linear_problem()
    hs = [0.2, 0.1, 0.05, 0.025]
    errs = [float((solve(prob, pyode.RadauIIA5(), adaptive=False, dt=h, saveat=[1.0], reltol=1e-10, abstol=1e-12).u[-1]
                   - exact).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - 5) < 0.3, (errs, slope(hs, errs))


def test_order_five_on_nonlinear_nonautonomous_problem():
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=F64), (0.0, 2.0))
    ref = solve(prob, pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[2.0]).u[-1]
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = [float((solve(prob, pyode.RadauIIA5(), adaptive=False, dt=h, saveat=[2.0], **NEWTON_TIGHT).u[-1]
                   - ref).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - 5) < 0.3, (errs, slope(hs, errs))


def test_stiff_accuracy_on_prothero_robinson():
    # y' = λ (y - sin t) + cos t with λ = -1e8: a stiffly accurate, L-stable method stays on the smooth
    # solution with hλ up to -4e7; the error is that of the stage order 3 (Hairer & Wanner IV.15),
    # damped by 1/|λ|.
    prob = ODEProblem(lambda u, lam, t: lam * (u - torch.sin(t)[..., None]) + torch.cos(t)[..., None],
                      torch.zeros(1, dtype=F64), (0.0, 2.0), -1e8)
    hs = [0.4, 0.2, 0.1, 0.05]
    errs = [abs(float(solve(prob, pyode.RadauIIA5(), adaptive=False, dt=h, saveat=[2.0], **NEWTON_TIGHT).u[-1, 0])
                - math.sin(2.0)) for h in hs]
    assert max(errs) < 1e-10, errs
    assert abs(slope(hs, errs) - 3) < 0.3, (errs, slope(hs, errs))


# ---- stiff accuracy against references ------------------------------------------------------------

def _robertson_case():
    prob = problems.robertson()
    ts = np.array([1e-4, 1.0, 1e2, 1e4, 1e5])
    return prob, torch.from_numpy(ts), scipy_reference(prob, ts), 1e-4


def _hires_case():
    t1, ref = STIFF_REFERENCE["hires"]
    return problems.hires(), torch.tensor([t1], dtype=F64), torch.tensor([ref], dtype=F64), 1e-4


def _vdpol_case():
    t1, ref = STIFF_REFERENCE["van_der_pol_scaled"]
    return problems.van_der_pol_scaled(u0=(2.0, 0.0)), torch.tensor([t1], dtype=F64), torch.tensor([ref], dtype=F64), 1.0


@pytest.mark.parametrize("case", [_robertson_case, _hires_case,
                                  pytest.param(_vdpol_case, marks=pytest.mark.slow)],
                         ids=["robertson", "hires", "vdpol"])
def test_stiff_problems_against_reference(case):
    prob, ts, ref, atol_ratio = case()
    errs = []
    for tol in (1e-6, 1e-8, 1e-10):
        atol = tol * atol_ratio
        sol = solve(prob, pyode.RadauIIA5(), reltol=tol, abstol=atol, saveat=ts)
        # error in units of the requested tolerance (RADAU5's tolerance transform keeps it O(1))
        scaled = float(((sol.u - ref).abs() / (atol + tol * ref.abs())).max())
        assert scaled < 20, (tol, scaled)
        errs.append(float((sol.u - ref).abs().max()))
        st = sol.stats
        assert st.nlu == st.naccept + st.nreject                  # one real + complex pair per attempt
        assert st.njac <= st.naccept + st.nreject                 # J reused after a rejection
        # Newton iterations per attempt (2 solves each, plus the error estimate's 1 or 2): the
        # extrapolated collocation polynomial keeps them near 2 (a zero start needs about 3).
        iters = (st.nsolve - st.nlu) / 2 / st.nlu
        assert iters < 2.6, (tol, iters)
    # 1e4 in tolerance buys 86x (HIRES) to 1e3x: reltol 1e-6 is already more accurate than asked
    assert errs[0] > errs[1] > errs[2] and errs[0] > 50 * errs[2], errs


def test_jacobian_reused_after_rejections():
    sol = solve(problems.robertson(), pyode.RadauIIA5(), reltol=1e-6, abstol=1e-10, saveat=[1e5])
    assert sol.stats.nreject > 0
    assert sol.stats.njac == sol.stats.naccept


# ---- batches, dense output, dtypes, gradients ------------------------------------------------------

def test_batch_of_perturbed_robertson_equals_one_by_one():
    gen = torch.Generator().manual_seed(2)
    k = K_ROBER * (1 + 0.2 * (2 * torch.rand(3, 3, generator=gen, dtype=F64) - 1))
    ts = [1e-3, 1.0, 1e3]
    kw = dict(reltol=1e-7, abstol=1e-11, saveat=ts)
    sol = solve(rober_problem(k=k, tspan=(0.0, 1e3), batch=(3,)).remake(jac=rober_jac), pyode.RadauIIA5(), **kw)
    assert len(set(sol.stats.naccept.tolist())) > 1, "members should need different step counts"
    for i in range(3):
        alone = solve(rober_problem(k=k[i], tspan=(0.0, 1e3)).remake(jac=rober_jac), pyode.RadauIIA5(), **kw)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        assert int(sol.stats.nreject[i]) == alone.stats.nreject
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=1e-12, atol=1e-20)


def test_gradient_matches_finite_differences():
    check_rober_log_rate_gradient(pyode.RadauIIA5(), 0.1, [1e-3, 1e-2, 0.1], 1e-8, 1e-12, rtol=1e-4)


def test_dense_output_on_robertson():
    prob = problems.robertson(tspan=(0.0, 100.0))
    sol = solve(prob, pyode.RadauIIA5(), reltol=1e-8, abstol=1e-12)
    ts = np.array([0.013, 0.5, 7.7, 42.0])
    ref = scipy_reference(prob, ts)
    dense = sol(torch.from_numpy(ts))
    assert float(((dense - ref).abs() / (ref.abs() + 1e-10)).max()) < 1e-6
    # the interpolant runs through every accepted step's end point
    torch.testing.assert_close(sol(sol.t[1:-1]), sol.u[1:-1], rtol=1e-12, atol=1e-20)


def test_float32_state():
    prob = ODEProblem(rober, torch.tensor([1.0, 0.0, 0.0]), (0.0, 100.0), K_ROBER.float())
    sol = solve(prob, pyode.RadauIIA5(), reltol=1e-4, abstol=1e-8, saveat=[100.0])
    ref = scipy_reference(rober_problem(tspan=(0.0, 100.0)), np.array([100.0]))
    assert sol.u.dtype == torch.float32
    assert float(((sol.u.double() - ref).abs() / (ref.abs() + 1e-6)).max()) < 1e-2


# ---- failures -----------------------------------------------------------------------------------

class _FixedJacobian:
    """A JacobianEvaluator stand-in returning a given J (counts evaluations like the real one)."""

    def __init__(self, J):
        self.J, self.evaluations = J, 0

    def __call__(self, y, t, fy):
        self.evaluations += 1
        return self.J, torch.zeros_like(y)


def test_singular_matrix_and_resting_members():
    # Member 0's real matrix γ/h I - J is exactly zero; member 1 does not move (hs = 0); member 2 is
    # an ordinary step of y' = -y.
    n, h = 2, 0.5
    J = torch.stack([tab.GAMMA / h * torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)])
    stepper = RadauStepper(_FixedJacobian(J), 1e-8, 1e-10)
    calls = []

    def f(y, t):
        calls.append(1)
        return -y

    y = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, -1.0]], dtype=F64)
    t = torch.zeros(3, dtype=F64)
    hs = torch.tensor([h, 0.0, h], dtype=F64)
    att = stepper.step(f, t, hs, t + hs, y, f(y, t))
    assert att.failed.tolist() == [True, False, False]
    assert torch.isfinite(att.y1).all() and torch.isfinite(att.err).all()
    assert torch.equal(att.y1[1], y[1]) and torch.equal(att.y1[0], y[0])
    assert att.newton_iters.dtype == torch.long and att.newton_iters.tolist()[:2] == [0, 0]
    assert att.newton_iters[2] >= 1
    # Radau IIA's stability function at z = -1/2 is the (2,3)-Padé approximant of e^z: error ~ z^6.
    torch.testing.assert_close(att.y1[2], y[2] * math.exp(-h), rtol=1e-5, atol=0)
    K = stepper.dense_stages(f, t, hs, y, att, -att.y1)
    assert K.shape == (3, 3, n) and torch.equal(K[1], torch.zeros_like(K[1]))


def test_nan_jacobian_is_reported_not_raised():
    prob = problems.robertson().remake(jac=lambda u, p, t: torch.full((3, 3), float("nan"), dtype=F64))
    sol = solve(prob, pyode.RadauIIA5(), throw=False)
    assert sol.retcode in (ReturnCode.ConvergenceFailure, ReturnCode.Unstable)
    with pytest.raises(pyode.SolveError):
        solve(prob, pyode.RadauIIA5())


def test_failing_member_leaves_the_others_alone():
    # f turns NaN for member 1 once t > 0.5; member 0 never does and must not notice.
    def f(u, p, t):
        poison = torch.where((p > 1) & (t > 0.5), float("nan"), 0.0)
        return -p[..., None] * u + poison[..., None]

    u0 = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=F64)
    p = torch.tensor([0.7, 1.3], dtype=F64)
    kw = dict(reltol=1e-8, abstol=1e-10, saveat=[0.25, 1.0])
    sol = solve(ODEProblem(f, u0, (0.0, 1.0), p), pyode.RadauIIA5(), throw=False, **kw)
    assert sol.retcode[0] == ReturnCode.Success and sol.retcode[1] != ReturnCode.Success
    alone = solve(ODEProblem(f, u0[0], (0.0, 1.0), p[0]), pyode.RadauIIA5(), **kw)
    torch.testing.assert_close(sol.u[:, 0], alone.u, rtol=1e-13, atol=0)
    assert int(sol.stats.naccept[0]) == alone.stats.naccept
    torch.testing.assert_close(alone.u[-1], u0[0] * math.exp(-0.7), rtol=1e-8, atol=0)
