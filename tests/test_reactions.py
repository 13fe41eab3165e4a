"""Mass-action reaction libraries (pyode.reactions) and the rate-constant fit (pyode.estimation)."""
import math

import pytest
import torch

import pyode
from pyode.data import generate_data
from pyode.estimation import _redundant, collocation_rates, fit_rate_constants, levenberg_marquardt
from pyode.problems import robertson
from pyode.reactions import ReactionLibrary, candidate_reactions

ROBERTSON = {"A -> B": 0.04, "2B -> B + C": 3e7, "B + C -> A + C": 1e4}


def robertson_library(extra=()):
    """Robertson's three reactions (and optional decoys) as a library, at the true rate constants."""
    full = ReactionLibrary(3, names="ABC")
    keep = [j for j in range(full.n_reactions) if full.equation(j) in ROBERTSON or full.equation(j) in extra]
    lib = ReactionLibrary(3, names="ABC", reactions=[full.reactions[j] for j in keep])
    with torch.no_grad():
        for j in range(lib.n_reactions):
            lib.log_k[j] = math.log(ROBERTSON.get(lib.equation(j), 1.0))
    return lib


def test_candidates_conserve_the_weighted_count():
    # 3 species, up to bimolecular, molecule count conserved: 3*2 unimolecular + 6*5 bimolecular
    assert len(candidate_reactions(3)) == 36
    w = torch.tensor([1.0, 2.0, 3.0])
    reactions = candidate_reactions(3, weights=w.tolist())
    assert reactions and all(float(torch.tensor(a, dtype=torch.float32) @ w) == float(torch.tensor(b, dtype=torch.float32) @ w)
                             for a, b in reactions)
    assert ((1, 1, 0), (0, 0, 1)) in reactions          # A + B -> C conserves mass with these weights
    assert ((1, 0, 0), (0, 1, 0)) not in reactions


def test_library_at_robertsons_constants_is_robertsons_right_hand_side():
    lib = robertson_library()
    assert sorted(eq for eq, _ in lib.equations()) == sorted(ROBERTSON)
    prob = robertson()
    u = torch.rand(7, 3, dtype=torch.float64)
    u[0] = torch.tensor([1.0, 0.0, 0.0])
    want = prob.f(u, prob.p, 0.0)
    assert torch.allclose(lib(u), want, rtol=1e-13, atol=1e-13 * float(want.abs().max()))


def test_analytic_jacobian_matches_autograd_and_is_exact_at_zero_concentration():
    lib = ReactionLibrary(3, names="ABC")
    with torch.no_grad():
        lib.log_k.copy_(torch.randn(lib.n_reactions, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    u = torch.rand(5, 3, dtype=torch.float64) + 0.1
    J = lib.jacobian(u)
    J_ad = torch.func.vmap(torch.func.jacrev(lambda x: lib.rhs(x)))(u)
    assert torch.allclose(J, J_ad, rtol=1e-12, atol=0)
    # at u = (1, 0, 0) only A -> B acts: d(dA/dt)/dA = -k, d(dB/dt)/dA = k; B + C -> A + C has
    # d/dB = k C = 0 and d/dC = k B = 0
    rob = robertson_library()
    J0 = rob.jacobian(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(J0, torch.tensor([[-0.04, 0, 0], [0.04, 0, 0], [0, 0, 0]], dtype=torch.float64), atol=1e-15)
    # a first-order term in a species at zero keeps its derivative: B -> C at B = 0
    one = ReactionLibrary(3, names="ABC", reactions=[((0, 1, 0), (0, 0, 1))], log_k=math.log(5.0))
    assert float(one.jacobian(torch.zeros(3, dtype=torch.float64)).detach()[2, 1]) == pytest.approx(5.0, rel=1e-12)


def test_removed_reactions_do_not_act_and_equations_name_them():
    lib = robertson_library()
    j = [lib.equation(i) for i in range(lib.n_reactions)].index("A -> B")
    lib.remove(torch.arange(lib.n_reactions) == j)
    assert "A -> B" not in [eq for eq, _ in lib.equations()]
    u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    # nothing else acts without B: what is left is the concentration floor's 1e-300-sized remainder
    assert float(lib(u).detach().abs().max()) < 1e-290
    with pytest.raises(ValueError, match=r"which must have shape \(3,\)"):
        lib.remove(torch.ones(2, dtype=torch.bool))


def test_library_bad_input():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        candidate_reactions(0)
    with pytest.raises(ValueError, match="weights must be 3 positive numbers"):
        candidate_reactions(3, weights=[1, 2])
    with pytest.raises(ValueError, match="names must have 3 entries"):
        ReactionLibrary(3, names=["A", "B"])
    with pytest.raises(ValueError, match="two lists of 3 non-negative counts"):
        ReactionLibrary(3, reactions=[((1, 0), (0, 1))])


def test_levenberg_marquardt_fits_an_exponential_decay():
    t = torch.linspace(0, 4, 30, dtype=torch.float64)
    y = 2.5 * torch.exp(-1.3 * t)

    def residual(theta):
        return theta[0] * torch.exp(-theta[1] * t) - y

    def jacobian(theta):
        e = torch.exp(-theta[1] * t)
        return residual(theta), torch.stack([e, -theta[0] * t * e], -1)

    theta, cost = levenberg_marquardt(residual, jacobian, torch.tensor([1.0, 0.1], dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(theta, torch.tensor([2.5, 1.3], dtype=torch.float64), rtol=1e-8)
    assert cost < 1e-16


@pytest.fixture(scope="module")
def robertson_data():
    prob = robertson()
    times = torch.logspace(-5, 5, 21, dtype=torch.float64)
    return prob, generate_data(prob, pyode.Rodas5P(), times)


def test_fit_recovers_robertsons_rate_constants_from_exact_data(robertson_data):
    prob, data = robertson_data
    lib = robertson_library()
    fit = fit_rate_constants(lib, data.t, data.u, prob.u0, prune=False)
    found = dict(lib.equations())
    for eq, k in ROBERTSON.items():
        assert found[eq] == pytest.approx(k, rel=1e-4), eq
    # stopped at the solver's error level (10 reltol), not after max_iters
    assert fit.rms < 1e-6 and len(fit.history) < 40
    assert all(h["stage"] == "fit" for h in fit.history)


def test_fit_from_noisy_data_prunes_decoy_reactions(robertson_data):
    prob, data = robertson_data
    noisy = generate_data(prob, pyode.Rodas5P(), data.t, noise=0.01, seed=3)
    lib = robertson_library(extra=("B -> C", "A + B -> 2B"))
    fit = fit_rate_constants(lib, noisy.t, noisy.u, prob.u0)
    found = dict(lib.equations())
    assert sorted(found) == sorted(ROBERTSON), (found, fit.removed)
    assert sorted(fit.removed) == ["A + B -> 2B", "B -> C"]
    for eq, k in ROBERTSON.items():
        assert found[eq] == pytest.approx(k, rel=0.1), eq
    assert 0.005 < fit.rms < 0.015                  # at the noise level (1 % of each species' scale)
    assert fit.history[0]["stage"] == "fit" and fit.history[-1]["stage"] == "refit"


def test_fit_rate_constants_bad_input(robertson_data):
    prob, data = robertson_data
    lib = robertson_library()
    with pytest.raises(TypeError, match="library must be a pyode.reactions.ReactionLibrary"):
        fit_rate_constants(torch.nn.Linear(3, 3), data.t, data.u, prob.u0)
    with pytest.raises(ValueError, match=r"u must have shape \(21, 3\) \(times, species\)"):
        fit_rate_constants(lib, data.t, data.u[:, :2], prob.u0)
    with pytest.raises(ValueError, match="t must strictly increase"):
        fit_rate_constants(lib, data.t.flip(0), data.u, prob.u0)
    with pytest.raises(ValueError, match="u0 must be non-negative"):
        fit_rate_constants(lib, data.t, data.u, -prob.u0)
    u = data.u.clone()
    u[:, 1] = 0.0
    with pytest.raises(ValueError, match="B is zero in every observation"):
        fit_rate_constants(lib, data.t, u, prob.u0)
    u = data.u.clone()
    u[3, 0] = float("nan")
    with pytest.raises(ValueError, match="u and u0 must be finite"):
        fit_rate_constants(lib, data.t, u, prob.u0)


def test_fit_several_experiments_at_once(robertson_data):
    prob, data = robertson_data
    u0 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]], dtype=torch.float64)
    sol = pyode.solve(pyode.ODEProblem(prob.f, u0, prob.tspan, prob.p), pyode.Rodas5P(), saveat=data.t,
                      reltol=1e-10, abstol=1e-16)
    lib = robertson_library()              # the fit starts from equal rates, whatever log_k holds
    fit = fit_rate_constants(lib, data.t, sol.u, u0, prune=False)
    found = dict(lib.equations())
    for eq, k in ROBERTSON.items():
        assert found[eq] == pytest.approx(k, rel=1e-4), eq
    assert fit.rms < 1e-6
    with pytest.raises(ValueError, match=r"u must have shape \(21, 2, 3\) \(times, experiments, species\)"):
        fit_rate_constants(lib, data.t, sol.u[:, :1], u0)


def test_collocation_rates_recover_a_nonstiff_mechanism_from_exact_data():
    # A -> B (k 1), B -> C (k 0.5), among all 36 candidates; trapezoidal integrals at dt = 0.025
    truth = {"A -> B": 1.0, "B -> C": 0.5}
    lib = ReactionLibrary(3, names="ABC")
    rhs = lambda u, p, t: torch.stack([-u[..., 0], u[..., 0] - 0.5 * u[..., 1], 0.5 * u[..., 1]], -1)
    u0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0.025, 5.0, 200, dtype=torch.float64)
    sol = pyode.solve(pyode.ODEProblem(rhs, u0, (0.0, 5.0)), pyode.Tsit5(), saveat=t, reltol=1e-11, abstol=1e-13)
    k = collocation_rates(lib, t, sol.u, u0)
    assert k.shape == (36,) and bool((k >= 0).all())
    found = {lib.equation(j): float(k[j]) for j in range(36)}
    for eq, value in truth.items():
        assert found[eq] == pytest.approx(value, rel=2e-3), eq
    assert sum(v for eq, v in found.items() if eq not in truth) < 1e-2
    with pytest.raises(ValueError, match=r"u must have shape \(200, 3\) \(times, species\)"):
        collocation_rates(lib, t, sol.u[:, :2], u0)


def test_redundant_parameters_are_found_by_their_collinear_columns():
    g = torch.Generator().manual_seed(0)
    c, d = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    assert _redundant(torch.stack([c, d], 1)) is None
    # proportional columns (2B -> B + C and 2B -> 2C): the one with the smaller effect goes
    assert _redundant(torch.stack([c, d, 0.3 * c], 1)) == 2
    # opposite columns (a futile pair) up to forward-difference error
    assert _redundant(torch.stack([-2.0 * d * (1 + 1e-7), c, d], 1)) == 2


def test_fit_keeps_one_of_two_equivalent_reactions(robertson_data):
    # 2B -> 2C acts as 2B -> B + C at twice the rate: the data fix k(2B -> B + C) + 2 k(2B -> 2C) only
    prob, data = robertson_data
    noisy = generate_data(prob, pyode.Rodas5P(), data.t, noise=0.01, seed=3)
    lib = robertson_library(extra=("2B -> 2C",))
    fit = fit_rate_constants(lib, noisy.t, noisy.u, prob.u0)
    found = dict(lib.equations())
    assert len(fit.removed) == 1 and fit.removed[0] in ("2B -> B + C", "2B -> 2C"), fit.removed
    effective = found.get("2B -> B + C", 0.0) + 2 * found.get("2B -> 2C", 0.0)
    assert effective == pytest.approx(3e7, rel=0.1)
    assert found["A -> B"] == pytest.approx(0.04, rel=0.1)


def test_fit_starts(robertson_data):
    prob, data = robertson_data
    lib = robertson_library()                  # log_k at the truth: the "library" start is the answer
    fit = fit_rate_constants(lib, data.t, data.u, prob.u0, prune=False, start="library")
    assert fit.start == "library" and len(fit.history) <= 2 and fit.rms < 1e-6
    # Robertson is stiff: collocation cannot resolve B from the sampled data, yet the exact data let
    # "auto" find a start that fits, whichever it picks
    fit = fit_rate_constants(robertson_library(), data.t, data.u, prob.u0, prune=False)
    assert fit.start in ("uniform", "collocation") and fit.rms < 1e-6
    with pytest.raises(ValueError, match="start must be one of 'auto', 'uniform', 'collocation', 'library'; got 'x'"):
        fit_rate_constants(lib, data.t, data.u, prob.u0, start="x")
