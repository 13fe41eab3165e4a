"""ESDIRK methods (KenCarp4, Kvaerno5): order, stiff accuracy, Newton failures, batches, gradients."""
import numpy as np
import pytest
import torch

import pyode
from pyode import ODEProblem, ReturnCode, solve
from test_rosenbrock import (K_ROBER, check_rober_log_rate_gradient, nonautonomous, rober_problem,
                             scipy_reference, slope, stiff_linear_problem)

ESDIRKS = [pyode.KenCarp4(), pyode.Kvaerno5()]
by_alg = pytest.mark.parametrize("alg", ESDIRKS, ids=repr)


@by_alg
def test_order_on_stiff_linear_problem(alg):
    prob, exact = stiff_linear_problem()
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = [float((solve(prob, alg, adaptive=False, dt=h, saveat=[1.0]).u[-1] - exact).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - alg.order) < 0.3, (errs, slope(hs, errs))


@by_alg
def test_order_on_nonlinear_nonautonomous_problem(alg):
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 2.0))
    ref = solve(prob, pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[2.0]).u[-1]
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = [float((solve(prob, alg, adaptive=False, dt=h, saveat=[2.0]).u[-1] - ref).abs().max()) for h in hs]
    assert abs(slope(hs, errs) - alg.order) < 0.3, (errs, slope(hs, errs))


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
    assert errs[0] > 10 * errs[2], errs


def test_newton_failure_is_a_return_code_not_an_exception():
    # A wrong (zero) Jacobian turns simplified Newton into a fixed-point iteration, which diverges
    # on a stiff problem unless h|λ|γ < 1: steps are rejected and shrunk instead of raising.
    prob, _ = stiff_linear_problem(lam=-1e6)
    prob = prob.remake(jac=lambda u, p, t: torch.zeros(*u.shape, u.shape[-1], dtype=u.dtype))
    sol = solve(prob, pyode.KenCarp4(), maxiters=300, throw=False)
    assert sol.retcode in (ReturnCode.MaxIters, ReturnCode.ConvergenceFailure, ReturnCode.DtLessThanMin)
    assert sol.stats.nreject > 0
    good = solve(prob.remake(jac=None), pyode.KenCarp4(), maxiters=300)
    assert good.retcode is ReturnCode.Success


def test_batch_of_perturbed_robertson_equals_one_by_one():
    gen = torch.Generator().manual_seed(1)
    k = K_ROBER * (1 + 0.2 * (2 * torch.rand(3, 3, generator=gen, dtype=torch.float64) - 1))
    ts = [1e-3, 1.0, 1e3, 1e5]
    sol = solve(rober_problem(k=k, batch=(3,)), pyode.KenCarp4(), reltol=1e-6, abstol=1e-10, saveat=ts)
    for i in range(3):
        alone = solve(rober_problem(k=k[i]), pyode.KenCarp4(), reltol=1e-6, abstol=1e-10, saveat=ts)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=1e-10, atol=1e-18)


def test_gradient_through_kencarp4_matches_finite_differences():
    check_rober_log_rate_gradient(pyode.KenCarp4(), 0.1, [1e-3, 1e-2, 0.1], 1e-8, 1e-12, rtol=1e-3)
