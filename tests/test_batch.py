"""Batch independence: solving a batch equals solving each member alone.

Every member of a batch ``u0`` of shape ``(*batch, n)`` carries its own step size, controller state and
return code, so a member must take exactly the steps it takes when solved on its own: the same
number of accepted and rejected steps, the same ``saveat`` values and the same dense output (up to
round-off, ~1e-15; checked to 1e-12 relative), whatever the other members do.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pyode
from pyode import problems

ADAPTIVE = [pyode.BS3(), pyode.Tsit5(), pyode.DP5(), pyode.Vern7(), pyode.DP8()]
BY_NAME = {type(a).__name__: a for a in ADAPTIVE}   # hypothesis draws names: readable failure reports
LV_P = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
RTOL = 1e-12


def name(alg) -> str:
    return type(alg).__name__


# ---- helpers ------------------------------------------------------------------------------------

def member_p(p, batch_shape, idx):
    """The parameters of member ``idx``: tensors carrying the batch shape in front are indexed,
    anything else (shared parameters) is handed over unchanged. Tuples are handled elementwise.
    (Ambiguous only for a shared ``(4,)`` LV parameter with batch shape ``(4,)``, never drawn here.)"""
    if isinstance(p, tuple):
        return tuple(member_p(q, batch_shape, idx) for q in p)
    if isinstance(p, torch.Tensor) and tuple(p.shape[:len(batch_shape)]) == tuple(batch_shape):
        return p[idx]
    return p


def members(batch_shape):
    return list(np.ndindex(*batch_shape))


def solve_alone(prob: pyode.ODEProblem, idx, alg, **kw) -> pyode.ODESolution:
    single = pyode.ODEProblem(prob.f, prob.u0[idx], prob.tspan, member_p(prob.p, prob.batch_shape, idx))
    return pyode.solve(single, alg, **kw)


def assert_batch_equals_alone(prob, alg, ts, tq, check_dense=True, **kw):
    """Solve the batch once and every member alone; compare values, dense output and step counts."""
    batch_shape = tuple(prob.batch_shape)
    dense = {"dense": True} if check_dense else {}
    sol = pyode.solve(prob, alg, saveat=ts, **dense, **kw)
    assert sol.success, sol.retcode
    assert sol.u.shape == (len(ts), *batch_shape, prob.u0.shape[-1])
    assert tuple(sol.stats.naccept.shape) == batch_shape and tuple(sol.stats.nreject.shape) == batch_shape
    u_dense = sol(tq) if check_dense else None
    for idx in members(batch_shape):
        alone = solve_alone(prob, idx, alg, saveat=ts, **dense, **kw)
        steps_b = (int(sol.stats.naccept[idx]), int(sol.stats.nreject[idx]))
        steps_a = (alone.stats.naccept, alone.stats.nreject)
        assert steps_b == steps_a, f"member {idx}: (naccept, nreject) {steps_b} in the batch, {steps_a} alone"
        scale = max(1.0, float(alone.u.abs().max()))
        torch.testing.assert_close(sol.u[(slice(None), *idx)], alone.u, rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m: f"member {idx}, saveat values: {m}")
        if check_dense:
            torch.testing.assert_close(u_dense[(slice(None), *idx)], alone(tq), rtol=RTOL, atol=RTOL * scale,
                                       msg=lambda m: f"member {idx}, dense output: {m}")
    return sol


# ---- property tests -----------------------------------------------------------------------------

BATCH_SHAPES = [(1,), (2,), (3,), (2, 2), (1, 3), (2, 1, 2)]


@st.composite
def lotka_volterra_batches(draw):
    alg = BY_NAME[draw(st.sampled_from(sorted(BY_NAME)), label="alg")]
    shape = draw(st.sampled_from(BATCH_SHAPES))
    u0 = draw(arrays(np.float64, (*shape, 2), elements=st.floats(0.3, 3.0)))
    per_member_p = draw(st.booleans())
    p_shape = (*shape, 4) if per_member_p else (4,)
    p_factor = draw(arrays(np.float64, p_shape, elements=st.floats(0.6, 1.4)))
    # BS3 needs ~tol^(-1/3) steps: keep it at moderate tolerances so that every example stays fast.
    log_rtol = draw(st.floats(-6.0 if name(alg) == "BS3" else -8.0, -3.0))
    log_ratio = draw(st.floats(-3.0, 0.0))
    T = draw(st.floats(1.0, 6.0))
    backward = draw(st.booleans())
    # saveat: distinct times on a 1/1000 grid of the span (so they are strictly monotone).
    save_frac = [k / 1000 for k in sorted(draw(st.sets(st.integers(0, 1000), min_size=2, max_size=8)))]
    query_frac = draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
    return dict(alg=name(alg), shape=shape, u0=u0, p=LV_P * torch.from_numpy(p_factor), rtol=10.0 ** log_rtol,
                atol=10.0 ** (log_rtol + log_ratio), T=T, backward=backward, save_frac=save_frac,
                query_frac=query_frac)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=lotka_volterra_batches())
def test_lotka_volterra_batch_equals_members_alone(case):
    T = case["T"]
    tspan = (T, 0.0) if case["backward"] else (0.0, T)
    t0, t1 = tspan
    prob = problems.lotka_volterra(u0=torch.from_numpy(case["u0"]), p=case["p"], tspan=tspan)
    assert tuple(prob.batch_shape) == case["shape"]
    ts = torch.tensor([t0 + f * (t1 - t0) for f in case["save_frac"]], dtype=torch.float64)
    tq = torch.tensor([t0 + f * (t1 - t0) for f in case["query_frac"]], dtype=torch.float64)
    assert_batch_equals_alone(prob, BY_NAME[case["alg"]], ts, tq, reltol=case["rtol"], abstol=case["atol"])


def forced_oscillator(u, p, t):
    """Damped oscillator driven by ``cos(Ω t)``; ``p = (ω, ζ, Ω)`` each of the batch shape (or scalar)."""
    omega, zeta, drive = p
    x, v = u[..., 0], u[..., 1]
    return torch.stack([v, -2 * zeta * omega * v - omega ** 2 * x + torch.cos(drive * t)], -1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alg_name=st.sampled_from(sorted(BY_NAME)), shape=st.sampled_from(BATCH_SHAPES), data=st.data(),
       log_rtol=st.floats(-7.0, -3.0))
def test_forced_oscillator_batch_equals_members_alone(alg_name, shape, data, log_rtol):
    """Tuple parameters, per-member time dependence (``t`` has the batch shape inside ``f``)."""
    alg = BY_NAME[alg_name]
    u0 = data.draw(arrays(np.float64, (*shape, 2), elements=st.floats(-2.0, 2.0)), label="u0")
    omega = data.draw(arrays(np.float64, shape, elements=st.floats(0.5, 4.0)), label="omega")
    zeta = data.draw(arrays(np.float64, shape, elements=st.floats(0.0, 0.8)), label="zeta")
    drive = data.draw(st.floats(0.5, 3.0), label="drive")                     # shared by all members
    if name(alg) == "BS3":
        log_rtol = max(log_rtol, -6.0)
    p = (torch.from_numpy(omega), torch.from_numpy(zeta), drive)
    prob = pyode.ODEProblem(forced_oscillator, torch.from_numpy(u0), (0.0, 4.0), p)
    ts = torch.linspace(0.0, 4.0, 5, dtype=torch.float64)
    tq = torch.tensor([0.3, 1.7, 3.9], dtype=torch.float64)
    assert_batch_equals_alone(prob, alg, ts, tq, reltol=10.0 ** log_rtol, abstol=10.0 ** (log_rtol - 2))


# ---- deterministic cases ------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ADAPTIVE, ids=name)
def test_multidimensional_batch_with_per_member_parameters(alg):
    g = torch.Generator().manual_seed(7)
    u0 = 0.5 + 1.5 * torch.rand(2, 3, 2, generator=g, dtype=torch.float64)
    p = LV_P * (0.7 + 0.6 * torch.rand(2, 3, 4, generator=g, dtype=torch.float64))
    prob = problems.lotka_volterra(u0=u0, p=p, tspan=(0.0, 5.0))
    ts = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    tq = torch.tensor([0.01, 1.234, 3.3, 4.99], dtype=torch.float64)
    tol = 1e-5 if name(alg) == "BS3" else 1e-7
    sol = assert_batch_equals_alone(prob, alg, ts, tq, reltol=tol, abstol=tol / 10)
    assert sol(tq).shape == (4, 2, 3, 2)
    # The members really differ (different step counts), so equality above is not by symmetry.
    assert len(set(sol.stats.naccept.reshape(-1).tolist())) > 1, sol.stats.naccept


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.Vern7(), pyode.BS3()], ids=name)
def test_one_hard_member_does_not_slow_down_the_others(alg):
    """A large-amplitude van der Pol member needs many more steps; the easy members take exactly as
    many steps as alone (no shared step size) and their values do not change."""
    u0 = torch.tensor([[2.0, 0.0], [1.0, 0.5], [20.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    mu = torch.tensor([1.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    prob = problems.van_der_pol(u0=u0).remake(p=mu)
    ts = torch.linspace(0.0, 6.3, 8, dtype=torch.float64)
    tq = torch.tensor([0.05, 2.2, 5.0], dtype=torch.float64)
    tol = 1e-5 if name(alg) == "BS3" else 1e-6
    sol = assert_batch_equals_alone(prob, alg, ts, tq, reltol=tol, abstol=tol)
    steps = sol.stats.naccept
    easy = torch.tensor([0, 1, 3])
    # Measured: 720 vs <= 79 (Tsit5), 540 vs <= 53 (Vern7), 1002 vs <= 232 (BS3).
    assert int(steps[2]) > 3 * int(steps[easy].max()), steps


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.Vern7()], ids=name)
def test_failing_member_leaves_the_others_untouched(alg):
    """``u' = u²`` from 2 blows up at t = 0.5; the other members finish with their own steps."""
    u0 = torch.tensor([[0.5], [2.0], [-1.0]], dtype=torch.float64)
    prob = pyode.ODEProblem(lambda u, p, t: u * u, u0, (0.0, 1.0))
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    sol = pyode.solve(prob, alg, reltol=1e-8, abstol=1e-10, saveat=ts, throw=False)
    assert int(sol.retcode[0]) == pyode.ReturnCode.Success and int(sol.retcode[2]) == pyode.ReturnCode.Success
    assert int(sol.retcode[1]) != pyode.ReturnCode.Success
    assert bool(torch.isnan(sol.u[-1, 1]).all())                 # never reached t = 1
    for i in (0, 2):
        alone = solve_alone(prob, (i,), alg, reltol=1e-8, abstol=1e-10, saveat=ts)
        assert (int(sol.stats.naccept[i]), int(sol.stats.nreject[i])) == (alone.stats.naccept, alone.stats.nreject)
        torch.testing.assert_close(sol.u[:, i], alone.u, rtol=RTOL, atol=RTOL)
    exact = torch.stack([0.5 / (1 - 0.5 * ts), -1 / (1 + ts)], -1)
    torch.testing.assert_close(sol.u[:, [0, 2], 0], exact, rtol=1e-7, atol=0)


@pytest.mark.parametrize("alg", [pyode.Euler(), pyode.Midpoint(), pyode.RK4()], ids=name)
def test_fixed_step_batch_equals_members_alone(alg):
    g = torch.Generator().manual_seed(3)
    u0 = 0.5 + torch.rand(2, 2, 2, generator=g, dtype=torch.float64)
    p = LV_P * (0.8 + 0.4 * torch.rand(2, 2, 4, generator=g, dtype=torch.float64))
    prob = problems.lotka_volterra(u0=u0, p=p, tspan=(0.0, 2.0))
    ts = torch.tensor([0.0, 0.33, 1.0, 2.0], dtype=torch.float64)
    tq = torch.tensor([0.123, 1.5], dtype=torch.float64)
    sol = assert_batch_equals_alone(prob, alg, ts, tq, dt=0.01)
    assert bool((sol.stats.naccept == 200).all()), sol.stats.naccept


def test_batch_without_saveat_end_values_equal_members_alone():
    g = torch.Generator().manual_seed(11)
    u0 = 0.5 + torch.rand(4, 2, generator=g, dtype=torch.float64)
    p = LV_P * (0.8 + 0.4 * torch.rand(4, 4, generator=g, dtype=torch.float64))
    prob = problems.lotka_volterra(u0=u0, p=p, tspan=(0.0, 3.0))
    sol = pyode.solve(prob, pyode.DP5(), reltol=1e-8, abstol=1e-10)
    assert sol.t.tolist() == [0.0, 3.0] and sol.u.shape == (2, 4, 2)
    tq = torch.tensor([0.7, 2.9], dtype=torch.float64)
    for i in range(4):
        alone = solve_alone(prob, (i,), pyode.DP5(), reltol=1e-8, abstol=1e-10)
        assert int(sol.stats.naccept[i]) == alone.stats.naccept
        torch.testing.assert_close(sol.u[-1, i], alone.u[-1], rtol=RTOL, atol=RTOL)
        torch.testing.assert_close(sol(tq)[:, i], alone(tq), rtol=RTOL, atol=RTOL)
