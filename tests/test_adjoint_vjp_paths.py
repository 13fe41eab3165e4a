"""The continuous adjoints' products ``Jᵀλ`` and ``(∂f/∂θ)ᵀλ`` by each route: the problem's ``jac``,
one reverse pass through ``f`` (a single member), ``vmap`` over members (a batch). Each route must
give DirectAdjoint's gradient. The batch of two also covers the dense output past a member's last
step (the adjoint's finite-difference time derivative at ``t1``): it used to read a padding row of
the member that took more steps, and the adjoint stopped with DtLessThanMin."""
import pytest
import torch

import pyode
from pyode.problems import robertson

BASE = robertson()
K = (0.04, 3e7, 1e4)
TS = torch.logspace(-3, 2, 6, dtype=torch.float64)


def _rhs(u, logk, t):
    return BASE.f(u, torch.exp(logk), t)


class _CountingJac:
    def __init__(self):
        self.calls = 0

    def __call__(self, u, logk, t):
        self.calls += 1
        return BASE.jac(u, torch.exp(logk), t)


def _grad(sensealg, jac, batch):
    logk = torch.log(torch.tensor(K, dtype=torch.float64)).requires_grad_()
    u0 = BASE.u0 if batch == 1 else torch.stack([BASE.u0, torch.tensor([0.9, 0.0, 0.1], dtype=torch.float64)])
    prob = pyode.ODEProblem(_rhs, u0, (0.0, 100.0), logk, jac=jac)
    sol = pyode.solve(prob, pyode.Rodas5P(), reltol=1e-8, abstol=1e-12, saveat=TS, sensealg=sensealg)
    (sol.u[..., 1] * 1e4 + sol.u[..., 0]).sum().backward()
    return logk.grad


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("sensealg", [pyode.GaussAdjoint(), pyode.InterpolatingAdjoint()], ids=["Gauss", "Interpolating"])
def test_every_product_route_gives_the_direct_gradient(sensealg, batch):
    direct = _grad(pyode.DirectAdjoint(), None, batch)
    counting = _CountingJac()
    with_jac = _grad(sensealg, counting, batch)
    without_jac = _grad(sensealg, None, batch)
    assert counting.calls > 0
    for g in (with_jac, without_jac):
        assert torch.allclose(g, direct, rtol=1e-5, atol=0), (g, direct)
    # the two routes integrate the same adjoint: they agree far more closely than with Direct
    assert torch.allclose(with_jac, without_jac, rtol=1e-7, atol=0), (with_jac, without_jac)


def test_gauss_quadrature_falls_back_node_by_node_for_an_f_vmap_cannot_run():
    calls = {"item": 0}

    def f(u, p, t):
        # .item() cannot run under vmap: the batched quadrature must fall back, with the same result
        calls["item"] += 1
        return -p * u * (1.0 + 0.0 * float(u.detach().sum().item()))

    def grad(sensealg, func):
        p = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
        prob = pyode.ODEProblem(func, torch.tensor([1.0, 2.0], dtype=torch.float64), (0.0, 2.0), p)
        sol = pyode.solve(prob, pyode.Tsit5(), reltol=1e-9, abstol=1e-11,
                          saveat=torch.linspace(0.5, 2.0, 4, dtype=torch.float64), sensealg=sensealg)
        sol.u.square().sum().backward()
        return p.grad

    plain = grad(pyode.GaussAdjoint(), lambda u, p, t: -p * u)
    fallback = grad(pyode.GaussAdjoint(), f)
    assert calls["item"] > 0
    assert torch.allclose(fallback, plain, rtol=1e-10, atol=0)
    assert torch.allclose(fallback, grad(pyode.DirectAdjoint(), lambda u, p, t: -p * u), rtol=1e-6, atol=0)


def test_one_member_parameter_jacobian_by_rows_equals_jacrev(monkeypatch):
    """``∂f/∂θ`` of one member by a reverse pass per row of ``f`` (small states) against jacrev's
    route, with parameters of several shapes (a matrix, a vector, a scalar that ``f`` ignores)."""
    import pyode.native._adjoint as A

    W = torch.tensor([[0.3, -1.2, 0.5], [0.7, 0.1, -0.4], [-0.2, 0.9, 0.6]], dtype=torch.float64)
    p = {"W": W, "b": torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), "unused": torch.tensor(2.0)}

    def f(u, q, t):
        return torch.tanh(u @ q["W"].T) * (1 + t[..., None]) + q["b"] * u ** 2

    prob = pyode.ODEProblem(f, torch.tensor([0.5, -0.3, 0.8], dtype=torch.float64), (0.0, 1.0),
                            {k: v.clone().requires_grad_() for k, v in p.items()})
    sol = pyode.solve(prob, pyode.Tsit5(), saveat=[1.0], sensealg=pyode.InterpolatingAdjoint())
    captured = []
    real = A.AdjointSystem.backward

    def grab(self, grad_u):
        captured.append(self)
        return real(self, grad_u)

    monkeypatch.setattr(A.AdjointSystem, "backward", grab)
    sol.u.sum().backward()
    system = captured[0]
    u = torch.tensor([[0.2, 0.4, -0.6]], dtype=torch.float64)
    t = torch.tensor([0.3], dtype=torch.float64)
    rows = system.member_param_jacobian(u, t)
    monkeypatch.setattr(A, "_ROWWISE_MAX_STATES", 0)
    by_jacrev = system.member_param_jacobian(u, t)
    assert rows.shape == by_jacrev.shape == (1, 3, 13)
    torch.testing.assert_close(rows, by_jacrev, rtol=1e-14, atol=1e-15)
    assert bool((rows[0, :, -1] == 0).all()) and float(rows.abs().sum()) > 1.0
