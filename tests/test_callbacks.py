"""Events and callbacks in ``pyode.solve``: locations, affects and gradients against closed forms and
central differences; batches, both directions of time, every method family; bad input."""
import functools
import math

import pytest
import torch

import pyode
from pyode import (CallbackSet, ContinuousCallback, DiscreteCallback, PresetTimeCallback, ReturnCode,
                   VectorContinuousCallback)

F64 = torch.float64


# ---- the bouncing ball: h'' = -g, v -> -e v at h = 0 ----------------------------------------------
def ball_f(u, p, t):
    return torch.stack([u[..., 1], -p[0] * torch.ones_like(u[..., 0])], -1)


def ball_cb(**kw):
    return ContinuousCallback(lambda u, p, t: u[..., 0],
                              lambda u, p, t: torch.stack([u[..., 0], -p[1] * u[..., 1]], -1), **kw)


def ball_closed_form(g, e, h0, T, bounces=12):
    """Bounce times and the state at T, as differentiable functions of (g, e, h0)."""
    v = torch.sqrt(2 * g * h0)
    t = torch.sqrt(2 * h0 / g)
    times = [t]
    for _ in range(bounces):
        v = v * e
        t = t + 2 * v / g
        times.append(t)
    n = max(i for i, ti in enumerate(times) if float(ti.detach()) <= T)
    v_up = torch.sqrt(2 * g * h0) * e ** (n + 1)
    s = T - times[n]
    return torch.stack(times), torch.stack([v_up * s - g * s * s / 2, v_up - g * s])


def ball_solve(g, e, h0, T, **kw):
    p = torch.stack([g, e])
    u0 = torch.stack([h0, torch.zeros((), dtype=h0.dtype)])
    kw.setdefault("reltol", 1e-10)
    kw.setdefault("abstol", 1e-12)
    return pyode.solve(pyode.ODEProblem(ball_f, u0, (0.0, T), p), kw.pop("alg", pyode.Tsit5()),
                       callback=kw.pop("callback", ball_cb()), **kw)


def _leaves(*values):
    return [torch.tensor(v, dtype=F64, requires_grad=True) for v in values]


def test_bouncing_ball_after_five_bounces_matches_the_closed_form():
    T = 8.6                                   # between the 5th (8.17) and 6th (9.11) bounce
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    sol = ball_solve(g, e, h0, T, saveat=[T])
    gc, ec, hc = _leaves(9.81, 0.8, 10.0)
    times, u_T = ball_closed_form(gc, ec, hc, T)
    assert sol.retcode == ReturnCode.Success
    assert sol.t_events.shape == (5,)
    torch.testing.assert_close(sol.t_events, times[:5], rtol=0, atol=1e-8)
    torch.testing.assert_close(sol.u[-1], u_T, rtol=0, atol=1e-8)
    for k in range(2):
        got = torch.autograd.grad(sol.u[-1][k], (g, e, h0), retain_graph=True)
        want = torch.autograd.grad(u_T[k], (gc, ec, hc), retain_graph=True)
        for a, b in zip(got, want):
            assert abs(float(a - b)) <= 1e-6 * max(1.0, abs(float(b))), (k, got, want)
    got = torch.autograd.grad(sol.t_events[4], (g, e, h0))
    want = torch.autograd.grad(times[4], (gc, ec, hc))
    for a, b in zip(got, want):
        assert abs(float(a - b)) <= 1e-6 * max(1.0, abs(float(b)))


def test_events_stop_the_step_so_dense_output_follows_the_bounce():
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    sol = ball_solve(g, e, h0, 8.6)
    times, _ = ball_closed_form(g.detach(), e.detach(), h0.detach(), 8.6)
    # halfway between bounces 2 and 3, and just after bounce 1
    for tq in (0.5 * float(times[1] + times[2]), float(times[0]) + 1e-3):
        _, want = ball_closed_form(g.detach(), e.detach(), h0.detach(), tq)
        torch.testing.assert_close(sol(tq), want, rtol=0, atol=1e-8)
    # the saved steps hold both sides of each event: the fall, then the rise
    at = torch.nonzero(sol.t == sol.t_events[0].detach()).reshape(-1)
    assert at.numel() == 2
    assert float(sol.u[at[0], 1].detach()) < 0 < float(sol.u[at[1], 1].detach())


def test_direction_selects_the_crossings():
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    down = ball_solve(g, e, h0, 5.0, callback=ball_cb(direction=-1))
    assert down.t_events.shape == (2,)
    # Upcrossings only: the ball falls through the floor and never comes back.
    up = ball_solve(g, e, h0, 5.0, callback=ball_cb(direction=1))
    assert up.t_events.shape == (0,)
    assert float(up.u[-1, 0].detach()) < -50
    # affect_neg, not affect, acts at downcrossings: a restitution of 0.5 instead of e
    half = ContinuousCallback(lambda u, p, t: u[..., 0], lambda u, p, t: u * float("nan"),
                              lambda u, p, t: torch.stack([u[..., 0], -0.5 * u[..., 1]], -1))
    sol = ball_solve(g, e, h0, 2.0, callback=half, saveat=[2.0])
    t1 = math.sqrt(2 * 10.0 / 9.81)
    v1 = 0.5 * math.sqrt(2 * 9.81 * 10.0)
    assert sol.t_events.shape == (1,)
    assert abs(float(sol.u[-1, 1].detach()) - (v1 - 9.81 * (2.0 - t1))) < 1e-8


def test_a_batch_locates_each_members_events_as_its_own_solve():
    h0s = torch.tensor([10.0, 3.0, 2.0], dtype=F64)
    g = torch.tensor(9.81, dtype=F64)
    e = torch.tensor(0.7, dtype=F64)
    u0 = torch.stack([h0s, torch.zeros_like(h0s)], -1)
    prob = pyode.ODEProblem(ball_f, u0, (0.0, 3.0), torch.stack([g, e]))
    sol = pyode.solve(prob, pyode.Tsit5(), callback=ball_cb(), reltol=1e-10, abstol=1e-12, saveat=[1.0, 3.0])
    counts = []
    for b in range(3):
        one = ball_solve(g, e, h0s[b], 3.0, saveat=[1.0, 3.0])
        E = one.t_events.shape[0]
        counts.append(E)
        torch.testing.assert_close(sol.t_events[b, :E], one.t_events, rtol=0, atol=1e-9)
        assert bool(torch.isnan(sol.t_events[b, E:]).all())
        torch.testing.assert_close(sol.u[:, b], one.u, rtol=0, atol=1e-8)
    assert sol.t_events.shape == (3, max(counts)) and len(set(counts)) == 3


def test_events_backwards_in_time():
    # u' = -k u from t = 2 back to 0; u crosses c at t* = 2 - ln(c / u(2)) / k
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor(3.0, dtype=F64, requires_grad=True)
    u2 = torch.tensor([1.0], dtype=F64)
    cb = ContinuousCallback(lambda u, p, t: u[..., 0] - p[1], terminate=True)
    sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: -p[0] * u, u2, (2.0, 0.0), torch.stack([k, c])),
                      pyode.Tsit5(), callback=cb, reltol=1e-10, abstol=1e-12)
    want = 2.0 - torch.log(c / u2[0]) / k
    assert sol.retcode == ReturnCode.Terminated and sol.success
    torch.testing.assert_close(sol.t_events[0], want, rtol=1e-9, atol=0)
    assert sol.t[-1] == sol.t_final
    torch.testing.assert_close(sol.u[-1, 0], c, rtol=1e-9, atol=0)
    got = torch.autograd.grad(sol.t_events[0], (k, c))
    exp = torch.autograd.grad(want, (k, c))
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=0)


# ---- Robertson, stopped when y3 reaches 0.5 -------------------------------------------------------
def rober(u, p, t):
    k = torch.exp(p)
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3, k[1] * y2 ** 2], -1)


LOGK = torch.log(torch.tensor([0.04, 3e7, 1e4], dtype=F64))


def rober_event(logk, alg=None, **kw):
    cb = ContinuousCallback(lambda u, p, t: u[..., 2] - 0.5, terminate=True)
    kw.setdefault("reltol", 1e-10)
    kw.setdefault("abstol", 1e-14)
    return pyode.solve(pyode.ODEProblem(rober, torch.tensor([1.0, 0.0, 0.0], dtype=F64), (0.0, 1e5), logk),
                       alg or pyode.Rodas5P(), callback=cb, **kw)


def test_robertson_threshold_time_and_its_gradient_against_central_differences():
    logk = LOGK.clone().requires_grad_(True)
    sol = rober_event(logk)
    assert sol.retcode == ReturnCode.Terminated
    t_star = sol.t_events[0]
    assert float(sol.t[-1]) == float(t_star) == sol.t_final
    assert abs(float(sol.u[-1, 2]) - 0.5) < 1e-12
    grad = torch.autograd.grad(t_star, logk, retain_graph=True)[0]
    fd = torch.empty(3, dtype=F64)
    for i in range(3):
        step = torch.zeros(3, dtype=F64)
        step[i] = 1e-5
        with torch.no_grad():
            fd[i] = (rober_event(LOGK + step).t_events[0] - rober_event(LOGK - step).t_events[0]) / 2e-5
    assert float((grad - fd).abs().max()) <= 1e-5 * float(fd.abs().max()), (grad, fd)
    # the gradient of the state at the event: y3 is pinned at 0.5, so its derivative vanishes
    d_y3 = torch.autograd.grad(sol.u[-1, 2], logk)[0]
    assert float(d_y3.abs().max()) < 1e-6 * float(grad.abs().max())


@functools.lru_cache(maxsize=1)
def _rober_reference() -> float:
    return float(rober_event(LOGK).t_events[0])


@pytest.mark.parametrize("alg", [pyode.KenCarp4(), pyode.FBDF(), pyode.RadauIIA5(), pyode.Rodas4()],
                         ids=lambda a: type(a).__name__)
def test_every_stiff_family_finds_the_same_threshold_time(alg):
    ref = _rober_reference()
    sol = rober_event(LOGK, alg, reltol=1e-8, abstol=1e-12)
    assert abs(float(sol.t_events[0]) - ref) <= 1e-5 * ref


# ---- VectorContinuousCallback: a particle between two walls -----------------------------------------
@pytest.mark.parametrize("sensealg", [pyode.DirectAdjoint(), pyode.ForwardSensitivity()],
                         ids=lambda s: type(s).__name__)
def test_vector_callback_reports_which_wall_and_reflects(sensealg):
    # x' = v, v' = 0 between walls at 0 and 1, from x = 0.25 with v = 1.5: hits at
    # 0.5 (right), 1.1667 (left), 1.8333 (right)
    walls = VectorContinuousCallback(lambda u, p, t: torch.stack([u[..., 0], 1 - u[..., 0]], -1),
                                     lambda u, p, t, i: torch.stack([u[..., 0], -u[..., 1]], -1), 2)
    v = torch.tensor(1.5, dtype=F64, requires_grad=True)
    u0 = torch.stack([torch.tensor(0.25, dtype=F64), v])
    sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: torch.stack([u[..., 1], torch.zeros_like(u[..., 1])], -1),
                                       u0, (0.0, 2.0)), pyode.Tsit5(), callback=walls, reltol=1e-10, abstol=1e-12,
                      sensealg=sensealg)
    want = torch.stack([0.75 / v, 1.75 / v, 2.75 / v])
    torch.testing.assert_close(sol.t_events, want, rtol=0, atol=1e-10)
    assert sol.event_index.tolist() == [1, 0, 1]
    assert sol.event_callback.tolist() == [0, 0, 0]
    torch.testing.assert_close(sol.u[-1, 0], torch.tensor(1.0 - (2.0 * 1.5 - 2.75), dtype=F64), rtol=0, atol=1e-10)
    g = torch.autograd.grad(sol.t_events[2], v)[0]
    torch.testing.assert_close(g, torch.tensor(-2.75 / 1.5 ** 2, dtype=F64), rtol=1e-9, atol=0)


# ---- DiscreteCallback, PresetTimeCallback, CallbackSet ----------------------------------------------
def decay(u, p, t):
    return -p[0] * u


def test_preset_time_doses_match_the_closed_form_and_its_gradient():
    k, D = _leaves(0.6, 2.0)
    p = torch.stack([k, D])
    dose = PresetTimeCallback([1.0, 2.5, 3.0], lambda u, p, t: u + p[1])
    sol = pyode.solve(pyode.ODEProblem(decay, torch.tensor([1.0], dtype=F64), (0.0, 4.0), p), pyode.Tsit5(),
                      callback=dose, saveat=[0.5, 2.0, 4.0], reltol=1e-10, abstol=1e-12)
    T = 4.0
    want = torch.exp(-k * T) + sum(D * torch.exp(-k * (T - ti)) for ti in (1.0, 2.5, 3.0))
    torch.testing.assert_close(sol.u[-1, 0], want, rtol=1e-9, atol=0)
    torch.testing.assert_close(sol.u[1, 0], torch.exp(-2 * k) + D * torch.exp(-k), rtol=1e-9, atol=0)
    got = torch.autograd.grad(sol.u[-1, 0], (k, D))
    exp = torch.autograd.grad(want, (k, D))
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=0)
    assert sol.t_events.shape == (0,)     # preset times are not root-found events


def test_preset_time_at_t0_acts_on_the_initial_state():
    dose = PresetTimeCallback([0.0], lambda u, p, t: u + 1.0)
    sol = pyode.solve(pyode.ODEProblem(decay, torch.tensor([1.0], dtype=F64), (0.0, 1.0), torch.tensor([1.0])),
                      pyode.Tsit5(), callback=dose, reltol=1e-10, abstol=1e-12)
    torch.testing.assert_close(sol.u[-1, 0], torch.tensor(2.0 * math.exp(-1.0), dtype=F64), rtol=1e-9, atol=0)


def test_discrete_callback_acts_after_steps_and_terminates():
    # Refill to 1 whenever u has dropped below 0.5 at the end of a step; stop after t > 3.
    refill = DiscreteCallback(lambda u, p, t: u[..., 0] < 0.5, lambda u, p, t: torch.ones_like(u))
    stop = DiscreteCallback(lambda u, p, t: t > 3.0, None, terminate=True)
    sol = pyode.solve(pyode.ODEProblem(decay, torch.tensor([1.0], dtype=F64), (0.0, 10.0), torch.tensor([1.0])),
                      pyode.Tsit5(), callback=CallbackSet(refill, stop), dtmax=0.1)
    assert sol.retcode == ReturnCode.Terminated
    assert 3.0 < sol.t_final <= 3.1 + 1e-12
    # every saved state after a refill restarts at 1, and none stays below 0.5 across a step end
    assert float(sol.u[:, 0].min()) >= 0.5 * math.exp(-0.1) - 1e-9
    assert int((sol.u[:, 0] == 1.0).sum()) >= 5


def test_callback_set_runs_continuous_and_preset_callbacks_together():
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    # a gust at t = 2 adds 3 m/s upwards; the bounces continue from there
    gust = PresetTimeCallback([2.0], lambda u, p, t: u + torch.tensor([0.0, 3.0], dtype=F64))
    sol = ball_solve(g, e, h0, 5.0, callback=CallbackSet(ball_cb(), gust))
    # closed form: bounce 1 at t1, rise with v1; at t = 2 the velocity is v1 - g (2 - t1) + 3
    t1 = math.sqrt(2 * 10.0 / 9.81)
    v1 = 0.8 * math.sqrt(2 * 9.81 * 10.0)
    h2 = v1 * (2 - t1) - 9.81 * (2 - t1) ** 2 / 2
    v2 = v1 - 9.81 * (2 - t1) + 3.0
    t2 = 2 + (v2 + math.sqrt(v2 ** 2 + 2 * 9.81 * h2)) / 9.81
    torch.testing.assert_close(sol.t_events[:2], torch.tensor([t1, t2], dtype=F64), rtol=0, atol=1e-9)


def test_events_with_float32_state():
    g, e, h0 = (torch.tensor(v, dtype=torch.float32) for v in (9.81, 0.8, 10.0))
    sol = ball_solve(g, e, h0, 8.6, reltol=1e-5, abstol=1e-6)
    times, _ = ball_closed_form(g.double(), e.double(), h0.double(), 8.6)
    assert sol.u.dtype == torch.float32 and sol.t_events.dtype == F64
    torch.testing.assert_close(sol.t_events, times[:5], rtol=0, atol=1e-4)


# ---- bad input -----------------------------------------------------------------------------------
def _ball_prob():
    return pyode.ODEProblem(ball_f, torch.tensor([1.0, 0.0], dtype=F64), (0.0, 2.0), torch.tensor([9.81, 0.8]))


def test_condition_of_the_wrong_shape_is_named():
    cb = ContinuousCallback(lambda u, p, t: u, lambda u, p, t: u)
    with pytest.raises(ValueError, match=r"condition\(u, p, t\) returned \(2,\).*must return shape \(\)"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=cb)
    vec = VectorContinuousCallback(lambda u, p, t: u[..., :1], None, 2)
    with pytest.raises(ValueError, match=r"VectorContinuousCallback.*returned \(1,\).*\(2,\).*len=2"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=vec)


def test_affect_returning_nan_or_the_wrong_shape_is_named():
    nan = ContinuousCallback(lambda u, p, t: u[..., 0], lambda u, p, t: u * float("nan"))
    with pytest.raises(ValueError, match=r"affect returned non-finite values.*t=0\.45"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=nan)
    short = ContinuousCallback(lambda u, p, t: u[..., 0], lambda u, p, t: u[..., :1])
    with pytest.raises(ValueError, match=r"affect returned \(1,\); it must return the new state, of u's shape \(2,\)"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=short)
    disc = DiscreteCallback(lambda u, p, t: torch.tensor([True, False]), lambda u, p, t: u)
    with pytest.raises(ValueError, match=r"DiscreteCallback.*returned \(2,\).*booleans of the batch shape"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=disc)


def test_unsupported_combinations_are_refused_clearly():
    cb = ball_cb()
    with pytest.raises(ValueError, match="compile=True does not support callback="):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=cb, compile=True)
    with pytest.raises(ValueError, match="backend='julia'"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=cb, backend="julia")
    batch = pyode.ODEProblem(ball_f, torch.ones(2, 2, dtype=F64), (0.0, 1.0), torch.tensor([9.81, 0.8]))
    with pytest.raises(ValueError, match="batch_steps='shared' does not support callback="):
        pyode.solve(batch, pyode.Tsit5(), callback=cb, batch_steps="shared")


def test_callback_constructors_validate_their_arguments():
    with pytest.raises(TypeError, match="condition must be a function"):
        ContinuousCallback(3.0)
    with pytest.raises(ValueError, match="direction must be 0"):
        ContinuousCallback(lambda u, p, t: u[0], direction=2)
    with pytest.raises(ValueError, match="interp_points must be a positive integer"):
        ContinuousCallback(lambda u, p, t: u[0], interp_points=0)
    with pytest.raises(ValueError, match="len must be a positive integer"):
        VectorContinuousCallback(lambda u, p, t: u, None, 0)
    with pytest.raises(ValueError, match="give affect, or terminate=True"):
        DiscreteCallback(lambda u, p, t: True, None)
    with pytest.raises(ValueError, match="times must be finite and not empty"):
        PresetTimeCallback([], lambda u, p, t: u)
    with pytest.raises(TypeError, match="CallbackSet: argument 1 must be a pyode callback"):
        CallbackSet(ball_cb(), lambda u: u)
    with pytest.raises(TypeError, match="callback must be a pyode callback"):
        pyode.solve(_ball_prob(), pyode.Tsit5(), callback=lambda u, p, t: u)


def test_a_terminated_member_keeps_its_event_state_and_no_later_saves():
    # u' = -u from u0 = 1, 2, 4; stop at u = 1.5: the first member never gets there
    cb = ContinuousCallback(lambda u, p, t: u[..., 0] - 1.5, terminate=True)
    u0 = torch.tensor([[1.0], [2.0], [4.0]], dtype=F64)
    prob = pyode.ODEProblem(lambda u, p, t: -u, u0, (0.0, 3.0))
    ends = pyode.solve(prob, pyode.Tsit5(), callback=cb, reltol=1e-10, abstol=1e-12)
    want = torch.tensor([3.0, math.log(2 / 1.5), math.log(4 / 1.5)], dtype=F64)
    assert ends.retcode.tolist() == [ReturnCode.Success, ReturnCode.Terminated, ReturnCode.Terminated]
    torch.testing.assert_close(ends.t_final, want, rtol=1e-9, atol=0)
    torch.testing.assert_close(ends.u[-1, :, 0], torch.tensor([math.exp(-3.0), 1.5, 1.5], dtype=F64),
                               rtol=1e-9, atol=0)
    saved = pyode.solve(prob, pyode.Tsit5(), callback=cb, saveat=[0.1, 0.5, 2.0], reltol=1e-10, abstol=1e-12)
    # member 1 stops at 0.288: its later save points were never reached
    assert bool(torch.isnan(saved.u[1:, 1]).all()) and not bool(torch.isnan(saved.u[:, 0]).any())
    # one problem's saved times end at its event
    one = pyode.solve(pyode.ODEProblem(lambda u, p, t: -u, u0[2], (0.0, 3.0)), pyode.Tsit5(), callback=cb,
                      saveat=[0.1, 0.5, 2.0], dense=True, reltol=1e-10, abstol=1e-12)
    assert one.t.tolist() == [0.1, 0.5] and one.retcode == ReturnCode.Terminated
    assert bool(torch.isnan(one(2.5)).all())


def test_an_affect_may_return_new_parameters_for_one_problem():
    # u' = p: up at slope 1 until u = 1, where the affect flips p; then down
    flip = ContinuousCallback(lambda u, p, t: u[..., 0] - 1.0, lambda u, p, t: (u, -p), direction=1)
    p = torch.tensor([1.0], dtype=F64)
    sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: p.expand_as(u), torch.tensor([0.0], dtype=F64), (0.0, 1.5), p),
                      pyode.Tsit5(), callback=flip, saveat=[0.5, 1.5], reltol=1e-10, abstol=1e-12)
    torch.testing.assert_close(sol.u[:, 0], torch.tensor([0.5, 0.5], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(sol.t_events, torch.tensor([1.0], dtype=F64), rtol=0, atol=1e-12)
    assert float(p) == 1.0                      # the user's p is not written to
    batch = pyode.ODEProblem(lambda u, p, t: p.expand_as(u), torch.zeros(2, 1, dtype=F64), (0.0, 1.5), p)
    with pytest.raises(ValueError, match=r"affect returned \(u, p\).*one problem only"):
        pyode.solve(batch, pyode.Tsit5(), callback=flip)


def test_u_events_hold_the_state_before_the_affect():
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    sol = ball_solve(g, e, h0, 5.0)
    assert sol.u_events.shape == (2, 2)
    assert float(sol.u_events[:, 0].detach().abs().max()) < 1e-9             # on the floor
    torch.testing.assert_close(sol.u_events[0, 1], -torch.sqrt(2 * g * h0).detach(), rtol=1e-10, atol=0)
    # its gradient: the impact speed sqrt(2 g h0) in h0
    (d,) = torch.autograd.grad(sol.u_events[0, 1], h0)
    torch.testing.assert_close(d, -torch.sqrt(2 * g / h0).detach() / 2, rtol=1e-8, atol=0)


def test_events_piling_up_at_a_zeno_point_end_with_maxiters():
    g, e, h0 = _leaves(9.81, 0.5, 1.0)          # bounces accumulate at t = 3 sqrt(2/g) = 1.355
    with pytest.raises(pyode.SolveError, match="MaxIters at t=1.35"):
        ball_solve(g, e, h0, 3.0, maxiters=150)


# ---- ForwardSensitivity through events --------------------------------------------------------------
SENSEALGS = [pyode.ForwardSensitivity(), pyode.GaussAdjoint(), pyode.InterpolatingAdjoint(),
             pyode.QuadratureAdjoint()]


@pytest.mark.parametrize("sensealg", SENSEALGS, ids=lambda s: type(s).__name__)
def test_every_sensealg_through_bounces_matches_the_closed_form(sensealg):
    T = 8.6
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    sol = ball_solve(g, e, h0, T, saveat=[2.0, T], sensealg=sensealg)
    gc, ec, hc = _leaves(9.81, 0.8, 10.0)
    times, u_T = ball_closed_form(gc, ec, hc, T)
    torch.testing.assert_close(sol.u[-1], u_T, rtol=0, atol=1e-8)
    for out, ref in ((sol.u[-1, 0], u_T[0]), (sol.u[-1, 1], u_T[1]), (sol.t_events[4], times[4])):
        got = torch.autograd.grad(out, (g, e, h0), retain_graph=True)
        want = torch.autograd.grad(ref, (gc, ec, hc), retain_graph=True)
        for a, b in zip(got, want):
            assert abs(float(a - b)) <= 1e-6 * max(1.0, abs(float(b))), (got, want)


@pytest.mark.parametrize("sensealg", SENSEALGS, ids=lambda s: type(s).__name__)
def test_every_sensealg_agrees_with_direct_adjoint_through_events(sensealg):
    logk = LOGK.clone().requires_grad_(True)
    grads = []
    for sa in (pyode.DirectAdjoint(), sensealg):
        sol = rober_event(logk, sensealg=sa, reltol=1e-8, abstol=1e-12, saveat=[1.0, 100.0])
        loss = sol.t_events[0] + sol.u_events[0, 0] + (sol.u[:, 1] / 3.6e-5).sum()
        grads.append(torch.autograd.grad(loss, logk)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=0)
    # doses at preset times (one at t0), a reflecting wall, a discrete cut; u0 differentiated too
    k = torch.tensor(0.6, dtype=F64, requires_grad=True)
    batch = isinstance(sensealg, pyode.ForwardSensitivity)       # the adjoints take one problem
    u0 = torch.tensor([[1.0], [3.0]] if batch else [1.0], dtype=F64, requires_grad=True)
    cbs = CallbackSet(PresetTimeCallback([0.0, 1.0, 2.5], lambda u, p, t: u + 0.5 * p),
                      ContinuousCallback(lambda u, p, t: u[..., 0] - 0.8, lambda u, p, t: 2 * u, direction=-1),
                      DiscreteCallback(lambda u, p, t: u[..., 0] > 1.9, lambda u, p, t: 0.9 * u))
    outs = []
    for sa in (pyode.DirectAdjoint(), sensealg):
        sol = pyode.solve(pyode.ODEProblem(decay, u0, (0.0, 4.0), k.reshape(1)), pyode.Tsit5(), callback=cbs,
                          saveat=[1.5, 4.0], reltol=1e-10, abstol=1e-12, sensealg=sa)
        loss = (sol.u ** 2).sum() + torch.nan_to_num(sol.t_events).sum() + torch.nan_to_num(sol.u_events).sum()
        outs.append((sol.u.detach(), torch.autograd.grad(loss, (k, u0))))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-9, atol=0)
    for a, b in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_the_adjoints_with_events_refuse_what_they_cannot_do():
    g, e, h0 = _leaves(9.81, 0.8, 10.0)
    with pytest.raises(ValueError, match="BacksolveAdjoint.*inverse of each affect"):
        ball_solve(g, e, h0, 3.0, saveat=[3.0], sensealg=pyode.BacksolveAdjoint())
    with pytest.raises(ValueError, match="GaussAdjoint.*one problem.*and saveat"):
        ball_solve(g, e, h0, 3.0, sensealg=pyode.GaussAdjoint())
    with pytest.raises(ValueError, match="checkpointing=True does not support callback="):
        ball_solve(g, e, h0, 3.0, saveat=[3.0], sensealg=pyode.InterpolatingAdjoint(checkpointing=True))
    batch = pyode.ODEProblem(ball_f, torch.ones(2, 2, dtype=F64), (0.0, 1.0), torch.tensor([9.81, 0.8]))
    with pytest.raises(ValueError, match="GaussAdjoint.*one problem"):
        pyode.solve(batch, pyode.Tsit5(), callback=ball_cb(), saveat=[1.0], sensealg=pyode.GaussAdjoint())


def test_a_condition_on_time_alone_fires_at_that_time():
    # g = t - 0.7: ġ comes from ∂g/∂t alone; the affect halves u there
    timer = ContinuousCallback(lambda u, p, t: t - 0.7 * torch.ones_like(u[..., 0]), lambda u, p, t: 0.5 * u)
    k = torch.tensor([0.3], dtype=F64, requires_grad=True)
    sol = pyode.solve(pyode.ODEProblem(decay, torch.tensor([1.0], dtype=F64), (0.0, 1.0), k), pyode.Tsit5(),
                      callback=timer, saveat=[1.0], reltol=1e-10, abstol=1e-12)
    torch.testing.assert_close(sol.t_events, torch.tensor([0.7], dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(sol.u[-1, 0], 0.5 * torch.exp(-k[0]), rtol=1e-9, atol=0)
    (d,) = torch.autograd.grad(sol.u[-1, 0], k)
    torch.testing.assert_close(d[0], -0.5 * torch.exp(-k[0]).detach(), rtol=1e-8, atol=0)
