"""Variable-order BDF / NDF (FBDF, QNDF): coefficients, re-interpolation, order, accuracy, reuse,
batches, restarts at discontinuities, failures and gradients."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode import ODEProblem, ReturnCode, solve
from pyode.native._bdf import BDFStepper, _dense_table
from test_rosenbrock import (K_ROBER, check_rober_log_rate_gradient, nonautonomous, rober_problem, scipy_reference,
                             slope, stiff_linear_problem)

BDFS = [pyode.FBDF(), pyode.QNDF()]
by_alg = pytest.mark.parametrize("alg", BDFS, ids=repr)


def _stepper(alg=pyode.FBDF()):
    return BDFStepper(alg.max_order, alg.kappa, None, 1e-6, 1e-9)


# ---- coefficients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_bdf_coefficients_reproduce_the_classical_formulas(k):
    # With κ = 0 the corrector (I - cJ)d = c f - ψ - d at convergence is the order-k BDF
    # Σ_j (1/j) ∇ʲ y_{n+1} = h f(y_{n+1}); its weights in y_{n+1}, y_n, ... are the textbook ones.
    s = _stepper()
    alpha, gamma = s._alpha.numpy(), s._gamma.numpy()
    assert alpha[k] == pytest.approx(sum(1.0 / j for j in range(1, k + 1)), rel=1e-15)
    # Expanding Σ_{j≤k} (1/j) ∇ʲ y gives coefficients a_i of y_{n+1-i}; check against the
    # classical normalised BDF (leading coefficient 1) of Hairer & Wanner, Table III.1.1.
    a = np.zeros(k + 1)
    for j in range(1, k + 1):
        for i in range(j + 1):
            a[i] += (1.0 / j) * (-1) ** i * math.comb(j, i)
    classical = {1: [1, -1], 2: [3 / 2, -2, 1 / 2], 3: [11 / 6, -3, 3 / 2, -1 / 3],
                 4: [25 / 12, -4, 3, -4 / 3, 1 / 4], 5: [137 / 60, -5, 5, -10 / 3, 5 / 4, -1 / 5]}
    np.testing.assert_allclose(a, classical[k], rtol=1e-14)
    assert gamma[k] == pytest.approx(alpha[k])
    # Error constant of the order-k BDF: 1/(k+1) in this normalisation.
    assert s._error_const.numpy()[k] == pytest.approx(1.0 / (k + 1))


def test_ndf_coefficients_are_klopfenstein_shampine():
    s = _stepper(pyode.QNDF())
    kappa = np.array(pyode.QNDF.kappa)
    gamma = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 6))])
    np.testing.assert_allclose(s._alpha.numpy(), (1 - kappa) * gamma)
    # The point of the NDFs: smaller error constants than the BDFs at orders 1-4, the same at 5.
    bdf = _stepper()._error_const.numpy()
    assert (np.abs(s._error_const.numpy()[1:5]) < np.abs(bdf[1:5])).all()
    assert s._error_const.numpy()[5] == bdf[5]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dense_rows_interpolate_the_grid(k):
    # y(θ) = y1 + Σ_j P_j(θ) D_j passes through y_{n+1-i} at θ = 1 - i for a degree-k polynomial.
    rng = np.random.default_rng(k)
    coef = rng.normal(size=k + 1)
    poly = np.polynomial.Polynomial(coef)
    grid = 1.0 - np.arange(k + 1)
    values = poly(grid)
    D = [values.copy()]
    for _ in range(k):
        prev = D[-1]
        D.append(prev[:-1] - prev[1:])          # backward differences at θ = 1
    D = np.array([d[0] for d in D])
    table = np.array(_dense_table(5))
    y_start = poly(0.0)
    for theta in (0.0, 0.3, 0.77, 1.0):
        P = np.array([sum(table[j, m] * theta ** (m + 1) for m in range(5)) for j in range(5)])
        y = y_start + P[:k] @ D[1:k + 1]
        assert y == pytest.approx(poly(theta), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_reinterpolation_is_exact_for_polynomials(k):
    # D on grid h -> D on grid ρh must equal the differences of the same polynomial on the new grid.
    s = _stepper()
    y = torch.zeros(3, 1, dtype=torch.float64)
    s._init_state(y)
    rng = np.random.default_rng(7)
    polys = [np.polynomial.Polynomial(rng.normal(size=k + 1)) for _ in range(3)]
    rho = torch.tensor([0.5, 2.0, 1.37], dtype=torch.float64)

    def diffs(poly, h):
        vals = poly(-h * np.arange(k + 1))
        out = [vals.copy()]
        for _ in range(k):
            out.append(out[-1][:-1] - out[-1][1:])
        return [o[0] for o in out]

    D = torch.zeros(3, 8, 1, dtype=torch.float64)
    for b, poly in enumerate(polys):
        D[b, : k + 1, 0] = torch.tensor(diffs(poly, 0.1))
    D[:, 7] = 42.0                       # rows past k + 2 must be left alone
    s.k = torch.full((3,), k)
    new = s._reinterpolate(D, rho, torch.tensor([True, True, True]))
    for b, poly in enumerate(polys):
        np.testing.assert_allclose(new[b, : k + 1, 0].numpy(), diffs(poly, 0.1 * float(rho[b])), rtol=1e-10,
                                   atol=1e-12)
    assert (new[:, 7] == 42.0).all()
    same = s._reinterpolate(D, rho, torch.tensor([False, True, False]))
    assert torch.equal(same[0], D[0]) and torch.equal(same[2], D[2])


# ---- order and accuracy ---------------------------------------------------------------------------

@pytest.mark.parametrize("max_order", [1, 2, 3, 5])
def test_error_decreases_at_the_rate_of_the_maximal_order(max_order):
    # A smooth nonlinear problem solved at a tolerance ladder: error against steps falls with the
    # slope of the highest order allowed (the starting phase at order 1 bends the curve a little).
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 3.0))
    ref = solve(prob, pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[3.0]).u[-1]
    tols = {1: [1e-3, 1e-4, 1e-5], 2: [1e-4, 1e-5, 1e-6, 1e-7], 3: [1e-5, 1e-6, 1e-7, 1e-8],
            5: [1e-7, 1e-8, 1e-9, 1e-10]}[max_order]
    steps, errs = [], []
    for tol in tols:
        sol = solve(prob, pyode.FBDF(max_order=max_order), reltol=tol, abstol=tol, saveat=[3.0])
        steps.append(sol.stats.naccept)
        errs.append(float((sol.u[-1] - ref).abs().max()))
    order = -slope(steps, errs)
    assert abs(order - max_order) < 0.6, (steps, errs, order)


@by_alg
def test_stiff_linear_problem_exact_solution(alg):
    # (λ = -1e4: this problem's eigenvectors are nearly parallel, and with a stiffer λ round-off in
    # I - cJ, not the method, limits every solver's accuracy; scipy's BDF included.)
    prob, exact = stiff_linear_problem(lam=-1e4)
    errs = []
    A = prob.p.numpy()
    for tol in (1e-4, 1e-6, 1e-7):
        sol = solve(prob, alg, reltol=tol, abstol=tol * 1e-2, saveat=[1.0])
        errs.append(float((sol.u[-1] - exact).abs().max()))
        # BDF global errors run well above the local tolerance on this oscillatory mode; scipy's
        # BDF at the same tolerance is the yardstick.
        theirs = solve_ivp(lambda t, y: A @ y, (0.0, 1.0), prob.u0.numpy(), method="BDF", rtol=tol,
                           atol=tol * 1e-2, jac=A)
        assert errs[-1] < 3 * np.abs(theirs.y[:, -1] - exact.numpy()).max() + tol, (tol, errs)
    assert errs[0] > 100 * errs[2], errs


@by_alg
def test_robertson_against_scipy_radau(alg):
    prob = rober_problem()
    ts = np.array([1e-4, 1.0, 1e2, 1e4, 1e5])
    ref = scipy_reference(prob, ts)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        atol = tol * 1e-4
        sol = solve(prob, alg, reltol=tol, abstol=atol, saveat=torch.from_numpy(ts))
        scaled = float(((sol.u - ref).abs() / (atol + tol * ref.abs())).max())
        assert scaled < 50, (tol, scaled)
        errs.append(float((sol.u - ref).abs().max()))
    assert errs[0] > 30 * errs[2], errs


def _scipy_bdf(prob, rtol, atol):
    def f(t, y):
        return prob.f(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=torch.float64)).numpy()

    def jac(t, y):
        return prob.jac(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=torch.float64)).numpy()

    return solve_ivp(f, prob.tspan, prob.u0.numpy(), method="BDF", rtol=rtol, atol=atol, jac=jac)


@pytest.mark.parametrize("name", ["robertson", "hires", "pollu"])
def test_qndf_takes_the_steps_of_scipys_ndf(name):
    # scipy's BDF is the same quasi-constant step NDF family (κ of Klopfenstein-Shampine): an
    # independent implementation, so step, evaluation and factorisation counts must be close.
    prob = getattr(pyode.problems, name)()
    ours = solve(prob, pyode.QNDF(), reltol=1e-6, abstol=1e-10)
    theirs = _scipy_bdf(prob, 1e-6, 1e-10)
    n_theirs = theirs.t.size - 1
    assert abs(ours.stats.naccept - n_theirs) <= 0.05 * n_theirs + 3, (ours.stats, n_theirs)
    assert abs(ours.stats.nlu - theirs.nlu) <= 0.1 * theirs.nlu + 3, (ours.stats.nlu, theirs.nlu)
    np.testing.assert_allclose(ours.u[-1].numpy(), theirs.y[:, -1], rtol=1e-4, atol=1e-9)


@by_alg
def test_dense_output_and_saveat_on_robertson(alg):
    prob = rober_problem()
    ts = np.geomspace(1e-3, 1e5, 17)
    ref = scipy_reference(prob, ts)
    sol = solve(prob, alg, reltol=1e-7, abstol=1e-11, dense=True)
    dense = sol(torch.from_numpy(ts))
    scaled = ((dense - ref).abs() / (1e-11 + 1e-7 * ref.abs())).max()
    assert scaled < 100, scaled
    at = solve(prob, alg, reltol=1e-7, abstol=1e-11, saveat=torch.from_numpy(ts))
    torch.testing.assert_close(at.u, dense, rtol=1e-12, atol=1e-16)


# ---- work: Jacobian and LU reuse ------------------------------------------------------------------

@by_alg
def test_jacobian_and_factorisations_are_reused(alg):
    sol = solve(pyode.problems.pollu(), alg, reltol=1e-6, abstol=1e-10)
    st = sol.stats
    assert st.njac <= st.naccept / 10, st
    assert st.nlu <= st.naccept / 2, st
    # A few Newton iterations per step, no extra f per step.
    assert st.nf <= 4 * (st.naccept + st.nreject), st


def test_autodiff_finite_differences_and_user_jacobian_agree():
    base = pyode.problems.hires()
    ref = solve(base, pyode.FBDF(), reltol=1e-8, abstol=1e-12, saveat=[321.8122]).u[-1]
    for prob, alg in ((base.remake(jac=None), pyode.FBDF()), (base.remake(jac=None), pyode.FBDF(autodiff=False))):
        u = solve(prob, alg, reltol=1e-8, abstol=1e-12, saveat=[321.8122]).u[-1]
        torch.testing.assert_close(u, ref, rtol=1e-5, atol=1e-10)


# ---- batches and restarts -------------------------------------------------------------------------

@by_alg
def test_batch_of_perturbed_robertson_equals_one_by_one(alg):
    gen = torch.Generator().manual_seed(3)
    k = K_ROBER * (1 + 0.2 * (2 * torch.rand(4, 3, generator=gen, dtype=torch.float64) - 1))
    ts = [1e-3, 1.0, 1e3, 1e5]
    sol = solve(rober_problem(k=k, batch=(4,)), alg, reltol=1e-6, abstol=1e-10, saveat=ts)
    for i in range(4):
        alone = solve(rober_problem(k=k[i]), alg, reltol=1e-6, abstol=1e-10, saveat=ts)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        assert int(sol.stats.nreject[i]) == alone.stats.nreject
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=1e-12, atol=1e-20)


def test_restart_at_a_discontinuity_in_time():
    # u' = -50 (u - s(t)) with a step in s at t = 1: with tstops the history is dropped at the jump
    # (order 1 restart) and the solution matches the exact piecewise solution.
    def f(u, p, t):
        s = torch.where(t < 1.0, torch.zeros_like(t), torch.ones_like(t))
        return -50.0 * (u - s[..., None])

    prob = ODEProblem(f, torch.tensor([1.0], dtype=torch.float64), (0.0, 2.0))
    sol = solve(prob, pyode.FBDF(), reltol=1e-8, abstol=1e-10, tstops=[1.0], saveat=[0.5, 1.0, 1.5, 2.0])
    e = math.exp
    exact = torch.tensor([e(-25), e(-50), 1 + (e(-50) - 1) * e(-25), 1 + (e(-50) - 1) * e(-50)],
                         dtype=torch.float64)
    torch.testing.assert_close(sol.u[:, 0], exact, rtol=1e-6, atol=1e-9)
    without = solve(prob, pyode.FBDF(), reltol=1e-8, abstol=1e-10, saveat=[2.0])
    assert sol.stats.nreject < without.stats.nreject


def test_backward_in_time():
    prob = ODEProblem(lambda u, p, t: -u + torch.sin(t)[..., None], torch.tensor([0.3], dtype=torch.float64),
                      (2.0, 0.0))
    sol = solve(prob, pyode.FBDF(), reltol=1e-9, abstol=1e-12, saveat=[0.0])
    # u(t) = (sin t - cos t)/2 + C e^{-t}, C from u(2) = 0.3.
    C = (0.3 - (math.sin(2) - math.cos(2)) / 2) * math.exp(2)
    assert float(sol.u[-1, 0]) == pytest.approx(-0.5 + C, rel=1e-6)


def test_float32_state():
    prob = pyode.problems.hires(dtype=torch.float32)
    sol = solve(prob, pyode.FBDF(), reltol=1e-4, abstol=1e-7, saveat=[321.8122])
    ref = torch.tensor(pyode.problems.STIFF_REFERENCE["hires"][1], dtype=torch.float64)
    assert sol.u.dtype == torch.float32
    torch.testing.assert_close(sol.u[-1].double(), ref, rtol=2e-2, atol=1e-6)


# ---- failures and bad input -----------------------------------------------------------------------

def test_newton_failure_is_a_return_code_not_an_exception():
    prob, _ = stiff_linear_problem(lam=-1e6)
    prob = prob.remake(jac=lambda u, p, t: torch.zeros(*u.shape, u.shape[-1], dtype=u.dtype))
    sol = solve(prob, pyode.FBDF(), maxiters=300, throw=False)
    assert sol.retcode in (ReturnCode.MaxIters, ReturnCode.ConvergenceFailure, ReturnCode.DtLessThanMin)
    assert sol.stats.nreject > 0


def test_nan_jacobian_is_reported_not_raised():
    prob = rober_problem().remake(jac=lambda u, p, t: torch.full((*u.shape, 3), float("nan"), dtype=u.dtype))
    sol = solve(prob, pyode.FBDF(), throw=False)
    assert sol.retcode is not ReturnCode.Success
    with pytest.raises(pyode.SolveError, match="t="):
        solve(prob, pyode.FBDF())


def test_singular_iteration_matrix_is_survived():
    # u' = u with a first step of 1: I - cJ = 1 - 1·1 = 0 exactly. The step is rejected, halved,
    # and the solve goes on.
    prob = ODEProblem(lambda u, p, t: u, torch.tensor([1.0], dtype=torch.float64), (0.0, 2.0))
    sol = solve(prob, pyode.FBDF(), dt=1.0, reltol=1e-8, abstol=1e-10, saveat=[2.0], throw=False)
    assert sol.retcode is ReturnCode.Success
    assert sol.stats.nreject >= 1
    assert float(sol.u[-1, 0]) == pytest.approx(math.exp(2), rel=1e-6)


def test_bad_arguments_name_the_fix():
    prob = rober_problem()
    with pytest.raises(ValueError, match="max_order"):
        pyode.FBDF(max_order=6)
    with pytest.raises(ValueError, match="controller"):
        solve(prob, pyode.FBDF(), controller=pyode.PIController())
    with pytest.raises(ValueError, match="adaptive=False"):
        solve(prob, pyode.FBDF(), adaptive=False, dt=0.1)
    assert repr(pyode.FBDF(max_order=3, autodiff=False)) == "FBDF(max_order=3, autodiff=False)"


# ---- gradients ------------------------------------------------------------------------------------

@by_alg
def test_gradient_matches_finite_differences(alg):
    check_rober_log_rate_gradient(alg, 0.1, [1e-3, 1e-2, 0.1], 1e-8, 1e-12, rtol=1e-3)
