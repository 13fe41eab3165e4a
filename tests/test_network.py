"""pyode.chem.ReactionNetwork: Robertson and POLLU written as reaction strings equal the hand-coded
problems (right-hand sides, Jacobians, solutions); reversible reactions, sources and sinks; bad input."""
import pytest
import torch

import pyode
from pyode import problems
from pyode.chem import ReactionNetwork

F64 = torch.float64

ROBERTSON = """
    A -> B,          k1
    2B -> B + C,     k2     # B + B: the second B is a catalyst
    B + C -> A + C,  k3
"""

POLLU = """
NO2 -> NO + O3P, k1
NO + O3 -> NO2, k2
HO2 + NO -> NO2 + OH, k3
HCHO -> 2 HO2 + CO, k4
HCHO -> CO, k5
HCHO + OH -> HO2 + CO, k6
ALD -> HO2 + CO + MEO2, k7
ALD + OH -> C2O3, k8
C2O3 + NO -> NO2 + MEO2 + CO2, k9
C2O3 + NO2 -> PAN, k10
PAN -> NO2 + C2O3, k11
MEO2 + NO -> NO2 + CH3O, k12
CH3O -> HO2 + HCHO, k13
NO2 + OH -> HNO3, k14
O3P -> O3, k15
O3 -> O1D, k16
O3 -> O3P, k17
O1D -> 2 OH, k18
O1D -> O3P, k19
SO2 + OH -> HO2 + SO4, k20
NO3 -> NO, k21
NO3 -> NO2 + O3P, k22
NO2 + O3 -> NO3, k23
NO3 + NO2 -> N2O5, k24
N2O5 -> NO2 + NO3, k25
"""
POLLU_SPECIES = "NO2 NO O3P O3 HO2 OH HCHO CO ALD MEO2 C2O3 CO2 PAN CH3O HNO3 O1D SO2 SO4 NO3 N2O5".split()


@pytest.mark.parametrize("case", ["robertson", "pollu"])
def test_networks_equal_the_hand_coded_problems(case):
    if case == "robertson":
        rn, ref = ReactionNetwork(ROBERTSON), problems.robertson()
        assert rn.species == ["A", "B", "C"] and rn.parameters == ["k1", "k2", "k3"]
    else:
        rn, ref = ReactionNetwork(POLLU, species=POLLU_SPECIES), problems.pollu()
        assert rn.parameters == [f"k{i}" for i in range(1, 26)]
    n = len(rn.species)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(8, n, generator=g, dtype=F64) * ref.u0.abs().max()
    p = ref.p.expand(8, -1)
    t = torch.zeros(8, dtype=F64)
    want = ref.f(u, p, t)
    torch.testing.assert_close(rn.rhs(u, p, t), want, rtol=1e-13, atol=1e-13 * float(want.abs().max()))
    J = rn.jacobian(u, p, t)
    J_ad = torch.func.vmap(torch.func.jacrev(lambda x, q: rn.rhs(x, q)))(u, p)
    torch.testing.assert_close(J, J_ad, rtol=1e-13, atol=1e-13 * float(J_ad.abs().max()))
    if ref.jac is not None:
        torch.testing.assert_close(J, ref.jac(u, p, t), rtol=1e-13, atol=1e-13 * float(J_ad.abs().max()))
    T = ref.tspan[1]
    saveat = torch.tensor([T / 100, T], dtype=F64)
    mine = pyode.solve(rn.problem(ref.u0, ref.tspan, ref.p), pyode.Rodas5P(), saveat=saveat, reltol=1e-8,
                       abstol=1e-14)
    theirs = pyode.solve(ref, pyode.Rodas5P(), saveat=saveat, reltol=1e-8, abstol=1e-14)
    torch.testing.assert_close(mine.u, theirs.u, rtol=1e-9, atol=1e-16)


def test_reversible_reactions_sources_and_sinks():
    # A <-> B at kf/kr = 3 and a source/sink pair for C: equilibrium B/A = 3, C -> k0/k1
    rn = ReactionNetwork(["A <-> B, kf, kr", "0 -> C, 2.0", "C -> ∅, k1"])
    assert rn.n_reactions == 4 and rn.parameters == ["kf", "kr", "k1"]
    prob = rn.problem({"A": 1.0}, (0.0, 100.0), {"kf": 0.3, "kr": 0.1, "k1": 0.5})
    sol = pyode.solve(prob, pyode.Tsit5(), saveat=[100.0], reltol=1e-10, abstol=1e-12)
    a, b, c = sol.u[-1].tolist()
    assert abs(b / a - 3.0) < 1e-8 and abs(a + b - 1.0) < 1e-12 and abs(c - 4.0) < 1e-8
    # gradients reach p through the analytic Jacobian's solve
    p = torch.tensor([0.3, 0.1, 0.5], dtype=F64, requires_grad=True)
    sol = pyode.solve(rn.problem({"A": 1.0}, (0.0, 2.0), p), pyode.Rodas5P(), saveat=[2.0], reltol=1e-10,
                      abstol=1e-12)
    (g,) = torch.autograd.grad(sol.u[-1, 1], p)
    with torch.no_grad():
        def b_at(q):
            s = pyode.solve(rn.problem({"A": 1.0}, (0.0, 2.0), q), pyode.Rodas5P(), saveat=[2.0], reltol=1e-12,
                            abstol=1e-14)
            return float(s.u[-1, 1])
        e = torch.tensor([1e-6, 0.0, 0.0], dtype=F64)
        fd = (b_at(p.detach() + e) - b_at(p.detach() - e)) / 2e-6
    assert abs(float(g[0]) - fd) <= 1e-6 * abs(fd)


def test_bad_reaction_strings_are_named():
    with pytest.raises(ValueError, match="has no arrow"):
        ReactionNetwork("A + B = C, k")
    with pytest.raises(ValueError, match="needs 2 rate constants"):
        ReactionNetwork("A <-> B, k")
    with pytest.raises(ValueError, match="needs 1 rate constant"):
        ReactionNetwork("A -> B")
    with pytest.raises(ValueError, match=r"cannot read '2\*\*B'"):
        ReactionNetwork("A -> 2**B, k")
    with pytest.raises(ValueError, match="neither a name nor a number"):
        ReactionNetwork("A -> B, 3k")
    with pytest.raises(ValueError, match=r"species \['C'\] appear in the reactions but not in species"):
        ReactionNetwork("A -> C, k", species=["A", "B"])
    with pytest.raises(ValueError, match="reactions is empty"):
        ReactionNetwork("  # nothing\n")
    rn = ReactionNetwork(ROBERTSON)
    with pytest.raises(ValueError, match=r"p has shape \(2,\); the network has 3 parameters"):
        rn.problem({"A": 1.0}, (0.0, 1.0), torch.ones(2))
    with pytest.raises(ValueError, match=r"misses \['k3'\]"):
        rn.problem({"A": 1.0}, (0.0, 1.0), {"k1": 1.0, "k2": 1.0})
    with pytest.raises(ValueError, match=r"u0 names species \['D'\]"):
        rn.problem({"D": 1.0}, (0.0, 1.0), torch.ones(3))
