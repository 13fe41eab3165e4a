"""``batch_steps="shared"``: one step size for the whole batch, its error the RMS over the members."""
import pytest
import torch

import pyode
from pyode.problems import lotka_volterra, robertson

ALGS = [pyode.Tsit5(), pyode.DP5(), pyode.Rodas5P(), pyode.KenCarp4(), pyode.RadauIIA5(), pyode.FBDF()]


def _batch(n=5):
    base = lotka_volterra()
    u0 = base.u0 * torch.linspace(0.5, 1.5, n, dtype=torch.float64)[:, None]
    return pyode.ODEProblem(base.f, u0, (0.0, 5.0), base.p)


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: type(a).__name__)
def test_every_member_takes_the_same_steps(alg):
    prob = _batch()
    member = pyode.solve(prob, alg, reltol=1e-6, abstol=1e-8)
    shared = pyode.solve(prob, alg, reltol=1e-6, abstol=1e-8, batch_steps="shared")
    assert (shared.stats.naccept == shared.stats.naccept[0]).all()
    assert (shared.stats.nreject == shared.stats.nreject[0]).all()
    assert len(set(member.stats.naccept.tolist())) > 1          # the members differ on their own
    # Accuracy: the error test holds on average over the batch, so close to the per-member solve.
    assert torch.allclose(shared.u[-1], member.u[-1], rtol=1e-4, atol=1e-6)


def test_copies_of_one_problem_step_as_the_problem_alone():
    base = lotka_volterra()
    # A shared batch defaults to integral control (torchdiffeq's): the problem alone is given it too.
    one = pyode.solve(pyode.ODEProblem(base.f, base.u0, (0.0, 5.0), base.p), pyode.Tsit5(), reltol=1e-6, abstol=1e-8,
                      controller=pyode.IController())
    three = pyode.solve(pyode.ODEProblem(base.f, base.u0.expand(3, -1).clone(), (0.0, 5.0), base.p), pyode.Tsit5(),
                        reltol=1e-6, abstol=1e-8, batch_steps="shared")
    # RMS over identical members is each member's error (up to the rounding of sqrt(mean(e²))): the
    # same starting step, steps and values.
    assert int(three.stats.naccept[0]) == int(one.stats.naccept)
    assert torch.allclose(three.u[-1], one.u[-1].expand(3, -1), rtol=1e-12, atol=0)


def test_shared_batch_starts_and_steps_as_torchdiffeq():
    # torchdiffeq takes the starting step's norms over the whole tensor and controls the step with
    # integral control: on a batch whose members start apart, the shared batch's starting step is
    # Hairer's on the whole-batch norms (not the smallest member's), and no PI ramp slows it down.
    from pyode.native._controller import initial_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    u0 = torch.randn(64, 2, dtype=torch.float64)
    f = lambda u, t: net(u)  # noqa: E731
    t0 = torch.zeros(64, dtype=torch.float64)
    with torch.no_grad():
        f0 = net(u0)
        own, _ = initial_step(f, t0, u0, f0, 1.0, 5, 1e-5, 1e-7, torch.tensor(1.0, dtype=torch.float64))
        shared, _ = initial_step(f, t0, u0, f0, 1.0, 5, 1e-5, 1e-7, torch.tensor(1.0, dtype=torch.float64),
                                 shared=torch.ones(64, dtype=torch.bool))
        # the whole-batch formula, written out as torchdiffeq's _select_initial_step computes it
        sk = 1e-7 + 1e-5 * u0.abs()
        rms = lambda x: (x / sk).square().mean().sqrt()  # noqa: E731
        d0, d1 = rms(u0), rms(f0)
        h0 = 0.01 * d0 / d1
        d2 = rms(net(u0 + h0 * f0) - f0) / h0
        h1 = (0.01 / max(d1, d2)) ** (1 / 6)
        expected = min(100 * h0, h1)
    assert torch.allclose(shared, torch.full_like(shared, float(expected)), rtol=1e-12)
    assert float(shared[0]) > float(own.min())
    with torch.no_grad():
        sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: net(u), u0, (0.0, 1.0)), pyode.Tsit5(),
                          reltol=1e-5, abstol=1e-7, batch_steps="shared")
        pi = pyode.solve(pyode.ODEProblem(lambda u, p, t: net(u), u0, (0.0, 1.0)), pyode.Tsit5(),
                         reltol=1e-5, abstol=1e-7, batch_steps="shared", controller=pyode.PIController())
    assert int(sol.stats.naccept[0]) < int(pi.stats.naccept[0])


def test_shared_error_is_the_rms_over_members():
    from pyode.native._controller import shared_error, shared_step

    eest = torch.tensor([0.5, 2.0, 9.0, 1.0], dtype=torch.float64)
    active = torch.tensor([True, True, False, True])
    out = shared_error(eest, active)
    rms = ((0.25 + 4.0 + 1.0) / 3) ** 0.5
    assert torch.allclose(out, torch.tensor([rms, rms, 9.0, rms], dtype=torch.float64))
    h = torch.tensor([0.1, 0.05, 0.001, 0.2], dtype=torch.float64)
    assert torch.equal(shared_step(h, active), torch.tensor([0.05, 0.05, 0.001, 0.05], dtype=torch.float64))
    assert torch.isinf(shared_error(torch.tensor([1.0, float("inf")]), torch.tensor([True, True]))).all()


def test_gradients_match_finite_differences():
    base = lotka_volterra()
    u0 = base.u0 * torch.tensor([[1.0], [1.3]], dtype=torch.float64)
    ts = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)

    def loss(p, steps="shared"):
        sol = pyode.solve(pyode.ODEProblem(base.f, u0, (0.0, 3.0), p), pyode.Tsit5(), reltol=1e-10, abstol=1e-12,
                          saveat=ts, batch_steps=steps)
        return sol.u.square().sum()

    p = base.p.clone().requires_grad_()
    loss(p).backward()
    fd = torch.zeros_like(p)
    for i in range(p.numel()):
        e = torch.zeros_like(p)
        e[i] = 1e-6
        fd[i] = (loss(base.p + e) - loss(base.p - e)) / 2e-6
    assert torch.allclose(p.grad, fd, rtol=1e-5), (p.grad, fd)


def test_a_failing_member_fails_the_batch():
    rob = robertson()
    # The second member's negative start blows up: with shared steps nobody finishes.
    u0 = torch.tensor([[1.0, 0.0, 0.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    prob = pyode.ODEProblem(lambda u, p, t: rob.f(u, p, t) * torch.exp(u.abs()), u0, (0.0, 1e3), rob.p)
    member = pyode.solve(prob, pyode.Tsit5(), throw=False, maxiters=2000)
    shared = pyode.solve(prob, pyode.Tsit5(), throw=False, maxiters=2000, batch_steps="shared")
    assert int(member.retcode[1]) != 0
    assert all(int(c) != 0 for c in shared.retcode)


def test_bad_value_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_steps must be 'member'.*'shared'.*got 'whole'"):
        pyode.solve(_batch(), pyode.Tsit5(), batch_steps="whole")


def test_fused_path_shares_steps_too(monkeypatch):
    monkeypatch.setenv("PYODE_COMPILE", "eager")
    prob = _batch()
    ts = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    fused = pyode.solve(prob, pyode.Tsit5(), reltol=1e-6, abstol=1e-8, saveat=ts, batch_steps="shared")
    monkeypatch.delenv("PYODE_COMPILE")
    ref = pyode.solve(prob, pyode.Tsit5(), reltol=1e-6, abstol=1e-8, saveat=ts, batch_steps="shared")
    assert (fused.stats.naccept == fused.stats.naccept[0]).all()
    assert torch.equal(fused.stats.naccept, ref.stats.naccept)
    assert torch.allclose(fused.u, ref.u, rtol=1e-12, atol=1e-14)


def test_save_points_of_a_batch_moving_as_one_match_the_per_member_recorder(monkeypatch):
    from pyode.native._saving import SaveatRecorder

    base = lotka_volterra()
    u0 = (base.u0 * torch.linspace(0.5, 1.5, 4, dtype=torch.float64)[:, None])
    ts = torch.linspace(0.0, 5.0, 41, dtype=torch.float64)      # several save points inside most steps

    def run():
        p = base.p.clone().requires_grad_()
        sol = pyode.solve(pyode.ODEProblem(base.f, u0, (0.0, 5.0), p), pyode.Tsit5(), reltol=1e-6, abstol=1e-8,
                          saveat=ts, batch_steps="shared", compile=False)     # the reference loop
        sol.u.square().sum().backward()
        return sol.u.detach(), p.grad

    calls = []
    together = SaveatRecorder.record_together
    monkeypatch.setattr(SaveatRecorder, "record_together", lambda self, *a: calls.append(1) or together(self, *a))
    fast_u, fast_g = run()
    assert calls                                          # the batch moved as one: the scalar path ran
    init = SaveatRecorder.__init__

    def per_member(self, *a):
        init(self, *a)
        self.next_together = None

    monkeypatch.setattr(SaveatRecorder, "__init__", per_member)
    calls.clear()
    ref_u, ref_g = run()
    assert not calls
    assert fast_u.shape == (41, 4, 2)
    assert torch.allclose(fast_u, ref_u, rtol=1e-13, atol=1e-14)
    assert torch.allclose(fast_g, ref_g, rtol=1e-12)


def test_julia_engine_refuses_shared_steps_python_side():
    """A test of the Python side only: the refusal comes before anything is sent to Julia."""
    with pytest.raises(ValueError, match="batch_steps='shared' is not supported by backend='julia'"):
        pyode.solve(_batch(), pyode.Tsit5(), backend="julia", batch_steps="shared")
