"""The BDF/NDF loop of one problem with its control in Python numbers (``_bdf_scalar``) against the
reference loop (``BDFStepper`` in ``Loop``): the same steps, rejections, evaluation counts, return
codes, values and gradients, with saveat, every step saved, dense output, events, a mass matrix,
float32 and failures."""
import math

import pytest
import torch

import pyode
import pyode.native._bdf_scalar as bdf_scalar
from pyode import ODEProblem, ReturnCode
from pyode.problems import hires, robertson, van_der_pol

F64 = torch.float64
ALGS = [pyode.FBDF(), pyode.QNDF()]
by_alg = pytest.mark.parametrize("alg", ALGS, ids=["FBDF", "QNDF"])


@pytest.fixture
def loops(monkeypatch):
    """``run(make)``: ``make()`` on the scalar loop, then on the reference loop; checks which ran."""
    taken = []
    real, applies = bdf_scalar.ScalarBDFLoop.adopt, bdf_scalar.scalar_bdf_applies

    def spy(loop):
        taken.append(loop.B)
        return real(loop)

    def run(make):
        out = []
        for scalar in (True, False):
            monkeypatch.setattr(bdf_scalar.ScalarBDFLoop, "adopt", staticmethod(spy))
            monkeypatch.setattr(bdf_scalar, "scalar_bdf_applies",
                                applies if scalar else (lambda loop: False))
            taken.clear()
            out.append(make())
            assert bool(taken) == scalar
        return out
    return run


def _same_stats(a, b):
    for name in ("naccept", "nreject", "nf", "njac", "nlu", "nsolve"):
        assert int(getattr(a.stats, name)) == int(getattr(b.stats, name)), (name, a.stats, b.stats)
    assert a.retcode is b.retcode


@by_alg
@pytest.mark.parametrize("save", ["saveat", "steps", "dense"])
def test_robertson_and_hires_take_the_reference_loops_steps(loops, alg, save):
    for prob, tol in ((robertson(tspan=(0.0, 1e5)), (1e-6, 1e-10)), (hires(), (1e-6, 1e-8))):
        t1 = prob.tspan[1]
        ts = torch.linspace(0.0, t1, 9, dtype=F64)[1:]
        kw = {"saveat": ts} if save == "saveat" else ({"dense": True} if save == "dense" else {})
        scalar, ref = loops(lambda: pyode.solve(prob, alg, reltol=tol[0], abstol=tol[1], **kw))
        _same_stats(scalar, ref)
        torch.testing.assert_close(scalar.t, ref.t, rtol=1e-12, atol=0)
        torch.testing.assert_close(scalar.u, ref.u, rtol=1e-10, atol=1e-14)
        if save == "dense":
            torch.testing.assert_close(scalar(ts), ref(ts), rtol=1e-10, atol=1e-14)


def test_van_der_pol_backwards_in_time_in_float32_and_at_order_two(loops):
    vdp = van_der_pol(mu=20.0, tspan=(0.0, 40.0))
    back = ODEProblem(lambda u, p, t: -u + torch.sin(t)[..., None], torch.tensor([0.3], dtype=F64), (2.0, 0.0))
    for prob, tol in ((vdp, 1e-6), (back, 1e-6), (van_der_pol(mu=20.0, tspan=(0.0, 40.0), dtype=torch.float32), 1e-4)):
        scalar, ref = loops(lambda: pyode.solve(prob, pyode.FBDF(), reltol=tol, abstol=tol, saveat=[prob.tspan[1]],
                                                throw=False))
        _same_stats(scalar, ref)
        assert scalar.u.dtype == prob.u0.dtype
        torch.testing.assert_close(scalar.u, ref.u, rtol=1e-9 if prob.u0.dtype == F64 else 1e-4, atol=1e-12)
    scalar, ref = loops(lambda: pyode.solve(vdp, pyode.FBDF(max_order=2), reltol=1e-6, abstol=1e-6))
    _same_stats(scalar, ref)
    torch.testing.assert_close(scalar.u, ref.u, rtol=1e-10, atol=1e-12)


def test_gradients_through_the_steps_equal_the_reference_loops(loops):
    rob = robertson(tspan=(0.0, 1e3))

    def make():
        k = rob.p.clone().requires_grad_()
        u0 = rob.u0.clone().requires_grad_()
        prob = ODEProblem(rob.f, u0, rob.tspan, k, jac=rob.jac)
        sol = pyode.solve(prob, pyode.FBDF(), reltol=1e-7, abstol=1e-11, saveat=torch.logspace(-3, 3, 7, dtype=F64))
        (sol.u[:, 1] * 1e4 + sol.u[:, 2]).sum().backward()
        return sol, k.grad, u0.grad

    (s1, gk1, gu1), (s2, gk2, gu2) = loops(make)
    _same_stats(s1, s2)
    torch.testing.assert_close(gk1, gk2, rtol=1e-9, atol=0)
    torch.testing.assert_close(gu1, gu2, rtol=1e-9, atol=1e-12)


def test_a_terminating_event_and_a_bouncing_ball(loops):
    # u'' = -9.81 with a bounce (restitution 0.8) at u = 0: the state jumps and BDF restarts at
    # order 1 there; the event times are exact (t_k from the closed form) to the tolerance.
    def fall(u, p, t):
        return torch.stack([u[..., 1], torch.full_like(u[..., 1], -9.81)], -1)

    bounce = pyode.ContinuousCallback(lambda u, p, t: u[..., 0],
                                      lambda u, p, t: torch.stack([u[..., 0], -0.8 * u[..., 1]], -1))
    prob = ODEProblem(fall, torch.tensor([1.0, 0.0], dtype=F64), (0.0, 2.0))
    scalar, ref = loops(lambda: pyode.solve(prob, pyode.FBDF(), reltol=1e-8, abstol=1e-10, callback=bounce,
                                            saveat=torch.linspace(0.0, 2.0, 21, dtype=F64)))
    _same_stats(scalar, ref)
    torch.testing.assert_close(scalar.u, ref.u, rtol=1e-10, atol=1e-12)
    t_first = math.sqrt(2 / 9.81)
    t_ev = scalar.t_events[0] if isinstance(scalar.t_events, list) else scalar.t_events
    assert float(torch.as_tensor(t_ev).reshape(-1)[0]) == pytest.approx(t_first, rel=1e-7)

    stop = pyode.ContinuousCallback(lambda u, p, t: u[..., 0] - 0.5, terminate=True)
    scalar, ref = loops(lambda: pyode.solve(prob, pyode.FBDF(), reltol=1e-8, abstol=1e-10, callback=stop))
    _same_stats(scalar, ref)
    assert scalar.retcode is ReturnCode.Terminated
    assert float(scalar.t[-1]) == pytest.approx(math.sqrt(1 / 9.81), rel=1e-7)
    torch.testing.assert_close(scalar.u, ref.u, rtol=1e-10, atol=1e-12)


def test_a_mass_matrix_dae(loops):
    k = (0.04, 3e7, 1e4)

    def dae(u, p, t):
        y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3,
                            y1 + y2 + y3 - 1], -1)

    prob = ODEProblem(dae, torch.tensor([1.0, 0.0, 0.0], dtype=F64), (0.0, 1e4),
                      mass_matrix=torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=F64)))
    scalar, ref = loops(lambda: pyode.solve(prob, pyode.FBDF(), reltol=1e-6, abstol=1e-10, saveat=[1.0, 1e4]))
    _same_stats(scalar, ref)
    torch.testing.assert_close(scalar.u, ref.u, rtol=1e-10, atol=1e-14)


def test_failures_end_with_the_reference_loops_return_codes(loops):
    rob = robertson(tspan=(0.0, 1e5))
    scalar, ref = loops(lambda: pyode.solve(rob, pyode.FBDF(), maxiters=50, throw=False))
    assert scalar.retcode is ReturnCode.MaxIters
    _same_stats(scalar, ref)
    nan_jac = rob.remake(jac=lambda u, p, t: torch.full((*u.shape, 3), float("nan"), dtype=u.dtype))
    scalar, ref = loops(lambda: pyode.solve(nan_jac, pyode.FBDF(), throw=False))
    assert scalar.retcode is not ReturnCode.Success
    _same_stats(scalar, ref)
    blow_up = ODEProblem(lambda u, p, t: u ** 2, torch.tensor([1.0], dtype=F64), (0.0, 2.0))
    scalar, ref = loops(lambda: pyode.solve(blow_up, pyode.FBDF(), throw=False))
    assert scalar.retcode is not ReturnCode.Success
    _same_stats(scalar, ref)
    assert float(scalar.t[-1]) == pytest.approx(float(ref.t[-1]), rel=1e-10)


def test_batches_and_tstops_keep_the_reference_loop(monkeypatch):
    taken = []
    monkeypatch.setattr(bdf_scalar.ScalarBDFLoop, "adopt", staticmethod(lambda loop: taken.append(loop) or loop))
    rob = robertson(tspan=(0.0, 1e2))
    pyode.solve(rob, pyode.FBDF(), reltol=1e-6, abstol=1e-10, progress=True)
    assert len(taken) == 1                          # one problem on the CPU: the scalar loop
    batch = rob.remake(u0=rob.u0.repeat(2, 1))
    for kw, prob in (({}, batch), ({"tstops": [1.0]}, rob)):
        pyode.solve(prob, pyode.FBDF(), reltol=1e-6, abstol=1e-10, **kw)
    assert len(taken) == 1
