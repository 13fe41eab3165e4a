"""Sensitivity algorithms: DirectAdjoint (autograd through the solver), ForwardSensitivity,
BacksolveAdjoint, InterpolatingAdjoint, QuadratureAdjoint and GaussAdjoint, against central finite
differences and against each other; parameters of every supported kind, batches, failures."""
import math

import pytest
import torch
from torch import nn

import pyode
from pyode import ODEProblem, ReturnCode, problems, solve
from test_gradients import central_difference

F64 = torch.float64
SENSEALGS = [pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.InterpolatingAdjoint(), pyode.GaussAdjoint()]
# every variant of the continuous adjoints
ADJOINTS = [pyode.InterpolatingAdjoint(), pyode.InterpolatingAdjoint(checkpointing=True),
            pyode.InterpolatingAdjoint(seminorm=True), pyode.GaussAdjoint(), pyode.GaussAdjoint(checkpointing=True),
            pyode.BacksolveAdjoint(), pyode.BacksolveAdjoint(checkpointing=False), pyode.BacksolveAdjoint(seminorm=True),
            pyode.QuadratureAdjoint(abstol=1e-10, reltol=1e-8)]
by_sensealg = pytest.mark.parametrize("sensealg", SENSEALGS, ids=repr)
# gradients of the discrete solution (exact under gradcheck with fixed steps)
DISCRETE = [pyode.DirectAdjoint(), pyode.ForwardSensitivity()]


def central_differences(loss, x: torch.Tensor, eps: float) -> torch.Tensor:
    with torch.no_grad():
        return central_difference(loss, x, eps)


def lv_loss(sensealg, alg=pyode.Tsit5(), **kw):
    base = problems.lotka_volterra(tspan=(0.0, 5.0))
    ts = torch.linspace(0.5, 5.0, 10, dtype=F64)

    def loss(u0, p):
        sol = solve(ODEProblem(base.f, u0, base.tspan, p), alg, saveat=ts, sensealg=sensealg, **kw)
        return (sol.u[:, 0] * torch.sin(ts) + sol.u[:, 1].square()).sum()
    return loss, base.u0, base.p


# ---- against finite differences -----------------------------------------------------------------

@pytest.mark.parametrize("sensealg", SENSEALGS[:2] + ADJOINTS, ids=repr)
def test_nonstiff_gradients_match_finite_differences(sensealg):
    loss, u0, p = lv_loss(sensealg, reltol=1e-10, abstol=1e-12)
    u0, p = u0.clone().requires_grad_(), p.clone().requires_grad_()
    g_u0, g_p = torch.autograd.grad(loss(u0, p), (u0, p))
    fd_u0 = central_differences(lambda x: loss(x, p.detach()), u0.detach(), 1e-6)
    fd_p = central_differences(lambda x: loss(u0.detach(), x), p.detach(), 1e-6)
    torch.testing.assert_close(g_u0, fd_u0, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_p, fd_p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.KenCarp4(), pyode.FBDF(), pyode.RadauIIA5()], ids=repr)
def test_stiff_robertson_log_rate_gradients_agree(alg):
    # A Robertson fit loss over log-spaced times; gradients in the log rate constants and u0.
    # measured relative deviations from the differences: 1e-7 (2e-6 for KenCarp4, whose Newton
    # iterations stop at a tolerance, which the discrete gradient does not see)
    base = problems.robertson(tspan=(0.0, 10.0))
    ts = torch.logspace(-3, 1, 5, dtype=F64)

    def loss(logk, u0, sensealg):
        prob = ODEProblem(base.f, u0, base.tspan, logk.exp(), jac=base.jac)
        sol = solve(prob, alg, reltol=1e-8, abstol=1e-12, saveat=ts, sensealg=sensealg)
        return (sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum()

    grads = {}
    for sa in SENSEALGS:
        logk, u0 = base.p.log().clone().requires_grad_(), base.u0.clone().requires_grad_()
        grads[type(sa).__name__] = torch.autograd.grad(loss(logk, u0, sa), (logk, u0))
    fd = central_differences(lambda x: loss(x, base.u0, None), base.p.log(), 1e-6)
    for name, (g_k, g_u0) in grads.items():
        torch.testing.assert_close(g_k, fd, rtol=1e-5, atol=1e-9, msg=name)
    # the methods agree with each other to the solve's accuracy (u0 gradients included)
    d = grads["DirectAdjoint"]
    for name in ("ForwardSensitivity", "InterpolatingAdjoint", "GaussAdjoint"):
        torch.testing.assert_close(d[0], grads[name][0], rtol=1e-5, atol=1e-9, msg=name)
        torch.testing.assert_close(d[1], grads[name][1], rtol=1e-4, atol=1e-6, msg=name)


_ROBERTSON_1E5_FD = {}
ROBERTSON_1E5_CASES = ([(pyode.Rodas5P(), sa) for sa in (
    pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.InterpolatingAdjoint(), pyode.GaussAdjoint(),
    pyode.QuadratureAdjoint(abstol=1e-12, reltol=1e-8))]
    + [(pyode.FBDF(), sa) for sa in (pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.GaussAdjoint())])


def _robertson_1e5_loss(alg, logk, sensealg):
    base = problems.robertson(tspan=(0.0, 1e5))
    prob = ODEProblem(base.f, base.u0, base.tspan, logk.exp(), jac=base.jac)
    sol = solve(prob, alg, reltol=1e-7, abstol=1e-11, saveat=torch.logspace(-5, 5, 11, dtype=F64), sensealg=sensealg)
    return (sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum()


@pytest.mark.parametrize("alg,sensealg", ROBERTSON_1E5_CASES, ids=lambda x: repr(x))
def test_robertson_fit_loss_to_1e5_gradients_match_finite_differences(alg, sensealg):
    # Kim et al.'s setting: observations at log-spaced times up to t = 1e5, gradients in the log
    # rate constants. (Interpolating and Quadrature run with FBDF on shorter spans above.)
    logk0 = problems.robertson().p.log()
    key = type(alg).__name__
    if key not in _ROBERTSON_1E5_FD:
        _ROBERTSON_1E5_FD[key] = central_differences(lambda x: _robertson_1e5_loss(alg, x, None), logk0, 1e-6)
    logk = logk0.clone().requires_grad_()
    (g,) = torch.autograd.grad(_robertson_1e5_loss(alg, logk, sensealg), logk)
    # measured: 2e-5 relative or better for every case
    torch.testing.assert_close(g, _ROBERTSON_1E5_FD[key], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.KenCarp4(), pyode.FBDF()], ids=repr)
@pytest.mark.parametrize("sensealg", [pyode.BacksolveAdjoint(), pyode.GaussAdjoint(checkpointing=True),
                                      pyode.InterpolatingAdjoint(checkpointing=True), pyode.QuadratureAdjoint()],
                         ids=repr)
def test_adjoints_with_stiff_algorithms_on_a_nonstiff_problem(alg, sensealg):
    # Every adjoint variant through the stiff machinery (Jacobians of the adjoint system,
    # second derivatives of f for the backsolve), against DirectAdjoint; short and loose to stay cheap.
    base = problems.lotka_volterra(tspan=(0.0, 2.0))

    def grads(sa):
        u0, p = base.u0.clone().requires_grad_(), base.p.clone().requires_grad_()
        sol = solve(ODEProblem(base.f, u0, base.tspan, p), alg, reltol=1e-6, abstol=1e-8, saveat=[1.0, 2.0],
                    sensealg=sa)
        return torch.autograd.grad((sol.u[:, 0] + sol.u[:, 1].square()).sum(), (u0, p))

    for a, b in zip(grads(sensealg), grads(pyode.DirectAdjoint())):
        # both approximate the exact gradient to ~the tolerance (measured: 3e-6 relative)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_backsolve_on_robertson_fails_with_advice():
    # Robertson backwards in time is violently unstable: the backsolve adjoint must say so.
    base = problems.robertson(tspan=(0.0, 1e2))
    logk = base.p.log().clone().requires_grad_()
    sol = solve(ODEProblem(base.f, base.u0, base.tspan, logk.exp(), jac=base.jac), pyode.Rodas5P(), reltol=1e-6,
                abstol=1e-10, saveat=torch.logspace(-3, 2, 6, dtype=F64), sensealg=pyode.BacksolveAdjoint())
    with pytest.raises(RuntimeError, match="InterpolatingAdjoint"):
        torch.autograd.grad((sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum(), logk)


def _counting_robertson(tspan, with_jac: bool):
    base = problems.robertson(tspan=tspan)
    calls = [0]

    def f(u, p, t):
        calls[0] += 1
        return base.f(u, p, t)

    logk = base.p.log().clone().requires_grad_()
    return ODEProblem(f, base.u0, base.tspan, logk.exp(), jac=base.jac if with_jac else None), logk, calls


@pytest.mark.parametrize("with_jac", [True, False], ids=["jac", "AD"])
def test_backsolve_on_a_stiff_problem_fails_before_solving_backwards(with_jac):
    # Robertson's log-rate gradient at 10 log-spaced times to 1e4: the backward re-solve of u cannot
    # follow the solution (J's eigenvalues reach -9e3), so BacksolveAdjoint must refuse at once,
    # saying why and what to use. measured: 0 (jac) and 11 (AD: one Jacobian per saved state and u0)
    # evaluations of f; before this check, 58017 evaluations (13 s) into a ConvergenceFailure.
    prob, logk, calls = _counting_robertson((0.0, 1e4), with_jac)
    sol = solve(prob, pyode.Rodas5P(), reltol=1e-6, abstol=1e-10, saveat=torch.logspace(-4, 4, 10, dtype=F64),
                sensealg=pyode.BacksolveAdjoint())
    forward = calls[0]
    with pytest.raises(RuntimeError, match=r"BacksolveAdjoint\(\) cannot differentiate this solve: between "
                                           r"t=1291.55 and t=10000 .* re-solve of a stiff problem is unstable\. "
                                           r"Use InterpolatingAdjoint\(checkpointing=True\), GaussAdjoint"):
        torch.autograd.grad((sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum(), logk)
    assert calls[0] - forward <= 11


def test_backsolve_that_diverges_stops_within_its_step_budget(monkeypatch):
    # Where the stability check does not run (it is skipped for large states; here switched off),
    # a diverging backward u is stopped by the step budget: at most 4x the forward's steps + 100
    # on an interval. measured: 2337 evaluations of f (2 s) to the MaxIters error; 25458 (13 s) to
    # a ConvergenceFailure without the budget.
    from pyode.native import _adjoint
    monkeypatch.setattr(_adjoint, "_SPECTRAL_CHECK_ENTRIES", 0)
    prob, logk, calls = _counting_robertson((0.0, 100.0), True)
    sol = solve(prob, pyode.Rosenbrock23(), reltol=1e-3, abstol=1e-7, saveat=torch.logspace(-2, 2, 4, dtype=F64),
                sensealg=pyode.BacksolveAdjoint())
    forward, steps = calls[0], int(sol.stats.naccept + sol.stats.nreject)
    with pytest.raises(RuntimeError, match=rf"MaxIters: more than {4 * steps + 100} steps, 4x the forward solve's "
                                           rf"{steps} plus 100.*InterpolatingAdjoint\(checkpointing=True\)"):
        torch.autograd.grad((sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum(), logk)
    assert calls[0] - forward < 5000


def test_backsolve_on_a_contracting_nonstiff_problem_is_not_refused():
    # Eigenvalues -1 and -5, saves 2 apart: (5 - 1) * 2 = 8 is far below the refusal threshold
    # (ln(1/eps) = 36), and the backward re-solve is accurate: the gradient matches DirectAdjoint's.
    def f(u, p, t):
        return torch.stack([-p[0] * u[..., 0] + u[..., 1], -p[1] * u[..., 1]], -1)

    def grads(sa):
        p = torch.tensor([1.0, 5.0], dtype=F64, requires_grad=True)
        u0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        sol = solve(ODEProblem(f, u0, (0.0, 6.0), p), pyode.Rodas5P(), reltol=1e-9, abstol=1e-12,
                    saveat=[2.0, 4.0, 6.0], sensealg=sa)
        return torch.autograd.grad((sol.u * torch.tensor([1.0, 3.0], dtype=F64)).sum(), (u0, p))

    for a, b in zip(grads(pyode.BacksolveAdjoint()), grads(pyode.DirectAdjoint())):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("sensealg", ADJOINTS, ids=repr)
def test_adjoints_of_fixed_step_solves_step_with_the_forward_dt(sensealg):
    # Without error control the backward solves take the forward's dt (nothing else could choose
    # it); the gradient then approximates the exact one to the method's accuracy at that dt.
    base = problems.lotka_volterra(tspan=(0.0, 2.0))

    def grad(sa):
        p = base.p.clone().requires_grad_()
        sol = solve(ODEProblem(base.f, base.u0, base.tspan, p), pyode.Tsit5(), adaptive=False, dt=0.01,
                    saveat=[1.0, 2.0], sensealg=sa)
        return torch.autograd.grad(sol.u.square().sum(), p)[0]

    torch.testing.assert_close(grad(sensealg), grad(pyode.DirectAdjoint()), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sensealg", DISCRETE, ids=repr)
def test_gradcheck_on_a_tiny_fixed_step_problem(sensealg):
    # With fixed steps the forward sensitivities of an explicit RK method are exactly the
    # derivatives of its discrete solution: both pass gradcheck.
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64)

    def fn(u0, a):
        prob = ODEProblem(lambda u, p, t: (u @ p.T) * torch.cos(t)[..., None], u0, (0.0, 1.0), a)
        return solve(prob, pyode.Tsit5(), dt=0.1, adaptive=False, sensealg=sensealg).u

    u0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (u0, A.clone().requires_grad_()))


# ---- parameters of every kind --------------------------------------------------------------------

def test_parameter_that_does_not_enter_f_gets_an_exact_zero():
    base = problems.lotka_volterra(tspan=(0.0, 2.0))
    p = base.p.clone().requires_grad_()
    unused = torch.tensor([3.0, 4.0], dtype=F64, requires_grad=True)
    prob = ODEProblem(lambda u, q, t: base.f(u, q["rates"], t), base.u0, base.tspan, {"rates": p, "unused": unused})
    for sa in SENSEALGS[1:]:
        sol = solve(prob, pyode.Tsit5(), saveat=[1.0, 2.0], sensealg=sa)
        g_p, g_unused = torch.autograd.grad(sol.u.sum(), (p, unused))
        assert torch.equal(g_unused, torch.zeros(2, dtype=F64)) and bool((g_p != 0).all()), sa
    sol = solve(prob, pyode.Tsit5(), saveat=[1.0, 2.0], sensealg=pyode.DirectAdjoint())
    (g_direct,) = torch.autograd.grad(sol.u.sum(), (unused,), allow_unused=True)
    assert g_direct is None or torch.equal(g_direct, torch.zeros(2, dtype=F64))


def test_nn_module_and_tuple_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def f(u, p, t):
        model, s = p
        return s * model(u) - 0.1 * u

    u0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=F64)   # a batch of 3
    results = {}
    for sa in SENSEALGS:
        sol = solve(ODEProblem(f, u0, (0.0, 2.0), (net, scale)), pyode.Tsit5(), reltol=1e-9, abstol=1e-11,
                    saveat=[0.5, 2.0], sensealg=sa)
        loss = sol.u.square().sum()
        results[type(sa).__name__] = torch.autograd.grad(loss, [scale, *net.parameters()])
    for name in ("ForwardSensitivity", "InterpolatingAdjoint", "GaussAdjoint"):
        for d, f_ in zip(results["DirectAdjoint"], results[name]):
            torch.testing.assert_close(d, f_, rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize("sa", SENSEALGS[1:], ids=repr)
def test_batch_gradient_is_the_sum_of_member_gradients(sa):
    base = problems.lotka_volterra(tspan=(0.0, 3.0))
    p = base.p.clone().requires_grad_()
    u0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0]], dtype=F64, requires_grad=True)
    sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), reltol=1e-8, abstol=1e-10,
                saveat=[1.0, 3.0], sensealg=sa)
    g_p, g_u0 = torch.autograd.grad(sol.u.sum(), (p, u0))
    total = torch.zeros_like(g_p)
    for i in range(3):
        ui = u0[i].detach().clone().requires_grad_()
        one = solve(ODEProblem(base.f, ui, base.tspan, p), pyode.Tsit5(), reltol=1e-8, abstol=1e-10,
                    saveat=[1.0, 3.0], sensealg=sa)
        gi_p, gi_u0 = torch.autograd.grad(one.u.sum(), (p, ui))
        total += gi_p
        # equal up to round-off (the adjoints evaluate member by member with vmap: ~1e-12)
        torch.testing.assert_close(g_u0[i], gi_u0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_p, total, rtol=1e-10, atol=1e-12)


def test_dense_output_is_differentiable_too():
    base = problems.lotka_volterra(tspan=(0.0, 3.0))
    tq = torch.tensor([0.3, 1.7, 2.9], dtype=F64)
    grads = []
    for sa in DISCRETE:
        p = base.p.clone().requires_grad_()
        sol = solve(ODEProblem(base.f, base.u0, base.tspan, p), pyode.Tsit5(), reltol=1e-10, abstol=1e-12,
                    sensealg=sa)
        grads.append(torch.autograd.grad(sol(tq).sum(), p)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    # The adjoints differentiate the saved states only: sol(t) comes without a graph.
    for sa in ADJOINTS[:1] + ADJOINTS[3:4]:
        p = base.p.clone().requires_grad_()
        sol = solve(ODEProblem(base.f, base.u0, base.tspan, p), pyode.Tsit5(), sensealg=sa)
        assert sol.u.requires_grad and not sol(tq).requires_grad


def test_failed_member_contributes_no_gradient_and_others_are_exact():
    # u' = p u² blows up at t = 1/(p u0): the second member fails before t = 1.
    f = lambda u, p, t: p * u * u  # noqa: E731
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    u0 = torch.tensor([[0.5], [2.0]], dtype=F64)
    sol = solve(ODEProblem(f, u0, (0.0, 1.0), p), pyode.Tsit5(), reltol=1e-9, abstol=1e-11, saveat=[0.25, 1.0],
                throw=False, maxiters=2000, sensealg=pyode.ForwardSensitivity())
    assert sol.retcode[0] == ReturnCode.Success and sol.retcode[1] != ReturnCode.Success
    (g,) = torch.autograd.grad(sol.u[:, 0].sum(), p)
    # exact: u = u0 / (1 - p u0 t), du/dp = u0² t / (1 - p u0 t)² for u0 = 0.5 at t = 0.25 and 1
    exact = sum(0.25 * t / (1 - 0.5 * t) ** 2 for t in (0.25, 1.0))
    assert math.isfinite(float(g)) and abs(float(g) - exact) < 1e-6 * exact
    # the adjoint cannot run backwards through the failed member: a clear error, not NaN
    sol = solve(ODEProblem(f, u0, (0.0, 1.0), p), pyode.Tsit5(), saveat=[0.25, 1.0], throw=False, maxiters=2000,
                sensealg=pyode.GaussAdjoint())
    with pytest.raises(RuntimeError, match="batch member 1 failed"):
        torch.autograd.grad(sol.u[:, 0].sum(), p)


@pytest.mark.parametrize("adjoint", [pyode.InterpolatingAdjoint, pyode.BacksolveAdjoint], ids=lambda a: a.__name__)
def test_seminorm_takes_fewer_adjoint_steps_for_the_same_gradient(adjoint):
    # A neural ODE: many parameters whose integral the seminorm leaves out of the error control.
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    u0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=F64)
    calls, grads = {}, {}
    for sa in (adjoint(), adjoint(seminorm=True)):
        count = [0]

        def f(u, p, t):
            count[0] += 1
            return p(u)

        sol = solve(ODEProblem(f, u0, (0.0, 3.0), net), pyode.Tsit5(), reltol=1e-6, abstol=1e-8, saveat=[1.0, 3.0],
                    sensealg=sa)
        forward = count[0]
        grads[sa.seminorm] = torch.autograd.grad(sol.u.square().sum(), list(net.parameters()))
        calls[sa.seminorm] = count[0] - forward
    # measured: Interpolating 308 -> 176 backward evaluations, Backsolve 462 -> 282
    assert calls[True] < 0.8 * calls[False], calls
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_interpolating_adjoint_names_per_member_parameters():
    base = problems.lotka_volterra(tspan=(0.0, 1.0))
    p = base.p.expand(3, 4).clone().requires_grad_()          # one parameter set per member
    u0 = base.u0.expand(3, 2).clone()
    sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), saveat=[1.0],
                sensealg=pyode.InterpolatingAdjoint())
    with pytest.raises(ValueError, match="GaussAdjoint"):
        torch.autograd.grad(sol.u.sum(), p)
    sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), saveat=[1.0], reltol=1e-8, abstol=1e-10,
                sensealg=pyode.GaussAdjoint())
    (g,) = torch.autograd.grad(sol.u.sum(), p)
    sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), saveat=[1.0], reltol=1e-8, abstol=1e-10)
    torch.testing.assert_close(g, torch.autograd.grad(sol.u.sum(), p)[0], rtol=1e-5, atol=1e-8)


def test_gauss_kronrod_rule_exactness():
    import numpy as np
    from pyode.native._adjoint import GAUSS7_WEIGHTS, KRONROD_NODES, KRONROD_WEIGHTS

    x, wk, wg = np.array(KRONROD_NODES), np.array(KRONROD_WEIGHTS), np.array(GAUSS7_WEIGHTS)
    assert len(x) == 15 and int((wg != 0).sum()) == 7
    for d in range(23):                     # K15: degree 22 (and all odd ones by symmetry)
        assert abs(wk @ x ** d - 1 / (d + 1)) < 1e-15, d
    for d in range(14):                     # G7: degree 13, not 14
        assert abs(wg @ x ** d - 1 / (d + 1)) < 1e-15, d
    assert abs(wg @ x ** 14 - 1 / 15) > 1e-10


def test_quadrature_adjoint_resolves_what_the_adjoint_steps_do_not():
    # u' = -u + p sin(ωt): the adjoint λ' = λ is smooth and takes large steps, while the parameter
    # integrand λ(t) sin(ωt) oscillates within each: GaussAdjoint's 3 nodes per step cannot see
    # it, QuadratureAdjoint bisects until its tolerance holds. Exact dL/dp for L = u(T), u(0) = 0:
    # ∫_0^T e^{-(T-s)} sin(ωs) ds.
    w, T = 400.0, 1.0
    exact = (math.sin(w * T) - w * math.cos(w * T)) / (1 + w * w) + math.exp(-T) * w / (1 + w * w)

    def rel_error(sa):
        p = torch.tensor(1.0, dtype=F64, requires_grad=True)
        prob = ODEProblem(lambda u, q, t: -u + q * torch.sin(w * t)[..., None], torch.zeros(1, dtype=F64), (0.0, T), p)
        sol = solve(prob, pyode.Tsit5(), reltol=1e-6, abstol=1e-8, saveat=[T], sensealg=sa)
        return abs(float(torch.autograd.grad(sol.u.sum(), p)[0]) - exact) / abs(exact)

    # measured: 1e-9, 2.7 (loose), 72 (Gauss)
    assert rel_error(pyode.QuadratureAdjoint()) < 1e-8
    assert rel_error(pyode.QuadratureAdjoint(abstol=0.1, reltol=0.1)) > 1e-2
    assert rel_error(pyode.GaussAdjoint()) > 1e-2


# ---- arguments -----------------------------------------------------------------------------------

def test_bad_sensealg_arguments():
    prob = problems.lotka_volterra()
    with pytest.raises(TypeError, match="pass ForwardSensitivity()"):
        solve(prob, sensealg=pyode.ForwardSensitivity)
    with pytest.raises(TypeError, match="sensealg must be"):
        solve(prob, sensealg="adjoint")
    with pytest.raises(ValueError, match="abstol must be a positive number"):
        pyode.QuadratureAdjoint(abstol=0)
    with pytest.raises(ValueError, match="checkpointing must be True or False"):
        pyode.InterpolatingAdjoint(checkpointing="yes")
    assert repr(pyode.DirectAdjoint()) == "DirectAdjoint()"
    assert repr(pyode.InterpolatingAdjoint(seminorm=True)) == "InterpolatingAdjoint(seminorm=True)"
