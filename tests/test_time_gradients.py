"""Gradients with respect to the times (``tspan`` entries and ``saveat`` tensors that require grad):
against central differences of the loss, for every sensealg, one problem and a batch."""
import pytest
import torch

import pyode
from pyode import ODEProblem, solve

from test_gradients import central_difference

F64 = torch.float64
SENSEALGS = [pyode.DirectAdjoint(), pyode.DirectAdjoint(checkpoints=3), pyode.ForwardSensitivity(),
             pyode.InterpolatingAdjoint(), pyode.GaussAdjoint(), pyode.QuadratureAdjoint(),
             pyode.BacksolveAdjoint()]
SAVEAT = [0.5, 1.0, 1.7]


def rhs(u, p, t):
    # non-autonomous, so that moving t0 is not the same as moving every saved time back
    return -p * u + torch.sin(3 * t)[..., None] * u.flip(-1)


def loss(t0, t1, saveat, mode, sensealg, alg=None, batch=False, tol=1e-10):
    u0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]] if batch else [1.0, 2.0], dtype=F64)
    prob = ODEProblem(rhs, u0, (t0, t1), torch.tensor(0.7, dtype=F64))
    kw = {"tensor": {"saveat": saveat}, "every": {"saveat": 0.5}, "steps": {}}[mode]
    sol = solve(prob, alg or pyode.Tsit5(), reltol=tol, abstol=tol * 1e-2, sensealg=sensealg, **kw)
    weights = torch.linspace(1.0, 2.0, sol.u.shape[0], dtype=F64).reshape(-1, *[1] * (sol.u.ndim - 1))
    u = sol.u[[0, -1]] if mode == "steps" else sol.u     # a solver's own step grid has no fixed size
    w = weights[[0, -1]] if mode == "steps" else weights
    return (w * u.square()).sum()


def time_gradients(mode, sensealg, **kw):
    t0 = torch.tensor(0.3, dtype=F64, requires_grad=True)
    t1 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    s = torch.tensor(SAVEAT, dtype=F64, requires_grad=True)
    loss(t0, t1, s, mode, sensealg, **kw).backward()
    return t0.grad, t1.grad, s.grad


def fd_gradients(mode, sensealg, **kw):
    def at(x):
        return float(loss(float(x[0]), float(x[1]), x[2:].clone(), mode, sensealg, **kw))
    x = torch.tensor([0.3, 2.0, *SAVEAT], dtype=F64)
    return central_difference(at, x, eps=1e-6)


_FD = {}


@pytest.mark.parametrize("sensealg", SENSEALGS, ids=repr)
@pytest.mark.parametrize("mode", ["tensor", "every", "steps"])
def test_time_gradients_match_finite_differences(sensealg, mode):
    g0, g1, gs = time_gradients(mode, sensealg)
    if mode not in _FD:     # the loss's values do not depend on the sensealg
        with torch.no_grad():
            _FD[mode] = fd_gradients(mode, pyode.DirectAdjoint())
    fd = _FD[mode]
    torch.testing.assert_close(g0, fd[0], rtol=1e-6, atol=1e-7)
    if mode == "tensor":
        # saved states at given times do not depend on t1
        assert g1 is None or float(g1) == 0.0
        assert float(fd[1]) == pytest.approx(0.0, abs=1e-7)
        torch.testing.assert_close(gs, fd[2:], rtol=1e-6, atol=1e-7)
    else:
        torch.testing.assert_close(g1, fd[1], rtol=1e-6, atol=1e-7)
        assert gs is None       # saveat was not used


@pytest.fixture(scope="module")
def batch_reference():
    # central differences of a tight explicit solve: the gradient of the exact solution
    return fd_gradients("tensor", pyode.DirectAdjoint(), batch=True, tol=1e-12)


@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.KenCarp4(), pyode.FBDF()], ids=repr)
def test_stiff_algorithms_and_a_batch(alg, batch_reference):
    g = time_gradients("tensor", pyode.DirectAdjoint(), alg=alg, batch=True, tol=1e-8)
    # to the solver's tolerance (measured 4e-8 Rodas5P, 6e-7 KenCarp4, 2e-6 FBDF relative)
    torch.testing.assert_close(g[0], batch_reference[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g[2], batch_reference[2:], rtol=1e-4, atol=1e-6)


def test_sol_t_carries_the_times_and_a_float32_saveat():
    s = torch.tensor([0.25, 0.5], dtype=torch.float32, requires_grad=True)
    prob = ODEProblem(lambda u, p, t: -u, torch.ones(1, dtype=F64), (0.0, 1.0))
    sol = solve(prob, pyode.Tsit5(), saveat=s, reltol=1e-10, abstol=1e-12)
    assert sol.t.requires_grad
    (g,) = torch.autograd.grad(sol.u.sum() + sol.t.sum(), s)
    assert g.dtype == torch.float32
    # d/dτ e^{-τ} = -e^{-τ}, plus 1 from sol.t
    torch.testing.assert_close(g, (1 - torch.exp(-s.detach().double())).float(), rtol=1e-6, atol=1e-7)


def test_times_without_grad_change_nothing():
    prob = ODEProblem(lambda u, p, t: -u, torch.ones(1, dtype=F64, requires_grad=True), (0.0, 1.0))
    sol = solve(prob, pyode.Tsit5(), saveat=[0.5, 1.0])
    assert not sol.t.requires_grad
    with torch.no_grad():
        t0 = torch.tensor(0.0, dtype=F64, requires_grad=True)
        sol = solve(prob.remake(tspan=(t0, 1.0)), pyode.Tsit5())
    assert not sol.u.requires_grad


def test_remake_keeps_time_leaves():
    t1 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    prob = ODEProblem(lambda u, p, t: -u, torch.ones(1, dtype=F64), (0.0, t1))
    assert prob.tspan == (0.0, 1.0)
    assert prob.remake(u0=torch.full((1,), 2.0, dtype=F64)).time_leaves[1] is t1
    sol = solve(prob.remake(u0=torch.full((1,), 2.0, dtype=F64)), pyode.Tsit5(), reltol=1e-10, abstol=1e-12)
    (g,) = torch.autograd.grad(sol.u[-1].sum(), t1)
    torch.testing.assert_close(g, torch.tensor(-2 * torch.exp(torch.tensor(-1.0)).item(), dtype=F64))


def test_forward_sensitivity_of_u0_alone():
    # no parameter requires grad: the sensitivities are those of u0 only
    u0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    prob = ODEProblem(lambda u, p, t: -p * u, u0, (0.0, 1.0), torch.tensor(0.7, dtype=F64))
    sol = solve(prob, pyode.Tsit5(), saveat=[0.5, 1.0], sensealg=pyode.ForwardSensitivity(), reltol=1e-10,
                abstol=1e-12)
    (g,) = torch.autograd.grad(sol.u.sum(), u0)
    expected = torch.exp(torch.tensor(-0.35, dtype=F64)) + torch.exp(torch.tensor(-0.7, dtype=F64))
    torch.testing.assert_close(g, expected.expand(2))
