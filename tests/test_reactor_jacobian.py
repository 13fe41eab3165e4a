"""pyode.chem's analytic reactor Jacobian against automatic differentiation of the right-hand side:
every reactor kind, every rate type (elementary, three-body, Lindemann/Troe/SRI falloff, PLOG,
Chebyshev, fractional orders), states with zero and trace species; and ∂ω̇/∂C against differences
of Cantera's net production rates."""
import math

import pytest
import torch

ct = pytest.importorskip("cantera", reason="pyode.chem reads mechanisms with Cantera (pip install 'pyode[chem]')")

from pyode.chem import Mechanism, reactor_problem  # noqa: E402

F64 = torch.float64


def _every_rate_type():
    """h2o2.yaml (elementary, three-body, Troe) plus a PLOG, a Chebyshev, an SRI, a Lindemann and a
    fractional-order reaction."""
    base = ct.Solution("h2o2.yaml")
    plog = ct.PlogRate([(0.1 * ct.one_atm, ct.ArrheniusRate(1.2e12, -0.3, 6.5e7)),
                        (ct.one_atm, ct.ArrheniusRate(3.5e12, -0.4, 6.9e7)),
                        (ct.one_atm, ct.ArrheniusRate(2.0e10, 0.2, 4.0e7)),
                        (10 * ct.one_atm, ct.ArrheniusRate(3.5e13, -0.4, 6.9e7))])
    cheb = ct.ChebyshevRate(temperature_range=(300.0, 2500.0), pressure_range=(1000.0, 1e7),
                            data=[[8.2, 1.1, -0.1, 0.02], [-0.5, 0.2, 0.01, 0.0], [0.1, -0.05, 0.0, 0.003]])
    sri = ct.Reaction(equation="H + O2 (+M) <=> HO2 (+M)",
                      rate=ct.SriRate(low=ct.ArrheniusRate(6.366e14, -1.72, 2.2e6),
                                      high=ct.ArrheniusRate(4.65e9, 0.44, 0.0),
                                      falloff_coeffs=[0.45, 797.0, 979.0, 1.1, 0.2]),
                      third_body=ct.ThirdBody(efficiencies={"AR": 0.67, "H2O": 14.0}))
    lind = ct.Reaction(equation="2 OH (+M) <=> H2O2 (+M)",
                       rate=ct.LindemannRate(low=ct.ArrheniusRate(2.3e12, -0.9, -7.1e6),
                                             high=ct.ArrheniusRate(7.4e10, -0.37, 0.0)))
    frac = ct.Reaction(equation="H2 + 0.5 O2 => H2O", rate=ct.ArrheniusRate(1e9, 0.0, 1.2e8))
    frac.orders = {"H2": 0.7, "O2": 1.3}
    extra = [ct.Reaction(equation="H + O2 <=> O + OH", rate=plog), ct.Reaction(equation="H2O2 <=> 2 OH", rate=cheb),
             sri, lind, frac]
    return ct.Solution(thermo="ideal-gas", kinetics="gas", species=base.species(),
                       reactions=list(base.reactions()) + extra)


def _states(K, B, seed, zeros):
    g = torch.Generator().manual_seed(seed)
    T = 600 + 2200 * torch.rand(B, generator=g, dtype=F64)
    P = torch.exp(math.log(1e4) + math.log(1e3) * torch.rand(B, generator=g, dtype=F64))
    Y = torch.rand(B, K, generator=g, dtype=F64) ** 4
    Y[:, 1::4] *= 1e-12                                                     # trace species
    if zeros:
        Y[:, ::3] = 0.0
    return T, P, Y / Y.sum(-1, keepdim=True)


def _autodiff_jacobian(prob, mech, u):
    """Per-member ∂f/∂u by reverse mode (members are independent: differentiate the batch sum)."""
    return torch.autograd.functional.jacobian(lambda v: prob.f(v, mech, 0.0).sum(0), u).permute(1, 0, 2)


@pytest.mark.parametrize("kind", ["const-pressure", "const-volume", "isothermal"])
@pytest.mark.parametrize("zeros", [False, True], ids=["all-present", "zero-species"])
@pytest.mark.parametrize("name", ["every-rate-type", "gri30.yaml"])
def test_analytic_jacobian_equals_autodiff(name, zeros, kind):
    mech = Mechanism.from_cantera(_every_rate_type() if name == "every-rate-type" else name)
    T, P, Y = _states(mech.n_species, 4, seed=3, zeros=zeros)
    prob = reactor_problem(mech, T, P, Y, (0.0, 1.0), kind)
    u = prob.u0.clone()
    J = prob.jac(u, mech, 0.0)
    ref = _autodiff_jacobian(prob, mech, u)
    assert J.shape == ref.shape == (4, mech.n_species + 1, mech.n_species + 1)
    scale = ref.abs().amax(-1, keepdim=True)                               # per row
    err = ((J - ref).abs() / scale.clamp(min=1e-300)).max()
    assert float(err.detach()) < 1e-12, float(err.detach())
    assert torch.equal(prob.tgrad(u, mech, 0.0), torch.zeros_like(u))


def test_production_jacobian_against_cantera_differences():
    """∂ω̇/∂C of GRI-Mech 3.0 against central differences of Cantera's net production rates in each
    concentration (at fixed T)."""
    gas = ct.Solution("gri30.yaml")
    mech = Mechanism.from_cantera(gas)
    T, P, Y = _states(gas.n_species, 1, seed=8, zeros=False)
    with torch.no_grad():
        C = mech.concentrations(T, P, Y)
        lnP = torch.log(P)
        basis = torch.cat([T[..., None] ** torch.tensor([0.0, 1, 2, 3, 4, -1], dtype=F64), torch.log(T)[..., None]], -1)
        thermo = mech.thermo.evaluate(T, basis)
        derivs = mech._progress(T, lnP, C, thermo, derivative=True, basis=basis)[3]
        A = mech._production_jacobian(derivs)[0]

    def wdot(conc):
        total = conc.sum()                   # an ideal gas with exactly these concentrations
        gas.TPX = float(T), total * ct.gas_constant * float(T), conc / total
        return torch.tensor(gas.net_production_rates, dtype=F64)

    c0 = C[0].numpy().copy()
    for j in torch.argsort(C[0], descending=True)[:6].tolist():
        h = 1e-6 * c0[j]
        up, down = c0.copy(), c0.copy()
        up[j] += h
        down[j] -= h
        fd = (wdot(up) - wdot(down)) / (2 * h)
        assert float((A[:, j] - fd).abs().max()) <= 1e-5 * float(fd.abs().max()), mech.species_names[j]
