"""DirectAdjoint(checkpoints=K): the same gradient as plain DirectAdjoint (the gradient of the same
discrete solution) for every family of methods, with memory that does not grow with the steps."""
import pytest
import torch
from torch import nn

import pyode
from pyode import ODEProblem, ReturnCode, problems, solve

F64 = torch.float64
KS = [1, 2, 5, 1000]     # one segment, two, several, more snapshots than loop iterations


def assert_same_gradient(got, ref, msg=""):
    # Same operations, summed in another order: round-off only.
    for g, r in zip(got, ref):
        assert g is not None, msg
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12 * float(r.abs().max()), msg=msg)


def gradients(make_loss, inputs, sensealg):
    """Gradients of ``make_loss(sensealg, *leaves)`` in fresh leaves cloned from ``inputs``, and the stats."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    loss, stats = make_loss(sensealg, *leaves)
    return torch.autograd.grad(loss, leaves), stats


def check_all_k(make_loss, inputs):
    ref, ref_stats = gradients(make_loss, inputs, pyode.DirectAdjoint())
    for k in KS:
        sa = pyode.DirectAdjoint(checkpoints=k)
        got, stats = gradients(make_loss, inputs, sa)
        assert_same_gradient(got, ref, msg=repr(sa))
        # the statistics are those of the forward solve, not of the recomputation
        assert _equal_stats(stats, ref_stats), repr(sa)
    return ref_stats


def _equal_stats(a, b):
    return all(torch.equal(torch.as_tensor(getattr(a, f)), torch.as_tensor(getattr(b, f)))
               for f in ("nf", "naccept", "nreject", "njac", "nlu", "nsolve", "nswitch"))


# ---- non-stiff: Lotka-Volterra ------------------------------------------------------------------

@pytest.mark.parametrize("saveat", [True, False], ids=["saveat", "every-step"])
def test_tsit5_lotka_volterra_single(saveat):
    base = problems.lotka_volterra(tspan=(0.0, 5.0))
    ts = torch.linspace(0.5, 5.0, 10, dtype=F64)

    def loss(sa, u0, p):
        sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), reltol=1e-8, abstol=1e-10,
                    saveat=ts if saveat else None, sensealg=sa)
        w = torch.sin(sol.t)
        return (sol.u[:, 0] * w + sol.u[:, 1].square()).sum(), sol.stats

    stats = check_all_k(loss, (base.u0, base.p))
    assert stats.naccept > 50


def test_tsit5_batch_with_per_member_steps_and_dense_output():
    base = problems.lotka_volterra(tspan=(0.0, 4.0))
    u0 = torch.tensor([[1.0, 1.0], [3.0, 0.3], [0.4, 2.5]], dtype=F64)
    tq = torch.tensor([0.3, 1.7, 3.9], dtype=F64)

    def loss(sa, u0, p):
        sol = solve(ODEProblem(base.f, u0, base.tspan, p), pyode.Tsit5(), reltol=1e-7, abstol=1e-9, dense=True,
                    sensealg=sa)
        # a batch without saveat saves t0 and t1; sol(t) is the dense output
        return sol.u[-1].square().sum() + (sol(tq) * torch.arange(1.0, 3.0, dtype=F64)).sum(), sol.stats

    stats = check_all_k(loss, (u0, base.p))
    assert len(set(stats.naccept.tolist())) == 3      # every member on its own grid


def test_nn_module_right_hand_side():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    params = list(net.parameters())
    u0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64, requires_grad=True)

    def grads(sa, alg):
        # compile=False: the same operations as the checkpointed solves, whatever PYODE_COMPILE says
        sol = solve(ODEProblem(lambda u, p, t: p(u) - 0.1 * u, u0, (0.0, 2.0), net), alg, reltol=1e-8,
                    abstol=1e-10, saveat=[0.5, 1.0, 2.0], sensealg=sa, compile=False)
        return torch.autograd.grad(sol.u.square().sum(), [u0, *params])

    for alg in (pyode.Tsit5(), pyode.Rodas5P()):
        ref = grads(pyode.DirectAdjoint(), alg)
        for k in (1, 3, 1000):
            assert_same_gradient(grads(pyode.DirectAdjoint(checkpoints=k), alg), ref, msg=f"{alg!r} {k}")


# ---- stiff: Robertson ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.KenCarp4(), pyode.FBDF(), pyode.RadauIIA5(),
                                 pyode.AutoTsit5(pyode.Rosenbrock23())], ids=repr)
def test_stiff_robertson(alg):
    # Jacobians by forward-mode AD (they depend on the rates), reused across steps by KenCarp4 and
    # FBDF (history that crosses segment boundaries), BDF differences, Radau's stage predictor,
    # AutoSwitch's mode and controllers; saved states and dense output both differentiated.
    base = problems.robertson(tspan=(0.0, 10.0))
    ts = torch.logspace(-3, 1, 5, dtype=F64)
    tq = torch.tensor([0.02, 0.5, 7.0], dtype=F64)

    def loss(sa, logk, u0):
        sol = solve(ODEProblem(base.f, u0, base.tspan, logk.exp()), alg, reltol=1e-6, abstol=1e-10, saveat=ts,
                    dense=True, sensealg=sa)
        return (sol.u[:, 1] * 1e4 + sol.u[:, 2]).square().sum() + (sol(tq)[:, 1] * 1e4).sum(), sol.stats

    stats = check_all_k(loss, (base.p.log(), base.u0))
    assert stats.naccept > 20
    if isinstance(alg, pyode.AutoSwitch):
        assert stats.nswitch >= 1      # both methods took part


# ---- discontinuities and failures ---------------------------------------------------------------

@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.KenCarp4()], ids=repr)
def test_tstops_with_a_jump(alg):
    # the rate flips sign at t = 1: the step ending there and the restart after it are recomputed too
    def f(u, p, t):
        return torch.where(t[..., None] < 1.0, p[0], -p[1]) * u

    def loss(sa, u0, p):
        sol = solve(ODEProblem(f, u0, (0.0, 2.0), p), alg, reltol=1e-8, abstol=1e-10, tstops=[1.0],
                    saveat=[0.5, 1.5, 2.0], sensealg=sa)
        return sol.u.sum(), sol.stats

    check_all_k(loss, (torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.7, 1.3], dtype=F64)))


def test_failed_member_with_throw_false():
    # u' = p u² blows up at t = 1/(p u0): the second member fails at t = 0.5, after ~150 accepted
    # and ~150 rejected steps (non-finite trial steps among them)
    f = lambda u, p, t: p * u * u  # noqa: E731

    def loss(sa, u0, p):
        sol = solve(ODEProblem(f, u0, (0.0, 1.0), p), pyode.Tsit5(), reltol=1e-6, abstol=1e-8,
                    saveat=[0.25, 1.0], throw=False, sensealg=sa)
        assert sol.retcode[0] == ReturnCode.Success and sol.retcode[1] != ReturnCode.Success
        return sol.u[:, 0].sum() + sol.u[0, 1].sum(), sol.stats

    ref, _ = gradients(loss, (torch.tensor([[0.5], [2.0]], dtype=F64), torch.tensor(1.0, dtype=F64)),
                       pyode.DirectAdjoint())
    assert all(bool(torch.isfinite(g).all()) for g in ref)
    stats = check_all_k(loss, (torch.tensor([[0.5], [2.0]], dtype=F64), torch.tensor(1.0, dtype=F64)))
    assert stats.naccept[1] > 100 and stats.nreject[1] > 100


# ---- what is and is not differentiated ----------------------------------------------------------

def test_only_u0_and_p_are_differentiated():
    # documented: a tensor f captures from outside p gets no gradient with checkpoints
    base = problems.lotka_volterra(tspan=(0.0, 2.0))
    outside = torch.tensor(1.0, dtype=F64, requires_grad=True)
    p = base.p.clone().requires_grad_()
    prob = ODEProblem(lambda u, q, t: outside * base.f(u, q, t), base.u0, base.tspan, p)
    sol = solve(prob, pyode.Tsit5(), saveat=[1.0, 2.0], sensealg=pyode.DirectAdjoint(checkpoints=2))
    g_p, g_out = torch.autograd.grad(sol.u.sum(), (p, outside), allow_unused=True)
    assert g_out is None and bool((g_p != 0).all())
    # nothing to differentiate: an ordinary solve without a graph
    sol = solve(ODEProblem(base.f, base.u0, base.tspan, base.p), sensealg=pyode.DirectAdjoint(checkpoints=2))
    assert not sol.u.requires_grad


def test_a_nondeterministic_f_is_reported():
    # f that changes between calls: the recomputed steps differ from the forward solve's
    calls = [0]

    def f(u, p, t):
        calls[0] += 1
        return -p * u * (1.0 + 0.05 * (calls[0] % 5))

    p = torch.tensor(2.0, dtype=F64, requires_grad=True)
    sol = solve(ODEProblem(f, torch.tensor([1.0], dtype=F64), (0.0, 3.0), p), pyode.Tsit5(), saveat=[3.0],
                sensealg=pyode.DirectAdjoint(checkpoints=3))
    with pytest.raises(RuntimeError, match="recomputed steps that differ"):
        torch.autograd.grad(sol.u.sum(), p)


# ---- memory --------------------------------------------------------------------------------------

class SavedBytes:
    """Bytes of the tensors autograd holds for the backward pass: those alive now, and the most at once."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, t):
        return _Held(self, t)

    @staticmethod
    def unpack(held):
        return held.t


class _Held:
    def __init__(self, meter, t):
        self.meter, self.t, self.n = meter, t, t.numel() * t.element_size()
        meter.live += self.n
        meter.peak = max(meter.peak, meter.live)

    def __del__(self):
        self.meter.live -= self.n


def test_saved_memory_is_bounded_with_checkpoints():
    # A neural right-hand side on a batch, fixed steps: 4x the steps.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2)).double()
    u0 = torch.randn(16, 2, dtype=F64)
    K = 8

    def measure(sa, dt):
        meter = SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            sol = solve(ODEProblem(lambda u, p, t: p(u), u0, (0.0, 4.0), net), pyode.Tsit5(), dt=dt, adaptive=False,
                        saveat=[1.0, 2.0, 4.0], sensealg=sa)
            loss = sol.u.square().sum()
            held = meter.live                   # kept from the forward solve for the backward pass
            meter.peak = held
            grads = torch.autograd.grad(loss, list(net.parameters()))
        return held, meter.peak, grads

    plain = {dt: measure(pyode.DirectAdjoint(), dt) for dt in (0.04, 0.01)}           # 100 and 400 steps
    ckpt = {dt: measure(pyode.DirectAdjoint(checkpoints=K), dt) for dt in (0.04, 0.01)}
    for dt in plain:
        assert_same_gradient(ckpt[dt][2], plain[dt][2], msg=f"dt={dt}")
    # measured: plain 11.3 MB -> 45.2 MB; checkpointed 10 kB -> 10 kB (K snapshots of (16, 2) states)
    assert plain[0.01][0] > 3.5 * plain[0.04][0]
    assert ckpt[0.01][0] < 1.5 * ckpt[0.04][0]
    assert ckpt[0.01][0] < 0.01 * plain[0.01][0]
    # Recursive checkpointing: the backward pass holds the graph of at most K loop iterations at a
    # time, whatever the number of steps (measured: 0.46 MB for 100 steps, 0.93 MB for 400 and
    # 0.91 MB for 1600, where one step's graph is 113 kB).
    for dt, steps in ((0.04, 100), (0.01, 400)):
        per_step = plain[dt][0] / steps
        assert ckpt[dt][1] < (K + 1) * per_step, dt


# ---- arguments -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_bad_checkpoints(bad):
    with pytest.raises(ValueError, match=r"checkpoints must be None or a positive integer.*got " + repr(bad).replace(".", r"\.")):
        pyode.DirectAdjoint(checkpoints=bad)


def test_repr():
    assert repr(pyode.DirectAdjoint()) == "DirectAdjoint()"
    assert repr(pyode.DirectAdjoint(checkpoints=4)) == "DirectAdjoint(checkpoints=4)"
