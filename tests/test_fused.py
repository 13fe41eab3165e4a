"""The fused path (``solve(..., compile=True)``): the same steps, values, return codes and gradients as
the reference loop, up to round-off.

Most tests run the fused loop without ``torch.compile`` (``compiled=False``): that checks its logic
in seconds. A few compile it, which costs tens of seconds each on a small CPU.
"""
import math
import warnings

import pytest
import torch

import pyode
from pyode import ODEProblem, problems, solve
from pyode._solve import _default_controller, _native_stepper
from pyode.native._fused import fused_integrate
from pyode.native._integrate import SolveOptions, integrate


def lv(u, p, t):
    x, y = u[..., 0], u[..., 1]
    return torch.stack([p[..., 0] * x - p[..., 1] * x * y, p[..., 2] * x * y - p[..., 3] * y], -1)


def spiral_net(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    for m in net:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    return net


def both(prob, alg, **kw):
    """The reference loop's and the fused loop's (uncompiled) solutions of the same solve."""
    ref = solve(prob, alg, compile=False, **kw)
    opts_kw = dict(kw)
    fused = _fused_solve(prob, alg, **opts_kw)
    return ref, fused


def _fused_solve(prob, alg, compiled=False, chunk=None, **kw):
    """``solve`` on the fused path with the chunk and compilation chosen by the test."""
    import pyode.native._fused as F

    original = F.fused_integrate

    def patched(*args, **kwargs):
        kwargs.update(compiled=compiled, chunk=chunk)
        return original(*args, **kwargs)

    F.fused_integrate = patched
    try:
        return solve(prob, alg, compile=True, **kw)
    finally:
        F.fused_integrate = original


def assert_same(ref, fused, rtol=1e-11, atol=1e-12):
    assert ref.t.shape == fused.t.shape
    torch.testing.assert_close(fused.t, ref.t, rtol=0, atol=1e-12)
    torch.testing.assert_close(fused.u, ref.u, rtol=rtol, atol=atol, equal_nan=True)
    assert torch.equal(torch.as_tensor(ref.stats.naccept), torch.as_tensor(fused.stats.naccept))
    assert torch.equal(torch.as_tensor(ref.stats.nreject), torch.as_tensor(fused.stats.nreject))
    assert torch.equal(torch.as_tensor(ref.retcode), torch.as_tensor(fused.retcode))


ADAPTIVE = [pyode.Tsit5(), pyode.DP5(), pyode.BS3(), pyode.Vern7(), pyode.DP8()]


@pytest.mark.parametrize("alg", ADAPTIVE, ids=repr)
@pytest.mark.parametrize("tspan", [(0.0, 10.0), (10.0, 0.0)], ids=["forward", "backward"])
def test_saveat_matches_reference(alg, tspan):
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), tspan, p)
    t0, t1 = tspan
    saveat = torch.linspace(t0, t1, 37, dtype=torch.float64)
    ref, fused = both(prob, alg, saveat=saveat, reltol=1e-8, abstol=1e-10)
    assert ref.stats.naccept > 20
    assert_same(ref, fused)
    assert fused.stats.njac == fused.stats.nlu == fused.stats.nsolve == 0


def test_saveat_without_start_and_with_several_points_per_step():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 10.0), p)
    saveat = torch.linspace(0.01, 9.5, 400, dtype=torch.float64)     # several points per step, t0 and t1 left out
    ref, fused = both(prob, pyode.Tsit5(), saveat=saveat, reltol=1e-5)
    assert ref.stats.naccept < 100
    assert_same(ref, fused)


def test_every_step_and_batch_end_points():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    single = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 10.0), p)
    ref, fused = both(single, pyode.Tsit5(), dense=False, reltol=1e-7)
    assert_same(ref, fused)                     # t is every accepted step's end
    u0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    batch = ODEProblem(lv, u0, (0.0, 10.0), p)
    ref, fused = both(batch, pyode.Tsit5(), reltol=1e-7, dense=False)
    assert fused.u.shape == (2, 3, 2)
    assert_same(ref, fused)


def test_batch_members_keep_their_own_steps():
    # Per-member parameters and per-component tolerances: members take different numbers of steps.
    p = torch.tensor([[1.5, 1.0, 1.0, 3.0], [0.5, 2.0, 1.0, 1.0], [3.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    u0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    prob = ODEProblem(lv, u0, (0.0, 8.0), p)
    ref, fused = both(prob, pyode.Tsit5(), saveat=torch.linspace(0, 8, 17, dtype=torch.float64),
                      reltol=torch.tensor([1e-8, 1e-6]), abstol=1e-9)
    assert len(set(ref.stats.naccept.tolist())) == 3
    assert_same(ref, fused)


def test_nested_batch_shape_and_float32():
    net = spiral_net().float()
    u0 = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1))
    prob = ODEProblem(lambda u, p, t: net(u ** 3), u0, (0.0, 3.0))
    ref, fused = both(prob, pyode.Tsit5(), saveat=torch.linspace(0, 3, 7), reltol=1e-5, abstol=1e-7)
    assert fused.u.shape == (7, 2, 3, 2) and fused.u.dtype == torch.float32
    assert_same(ref, fused, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("controller", [pyode.IController(), pyode.PredictiveController()], ids=repr)
def test_other_controllers(controller):
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 10.0), p)
    ref, fused = both(prob, pyode.Tsit5(), saveat=[2.0, 10.0], reltol=1e-7, controller=controller)
    assert_same(ref, fused)


def test_fixed_step():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 2.0), p)
    ref, fused = both(prob, pyode.RK4(), dt=0.1, saveat=[0.25, 1.0, 2.0])
    assert int(fused.stats.naccept) == 20
    assert_same(ref, fused)


def test_internalnorm_and_dtmax():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 10.0), p)
    ref, fused = both(prob, pyode.DP5(), saveat=[5.0, 10.0], reltol=1e-7, dtmax=0.05,
                      internalnorm=lambda e: e.abs().amax(-1))
    assert int(ref.stats.naccept) >= 200
    assert_same(ref, fused)


def test_failures_have_the_reference_return_codes():
    # u' = u²: blows up at t = 1; a member that stays finite, one that runs out of maxiters.
    def f(u, p, t):
        return p * u * u

    u0 = torch.tensor([[1.0], [0.1], [0.2]], dtype=torch.float64)
    p = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
    prob = ODEProblem(f, u0, (0.0, 2.0), p)
    ref, fused = both(prob, pyode.Tsit5(), saveat=[0.5, 1.5, 2.0], throw=False, reltol=1e-6)
    codes = ref.retcode.tolist()
    assert codes[0] != pyode.ReturnCode.Success and codes[1] == pyode.ReturnCode.Success
    assert_same(ref, fused)
    assert torch.isnan(fused.u[1:, 0]).all() and torch.isfinite(fused.u[:, 1]).all()
    ref, fused = both(prob, pyode.Tsit5(), saveat=[0.5, 1.5, 2.0], throw=False, maxiters=3, reltol=1e-10)
    assert set(ref.retcode.tolist()) == {int(pyode.ReturnCode.MaxIters)}
    assert_same(ref, fused)
    single = ODEProblem(f, torch.tensor([1.0], dtype=torch.float64), (0.0, 2.0), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(pyode.SolveError):
        _fused_solve(single, pyode.Tsit5(), saveat=[0.5, 1.5, 2.0])
    ref, fused = both(single, pyode.Tsit5(), saveat=[0.5, 1.5, 2.0], throw=False)
    assert fused.t.shape == (1,)        # one problem: only the save times it reached, as the reference
    assert_same(ref, fused)


@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.Rodas4(), pyode.Rosenbrock23()], ids=repr)
@pytest.mark.parametrize("jac", ["analytic", "AD"])
def test_rosenbrock_on_robertson_matches_reference(alg, jac):
    # The fused Rosenbrock step forms J afresh each iteration and factorises the 3x3 iteration
    # matrix with the written-out LU: the same steps, values to round-off.
    prob = problems.robertson(tspan=(0.0, 1e3))
    if jac == "AD":
        prob = prob.remake(jac=None)
    ref, fused = both(prob, alg, saveat=torch.logspace(-4, 3, 15, dtype=torch.float64), reltol=1e-6, abstol=1e-10)
    assert ref.stats.naccept > 30
    assert fused.stats.njac == fused.stats.nlu == int(fused.stats.naccept + fused.stats.nreject)
    if isinstance(alg, pyode.Rosenbrock23):
        # ~700 low-order steps, 65 of them rejected: a round-off difference of the LU flips a
        # borderline accept/reject decision (661/65 steps here, 663/68 fused); the solutions then
        # differ at the tolerance's level.
        assert abs(int(fused.stats.naccept) - int(ref.stats.naccept)) <= 0.01 * int(ref.stats.naccept)
        torch.testing.assert_close(fused.u, ref.u, rtol=1e-5, atol=1e-10)
        return
    assert_same(ref, fused, rtol=1e-9, atol=1e-16)     # 7e-12 relative measured


def test_rosenbrock_batch_with_per_member_rates():
    k = torch.tensor([[0.04, 3e7, 1e4], [0.05, 2e7, 1.2e4], [0.03, 4e7, 0.8e4]], dtype=torch.float64)
    u0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    prob = problems.robertson(tspan=(0.0, 100.0)).remake(u0=u0, p=k)
    ref, fused = both(prob, pyode.Rodas5P(), reltol=1e-6, abstol=1e-10, dense=False)
    assert_same(ref, fused, rtol=1e-9, atol=1e-16)


# ---- gradients ------------------------------------------------------------------------------------

def grads(loss_fn, tensors):
    for x in tensors:
        x.grad = None
    loss_fn().backward()
    return [x.grad.clone() for x in tensors]


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.Vern7(), pyode.BS3()], ids=repr)
def test_gradients_match_backpropagation_through_the_reference_loop(alg):
    """Parameters in a closure (the network), in p (a tensor) and the initial state."""
    net = spiral_net()
    scale = torch.tensor([1.0, 0.8], dtype=torch.float64, requires_grad=True)
    u0 = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    ts = torch.linspace(0, 4, 21, dtype=torch.float64)
    leaves = [u0, scale, *net.parameters()]

    def loss(fused):
        prob = ODEProblem(lambda u, p, t: p * net(u ** 3), u0, (0.0, 4.0), scale)
        kw = dict(saveat=ts, reltol=1e-7, abstol=1e-9)
        sol = _fused_solve(prob, alg, **kw) if fused else solve(prob, alg, compile=False, **kw)
        return (sol.u * torch.linspace(1, 2, 21, dtype=torch.float64)[:, None, None]).sin().sum()

    g_ref = grads(lambda: loss(False), leaves)
    g_fused = grads(lambda: loss(True), leaves)
    for a, b in zip(g_ref, g_fused):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_rosenbrock_gradient_of_log_rates_matches_reference():
    logk = torch.log(torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64)).requires_grad_(True)

    def loss(fused):
        prob = problems.robertson(tspan=(0.0, 10.0)).remake(p=logk.exp())
        kw = dict(saveat=torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64), reltol=1e-7, abstol=1e-12)
        sol = _fused_solve(prob, pyode.Rodas5P(), **kw) if fused else solve(prob, pyode.Rodas5P(), compile=False, **kw)
        return (sol.u[:, 0] + 1e4 * sol.u[:, 1]).sum()

    a, b = grads(lambda: loss(False), [logk]), grads(lambda: loss(True), [logk])
    torch.testing.assert_close(b[0], a[0], rtol=1e-8, atol=1e-14)


def test_gradient_against_finite_differences():
    p0 = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)

    def loss(p, u0):
        sol = _fused_solve(ODEProblem(lv, u0, (0.0, 5.0), p), pyode.Tsit5(), saveat=[1.0, 3.0, 5.0],
                           reltol=1e-10, abstol=1e-12)
        return sol.u.square().sum()

    p = p0.clone().requires_grad_(True)
    u0 = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    loss(p, u0).backward()
    eps = 1e-6
    for i in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[i] = eps
        fd = (loss(p0 + e, u0.detach()) - loss(p0 - e, u0.detach())) / (2 * eps)
        assert math.isclose(float(p.grad[i]), float(fd), rel_tol=1e-5), (i, float(p.grad[i]), float(fd))


def test_gradient_with_every_step_saved_and_end_points():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    u0 = torch.tensor([[1.0, 1.0], [2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    for prob_u0, kw in ((u0[0], dict(dense=False)), (u0, dict(dense=False))):
        def loss(fused):
            prob = ODEProblem(lv, prob_u0, (0.0, 3.0), p)
            sol = _fused_solve(prob, pyode.DP5(), reltol=1e-8, **kw) if fused else \
                solve(prob, pyode.DP5(), compile=False, reltol=1e-8, **kw)
            return sol.u.pow(3).sum()
        a, b = grads(lambda: loss(False), [p, u0]), grads(lambda: loss(True), [p, u0])
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-12)


def test_large_state_takes_the_sequential_recursion():
    # 40 states: above the size for which the per-step Jacobians are formed.
    n = 40
    A = (torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / math.sqrt(n)
         - torch.eye(n, dtype=torch.float64)).requires_grad_(True)
    u0 = torch.linspace(-1, 1, n, dtype=torch.float64).requires_grad_(True)

    def loss(fused):
        prob = ODEProblem(lambda u, p, t: torch.tanh(u) @ p.T, u0, (0.0, 2.0), A)
        kw = dict(saveat=[0.5, 2.0], reltol=1e-8)
        sol = _fused_solve(prob, pyode.Tsit5(), **kw) if fused else solve(prob, pyode.Tsit5(), compile=False, **kw)
        return sol.u.square().sum()

    a, b = grads(lambda: loss(False), [A, u0]), grads(lambda: loss(True), [A, u0])
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("S", [1, 2, 3, 7, 8, 9, 64, 100])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adjoint_recursion_scan_equals_the_sequential_one(S, dtype):
    """The parallel scan, the sequential fallback and the recursion written out agree."""
    import pyode.native._fused as F

    g = torch.Generator().manual_seed(S)
    B, n = 3, 4
    Gy = torch.randn(S, B, n, generator=g, dtype=torch.float64)
    A = torch.randn(S, B, n, n, generator=g, dtype=torch.float64) / n + torch.eye(n, dtype=torch.float64)
    d = torch.randn(S, B, n, generator=g, dtype=torch.float64)
    expect = torch.empty_like(Gy)
    lam = Gy[-1]
    expect[-1] = lam
    for r in range(S - 2, -1, -1):
        lam = Gy[r] + torch.einsum("bi,bij->bj", lam, A[r + 1]) + d[r + 1]
        expect[r] = lam
    scan = F._adjoint_recursion(Gy.to(dtype), A.to(dtype), d.to(dtype))
    old = F._SCAN_MAX_WORK
    F._SCAN_MAX_WORK = 0
    try:
        seq = F._adjoint_recursion(Gy.to(dtype), A.to(dtype), d.to(dtype))
    finally:
        F._SCAN_MAX_WORK = old
    # relative to the largest entry: in float32 entries that cancel lose digits in either order
    scale = float(expect.abs().max())
    tol = dict(rtol=0, atol=1e-12 * scale) if dtype == torch.float64 else dict(rtol=0, atol=1e-5 * scale)
    assert scan.dtype == seq.dtype == dtype
    torch.testing.assert_close(scan.double(), expect, **tol)
    torch.testing.assert_close(seq.double(), expect, **tol)


def test_gradient_through_the_sequential_recursion(monkeypatch):
    """A long solve with the scan switched off: the per-record recursion gives the same gradient."""
    import pyode.native._fused as F

    monkeypatch.setattr(F, "_SCAN_MAX_WORK", 0)
    test_gradients_match_backpropagation_through_the_reference_loop(pyode.Tsit5())


def test_save_times_on_step_ends_are_the_recorded_states():
    """Save times that steps land on (the end of tspan) are not recomputed: they are the loop's own
    end states, so the last saved value is the returned final state to the last bit."""
    import pyode.native._fused as F

    calls = []
    original = F._Outputs._all_steps

    def spy(self, *args):
        calls.append(args[0].shape[0])
        return original(self, *args)

    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([[1.0, 1.0], [2.0, 0.5]], dtype=torch.float64), (0.0, 5.0), p)
    F._Outputs._all_steps = spy
    try:
        ref, fused = both(prob, pyode.Tsit5(), saveat=[5.0], reltol=1e-8)
        assert calls == []
        ref, fused2 = both(prob, pyode.Tsit5(), saveat=[2.5, 5.0], reltol=1e-8)
        assert calls == [1]          # the one save time inside a step
    finally:
        F._Outputs._all_steps = original
    assert_same(ref, fused2)
    torch.testing.assert_close(fused.u[-1], fused2.u[-1], rtol=0, atol=0)
    torch.testing.assert_close(fused.u[-1], ref.u[-1], rtol=1e-12, atol=1e-13)


def test_no_graph_without_anything_to_differentiate():
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 1.0), p)
    assert not _fused_solve(prob, pyode.Tsit5(), saveat=[1.0]).u.requires_grad


# ---- compiled --------------------------------------------------------------------------------------

def test_compiled_solve_and_gradient_match_reference(monkeypatch):
    """Through the public switch: torch.compile-d chunks, twice (the second reuses the compiled code).
    Two iterations per chunk: the same code as the default eight, compiled in 24 s instead of 56."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 2)
    monkeypatch.setattr(F, "_NOT_COMPILED", set())
    compiled_outputs = spy_compiled_outputs(monkeypatch)
    net = spiral_net()
    ts = torch.linspace(0, 5, 11, dtype=torch.float64)
    u0 = torch.tensor([2.0, 0.0], dtype=torch.float64)

    def run(compile):
        prob = ODEProblem(lambda u, p, t: net(u ** 3), u0, (0.0, 5.0))
        for q in net.parameters():
            q.grad = None
        sol = solve(prob, pyode.Tsit5(), saveat=ts, reltol=1e-7, abstol=1e-9, compile=compile)
        sol.u.square().sum().backward()
        return sol, [q.grad.clone() for q in net.parameters()]

    ref, g_ref = run(False)
    for _ in range(2):
        fused, g_fused = run(True)
        # Compiled kernels round differently (vectorised tanh, fused multiply-adds): 5e-11 measured.
        assert_same(ref, fused, rtol=1e-9, atol=1e-10)
        for a, b in zip(g_ref, g_fused):
            assert float((b - a).abs().max() / a.abs().max()) < 1e-8     # 2e-10 measured
    # Chunks run whole: a few iterations past the end, on members that no longer move.
    assert 0 <= fused.stats.nf - ref.stats.nf <= F.DEFAULT_CHUNK * 6
    # The compiled chunk returns its outputs in buffers that its next call reuses: a later solve of
    # the same kind (other values, other steps) must leave this one's results alone.
    other = solve(ODEProblem(lambda u, p, t: net(u ** 3), -0.5 * u0, (0.0, 2.0)), pyode.Tsit5(), saveat=ts[:5],
                  reltol=1e-6, compile=True)
    assert int(other.stats.naccept) != int(fused.stats.naccept)
    assert_same(ref, fused, rtol=1e-9, atol=1e-10)
    # The outputs and the backward pass's Jacobians ran compiled, not the eager fallback.
    assert not F._NOT_COMPILED
    assert compiled_outputs == ["z_traced", "z_columns"] * 2 + ["z_traced"]    # `other` had no backward pass


def spy_compiled_outputs(monkeypatch):
    """The names of the outputs' functions that ran compiled (and returned), in order."""
    import pyode.native._fused as F

    ran, original = [], F._Outputs.run_compiled

    def run_compiled(self, name, y):
        out = original(self, name, y)
        ran.append(name)
        return out

    monkeypatch.setattr(F._Outputs, "run_compiled", run_compiled)
    return ran


def test_compiled_rosenbrock_outputs_wait_for_their_compile_budget(monkeypatch):
    """A Rosenbrock solve recomputes its outputs eagerly, counting the time, until that time reaches
    the budget; then they run compiled, with the same gradient."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)
    monkeypatch.setattr(F, "_EAGER_OUTPUT_SECONDS", {})
    compiled_outputs = spy_compiled_outputs(monkeypatch)
    k0 = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64)
    ts = torch.logspace(-4, 2, 5, dtype=torch.float64)

    def gradient(compile):
        k = k0.clone().requires_grad_()
        prob = problems.robertson(k=k, tspan=(0.0, 1e2))
        sol = solve(prob, pyode.Rosenbrock23(), saveat=ts, reltol=1e-4, abstol=1e-8, compile=compile)
        return torch.autograd.grad(sol.u[:, 1].sum(), k)[0]

    g_ref = gradient(False)
    torch.testing.assert_close(gradient(True), g_ref, rtol=1e-8, atol=0)
    assert compiled_outputs == [] and len(F._EAGER_OUTPUT_SECONDS) == 1
    spent = next(iter(F._EAGER_OUTPUT_SECONDS.values()))
    assert spent > 0
    monkeypatch.setattr(F, "_OUTPUTS_COMPILE_BUDGET_S", spent)
    torch.testing.assert_close(gradient(True), g_ref, rtol=1e-8, atol=0)
    assert compiled_outputs == ["z_traced", "z_columns"]


def test_compiled_gradient_with_other_record_counts_and_without_forward_mode(monkeypatch):
    """The compiled recomputation of the outputs takes any number of records (dynamo makes it
    dynamic on the second count it sees), and where forward mode through f fails, the backward pass
    takes reverse-mode products on an eager graph instead; the gradients stay the reference's."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 2)
    monkeypatch.setattr(F, "_NOT_COMPILED", set())
    net = spiral_net(1)
    u0 = torch.tensor([2.0, 0.0], dtype=torch.float64)

    def gradients(t1, compile):
        for q in net.parameters():
            q.grad = None
        sol = solve(ODEProblem(lambda u, p, t: net(u ** 3), u0, (0.0, t1)), pyode.Tsit5(),
                    saveat=torch.linspace(0, t1, 6, dtype=torch.float64), reltol=1e-7, abstol=1e-9, compile=compile)
        sol.u.square().sum().backward()
        return int(sol.stats.naccept), [q.grad.clone() for q in net.parameters()]

    def close(g, g_ref):
        return all(float((b - a).abs().max() / a.abs().max()) < 1e-8 for a, b in zip(g_ref, g))

    steps = set()
    for t1 in (2.0, 5.0, 3.0):
        n, g = gradients(t1, True)
        steps.add(n)
        assert close(g, gradients(t1, False)[1])
    assert len(steps) == 3

    def no_forward_mode(self, y):
        raise torch._dynamo.exc.TorchDynamoException("no forward-mode derivative")

    monkeypatch.setattr(F._Outputs, "z_columns", no_forward_mode)
    assert close(gradients(4.0, True)[1], gradients(4.0, False)[1])


def test_compiled_gradient_of_f_that_vmap_cannot_batch(monkeypatch):
    """f writes into a tensor of its own: the compiled loop runs it, vmap over the records cannot,
    so the outputs and the backward pass are recomputed eagerly, record by record."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)
    w = torch.tensor([1.0, -1.5], dtype=torch.float64, requires_grad=True)

    def f(u, p, t):
        out = torch.empty(u.shape, dtype=u.dtype)
        out[..., 0] = w[0] * u[..., 1]
        out[..., 1] = w[1] * u[..., 0]
        return out

    prob = ODEProblem(f, torch.tensor([2.0, 0.0], dtype=torch.float64), (0.0, 2.0))
    grads = []
    for compile in (False, True):
        sol = solve(prob, pyode.Tsit5(), saveat=[0.5, 1.0, 2.0], reltol=1e-8, compile=compile)
        grads.append(torch.autograd.grad(sol.u.square().sum(), w)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_compiled_rosenbrock_matches_reference_and_restores_inductor(monkeypatch):
    """The implicit path compiled (Jacobian by forward mode, the LU written out, intermediates on the
    C++ stack), on Robertson; inductor's own C++ wrapper class is back in place afterwards."""
    import pyode.native._fused as F
    from torch._inductor.codegen import common

    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)
    common.init_backend_registration()
    wrapper = common.device_codegens["cpu"].cpp_wrapper_codegen
    # two members with their own rates: per-member steps, and batched results (views of what the
    # solve returns)
    prob = problems.robertson(k=[[0.04, 3e7, 1e4], [0.05, 2e7, 1.2e4]], u0=[[1.0, 0.0, 0.0]] * 2, tspan=(0.0, 1e4))
    ts = torch.logspace(-4, 4, 9, dtype=torch.float64)
    kw = dict(saveat=ts, reltol=1e-5, abstol=1e-9, dense=False)
    ref = solve(prob, pyode.Rosenbrock23(), compile=False, **kw)
    fused = solve(prob, pyode.Rosenbrock23(), compile=True, **kw)
    assert_same(ref, fused, rtol=1e-9, atol=1e-14)
    assert common.device_codegens["cpu"].cpp_wrapper_codegen is wrapper
    # A later solve of the same kind reuses the chunk's output buffers; this solution is left alone.
    shorter = solve(problems.robertson(k=prob.p, u0=prob.u0, tspan=(0.0, 1.0)), pyode.Rosenbrock23(),
                    compile=True, **dict(kw, saveat=ts[:5]))
    assert not torch.equal(shorter.stats.naccept, fused.stats.naccept)
    assert_same(ref, fused, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(fused.t_final, ref.t_final)


# ---- refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    (dict(alg=pyode.KenCarp4()), "explicit Runge-Kutta"),
    (dict(alg=pyode.Rodas5P(autodiff=False)), "finite differences"),
    (dict(dense=True), "dense output"),
    (dict(tstops=[0.5]), "tstops"),
    (dict(progress=True), "progress"),
    (dict(sensealg=pyode.GaussAdjoint()), "DirectAdjoint"),
    (dict(sensealg=pyode.DirectAdjoint(checkpoints=4)), "DirectAdjoint"),
])
def test_compile_refuses_what_the_fused_path_cannot_do(kw, words):
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 1.0), p)
    alg = kw.pop("alg", pyode.Tsit5())
    if "dense" not in kw:
        kw["saveat"] = [1.0]
    with pytest.raises(ValueError, match="compile=True") as err:
        solve(prob, alg, compile=True, **kw)
    assert words in str(err.value)


def test_compile_argument_and_environment_are_checked(monkeypatch):
    p = torch.tensor([1.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    prob = ODEProblem(lv, torch.tensor([1.0, 1.0], dtype=torch.float64), (0.0, 1.0), p)
    with pytest.raises(TypeError, match="compile must be True or False"):
        solve(prob, compile="yes")
    with pytest.raises(ValueError, match="backend='julia'"):
        solve(prob, compile=True, backend="julia")
    monkeypatch.setenv("PYODE_COMPILE", "fast")
    with pytest.raises(ValueError, match="PYODE_COMPILE"):
        solve(prob)
    # The environment's default falls back to the reference loop where the fused path does not apply.
    monkeypatch.setenv("PYODE_COMPILE", "eager")
    assert solve(prob, pyode.Rodas5P()).retcode == pyode.ReturnCode.Success


def test_untraceable_f_gets_a_clear_error_when_compiled_and_works_eager():
    def f(u, p, t):
        if float(u.detach().abs().max()) > 1e6:        # a Python branch on a tensor value
            raise RuntimeError("diverged")
        return -u

    prob = ODEProblem(f, torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True), (0.0, 1.0))
    with pytest.raises(RuntimeError, match="compile=True: torch.compile could not compile"):
        solve(prob, pyode.Tsit5(), saveat=[1.0], compile=True)
    # Eager, the outputs and gradient are recomputed record by record (f cannot be vmapped).
    sol = _fused_solve(prob, pyode.Tsit5(), saveat=[0.5, 1.0], reltol=1e-9)
    ref = solve(prob, pyode.Tsit5(), saveat=[0.5, 1.0], reltol=1e-9, compile=False)
    torch.testing.assert_close(sol.u, ref.u, rtol=1e-12, atol=1e-14)
    g, = torch.autograd.grad(sol.u.sum(), prob.u0)
    g_ref, = torch.autograd.grad(ref.u.sum(), prob.u0)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


def test_compiled_f_with_a_python_counter_keeps_the_compiled_path(monkeypatch):
    """f counts its calls in a closure list, as users count evaluations. Dynamo guards on that int:
    without care every chunk recompiled until the recompile limit (reached within the first solve
    here: 20 chunks) and the solve raised. The counter is compiled as a symbolic int after its first
    change instead: the values are the eager ones, and the counter counts f's calls, chunk by chunk
    (as stats.nf: whole chunks, as the compiled code runs them)."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)      # one iteration per call: the cheapest compiles
    calls = [0]

    def f(u, p, t):
        calls[0] += 1
        return -1.5 * u

    prob = ODEProblem(f, torch.ones(1, dtype=torch.float64), (0.0, 4.0))
    ref = solve(prob, pyode.Tsit5(), saveat=[4.0], reltol=1e-6)
    assert int(ref.stats.naccept + ref.stats.nreject) > 2 * torch._dynamo.config.recompile_limit
    for _ in range(3):                                 # the counter keeps counting from solve to solve
        before = calls[0]
        sol = solve(prob, pyode.Tsit5(), saveat=[4.0], reltol=1e-6, compile=True)
        # stats.nf, plus one eager call that asks whether f's output requires grad
        assert calls[0] - before == sol.stats.nf + 1 == ref.stats.nf + 1
        torch.testing.assert_close(sol.u, ref.u, rtol=1e-12, atol=0)


def test_compiled_f_with_other_python_side_effects_falls_back_to_eager(monkeypatch):
    """f appends to a list: dynamo guards on its length, which no symbolic int can stand for. The
    solve detects the recompilation between two chunks, warns once, and finishes without
    torch.compile, as do later solves with this f."""
    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)
    log = []

    def f(u, p, t):
        log.append(1)
        return -1.5 * u

    prob = ODEProblem(f, torch.ones(1, dtype=torch.float64), (0.0, 4.0))
    ref = solve(prob, pyode.Tsit5(), saveat=[4.0], reltol=1e-6)
    with pytest.warns(RuntimeWarning, match=r"compile=True: f changes Python state .* other than an integer "
                                            r"counter.* without torch.compile"):
        sol = solve(prob, pyode.Tsit5(), saveat=[4.0], reltol=1e-6, compile=True)
    torch.testing.assert_close(sol.u, ref.u, rtol=1e-12, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = len(log)
        sol = solve(prob, pyode.Tsit5(), saveat=[4.0], reltol=1e-6, compile=True)
    torch.testing.assert_close(sol.u, ref.u, rtol=1e-12, atol=0)
    assert len(log) - before == sol.stats.nf + 1        # eager: one append per evaluation (and see above)


def test_failed_int_guards_name_their_sources():
    from pyode.native._fused import _failed_int_sources

    message = """Detected recompile when torch.compile stance is 'fail_on_recompile'. ...
    triggered by the following guard failure(s):
    - 0/1: G['__import___main__'].calls[0] == 298                        # calls[0] += 1  # x.py:10 in f
    - 0/0: self.f.p.nfe == 46                                       #   # x.py:10 in forward (HINT: ...)
    - 0/0: len(G['log']) == 3                                       # log.append(1)  # x.py:3 in f
    - 0/0: G['acc'][0] == 0.5                                       # acc[0] += 0.5  # x.py:4 in f"""
    assert _failed_int_sources(message) == {"G['__import___main__'].calls[0]", "L['self'].f.p.nfe"}


def test_initial_failure_of_every_member():
    prob = ODEProblem(lambda u, p, t: u / 0.0 * 0.0, torch.ones(2, 2, dtype=torch.float64), (0.0, 1.0))
    ref, fused = both(prob, pyode.Tsit5(), saveat=[0.5, 1.0], throw=False)
    assert set(ref.retcode.tolist()) == {int(pyode.ReturnCode.InitialFailure)}
    assert_same(ref, fused)


def test_recompile_limit_gets_a_clear_error(monkeypatch):
    import pyode.native._fused as F

    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)      # one iteration per call: the cheapest compiles

    def prob(n, k=1):
        return ODEProblem(lambda u, p, t: -k * u, torch.ones(n, dtype=torch.float64), (0.0, 1.0))

    with torch._dynamo.config.patch(recompile_limit=1):
        # Each kind of solve (here: each shape) has its own compiled chunk and its own limit.
        for n in (1, 2):
            assert solve(prob(n), pyode.Tsit5(), saveat=[1.0], compile=True).retcode == pyode.ReturnCode.Success
        # The same kind with another integer in f's closure is a recompilation of the same chunk.
        with pytest.raises(RuntimeError, match="recompile limit"):
            solve(prob(1, k=2), pyode.Tsit5(), saveat=[1.0], compile=True)


def test_compiled_chunk_is_one_iteration_for_rosenbrock_through_a_network(monkeypatch):
    """Unrolling 8 Rosenbrock iterations through a network took minutes to compile (Kim et al.'s ROBER
    network: 212 s, against 23 s for one iteration at the same time per epoch): such solves compile
    one iteration per call, analytic right-hand sides four (Robertson: 61 s for 8, 32 s for 4);
    explicit methods keep DEFAULT_CHUNK."""
    import pyode.native._fused as F

    seen = []

    class Stop(Exception):
        pass

    def spy(self):
        seen.append(self.chunk)
        raise Stop

    monkeypatch.setattr(F._FusedLoop, "forward", spy)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.GELU(), torch.nn.Linear(5, 3)).double()
    rob = problems.robertson()
    cases = [
        (pyode.ODEProblem(lambda u, p, t: p(u), rob.u0, (0.0, 1.0), net), pyode.Rodas5P(), 1),
        (pyode.ODEProblem(lambda u, p, t: net(u), rob.u0, (0.0, 1.0)), pyode.Rodas5P(), 1),
        (ODEProblem(rob.f, rob.u0, (0.0, 1.0), rob.p, jac=rob.jac), pyode.Rodas5P(), F._ROSENBROCK_CHUNK),
        (pyode.ODEProblem(lambda u, p, t: p(u), rob.u0, (0.0, 1.0), net), pyode.Tsit5(), F.DEFAULT_CHUNK),
    ]
    for prob, alg, expected in cases:
        with pytest.raises(Stop):
            solve(prob, alg, saveat=[1.0], compile=True)
        assert seen[-1] == expected, (alg, expected, seen)


def test_a_new_tolerance_does_not_recompile(monkeypatch):
    """Tolerances enter the compiled chunk as tensors: as Python floats, dynamo specialised the chunk
    on them, and every solve at a new tolerance recompiled (19 s for HIRES with Rodas5P)."""
    import torch._dynamo.utils as dynamo_utils

    import pyode.native._fused as F
    monkeypatch.setattr(F, "DEFAULT_CHUNK", 1)      # one iteration per call: the cheapest compiles
    prob = ODEProblem(lambda u, p, t: -1.5 * u + 0.1 * u ** 2, torch.ones(2, dtype=torch.float64), (0.0, 3.0))
    solve(prob, pyode.Tsit5(), saveat=[3.0], reltol=1e-6, abstol=1e-9, compile=True)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    for rtol, atol in ((1e-8, 1e-11), (3e-5, 1e-7)):
        sol = solve(prob, pyode.Tsit5(), saveat=[3.0], reltol=rtol, abstol=atol, compile=True)
        ref = solve(prob, pyode.Tsit5(), saveat=[3.0], reltol=rtol, abstol=atol, compile=False)
        assert int(sol.stats.naccept) == int(ref.stats.naccept)
        torch.testing.assert_close(sol.u, ref.u, rtol=1e-12, atol=1e-14)
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.Rodas5P()], ids=["Tsit5", "Rodas5P"])
def test_save_time_at_the_end_is_kept_when_the_last_step_is_snapped_to_it(alg):
    # t0 + the last step's size falls an ulp short of tspan's end here; the step lands on the end,
    # and the save time there must be returned (it was dropped once: 13 of 14 values, Success)
    t0, t1 = 0.00017860617520075095, 0.4011076243939284
    prob = pyode.ODEProblem(lambda u, p, t: -u, torch.ones(2, dtype=torch.float64), (t0, t1))
    ts = torch.tensor([t0, (t0 + t1) / 2, t1], dtype=torch.float64)
    sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-3, abstol=1e-6)
    assert sol.retcode == pyode.ReturnCode.Success and torch.equal(sol.t, ts)
    assert torch.allclose(sol.u[-1], torch.full((2,), math.exp(-(t1 - t0)), dtype=torch.float64), rtol=1e-2)
