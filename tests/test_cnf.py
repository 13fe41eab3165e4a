"""pyode.nn.CNF: the linear flow's closed-form density, Hutchinson's estimator (unbiased, its probe
fixed per solve and independent per member), torchdiffeq's CNF example reproduced, gradients of every
sensealg against each other and finite differences, samples, RNODE's regularisers, bad input."""
import math

import pytest
import torch

import pyode
from pyode.nn import CNF

F64 = torch.float64
A = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=F64)
T = 1.5


class Linear(torch.nn.Module):
    """``net(z, t) = z Aᵀ``: ``z(t) = exp(A t) z0``, ``tr(∂f/∂z) = tr A``."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(A.clone())

    def forward(self, z, t):
        return z @ self.A.T


def _exact_linear_log_prob(x):
    z0 = x @ torch.linalg.matrix_exp(-A * T).T
    return -0.5 * (z0 * z0).sum(-1) - math.log(2 * math.pi) - T * torch.trace(A)


def _points(n, seed=0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_linear_flow_log_prob_is_the_closed_form():
    flow = CNF(Linear(), (0.0, T), reltol=1e-11, abstol=1e-12)
    x = _points(16)
    with torch.no_grad():
        err = (flow.log_prob(x) - _exact_linear_log_prob(x)).abs().max()
    assert float(err) < 1e-8, float(err)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_one_probe_per_member(noise):
    exact = float(_exact_linear_log_prob(_points(1))[0])
    flow = CNF(Linear(), (0.0, T), trace="hutchinson", noise=noise, reltol=1e-8, abstol=1e-10)
    n = 4000
    x = _points(1).expand(n, 2).contiguous()          # one point, n independent probes
    with torch.no_grad():
        est = flow.log_prob(x, generator=torch.Generator().manual_seed(3))
        again = flow.log_prob(x, generator=torch.Generator().manual_seed(3))
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)
    assert float(est.std()) > 0.05                    # members' probes differ
    assert torch.equal(est, again)                    # a generator fixes them


class HyperNetwork(torch.nn.Module):
    """torchdiffeq's examples/cnf.py dynamics: a network of t gives, per hidden unit, W (d), U (d,
    gated by a sigmoid) and B; ``dz/dt = mean_units tanh(z W + B) U``."""

    def __init__(self, d=2, hidden=32, width=64, seed=5):
        super().__init__()
        torch.manual_seed(seed)
        self.d, self.width = d, width
        self.fc1 = torch.nn.Linear(1, hidden, dtype=F64)
        self.fc2 = torch.nn.Linear(hidden, hidden, dtype=F64)
        self.fc3 = torch.nn.Linear(hidden, 3 * width * d + width, dtype=F64)

    def params(self, t):
        p = self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(t.reshape(-1, 1))))))
        n = self.width * self.d
        W = p[:, :n].reshape(-1, self.width, self.d)
        U = p[:, n:2 * n].reshape(-1, self.width, self.d) * torch.sigmoid(p[:, 2 * n:3 * n].reshape(-1, self.width, self.d))
        B = p[:, 3 * n:]
        return W, B, U

    def forward(self, z, t):                                # pyode's net(z, t), t per member
        W, B, U = self.params(t)
        h = torch.tanh((z[:, None, :] * W).sum(-1) + B)     # (B, width)
        return (h[..., None] * U).mean(1)


class TorchdiffeqCNF(torch.nn.Module):
    """The same dynamics in torchdiffeq's form: state (z, log p difference), exact trace by autograd."""

    def __init__(self, hyper):
        super().__init__()
        self.hyper = hyper

    def forward(self, t, states):
        z = states[0]
        with torch.enable_grad():
            z = z.requires_grad_(True)
            dz = self.hyper(z, t.reshape(1).expand(z.shape[0]))
            tr = sum(torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(z.shape[1]))
        return dz, -tr.reshape(-1, 1)


def test_torchdiffeq_cnf_example_log_prob_is_reproduced():
    torchdiffeq = pytest.importorskip("torchdiffeq", reason="the reference is torchdiffeq's odeint")
    hyper = HyperNetwork()
    base = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=F64), 0.1 * torch.eye(2, dtype=F64))
    x = 0.7 * _points(32, seed=9)
    z, dlogp = torchdiffeq.odeint(TorchdiffeqCNF(hyper), (x, torch.zeros(32, 1, dtype=F64)),
                                  torch.tensor([10.0, 0.0], dtype=F64), rtol=1e-10, atol=1e-10, method="dopri5")
    reference = (base.log_prob(z[-1]) - dlogp[-1, :, 0]).detach()
    flow = CNF(hyper, (0.0, 10.0), base=base, reltol=1e-10, abstol=1e-10)
    with torch.no_grad():
        mine = flow.log_prob(x)
    assert float((mine - reference).abs().max()) < 1e-6


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.w = torch.nn.Parameter(0.6 * torch.randn(3, 8, generator=g, dtype=F64))
        self.u = torch.nn.Parameter(0.6 * torch.randn(8, 2, generator=g, dtype=F64))

    def forward(self, z, t):
        return torch.tanh(torch.cat([z, t[..., None]], -1) @ self.w) @ self.u


SENSEALGS = [pyode.DirectAdjoint(), pyode.BacksolveAdjoint(), pyode.InterpolatingAdjoint(), pyode.GaussAdjoint(),
             pyode.QuadratureAdjoint()]


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_every_sensealg_gives_the_same_gradient(trace):
    net = Small()
    x = _points(6, seed=4)
    grads = []
    for alg in SENSEALGS:
        flow = CNF(net, (0.0, 1.0), trace=trace, sensealg=alg, reltol=1e-9, abstol=1e-10)
        loss = -flow.log_prob(x, generator=torch.Generator().manual_seed(8)).mean()
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))]))
    for name, g in zip(SENSEALGS, grads[1:]):
        assert float((g - grads[0]).abs().max()) <= 1e-6 * float(grads[0].abs().max()), type(name).__name__
    # and finite differences of the loss in one weight
    flow = CNF(net, (0.0, 1.0), trace=trace, reltol=1e-10, abstol=1e-11)
    h = 1e-5
    with torch.no_grad():
        vals = []
        for s in (1, -1):
            net.w[1, 2] += s * h
            vals.append(float(-flow.log_prob(x, generator=torch.Generator().manual_seed(8)).mean()))
            net.w[1, 2] -= s * h
    fd = (vals[0] - vals[1]) / (2 * h)
    assert abs(float(grads[0][1 * 8 + 2]) - fd) <= 1e-6 * max(1.0, abs(fd))


def test_samples_are_the_flow_of_base_draws():
    flow = CNF(Linear(), (0.0, T), reltol=1e-11, abstol=1e-12)
    with torch.no_grad():
        x = flow.sample(5, dim=2, generator=torch.Generator().manual_seed(6), dtype=F64)
    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    assert torch.allclose(x, z0 @ torch.linalg.matrix_exp(A * T).T, rtol=1e-9, atol=1e-10)


def test_rnode_regularisers_of_the_linear_flow():
    """∫|f|² dt by the trapezoid rule on the closed-form path; ∫|∂f/∂z|²_F dt = T |A|²_F."""
    x = _points(4, seed=2)
    flow = CNF(Linear(), (0.0, T), kinetic=0.7, jacobian=0.2, reltol=1e-11, abstol=1e-12)
    with torch.no_grad():
        logp, reg = flow.log_prob_and_regularization(x)
    ts = torch.linspace(0.0, T, 20001, dtype=F64)
    z0 = x @ torch.linalg.matrix_exp(-A * T).T
    path = torch.stack([z0 @ torch.linalg.matrix_exp(A * t).T for t in ts])            # (N, B, 2)
    speed2 = ((path @ A.T) ** 2).sum(-1)
    kinetic = torch.trapezoid(speed2, ts, dim=0)
    expected = 0.7 * kinetic + 0.2 * T * (A * A).sum()
    assert torch.allclose(reg, expected, rtol=1e-7)
    assert torch.allclose(logp, _exact_linear_log_prob(x), atol=1e-8)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="trace='diag'; choose 'exact' or 'hutchinson'"):
        CNF(Linear(), trace="diag")
    with pytest.raises(ValueError, match="noise='uniform'"):
        CNF(Linear(), trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match=r"tspan must be \(t0, t1\) with t0 < t1"):
        CNF(Linear(), (1.0, 0.0))
    with pytest.raises(ValueError, match="kinetic must be a non-negative number"):
        CNF(Linear(), kinetic=-1.0)
    with pytest.raises(TypeError, match=r"unknown solve keyword\(s\) \['rtol'\]"):
        CNF(Linear(), rtol=1e-3)
    with pytest.raises(ValueError, match=r"x must be a floating tensor of shape \(batch, d\); got \(2,\)"):
        CNF(Linear()).log_prob(torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="needs the dimension"):
        CNF(Linear()).sample(3)
