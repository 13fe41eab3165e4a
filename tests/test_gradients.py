"""Gradients through the solver (autograd through its operations: the discrete solution's gradient)."""
import pytest
import torch

import pyode
from pyode import ODEProblem, solve
from pyode.problems import lotka_volterra


def lv(u, p, t):
    x, y = u[..., 0], u[..., 1]
    return torch.stack([p[..., 0] * x - p[..., 1] * x * y, p[..., 2] * x * y - p[..., 3] * y], -1)


P = (1.5, 1.0, 1.0, 3.0)
TS = (0.5, 1.0, 2.0)


def central_difference(fn, x, eps):
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x).reshape(-1)
        e[i] = eps
        e = e.reshape(x.shape)
        grad.reshape(-1)[i] = (fn(x + e) - fn(x - e)) / (2 * eps)
    return grad


@pytest.mark.parametrize("alg", [pyode.RK4(), pyode.Tsit5(), pyode.Vern7()], ids=repr)
def test_gradcheck_fixed_step(alg):
    # On a fixed grid the computed solution is a smooth function of (u0, p): gradcheck is exact.
    def run(u0, p):
        return solve(ODEProblem(lv, u0, (0.0, 1.0), p), alg, adaptive=False, dt=0.1, saveat=[0.3, 1.0]).u

    u0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    p = torch.tensor(P, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (u0, p))


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.DP5(), pyode.Vern7(), pyode.DP8()], ids=repr)
def test_adaptive_gradients_match_finite_differences(alg):
    # Step sizes are decisions, not differentiated; at tight tolerance the discrete solution's
    # gradient approaches the exact one, which central differences of the solve also approach.
    tol = dict(reltol=1e-11, abstol=1e-13)

    def loss(u0, p):
        sol = solve(ODEProblem(lv, u0, (0.0, 2.0), p), alg, saveat=TS, **tol)
        return (sol.u * torch.tensor([1.0, -0.5], dtype=torch.float64)).square().sum()

    u0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    p = torch.tensor(P, dtype=torch.float64, requires_grad=True)
    g_u0, g_p = torch.autograd.grad(loss(u0, p), (u0, p))
    fd_u0 = central_difference(lambda x: loss(x, p.detach()), u0.detach(), 1e-5)
    fd_p = central_difference(lambda x: loss(u0.detach(), x), p.detach(), 1e-5)
    torch.testing.assert_close(g_u0, fd_u0, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(g_p, fd_p, rtol=1e-6, atol=1e-8)


def test_unused_parameter_gets_exact_zero_gradient():
    def f(u, p, t):
        return -p[0] * u + 0.0 * p[1].detach()

    p = torch.tensor([0.7, 3.0], dtype=torch.float64, requires_grad=True)
    sol = solve(ODEProblem(f, torch.ones(2, dtype=torch.float64), (0.0, 1.0), p), saveat=[0.5, 1.0])
    (g,) = torch.autograd.grad(sol.u.sum(), p)
    assert g[1].item() == 0.0
    assert g[0].item() != 0.0


def test_batch_gradient_is_sum_of_member_gradients():
    u0 = torch.tensor([[1.0, 0.5], [0.3, 2.0], [2.0, 2.0]], dtype=torch.float64)
    p = torch.tensor(P, dtype=torch.float64, requires_grad=True)
    sol = solve(ODEProblem(lv, u0, (0.0, 2.0), p), saveat=TS, reltol=1e-8, abstol=1e-10)
    (g_batch,) = torch.autograd.grad(sol.u.square().sum(), p)
    g_sum = torch.zeros_like(p)
    for i in range(3):
        s = solve(ODEProblem(lv, u0[i], (0.0, 2.0), p), saveat=TS, reltol=1e-8, abstol=1e-10)
        g_sum += torch.autograd.grad(s.u.square().sum(), p)[0]
    torch.testing.assert_close(g_batch, g_sum, rtol=1e-10, atol=1e-12)


def test_gradient_through_dense_output_and_module_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    u0 = torch.tensor([0.5, -0.3], dtype=torch.float64)
    prob = ODEProblem(lambda u, p, t: p(u), u0, (0.0, 1.0), net)
    sol = solve(prob, reltol=1e-10, abstol=1e-12)
    loss = sol(torch.tensor([0.25, 0.61])).square().sum()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    w = net[2].bias

    def loss_at(bias):
        with torch.no_grad():
            old = w.clone()
            w.copy_(bias)
            s = solve(prob, reltol=1e-10, abstol=1e-12)
            out = s(torch.tensor([0.25, 0.61])).square().sum()
            w.copy_(old)
        return out

    fd = central_difference(loss_at, w.detach().clone(), 1e-6)
    torch.testing.assert_close(grads[-1], fd, rtol=1e-5, atol=1e-9)


def test_rejected_nan_trial_steps_do_not_poison_batch_gradients():
    # Member 1 (u' = -p sqrt(u)) overshoots below zero on its first trial steps -> NaN, rejected,
    # while member 0 accepts in the same iterations. Its gradient must stay finite and equal the
    # gradient of each member solved alone.
    def f(u, p, t):
        return -p[..., None] * torch.sqrt(u)

    u0 = torch.ones(2, 1, dtype=torch.float64)
    p = torch.tensor([0.01, 1.0], dtype=torch.float64, requires_grad=True)
    sol = solve(ODEProblem(f, u0, (0.0, 1.9), p), dt=1.5, reltol=1e-6, abstol=1e-9, saveat=[1.9])
    assert int(sol.stats.nreject[1]) > 0
    (g,) = torch.autograd.grad(sol.u.sum(), p)
    assert bool(torch.isfinite(g).all()), g
    for i in range(2):
        pi = p.detach()[i].clone().requires_grad_(True)
        s = solve(ODEProblem(f, u0[i], (0.0, 1.9), pi), dt=1.5, reltol=1e-6, abstol=1e-9, saveat=[1.9])
        (gi,) = torch.autograd.grad(s.u.sum(), pi)
        torch.testing.assert_close(g[i], gi, rtol=1e-10, atol=1e-12)
    # exact: u(t) = (1 - p t / 2)^2, du/dp = -t (1 - p t / 2)
    torch.testing.assert_close(g[1], torch.tensor(-1.9 * (1 - 0.95), dtype=torch.float64), rtol=1e-4, atol=0)


def test_float32_gradients_are_float32_and_close_to_float64():
    prob64 = lotka_volterra()
    p32 = prob64.p.float().requires_grad_(True)
    sol = solve(lotka_volterra(dtype=torch.float32).remake(p=p32), saveat=[1.0, 2.0], reltol=1e-6, abstol=1e-8)
    (g32,) = torch.autograd.grad(sol.u.sum(), p32)
    p64 = prob64.p.clone().requires_grad_(True)
    sol64 = solve(prob64.remake(p=p64), saveat=[1.0, 2.0], reltol=1e-10, abstol=1e-12)
    (g64,) = torch.autograd.grad(sol64.u.sum(), p64)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=2e-3, atol=1e-4)
