"""The public contract: saving, time direction, tstops, return codes, and every bad input."""
import math

import numpy as np
import pytest
import torch

import pyode
from pyode import ODEProblem, ReturnCode, SolveError, solve
from pyode.problems import lotka_volterra, van_der_pol


def decay(u, p, t):
    return -u


def oscillator(u, p, t):
    return torch.stack([u[..., 1], -u[..., 0]], -1)


def osc_problem(tspan=(0.0, 2.0), u0=(1.0, 0.0), **kw):
    return ODEProblem(oscillator, torch.tensor(u0, dtype=torch.float64), tspan, **kw)


# ---- what is saved ---------------------------------------------------------------------------

def test_single_problem_saves_every_accepted_step():
    sol = solve(osc_problem(), pyode.Tsit5(), reltol=1e-6, abstol=1e-8)
    assert sol.t.shape == (sol.stats.naccept + 1,)
    assert sol.u.shape == (sol.stats.naccept + 1, 2)
    assert sol.t[0] == 0.0 and sol.t[-1] == 2.0
    assert bool((sol.t.diff() > 0).all())
    exact = torch.stack([sol.t.cos(), -sol.t.sin()], -1)
    torch.testing.assert_close(sol.u, exact, atol=1e-6, rtol=0)
    assert sol.success and sol.retcode is ReturnCode.Success
    assert sol.t.dtype == torch.float64


def test_batch_without_saveat_saves_start_and_end_and_keeps_dense_output():
    u0 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    sol = solve(ODEProblem(oscillator, u0, (0.0, 2.0)), reltol=1e-8, abstol=1e-10)
    assert sol.t.tolist() == [0.0, 2.0]
    assert sol.u.shape == (2, 3, 2)
    torch.testing.assert_close(sol.u[0], u0)
    mid = sol(1.3)
    assert mid.shape == (3, 2)
    c, s = math.cos(1.3), math.sin(1.3)
    exact = torch.stack([u0[:, 0] * c + u0[:, 1] * s, -u0[:, 0] * s + u0[:, 1] * c], -1)
    torch.testing.assert_close(mid, exact, atol=1e-7, rtol=0)
    assert sol.retcode.shape == (3,) and bool((sol.retcode == ReturnCode.Success).all())
    assert sol.stats.naccept.shape == (3,)


def test_saveat_number_saves_every_interval_plus_end():
    sol = solve(osc_problem((0.0, 1.0)), saveat=0.3)
    torch.testing.assert_close(sol.t, torch.tensor([0.0, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64))
    assert not sol.has_dense
    with pytest.raises(ValueError, match="no dense output.*dense=True"):
        sol(0.5)


def test_saveat_without_start_does_not_save_start():
    sol = solve(osc_problem((0.0, 1.0)), saveat=[0.5, 1.0], reltol=1e-8, abstol=1e-10)
    assert sol.t.tolist() == [0.5, 1.0]
    torch.testing.assert_close(sol.u[0], torch.tensor([math.cos(0.5), -math.sin(0.5)], dtype=torch.float64),
                               atol=1e-7, rtol=0)


def test_backwards_in_time():
    sol = solve(osc_problem((2.0, -1.0)), saveat=[2.0, 0.5, -1.0], reltol=1e-9, abstol=1e-11)
    # u(t) = R(t - 2) u0 with u0 given at t = 2
    for t, u in zip(sol.t.tolist(), sol.u):
        exact = torch.tensor([math.cos(t - 2.0), -math.sin(t - 2.0)], dtype=torch.float64)
        torch.testing.assert_close(u, exact, atol=1e-8, rtol=0)
    dense_sol = solve(osc_problem((2.0, -1.0)), reltol=1e-9, abstol=1e-11)
    assert bool((dense_sol.t.diff() < 0).all())
    torch.testing.assert_close(dense_sol(0.5), sol.u[1], atol=1e-8, rtol=0)


def test_tstops_are_stepped_on_and_handle_a_discontinuity():
    # f jumps at t = 1; stepping onto t = 1 integrates each smooth piece exactly enough.
    def kick(u, p, t):
        return torch.where(t[..., None] < 1.0, torch.ones_like(u), -2.0 * torch.ones_like(u))

    prob = ODEProblem(kick, torch.zeros(1, dtype=torch.float64), (0.0, 2.0))
    sol = solve(prob, reltol=1e-8, abstol=1e-10, tstops=[1.0])
    assert 1.0 in sol.t.tolist()
    torch.testing.assert_close(sol.u[-1], torch.tensor([-1.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_fixed_step_methods_take_exactly_the_requested_steps():
    for alg in (pyode.Euler(), pyode.Midpoint(), pyode.RK4()):
        sol = solve(osc_problem((0.0, 1.0)), alg, dt=0.1)
        assert sol.stats.naccept == 10
        assert sol.stats.nf == 10 * alg.tableau.stages + 1
        torch.testing.assert_close(sol.t, torch.linspace(0, 1, 11, dtype=torch.float64), atol=1e-14, rtol=0)


def test_adaptive_method_can_run_with_fixed_steps():
    sol = solve(osc_problem((0.0, 1.0)), pyode.Tsit5(), adaptive=False, dt=0.25)
    assert sol.stats.naccept == 4 and sol.stats.nreject == 0


def test_dtmax_bounds_the_step():
    sol = solve(osc_problem((0.0, 2.0)), dtmax=0.01)
    assert float(sol.t.diff().max()) <= 0.01 + 1e-15


def test_t_seen_by_f_is_float64_with_batch_shape():
    seen = []

    def f(u, p, t):
        seen.append((t.dtype, tuple(t.shape), u.dtype, tuple(u.shape)))
        return -u

    solve(ODEProblem(f, torch.ones(4, 3, 2), (0.0, 1.0)))
    assert set(seen) == {(torch.float64, (4, 3), torch.float32, (4, 3, 2))}


def test_progress_bar_runs(capsys):
    sol = solve(osc_problem((0.0, 5.0)), progress=True)
    assert sol.success
    assert "100%" in capsys.readouterr().err


def test_parameters_as_module_and_dict_reach_f():
    net = torch.nn.Linear(2, 2).double()
    sol = solve(ODEProblem(lambda u, p, t: p(u), torch.ones(2, dtype=torch.float64), (0.0, 1.0), net))
    assert sol.success
    sol = solve(ODEProblem(lambda u, p, t: -p["k"] * u, torch.ones(2, dtype=torch.float64), (0.0, 1.0),
                           {"k": torch.tensor(2.0, dtype=torch.float64)}), reltol=1e-8, abstol=1e-10)
    torch.testing.assert_close(sol.u[-1], torch.full((2,), math.exp(-2.0), dtype=torch.float64), atol=1e-8, rtol=0)


def test_numpy_and_list_inputs_are_accepted():
    sol = solve(ODEProblem(decay, np.array([1.0, 2.0]), np.array([0.0, 1.0])), saveat=np.array([0.0, 1.0]))
    assert sol.u.dtype == torch.float64 and sol.u.shape == (2, 2)


# ---- failures: return codes, messages ----------------------------------------------------------

def test_explicit_method_on_stiff_problem_reports_maxiters_with_stiff_hint():
    prob = van_der_pol(mu=1e5, tspan=(0.0, 1.0))
    with pytest.raises(SolveError, match=r"MaxIters at t=.*dt=.*\n.*Hint: the problem may be stiff.*Rodas5P\(\)") as info:
        solve(prob, pyode.Tsit5(), maxiters=2000)
    sol = info.value.solution
    assert sol.retcode is ReturnCode.MaxIters
    assert sol.stats.nsteps == 2000
    assert 0.0 < sol.t_final < 1.0


def test_throw_false_returns_partial_solution():
    sol = solve(van_der_pol(mu=1e5, tspan=(0.0, 1.0)), pyode.Tsit5(), maxiters=500, throw=False)
    assert sol.retcode is ReturnCode.MaxIters and not sol.success
    assert float(sol.t[-1]) == sol.t_final < 1.0
    assert bool(torch.isfinite(sol.u).all())


def test_dt_less_than_min_near_a_singularity():
    # u' = u^2, u(0) = 1 blows up at t = 1.
    prob = ODEProblem(lambda u, p, t: u * u, torch.ones(1, dtype=torch.float64), (0.0, 2.0))
    with pytest.raises(SolveError, match=r"DtLessThanMin at t=0\.99"):
        solve(prob, dtmin=1e-8)


def test_nan_mid_solve_is_unstable_with_time():
    # f becomes NaN for t > 0.5 whatever the step size.
    def f(u, p, t):
        return torch.where(t[..., None] > 0.5, torch.full_like(u, float("nan")), -u)

    prob = ODEProblem(f, torch.ones(2, dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(SolveError, match=r"Unstable at t=0\.5.*NaN") as info:
        solve(prob)
    assert info.value.solution.retcode is ReturnCode.Unstable
    assert bool(torch.isfinite(info.value.solution.u).all())


def test_nan_in_fixed_step_solve_is_unstable():
    prob = ODEProblem(lambda u, p, t: u.exp().exp().exp(), torch.ones(1, dtype=torch.float64), (0.0, 1.0))
    sol = solve(prob, pyode.RK4(), dt=0.1, throw=False)
    assert sol.retcode is ReturnCode.Unstable


def test_nonfinite_initial_derivative_is_initial_failure():
    prob = ODEProblem(lambda u, p, t: u.log(), torch.tensor([1.0, -1.0], dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(SolveError, match="InitialFailure at t=0"):
        solve(prob)


def test_batch_failure_names_members_and_keeps_others():
    mu = torch.tensor([[1.0], [1e6], [2.0]], dtype=torch.float64)
    prob = ODEProblem(lambda u, p, t: torch.stack(
        [u[..., 1], p[..., 0] * (1 - u[..., 0] ** 2) * u[..., 1] - u[..., 0]], -1),
        torch.tensor([[2.0, 0.0]] * 3, dtype=torch.float64), (0.0, 1.0), mu)
    with pytest.raises(SolveError, match=r"1 of 3 batch members:\n  member \(1,\): MaxIters"):
        solve(prob, maxiters=3000, saveat=[0.5, 1.0])
    sol = solve(prob, maxiters=3000, saveat=[0.5, 1.0], throw=False)
    assert sol.retcode.tolist() == [ReturnCode.Success, ReturnCode.MaxIters, ReturnCode.Success]
    assert bool(torch.isfinite(sol.u[:, [0, 2]]).all())
    assert bool(torch.isnan(sol.u[1, 1]).all()), "a value the failed member never reached must be NaN"
    alone = solve(prob.remake(u0=prob.u0[0], p=mu[0]), saveat=[0.5, 1.0])
    torch.testing.assert_close(sol.u[:, 0], alone.u, atol=1e-12, rtol=0)


# ---- bad input: every argument named -----------------------------------------------------------

@pytest.mark.parametrize("u0, exc, match", [
    (torch.tensor([1, 2]), TypeError, "u0 has integer dtype torch.int64"),
    (torch.tensor([1.0, float("nan")]), ValueError, r"u0 contains NaN or Inf \(first at index \(1,\)\)"),
    (torch.tensor(1.0), ValueError, "u0 is a 0-d tensor"),
    (torch.zeros(3, 0), ValueError, "no elements"),
    (torch.ones(2, dtype=torch.float16), TypeError, "u0 has dtype torch.float16"),
    (torch.ones(2, dtype=torch.complex64), TypeError, "complex"),
    ("abc", TypeError, "u0 must be a torch.Tensor"),
])
def test_bad_u0(u0, exc, match):
    with pytest.raises(exc, match=match):
        ODEProblem(decay, u0, (0.0, 1.0))


@pytest.mark.parametrize("tspan, match", [
    ((0.0, 0.0), "tspan is empty"),
    ((0.0,), r"tspan must be a pair"),
    ((0.0, float("inf")), "tspan must be finite"),
    ("ab", "tspan must be a pair"),
])
def test_bad_tspan(tspan, match):
    with pytest.raises(ValueError, match=match):
        ODEProblem(decay, torch.ones(1), tspan)


def test_bad_f_and_jac():
    with pytest.raises(TypeError, match="f must be callable"):
        ODEProblem(3, torch.ones(1), (0, 1))
    with pytest.raises(TypeError, match="jac must be callable"):
        ODEProblem(decay, torch.ones(1), (0, 1), jac="J")


def test_rhs_shape_mismatch():
    prob = ODEProblem(lambda u, p, t: u[..., :1], torch.ones(3), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"f returned shape \(1,\) for u of shape \(3,\)"):
        solve(prob)


def test_rhs_returning_non_tensor():
    prob = ODEProblem(lambda u, p, t: [1.0], torch.ones(1), (0.0, 1.0))
    with pytest.raises(TypeError, match="f must return a torch.Tensor; it returned list"):
        solve(prob)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(saveat=[]), ValueError, "saveat is empty"),
    (dict(saveat=[0.5, 0.2]), ValueError, r"saveat must be strictly increasing; entries 0 and 1 are 0.5 and 0.2"),
    (dict(saveat=[0.5, 0.5]), ValueError, "saveat must be strictly increasing"),
    (dict(saveat=[0.5, 1.5]), ValueError, r"saveat has time 1.5 outside tspan \(0, 1\)"),
    (dict(saveat=-0.1), ValueError, "saveat=-0.1: a number means 'save every saveat'"),
    (dict(saveat=[[0.1, 0.2]]), ValueError, "saveat must be 1-D"),
    (dict(saveat=[0.1, float("nan")]), ValueError, "saveat contains NaN"),
    (dict(tstops=[2.0]), ValueError, "tstops has time 2 outside tspan"),
    (dict(reltol=0.0), ValueError, "reltol must be positive"),
    (dict(abstol=-1e-6), ValueError, "abstol must be positive"),
    (dict(reltol="1e-3"), TypeError, "reltol must be a real number"),
    (dict(abstol=[1e-6, 1e-6, 1e-6]), ValueError, r"abstol must be a number or have one entry per state component \(2\)"),
    (dict(abstol=[1e-6, 0.0]), ValueError, "abstol must be positive and finite"),
    (dict(reltol=float("nan")), ValueError, "reltol must be finite"),
    (dict(dt=-0.1), ValueError, "dt must be positive"),
    (dict(dt=5.0), ValueError, r"dt=5.0 is larger than the time span"),
    (dict(maxiters=0), ValueError, "maxiters must be a positive integer"),
    (dict(maxiters=1.5), ValueError, "maxiters must be a positive integer"),
    (dict(dtmin=-1.0), ValueError, "dtmin must be non-negative"),
    (dict(dtmax=0.0), ValueError, "dtmax must be positive"),
    (dict(dtmin=0.5, dtmax=0.1), ValueError, "dtmin=0.5 must be smaller than dtmax=0.1"),
    (dict(adaptive="yes"), TypeError, "adaptive must be True or False"),
    (dict(throw=1), TypeError, "throw must be True or False"),
    (dict(progress=None), TypeError, "progress must be True or False"),
    (dict(dense="no"), TypeError, "dense must be True, False or None"),
    (dict(backend="fortran"), ValueError, r"backend='fortran' is not available"),
    (dict(rtol=1e-6), TypeError, r"unknown keyword argument 'rtol'; did you mean 'reltol'\?"),
    (dict(savat=[0.5]), TypeError, r"unknown keyword argument 'savat'; did you mean 'saveat'\?"),
    (dict(foo=1), TypeError, r"unknown keyword argument 'foo' Known keywords"),
])
def test_bad_solve_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        solve(osc_problem((0.0, 1.0)), **kwargs)


def test_saveat_must_follow_backward_direction():
    with pytest.raises(ValueError, match=r"saveat must be strictly decreasing \(tspan runs backwards\)"):
        solve(osc_problem((1.0, 0.0)), saveat=[0.2, 0.5])


@pytest.mark.parametrize("alg, match", [
    (pyode.Tsit5, r"got the class Tsit5: pass Tsit5\(\)"),
    ("tsit5", "got the string 'tsit5'"),
    (object(), "alg must be a pyode algorithm"),
])
def test_bad_algorithm(alg, match):
    with pytest.raises(TypeError, match=match):
        solve(osc_problem(), alg)


def test_fixed_step_needs_dt_and_cannot_be_adaptive():
    with pytest.raises(ValueError, match=r"dt is required for a fixed-step solve \(RK4\(\)\); pass e.g. dt="):
        solve(osc_problem(), pyode.RK4())
    with pytest.raises(ValueError, match=r"dt is required .*adaptive=False"):
        solve(osc_problem(), pyode.Tsit5(), adaptive=False)
    with pytest.raises(ValueError, match=r"adaptive=True, but RK4\(\) is a fixed-step method"):
        solve(osc_problem(), pyode.RK4(), adaptive=True, dt=0.1)


def test_prob_must_be_a_problem():
    with pytest.raises(TypeError, match="prob must be a pyode.ODEProblem; got tuple"):
        solve((oscillator, torch.ones(2), (0, 1)))


def test_dense_output_outside_tspan():
    sol = solve(osc_problem((0.0, 1.0)))
    with pytest.raises(ValueError, match=r"t=1.5 lies outside tspan"):
        sol(1.5)
    assert sol(torch.tensor([0.0, 0.5, 1.0])).shape == (3, 2)


def test_remake_rejects_unknown_field():
    with pytest.raises(TypeError, match=r"remake got unknown field\(s\) \['u1'\]"):
        osc_problem().remake(u1=torch.ones(2))


# ---- step-size controllers -------------------------------------------------------------------

def test_default_controller_is_sciml_pi_and_icontroller_differs():
    prob = lotka_volterra()
    default = solve(prob, reltol=1e-6, abstol=1e-8)
    explicit = solve(prob, reltol=1e-6, abstol=1e-8, controller=pyode.PIController(beta1=7 / 50, beta2=2 / 25))
    assert default.stats.naccept == explicit.stats.naccept and default.stats.nreject == explicit.stats.nreject
    torch.testing.assert_close(default.u, explicit.u, rtol=0, atol=0)
    integral = solve(prob, reltol=1e-6, abstol=1e-8, controller=pyode.IController())
    assert integral.stats.naccept != default.stats.naccept
    torch.testing.assert_close(integral.u[-1], default.u[-1], rtol=1e-4, atol=1e-4)


def test_icontroller_grows_the_step_faster_on_a_float32_error_floor():
    # In float32 the error estimate of a smooth problem sits on a round-off floor; PI control's
    # integral memory then grows the step slowly, integral control does not.
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    torch.nn.init.normal_(net[0].weight, std=0.3)
    prob = ODEProblem(lambda u, p, t: p(u), torch.randn(64, 2, generator=torch.Generator().manual_seed(0)),
                      (0.0, 1.0), net)
    with torch.no_grad():
        pi = solve(prob, reltol=1e-5, abstol=1e-7, saveat=[1.0])
        ic = solve(prob, reltol=1e-5, abstol=1e-7, saveat=[1.0], controller=pyode.IController())
    assert int(ic.stats.naccept.max()) < int(pi.stats.naccept.max())
    torch.testing.assert_close(ic.u, pi.u, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta1=1.5), r"beta1 must be a number in \[0, 1\) or None; got 1.5"),
    (dict(gamma=0.0), r"gamma must be in \(0, 1\]"),
    (dict(qmin=2.0), "need 0 < qmin < 1 < qmax"),
])
def test_bad_controller_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pyode.PIController(**kwargs)


def test_controller_must_be_a_controller():
    with pytest.raises(TypeError, match="controller must be pyode.PIController"):
        solve(osc_problem(), controller="PI")


def test_fixed_step_unstable_hint_says_reduce_dt():
    prob = ODEProblem(lambda u, p, t: u * u, torch.tensor([2.0], dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(SolveError, match=r"Unstable at t=.*\n.*Hint: a fixed-step method cannot retry.*reduce dt"):
        solve(prob, pyode.RK4(), dt=0.3)


def test_reltol_below_state_precision_is_refused():
    with pytest.raises(ValueError, match=r"reltol=1e-12 is below what torch.float32 can resolve.*u0.double\(\)"):
        solve(lotka_volterra(dtype=torch.float32), reltol=1e-12, abstol=1e-14)
    with pytest.raises(ValueError, match=r"reltol=1e-17 is below what torch.float64 can resolve"):
        solve(lotka_volterra(), reltol=1e-17)
