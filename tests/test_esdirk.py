"""ESDIRK methods (KenCarp4, Kvaerno5): order, stiff accuracy, Newton failures, batches, gradients."""
import math

import numpy as np
import pytest
import torch

import pyode
from pyode import ODEProblem, ReturnCode, solve
from test_rosenbrock import (K_ROBER, check_rober_log_rate_gradient, nonautonomous, rober, rober_problem,
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


@by_alg
def test_batch_of_perturbed_robertson_equals_one_by_one(alg):
    # Members refresh J and refactorise at different steps; a batched Jacobian evaluation is
    # adopted only by the members that asked for it, so each member takes its solo steps.
    gen = torch.Generator().manual_seed(1)
    k = K_ROBER * (1 + 0.2 * (2 * torch.rand(3, 3, generator=gen, dtype=torch.float64) - 1))
    ts = [1e-3, 1.0, 1e3, 1e5]
    sol = solve(rober_problem(k=k, batch=(3,)), alg, reltol=1e-6, abstol=1e-10, saveat=ts)
    njac = []
    for i in range(3):
        alone = solve(rober_problem(k=k[i]), alg, reltol=1e-6, abstol=1e-10, saveat=ts)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        assert int(sol.stats.nreject[i]) == alone.stats.nreject
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=1e-10, atol=1e-18)
        njac.append(alone.stats.njac)
    assert len(set(njac)) > 1, njac      # the members did ask for Jacobians at different steps


def test_gradient_through_kencarp4_matches_finite_differences():
    check_rober_log_rate_gradient(pyode.KenCarp4(), 0.1, [1e-3, 1e-2, 0.1], 1e-8, 1e-12, rtol=1e-3)


# ---- predictive step-size control ---------------------------------------------------------------

def _predictive_scalar(eest, it, maxiters, h, dtacc, erracc, accepted, k,
                       gamma=0.9, qmin=0.2, qmax=10.0, qsteady_min=1.0, qsteady_max=1.2):
    """OrdinaryDiffEq.jl's stepsize_controller!/step_accept_controller!/step_reject_controller! for
    PredictiveController, one member, transcribed with Python floats: (dt if accepted, dt if
    rejected, (dtacc, erracc) after acceptance)."""
    qold = None
    if eest == 0:
        q = 1 / qmax
    else:
        fac = gamma if it is None else min(gamma, (1 + 2 * maxiters) * gamma / (it + 2 * maxiters))
        q = max(1 / qmax, min(1 / qmin, eest ** (1 / (k + 1)) / fac))
        qold = q
    if accepted:
        qgus = (dtacc / h) * (eest ** 2 / erracc) ** (1 / (k + 1))
        qgus = max(1 / qmax, min(1 / qmin, qgus / gamma))
        qacc = max(q, qgus)
    else:
        qacc = q
    if qsteady_min <= qacc <= qsteady_max:
        qacc = 1.0
    dt_rejected = 0.1 * h if not accepted else (h / qold if qold is not None else None)
    return h / qacc, dt_rejected, (h, max(1e-2, eest))


@pytest.mark.parametrize("with_iters", [True, False], ids=["newton", "explicit"])
def test_predictive_controller_matches_a_scalar_transcription(with_iters):
    gen = torch.Generator().manual_seed(3)
    B, k, maxiters, steps = 64, 3, 10, 6
    ctrl = pyode.PredictiveController().resolve(4, k, maxiters if with_iters else None)
    state = ctrl.init_state(B, "cpu")
    scalar = [(1.0, 1.0, False)] * B
    for step in range(steps):
        # errors from far below to far above tolerance, exact zeros and steady-band cases included
        eest = torch.exp(torch.empty(B, dtype=torch.float64).uniform_(-12, 3, generator=gen))
        eest[::9] = 0.0
        h = torch.exp(torch.empty(B, dtype=torch.float64).uniform_(-8, 0, generator=gen))
        iters = torch.randint(1, maxiters + 1, (B,), generator=gen)
        q_acc, q_rej = ctrl.factors(state, eest, h, iters if with_iters else None)
        ok = eest <= 1
        for i in range(B):
            dtacc, erracc, accepted = scalar[i]
            acc, rej, mem = _predictive_scalar(float(eest[i]), int(iters[i]) if with_iters else None, maxiters,
                                               float(h[i]), dtacc, erracc, accepted, k)
            if ok[i]:
                assert math.isclose(float(h[i] / q_acc[i]), acc, rel_tol=1e-13), (step, i)
                scalar[i] = (*mem, True)
            else:
                assert math.isclose(float(h[i] / q_rej[i]), rej, rel_tol=1e-13), (step, i)
        state = ctrl.update(state, ok, eest, h)
        assert ok.any() and (~ok).any()
    assert any(a for _, _, a in scalar)


def test_predictive_controller_uses_newton_iterations_and_gustafsson_memory():
    ctrl = pyode.PredictiveController().resolve(4, 3, 10)
    eest = torch.full((2,), 0.5, dtype=torch.float64)
    h = torch.ones(2, dtype=torch.float64)
    fresh = ctrl.init_state(2, "cpu")
    # more Newton iterations, smaller step: fac = min(0.9, 21·0.9/(it + 20))
    q_acc, _ = ctrl.factors(fresh, eest, h, torch.tensor([1, 10]))
    assert q_acc[1] > q_acc[0]
    torch.testing.assert_close(q_acc, 0.5 ** 0.25 / torch.tensor([0.9, 21 * 0.9 / 30], dtype=torch.float64))
    # after an accepted step with a much smaller error, the Gustafsson factor shrinks the growth
    seen = ctrl.update(fresh, torch.tensor([True, True]), torch.full((2,), 1e-3, dtype=torch.float64), h)
    q_gus, _ = ctrl.factors(seen, eest, h, torch.tensor([1, 1]))
    assert (q_gus > q_acc[0]).all()


def test_esdirk_default_controller_is_predictive():
    prob = rober_problem(tspan=(0.0, 1e2))
    kw = dict(reltol=1e-6, abstol=1e-10, saveat=[1.0, 1e2])
    default = solve(prob, pyode.KenCarp4(), **kw)
    predictive = solve(prob, pyode.KenCarp4(), controller=pyode.PredictiveController(), **kw)
    pi = solve(prob, pyode.KenCarp4(), controller=pyode.PIController(), **kw)
    assert default.stats.naccept == predictive.stats.naccept and default.stats.nreject == predictive.stats.nreject
    torch.testing.assert_close(default.u, predictive.u, rtol=0, atol=0)
    assert pi.stats.naccept != default.stats.naccept
    torch.testing.assert_close(pi.u, default.u, rtol=1e-4, atol=1e-9)


def test_predictive_controller_with_methods_without_newton_iterations():
    # fac = γ there, as OrdinaryDiffEq's explicit stabilised methods do
    prob = ODEProblem(nonautonomous, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 2.0))
    ref = solve(prob, pyode.Vern7(), reltol=1e-13, abstol=1e-13, saveat=[2.0]).u
    for alg in (pyode.Tsit5(), pyode.Rodas5P()):
        sol = solve(prob, alg, reltol=1e-7, abstol=1e-9, saveat=[2.0], controller=pyode.PredictiveController())
        torch.testing.assert_close(sol.u, ref, rtol=1e-5, atol=1e-7)


# Attempts (accepted + rejected) with the PI controller and a Jacobian every step, before the
# predictive controller and Jacobian reuse (reltol 1e-6, abstol 1e-10).
ROBER_ATTEMPTS_BEFORE = {"KenCarp4": 113, "Kvaerno5": 121}


@by_alg
def test_robertson_steps_jacobians_and_factorisations(alg):
    prob = rober_problem()
    ts = np.array([1e-4, 1.0, 1e2, 1e4, 1e5])
    ref = scipy_reference(prob, ts)
    sol = solve(prob, alg, reltol=1e-6, abstol=1e-10, saveat=torch.from_numpy(ts))
    st = sol.stats
    assert st.naccept + st.nreject <= 1.05 * ROBER_ATTEMPTS_BEFORE[type(alg).__name__], st
    scaled = float(((sol.u - ref).abs() / (1e-10 + 1e-6 * ref.abs())).max())
    assert scaled < 20, scaled
    assert st.njac < 0.8 * st.naccept, st                 # J reused across steps
    # One LU per attempt at most (kept while h and J are), plus one per Newton retry with a fresh J.
    assert st.nlu <= st.naccept + st.nreject + st.njac - 1, st


def test_fixed_steps_refresh_the_jacobian_every_step():
    prob, _ = stiff_linear_problem()
    sol = solve(prob, pyode.KenCarp4(), adaptive=False, dt=0.05, saveat=[1.0])
    assert sol.stats.njac == sol.stats.nlu == sol.stats.naccept == 20
    # with error control the same problem keeps its (constant) Jacobian
    adaptive = solve(prob, pyode.KenCarp4(), saveat=[1.0])
    assert adaptive.stats.njac < adaptive.stats.naccept


def test_float32_state():
    prob = ODEProblem(rober, torch.tensor([1.0, 0.0, 0.0]), (0.0, 100.0), K_ROBER.float())
    ref = scipy_reference(rober_problem(tspan=(0.0, 100.0)), np.array([1.0, 100.0]))
    for alg in ESDIRKS:
        sol = solve(prob, alg, reltol=1e-4, abstol=1e-8, saveat=[1.0, 100.0])
        assert sol.u.dtype == torch.float32
        assert float(((sol.u.double() - ref).abs() / (ref.abs() + 1e-6)).max()) < 1e-2
        assert sol.stats.njac < sol.stats.naccept


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma=0.0), r"gamma must be in \(0, 1\]; got 0.0"),
    (dict(gamma="0.9"), r"gamma must be a number; got '0.9'"),
    (dict(qmin=1.5), r"need 0 < qmin < 1 < qmax; got qmin=1.5"),
    (dict(qmax=0.5), r"need 0 < qmin < 1 < qmax; got qmin=0.2, qmax=0.5"),
    (dict(qsteady_min=1.1), r"qsteady_min must be in \(0, 1\]; got 1.1"),
    (dict(qsteady_max=0.9), r"qsteady_max must be a finite number >= 1; got 0.9"),
    (dict(qsteady_max=True), r"qsteady_max must be a number; got True"),
])
def test_bad_predictive_controller_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pyode.PredictiveController(**kwargs)
