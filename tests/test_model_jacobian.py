"""Jacobians carried through pyode's model layers, against automatic differentiation; ``tgrad``."""
import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

import pyode
from pyode._model_jacobian import supports, value_and_jacobian
from pyode.nn import Conserving, MassActionNetwork, NeuralODE, PolynomialNetwork, SpeciesScaling, Sum, mlp

f64 = dict(dtype=torch.float64)

ACTIVATIONS = {
    "gelu": nn.GELU(), "gelu-tanh": nn.GELU(approximate="tanh"), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
    "relu": nn.ReLU(), "silu": nn.SiLU(), "softplus": nn.Softplus(beta=2.0, threshold=1.5), "elu": nn.ELU(alpha=0.7),
    "identity": nn.Identity(),
}


def autodiff_jacobian(model, u):
    flat = u.reshape(-1, u.shape[-1])
    return vmap(jacrev(model))(flat).reshape(*u.shape, u.shape[-1])


def network(activation, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), activation, nn.Linear(6, 5), activation, nn.Linear(5, 3)).to(torch.float64)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_sequential_jacobian_matches_autodiff(name):
    net = network(ACTIVATIONS[name])
    u = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), **f64) * 2.0
    assert supports(net)
    y, J = value_and_jacobian(net, u)
    assert torch.equal(y, net(u))
    torch.testing.assert_close(J, autodiff_jacobian(net, u), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["gelu", "tanh", "softplus", "elu"])
def test_jacobian_differentiates_like_autodiff(name):
    """What a gradient through a stiff solve needs: d(w · J)/dθ and d(w · J)/du as autograd's second derivatives."""
    net = network(ACTIVATIONS[name], seed=2)
    u = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), **f64).requires_grad_()
    w = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(4), **f64)
    leaves = list(net.parameters())[:-1] + [u]     # J does not depend on the last bias
    ours = torch.autograd.grad((value_and_jacobian(net, u)[1] * w).sum(), leaves)
    ref = torch.autograd.grad((vmap(jacrev(net))(u) * w).sum(), leaves)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_pyode_layers_match_autodiff():
    torch.manual_seed(0)
    mass = MassActionNetwork(3, 4)
    poly = PolynomialNetwork(3, 3, yscale=torch.tensor([1.0, 1e-4, 2.0]))
    with torch.no_grad():
        poly.coefficients.normal_()
    u = torch.rand(6, 3, **f64)
    u[0, 1] = 0.0                 # below the floor: ln u is clamped, its derivative zero
    u[1, 2] = 1e-40
    models = {
        "SpeciesScaling": SpeciesScaling(mlp(3, 3, width=5, depth=3), torch.tensor([1.0, 1e-4, 2.0]), 1e5),
        # clamped: u's rows straddle the box (inside it and outside on either side)
        "SpeciesScaling clamped": SpeciesScaling(mlp(3, 3, width=5, depth=3), torch.tensor([1.0, 1e-4, 2.0]),
                                                 output_scale=torch.tensor([0.1, 3.0, 2.0]),
                                                 input_range=(0.2, torch.tensor([0.8, 5000.0, 0.25]))),
        "Conserving": Conserving(mlp(3, 3, width=4, activation="tanh"), torch.ones(1, 3)),
        "Sum": Sum(mlp(3, 3, width=4), mass),
        "MassActionNetwork": mass,
        "PolynomialNetwork": poly,
        "Robertson demo model": Conserving(Sum(poly, SpeciesScaling(mlp(3, 3, width=5, depth=6), 1.0, 1e5)),
                                           torch.ones(1, 3)),
    }
    for name, model in models.items():
        assert supports(model), name
        y, J = value_and_jacobian(model, u)
        torch.testing.assert_close(y, model(u), rtol=1e-14, atol=0, msg=name)
        torch.testing.assert_close(J, autodiff_jacobian(model, u), rtol=1e-12, atol=1e-14, msg=name)


def test_reaction_library_and_a_network_correction_match_autodiff():
    from pyode.reactions import ReactionLibrary
    torch.manual_seed(0)
    lib = ReactionLibrary(3, log_k=0.0)
    with torch.no_grad():
        lib.log_k.normal_()
    lib.remove(torch.arange(lib.n_reactions) % 3 == 0)
    hybrid = Conserving(Sum(lib, SpeciesScaling(mlp(3, 3, width=5, depth=2), torch.tensor([1.0, 1e-4, 2.0]), 10.0)),
                        torch.ones(1, 3))
    u = torch.rand(5, 3, **f64) + 1e-3        # positive: at zero the library's floor is not differentiable
    for model in (lib, hybrid):
        assert supports(model)
        y, J = value_and_jacobian(model, u)
        torch.testing.assert_close(y, model(u), rtol=1e-14, atol=0)
        torch.testing.assert_close(J, autodiff_jacobian(model, u), rtol=1e-12, atol=1e-14)


def test_unsupported_models_are_named():
    assert not supports(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    assert not supports(SpeciesScaling(mlp(3, 3), 1.0, time_dependent=True))
    assert not supports(Sum(mlp(3, 3), lambda u, t: -u))
    with pytest.raises(TypeError, match="no analytic Jacobian for LayerNorm"):
        value_and_jacobian(nn.LayerNorm(3).to(torch.float64), torch.ones(3, **f64))


def kim_network(seed=0):
    torch.manual_seed(seed)
    return SpeciesScaling(mlp(3, 3, width=5, depth=6, activation="gelu"), torch.tensor([1.0, 4e-5, 1.0]), 1e5)


def test_neural_ode_hands_stiff_methods_its_jacobian():
    """The NeuralODE of an autonomous pyode model carries jac and tgrad; the solve and its gradient
    are those of the automatic-differentiation Jacobian (the same steps, values to rounding)."""
    net = kim_network()
    ts = torch.logspace(-5, 5, 12, **f64)
    node = NeuralODE(net, (1e-5, 1e5), pyode.Rodas5P(), saveat=ts, reltol=1e-6, abstol=1e-10)
    u0 = torch.tensor([1.0, 0.0, 0.0], **f64)
    prob = node.problem(u0)
    assert prob.jac is not None and prob.tgrad is not None
    assert NeuralODE(net, (0.0, 1.0), time_dependent=True).problem(u0).jac is None

    results = []
    for p in (prob, prob.remake(jac=None, tgrad=None)):
        net.zero_grad()
        sol = pyode.solve(p, pyode.Rodas5P(), saveat=ts, reltol=1e-6, abstol=1e-10)
        sol.u.square().sum().backward()
        results.append((sol.u.detach(), sol.stats.naccept, [q.grad.clone() for q in net.parameters()]))
    (u_a, n_a, g_a), (u_b, n_b, g_b) = results
    assert int(n_a) == int(n_b)
    torch.testing.assert_close(u_a, u_b, rtol=1e-10, atol=1e-14)
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def forced_decay():
    def f(u, p, t):
        return -p * u + torch.sin(t)[..., None]

    def jac(u, p, t):
        return (-p * torch.eye(u.shape[-1], **f64)).expand(*u.shape, u.shape[-1])

    return f, jac


def test_tgrad_is_used_by_rosenbrock_methods():
    """∂f/∂t from tgrad: the right one gives automatic differentiation's solution, a wrong one another."""
    f, jac = forced_decay()
    p = torch.tensor(50.0, **f64)
    base = pyode.ODEProblem(f, torch.ones(2, **f64), (0.0, 3.0), p, jac=jac)
    right = base.remake(tgrad=lambda u, p, t: torch.cos(t)[..., None].expand(u.shape))
    wrong = base.remake(tgrad=lambda u, p, t: torch.zeros_like(u))
    kw = dict(reltol=1e-8, abstol=1e-10, dtmax=0.05, saveat=[3.0])
    u_ad = pyode.solve(base, pyode.Rodas4(), **kw).u[-1]
    torch.testing.assert_close(pyode.solve(right, pyode.Rodas4(), **kw).u[-1], u_ad, rtol=1e-12, atol=1e-14)
    assert float((pyode.solve(wrong, pyode.Rodas4(), dt=0.05, adaptive=False, saveat=[3.0]).u[-1]
                  - pyode.solve(right, pyode.Rodas4(), dt=0.05, adaptive=False, saveat=[3.0]).u[-1]).abs().max()) > 1e-6


def test_bad_tgrad_is_named():
    f, jac = forced_decay()
    with pytest.raises(TypeError, match="tgrad must be callable"):
        pyode.ODEProblem(f, torch.ones(2, **f64), (0.0, 1.0), torch.tensor(1.0, **f64), jac=jac, tgrad="dfdt")
    prob = pyode.ODEProblem(f, torch.ones(2, **f64), (0.0, 1.0), torch.tensor(1.0, **f64), jac=jac,
                            tgrad=lambda u, p, t: torch.zeros(3, **f64))
    with pytest.raises(ValueError, match=r"tgrad returned \(3,\) for u of shape \(2,\)"):
        pyode.solve(prob, pyode.Rodas5P())
