"""pyode.nn: neural and hybrid right-hand sides, checked against formulas, exact mechanisms and finite differences."""
import math

import pytest
import torch

import pyode
from pyode import problems, solve
from pyode.nn import (UDE, CompartmentalNetwork, Conserving, MassActionNetwork, NeuralODE, PolynomialNetwork, SpeciesScaling, Sum,
                      mlp)

f64 = dict(dtype=torch.float64)


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """``x`` with ``softplus(x) = y``; zeros map to -50 (softplus(-50) = 2e-22)."""
    y = torch.as_tensor(y, **f64)
    return torch.where(y > 0, y + torch.log(-torch.expm1(-y.clamp(min=1e-300))), torch.full_like(y, -50.0))


def small_net(seed=0, n=2, width=4):
    torch.manual_seed(seed)
    net = mlp(n, n, width=width, depth=1, activation="tanh")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    return net


# ---- NeuralODE ---------------------------------------------------------------------------------

@pytest.mark.parametrize("u0_shape", [(2,), (5, 2), (3, 4, 2)], ids=["single", "batch", "batch2d"])
def test_neural_ode_output_shapes(u0_shape):
    node = NeuralODE(small_net(), (0.0, 1.0), pyode.Tsit5(), saveat=torch.linspace(0, 1, 7, **f64))
    u0 = torch.rand(u0_shape, **f64)
    sol = node(u0)
    assert sol.u.shape == (7, *u0_shape)
    assert sol.t.shape == (7,)
    assert torch.equal(sol.u[0], u0)
    # a forward call overrides the default save times and span
    sol = node(u0, tspan=(0.0, 0.5), saveat=[0.25, 0.5])
    assert sol.u.shape == (2, *u0_shape)


def test_neural_ode_batch_members_match_single_solves():
    node = NeuralODE(small_net(1), (0.0, 1.0), pyode.Tsit5(), saveat=[0.5, 1.0], reltol=1e-10, abstol=1e-12)
    u0 = torch.tensor([[0.1, 0.2], [-0.3, 0.4], [1.0, -1.0]], **f64)
    batch = node(u0).u
    for i in range(3):
        torch.testing.assert_close(batch[:, i], node(u0[i]).u, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("alg,kwargs,rtol", [
    (pyode.RK4(), dict(dt=0.05), 1e-8),                         # fixed grid: the discrete solution is smooth
    (pyode.Tsit5(), dict(reltol=1e-11, abstol=1e-13), 1e-5),    # adaptive: both approach the exact gradient
], ids=["RK4-fixed", "Tsit5-adaptive"])
def test_neural_ode_gradients_match_central_differences(alg, kwargs, rtol):
    net = small_net(2)
    node = NeuralODE(net, (0.0, 1.0), alg, saveat=[0.4, 1.0], **kwargs)
    u0 = torch.tensor([[0.5, -0.2], [0.1, 0.3]], **f64, requires_grad=True)
    weights = torch.tensor([[[1.0, -2.0], [0.5, 1.5]], [[0.3, 0.7], [-1.0, 2.0]]], **f64)

    def loss() -> torch.Tensor:
        return (node(u0).u * weights).sum()

    # the parameters of the model and the initial states, as one vector
    leaves = list(net.parameters()) + [u0]
    grads = torch.autograd.grad(loss(), leaves)
    flat = torch.nn.utils.parameters_to_vector(leaves).detach()
    eps = 1e-6
    fd = torch.zeros_like(flat)
    with torch.no_grad():
        for i in range(flat.numel()):
            for sign in (1, -1):
                x = flat.clone()
                x[i] += sign * eps
                torch.nn.utils.vector_to_parameters(x, leaves)
                fd[i] += sign * float(loss()) / (2 * eps)
        torch.nn.utils.vector_to_parameters(flat, leaves)
    ad = torch.cat([g.reshape(-1) for g in grads])
    assert flat.numel() == 22 + 4                                 # 2→4→2: 8 + 4 + 8 + 2; u0: 2 × 2
    torch.testing.assert_close(ad, fd, rtol=rtol, atol=rtol * float(fd.abs().max()))


def test_neural_ode_rejects_unknown_solve_keywords():
    with pytest.raises(TypeError, match=r"unknown solve keyword\(s\) \['rtol'\]; known: \['reltol'"):
        NeuralODE(small_net(), (0.0, 1.0), rtol=1e-6)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module \(or callable\); got int"):
        NeuralODE(3, (0.0, 1.0))
    with pytest.raises(ValueError, match="tspan must be finite"):
        NeuralODE(small_net(), (0.0, math.nan))


def test_time_dependent_model_sees_float64_times_of_the_batch_shape():
    # du/dt = cos(t): u(t) = u0 + sin(t), whatever the state dtype; t stays float64 (per batch member)
    seen = set()

    class Forcing(torch.nn.Module):
        def forward(self, u, t):
            seen.add((tuple(u.shape), u.dtype, tuple(t.shape), t.dtype))
            return torch.cos(t)[..., None].to(u.dtype) * torch.ones_like(u)

    ts = torch.linspace(0, 2, 5, **f64)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        seen.clear()
        node = NeuralODE(Forcing(), (0.0, 2.0), pyode.Tsit5(), time_dependent=True, reltol=max(tol, 1e-10),
                         abstol=tol * 1e-2)
        sol = node(torch.zeros(3, 2, dtype=dtype), saveat=ts)
        assert sol.u.dtype == dtype
        assert seen == {((3, 2), dtype, (3,), torch.float64)}
        exact = torch.sin(ts)[:, None, None].expand(5, 3, 2).to(dtype)
        torch.testing.assert_close(sol.u, exact, rtol=0, atol=10 * tol)
    # without time_dependent the model is called with u alone
    with pytest.raises(TypeError, match="missing 1 required positional argument: 't'"):
        NeuralODE(Forcing(), (0.0, 1.0))(torch.zeros(2, **f64))


def test_state_scale_integrates_the_scaled_state_and_returns_the_models_units():
    # species of 1, 1e-4 and 1e-8: the scaled solve at abstol 1e-12 (relative to each scale) agrees
    # with the unscaled solve at abstol 1e-20, in values, gradients and dense output
    scales = torch.tensor([1.0, 1e-4, 1e-8], **f64)
    torch.manual_seed(0)
    net = SpeciesScaling(mlp(3, 3, width=8, depth=2), scales, 10.0)
    u0 = torch.tensor([1.0, 2e-4, 3e-8], **f64)
    t = torch.linspace(0, 10, 6, **f64)
    plain = NeuralODE(net, (0, 10), pyode.Rodas5P(), saveat=t, reltol=1e-10, abstol=1e-20)(u0)
    node = NeuralODE(net, (0, 10), pyode.Rodas5P(), saveat=t, reltol=1e-10, abstol=1e-12, state_scale=scales)
    scaled = node(u0)
    assert torch.equal(scaled.u[0], u0)
    torch.testing.assert_close(scaled.u / scales, plain.u / scales, rtol=0, atol=1e-8)
    grads = [torch.autograd.grad(sol.u.sum(), list(net.parameters())) for sol in (plain, scaled)]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-7 * float(a.abs().max()))
    dense = NeuralODE(net, (0, 10), pyode.Rodas5P(), reltol=1e-10, abstol=1e-12, state_scale=scales)(u0)
    torch.testing.assert_close(dense(t) / scales, scaled.u / scales, rtol=0, atol=1e-9)
    # the solver saw the scaled problem: its state is of order one
    assert float(scaled.prob.u0.abs().min()) == pytest.approx(1.0)
    # the model's Jacobian is carried through the scaling: the same solve without it takes as many steps
    assert scaled.stats.naccept == NeuralODE(lambda u: net(u), (0, 10), pyode.Rodas5P(), saveat=t, reltol=1e-10,
                                             abstol=1e-12, state_scale=scales)(u0).stats.naccept


def test_state_scale_validation():
    with pytest.raises(ValueError, match=r"state_scale must be positive and finite; got \[1.0, 0.0\]"):
        NeuralODE(small_net(), (0.0, 1.0), state_scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="state_scale has 3 values; u0 has 2 species"):
        NeuralODE(small_net(), (0.0, 1.0), state_scale=[1.0, 2.0, 3.0])(torch.zeros(2, **f64))


# ---- SpeciesScaling ----------------------------------------------------------------------------

def test_species_scaling_formula():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3).double()
    yscale = torch.tensor([1.0, 1e-5, 2.0], **f64)
    model = SpeciesScaling(net, yscale, tscale=1e5)
    u = torch.rand(4, 3, **f64) * yscale
    torch.testing.assert_close(model(u), net(u / yscale) * yscale / 1e5, rtol=1e-15, atol=0)
    # unscaled input
    model = SpeciesScaling(net, yscale, tscale=2.0, scale_input=False)
    torch.testing.assert_close(model(u), net(u) * yscale / 2.0, rtol=1e-15, atol=0)
    # a time-dependent network sees t / tscale
    model = SpeciesScaling(lambda x, t: x * t[..., None], 3.0, tscale=4.0, time_dependent=True)
    t = torch.tensor([1.0, 2.0, 8.0, 0.0], **f64)
    torch.testing.assert_close(model(u, t), (u / 3.0) * (t / 4.0)[:, None] * 3.0 / 4.0, rtol=1e-15, atol=0)
    # yscale is a buffer (moves with .to(), saved in the state dict), not a trained parameter
    assert "yscale" in dict(SpeciesScaling(net, yscale).named_buffers())
    assert [n for n, _ in SpeciesScaling(net, yscale).named_parameters()] == ["net.weight", "net.bias"]


def test_species_scaling_output_scale_and_clamped_inputs():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3).double()
    yscale = torch.tensor([1.0, 1e-5, 2.0], **f64)
    u = torch.tensor([[0.5, 0.5e-5, 1.0], [2.0, -1e-5, 1.0], [0.1, 3e-5, 5.0]], **f64)
    low, high = SpeciesScaling.data_range(u[:1], yscale)       # one state: a box of zero width
    torch.testing.assert_close(low, torch.tensor([0.5, 0.5, 0.5], **f64))
    torch.testing.assert_close(high, low)
    model = SpeciesScaling(net, yscale, output_scale=[2.0, 3.0, 4.0], input_range=([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]))
    x = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.5], [0.1, 1.0, 1.0]], **f64)     # u / yscale, clamped
    torch.testing.assert_close(model(u), net(x) * torch.tensor([2.0, 3.0, 4.0], **f64), rtol=1e-15, atol=0)
    torch.testing.assert_close(model.scaled_input(u), x, rtol=1e-15, atol=0)
    # outside the box the output does not move with the clamped species
    v = u.clone()
    v[1, 0] = 7.0
    torch.testing.assert_close(model(v), model(u), rtol=0, atol=0)
    # without the new options: the buffers are absent (older checkpoints keep loading) and the scale is yscale/tscale
    plain = SpeciesScaling(net, yscale, tscale=1e5)
    assert set(plain.state_dict()) == {"yscale", "net.weight", "net.bias"}
    torch.testing.assert_close(plain.out_scale, yscale / 1e5)
    assert {"output_scale", "low", "high"} <= set(model.state_dict())


# ---- CompartmentalNetwork ------------------------------------------------------------------------

def test_compartmental_network_formula_conservation_and_positivity():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 6).double()
    yscale = torch.tensor([1.0, 1e-4, 2.0], **f64)
    scale = torch.arange(1.0, 7.0, **f64)
    model = CompartmentalNetwork(net, yscale, scale)
    assert model.pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    u = torch.rand(4, 3, **f64) * yscale
    F = torch.nn.functional.softplus(net(u / yscale)) * scale
    torch.testing.assert_close(model.rates(u), F, rtol=1e-15, atol=0)
    expected = torch.zeros_like(u)
    for k, (i, j) in enumerate(model.pairs):        # flux F_ij u_j from j into i
        expected[:, i] += F[:, k] * u[:, j]
        expected[:, j] -= F[:, k] * u[:, j]
    torch.testing.assert_close(model(u), expected, rtol=1e-13, atol=1e-18)
    # the total is conserved and a species at zero cannot decrease, whatever the network says
    torch.testing.assert_close(model(u).sum(-1), torch.zeros(4, **f64), rtol=0, atol=1e-15)
    u[:, 1] = 0.0
    assert bool((model(u)[:, 1] >= 0).all())
    # a very negative network output switches a transfer off: softplus(-50) ~ 2e-22
    rob = CompartmentalNetwork(lambda x: torch.full((*x.shape[:-1], 6), -50.0, **f64), [1.0, 1.0, 1.0], 1.0)
    assert float(rob(torch.tensor([0.5, 1e-5, 0.5], **f64)).abs().max()) < 1e-21
    # clamped inputs, as SpeciesScaling's
    boxed = CompartmentalNetwork(net, yscale, scale, input_range=(0.0, 0.5))
    v = u.clone()
    v[0, 0] = 0.9                                   # x_A = 0.9 -> 0.5
    w = v.clone()
    w[0, 0] = 0.7
    torch.testing.assert_close(boxed.rates(v), boxed.rates(w), rtol=0, atol=0)


def test_compartmental_network_validation():
    with pytest.raises(ValueError, match="yscale must have one entry per species"):
        CompartmentalNetwork(torch.nn.Linear(1, 1), 1.0)
    with pytest.raises(ValueError, match=r"rate_scale must be a number or one value per species \(6\)"):
        CompartmentalNetwork(torch.nn.Linear(3, 6), [1.0, 1.0, 1.0], [1.0, 2.0])
    model = CompartmentalNetwork(torch.nn.Linear(3, 3).double(), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="net returned 3 outputs; a compartmental network of 3 species needs 6"):
        model(torch.ones(3, **f64))
    with pytest.raises(TypeError, match="net must be a module or callable"):
        CompartmentalNetwork(3, [1.0, 1.0])


def test_species_scaling_validation():
    net = torch.nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match=r"yscale must be positive and finite; got \[1.0, 0.0\]"):
        SpeciesScaling(net, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"yscale must be positive and finite; got \[1.0, nan\]"):
        SpeciesScaling(net, [1.0, math.nan])
    with pytest.raises(ValueError, match=r"tscale must be positive and finite; got \[-1.0\]"):
        SpeciesScaling(net, 1.0, tscale=-1.0)
    with pytest.raises(ValueError, match="tscale must be a single positive number"):
        SpeciesScaling(net, 1.0, tscale=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"yscale must be a number or one value per species.*got shape \(2, 2\)"):
        SpeciesScaling(net, torch.ones(2, 2))
    with pytest.raises(TypeError, match="net must be a module or callable; got str"):
        SpeciesScaling("net", 1.0)
    with pytest.raises(ValueError, match=r"output_scale must be positive and finite; got \[1.0, -2.0\]"):
        SpeciesScaling(net, 1.0, output_scale=[1.0, -2.0])
    with pytest.raises(ValueError, match="input_range must be a pair"):
        SpeciesScaling(net, 1.0, input_range=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"input_range needs low <= high.*low \[0.0, 2.0\], high \[1.0, 1.0\]"):
        SpeciesScaling(net, 1.0, input_range=([0.0, 2.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="input_range must be finite"):
        SpeciesScaling(net, 1.0, input_range=(0.0, math.inf))


# ---- UDE ---------------------------------------------------------------------------------------

def _decay(u, p, t):
    return -p["k"] * u + p["c"]


def test_ude_positive_parameters_are_trained_as_logs_and_fixed_ones_are_buffers():
    net = mlp(2, 2, width=3, depth=1, zero_last=True)
    ude = UDE(_decay, {"k": 2.0, "c": torch.tensor([-1.0, 0.5])}, net, positive=["k"])
    assert float(ude.raw["k"].detach()) == pytest.approx(math.log(2.0), abs=1e-15)
    torch.testing.assert_close(ude.raw["c"].detach(), torch.tensor([-1.0, 0.5], **f64))
    values = ude.physical_parameters()
    assert float(values["k"].detach()) == pytest.approx(2.0, rel=1e-15)
    torch.testing.assert_close(values["c"], torch.tensor([-1.0, 0.5], **f64))
    names = {n for n, _ in ude.named_parameters()}
    assert names == {"raw.k", "raw.c"} | {f"network.{n}" for n, _ in net.named_parameters()}

    # the gradient reaches log k: d/d(log k) of f = -k u (with the network at zero)
    u = torch.tensor([1.0, 3.0], **f64)
    ude(u).sum().backward()
    assert float(ude.raw["k"].grad) == pytest.approx(-2.0 * 4.0, rel=1e-14)

    fixed = UDE(_decay, {"k": 2.0, "c": 0.5}, fixed=["c"], positive=["k"])
    assert [n for n, _ in fixed.named_parameters()] == ["raw.k"]
    assert dict(fixed.named_buffers())["fixed_c"].item() == 0.5
    assert "fixed_c" in fixed.state_dict()
    both = UDE(_decay, {"k": 2.0, "c": 0.5}, fixed=["k"])             # positive and fixed: a stored log
    assert float(dict(both.named_buffers())["fixed_k"]) == pytest.approx(math.log(2.0), abs=1e-15)
    assert float(both.physical_parameters()["k"].detach()) == pytest.approx(2.0, rel=1e-15)
    torch.testing.assert_close(fixed(u), -2.0 * u + 0.5, rtol=1e-15, atol=0)
    # without a time argument the physics sees float64 zeros of the batch shape
    seen = []
    UDE(lambda u, p, t: seen.append(t) or u, {"k": 1.0})(torch.ones(4, 2, **f64))
    assert torch.equal(seen[0], torch.zeros(4, **f64))


def test_ude_adds_the_network_and_passes_time():
    net = mlp(2, 2, width=3, depth=1)
    seen = []
    ude = UDE(lambda u, p, t: seen.append(t) or p["a"] * u, {"a": 0.5}, net)
    u = torch.rand(4, 2, **f64)
    t = torch.arange(4, **f64)
    torch.testing.assert_close(ude(u, t), 0.5 * u + net(u), rtol=1e-15, atol=0)
    assert seen[0] is t


def test_ude_validation():
    with pytest.raises(ValueError, match=r"positive names \['q'\] are not among the parameters \['k', 'c'\]"):
        UDE(_decay, {"k": 1.0, "c": 0.0}, positive=["q"])
    with pytest.raises(ValueError, match=r"fixed names \['z'\] are not among the parameters"):
        UDE(_decay, {"k": 1.0, "c": 0.0}, positive=["k"], fixed=["z"])
    with pytest.raises(ValueError, match=r"parameter 'c' = 0.0 must be positive"):
        UDE(_decay, {"k": 1.0, "c": 0.0})
    with pytest.raises(ValueError, match=r"parameter 'k' = \[1.0, -2.0\] must be positive"):
        UDE(_decay, {"k": [1.0, -2.0], "c": 0.0}, positive=["k"])
    with pytest.raises(TypeError, match="physics must be callable"):
        UDE("physics", {"k": 1.0})
    with pytest.raises(TypeError, match="parameters must be a dict"):
        UDE(_decay, [("k", 1.0)])
    assert [n for n, _ in UDE(_decay, {"k": -1.0, "c": 0.0}, positive=False).named_parameters()] == ["raw.k", "raw.c"]


# ---- MassActionNetwork -------------------------------------------------------------------------

ROBERTSON_ORDERS = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.0]]       # A; 2B; B + C
ROBERTSON_STOICHIOMETRY = [[-1.0, 0.0, 1.0], [1.0, -1.0, -1.0], [0.0, 1.0, 0.0]]  # species × reactions
ROBERTSON_K = (0.04, 3e7, 1e4)


@pytest.fixture(scope="module")
def robertson_states():
    """States along Robertson's solution, 40 log-spaced times in 1e-5 … 1e2 (plus the start)."""
    prob = problems.robertson(tspan=(0.0, 1e2))
    ts = torch.cat([torch.zeros(1, **f64), torch.logspace(-5, 2, 40, **f64)])
    sol = solve(prob, pyode.Rodas5P(), saveat=ts, reltol=1e-8, abstol=1e-12)
    return prob, ts, sol.u


def _robertson_mass_action(conserve=None):
    net = MassActionNetwork(3, 3, conserve=conserve)
    with torch.no_grad():
        net.order_raw.copy_(softplus_inverse(torch.tensor(ROBERTSON_ORDERS, **f64)))
        net.log_k.copy_(torch.log(torch.tensor(ROBERTSON_K, **f64)))
        net.stoich.copy_(torch.tensor(ROBERTSON_STOICHIOMETRY, **f64))
    return net


@pytest.mark.parametrize("conserve", [None, torch.ones(1, 3)], ids=["free", "conserving"])
def test_mass_action_network_with_robertsons_mechanism_reproduces_robertson(robertson_states, conserve):
    prob, ts, u = robertson_states
    net = _robertson_mass_action(conserve)
    torch.testing.assert_close(net.orders, torch.tensor(ROBERTSON_ORDERS, **f64), rtol=1e-14, atol=1e-20)
    with torch.no_grad():
        learned, true = net(u), prob.f(u, prob.p, ts)
    rel = (learned - true).norm(dim=-1) / true.norm(dim=-1)
    assert float(rel.max()) < 1e-10                             # measured 3e-14


def test_mass_action_network_conserve_projects_the_stoichiometry():
    g = torch.Generator().manual_seed(0)
    net = MassActionNetwork(4, 5, conserve=torch.ones(1, 4), seed_generator=g)
    torch.testing.assert_close(net.stoichiometry.sum(0), torch.zeros(5, **f64), rtol=0, atol=1e-14)
    assert float(net.stoich.detach().sum(0).abs().max()) > 0.1     # the raw parameters are not constrained
    u = torch.rand(6, 4, **f64)
    with torch.no_grad():
        du = net(u)
    torch.testing.assert_close(du.sum(-1), torch.zeros(6, **f64), rtol=0, atol=1e-12 * float(du.abs().max()))
    # two invariants: total mass and species 0 + species 1
    C = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    two = MassActionNetwork(4, 5, conserve=C, seed_generator=g)
    torch.testing.assert_close(C.double() @ two.stoichiometry, torch.zeros(2, 5, **f64), rtol=0, atol=1e-14)
    assert (net.orders >= 0).all()
    with pytest.raises(ValueError, match=r"conserve must have shape \(m, 4\); got \(1, 3\)"):
        MassActionNetwork(4, 2, conserve=torch.ones(1, 3))
    with pytest.raises(ValueError, match="n_reactions must be a positive integer; got 0"):
        MassActionNetwork(4, 0)
    with pytest.raises(ValueError, match="floor must be positive"):
        MassActionNetwork(4, 2, floor=0.0)


# ---- PolynomialNetwork -------------------------------------------------------------------------

@pytest.mark.parametrize("n,degree", [(1, 1), (2, 2), (3, 2), (3, 3), (5, 2), (4, 4)])
def test_polynomial_network_feature_count(n, degree):
    net = PolynomialNetwork(n, degree)
    x = torch.rand(7, n, **f64)
    assert net.features(x).shape == (7, math.comb(n + degree, degree))
    assert net.coefficients.shape == (n, math.comb(n + degree, degree))
    assert len(set(net.monomials)) == len(net.monomials)


def test_polynomial_network_features_and_scaling():
    net = PolynomialNetwork(2, 2, yscale=[2.0, 4.0])
    x = torch.tensor([3.0, 5.0], **f64)
    torch.testing.assert_close(net.features(x), torch.tensor([1.0, 3.0, 5.0, 9.0, 15.0, 25.0], **f64))
    with torch.no_grad():
        net.coefficients.copy_(torch.tensor([[0.0, 1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 1.0, 0]], **f64))
    # f = yscale · C φ(u / yscale): (2 · u1/2, 4 · (1 + u1/2 · u2/4))
    torch.testing.assert_close(net(x), torch.tensor([3.0, 4.0 * (1 + 1.5 * 1.25)], **f64))
    with pytest.raises(ValueError, match="degree must be a positive integer; got 0"):
        PolynomialNetwork(2, 0)
    with pytest.raises(ValueError, match=r"yscale must be a number or one value per species \(2\)"):
        PolynomialNetwork(2, 2, yscale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"u and dudt must both have shape \(K, 2\)"):
        net.fit_least_squares(torch.zeros(5, 3, **f64), torch.zeros(5, 3, **f64))


def test_polynomial_network_least_squares_recovers_robertsons_right_hand_side(robertson_states):
    # Robertson's f is a quadratic polynomial; on data that conserve y1 + y2 + y3 the monomials are
    # collinear, so C is not unique, yet the minimum-norm fit must reproduce f at the states.
    prob, ts, u = robertson_states
    true = prob.f(u, prob.p, ts)
    net = PolynomialNetwork(3, 2, yscale=u.abs().amax(0))
    residual = net.fit_least_squares(u, true)
    assert residual.shape == (3,)
    with torch.no_grad():
        fitted = net(u)
    rel = (fitted - true).norm(dim=-1) / true.norm(dim=-1)
    assert float(rel.max()) <= 1e-8                                  # measured 2e-14
    # the coefficients differ from Robertson's own (y2' = k1 y1 - k2 y2² - k3 y2 y3 in scaled units):
    # the constant and linear monomials absorb multiples of (y1 + y2 + y3 - 1) = 0
    assert float(net.coefficients.detach().abs().max()) > 1.0
    # a weighted fit and a fixed part r(u): fit f - r with r = Robertson's first reaction
    r = lambda v: torch.stack([-0.04 * v[..., 0], 0.04 * v[..., 0], torch.zeros_like(v[..., 0])], -1)
    net2 = PolynomialNetwork(3, 2, yscale=u.abs().amax(0))
    net2.fit_least_squares(u, true, weights=ts + 1e-6, target=r)
    with torch.no_grad():
        rel2 = (net2(u) + r(u) - true).norm(dim=-1) / true.norm(dim=-1)
    assert float(rel2.max()) <= 1e-8


def test_fitted_polynomial_network_integrates_to_robertsons_trajectory(robertson_states):
    prob, ts, u = robertson_states
    net = PolynomialNetwork(3, 2, yscale=u.abs().amax(0))
    net.fit_least_squares(u, prob.f(u, prob.p, ts))
    node = NeuralODE(net, (0.0, 1e2), pyode.Rodas5P(), reltol=1e-8, abstol=1e-12)
    with torch.no_grad():
        sol = node(prob.u0, saveat=ts)
    err = (sol.u - u).abs() / u.abs().amax(0)
    assert float(err.max()) < 1e-9                                     # measured 2e-13, per species' maximum


# ---- Conserving, Sum, mlp ----------------------------------------------------------------------

def test_conserving_keeps_linear_invariants_along_a_solve():
    torch.manual_seed(0)
    body = mlp(3, 3, width=8, depth=2, activation="tanh")
    model = Conserving(body, torch.ones(1, 3))
    u0 = torch.tensor([[0.5, 0.3, 0.2], [1.0, -2.0, 0.5]], **f64)
    with torch.no_grad():
        sol = NeuralODE(model, (0.0, 5.0), pyode.Tsit5(), saveat=torch.linspace(0, 5, 11, **f64))(u0)
        plain = NeuralODE(body, (0.0, 5.0), pyode.Tsit5(), saveat=[5.0])(u0).u[-1]
    drift = (sol.u.sum(-1) - u0.sum(-1)).abs().max()
    assert float(drift) < 1e-13                                        # measured 1e-15
    assert float((sol.u[-1] - u0).abs().max()) > 0.1                  # the state did move
    assert float((plain.sum(-1) - u0.sum(-1)).abs().max()) > 1e-3     # the projection is what keeps it

    # an element balance: u0 + u1 and u2 both conserved; time is passed through to the model
    M = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    seen = []
    timed = Conserving(lambda u, t: seen.append(t) or body(u), M)
    out = timed(u0, torch.zeros(2, **f64))
    torch.testing.assert_close(out @ M.T.double(), torch.zeros(2, 2, **f64), rtol=0, atol=1e-15)
    assert seen[0].shape == (2,)
    with pytest.raises(ValueError, match=r"invariants must be an \(m, n\) matrix with m >= 1; got shape \(3,\)"):
        Conserving(body, torch.ones(3))
    with pytest.raises(ValueError, match="the model returned 3 components; the invariants have 4 columns"):
        Conserving(body, torch.ones(1, 4))(u0)


def test_sum_adds_models():
    a, b = mlp(2, 2, width=3, depth=1), mlp(2, 2, width=3, depth=2)
    u = torch.rand(5, 2, **f64)
    torch.testing.assert_close(Sum(a, b)(u), a(u) + b(u), rtol=1e-15, atol=0)
    torch.testing.assert_close(Sum(a)(u), a(u), rtol=0, atol=0)
    t = torch.ones(5, **f64)
    # a plain function is wrapped and called with (u, t); modules get t when it is given
    poly = PolynomialNetwork(2, 1)
    with torch.no_grad():
        poly.coefficients.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], **f64))
    model = Sum(poly, lambda v, s: v * s[..., None])
    expected = torch.stack([1.0 + 2.0 * u[:, 0], 3.0 * u[:, 1]], -1) + 2.0 * u
    torch.testing.assert_close(model(u, 2.0 * t), expected, rtol=1e-15, atol=1e-15)
    assert len(list(Sum(a, b).parameters())) == len(list(a.parameters())) + len(list(b.parameters()))
    with pytest.raises(ValueError, match="Sum needs at least one model"):
        Sum()


def test_mlp_shapes_linear_depth_zero_and_zero_last():
    lin = mlp(3, 2, depth=0)
    assert len(lin) == 1 and isinstance(lin[0], torch.nn.Linear)
    x, y = torch.rand(4, 3, **f64), torch.rand(4, 3, **f64)
    zero = torch.zeros(3, **f64)
    torch.testing.assert_close(lin(2 * x - y) - lin(zero), 2 * (lin(x) - lin(zero)) - (lin(y) - lin(zero)))
    net = mlp(3, 2, width=7, depth=3, activation="tanh")
    assert [m.out_features for m in net if isinstance(m, torch.nn.Linear)] == [7, 7, 7, 2]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net) == 3
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert mlp(3, 2, dtype=torch.float32)[0].weight.dtype == torch.float32
    z = mlp(3, 2, zero_last=True)
    assert torch.equal(z(torch.randn(10, 3, **f64)), torch.zeros(10, 2, **f64))
    assert z[-1].weight.requires_grad                               # zero, but trainable
    assert isinstance(mlp(2, 2, activation=torch.nn.Softsign)[1], torch.nn.Softsign)


def test_mlp_validation():
    with pytest.raises(ValueError, match=r"activation='swish' is unknown; choose one of \['elu', 'gelu'"):
        mlp(2, 2, activation="swish")
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        mlp(2, 2, depth=-1)
    with pytest.raises(ValueError, match="n_in must be a positive integer; got 0"):
        mlp(0, 2)
    with pytest.raises(ValueError, match="width must be a positive integer; got True"):
        mlp(2, 2, width=True)
