"""pyode.chem against Cantera: rate constants, equilibrium constants, rates of progress and net
production rates of the mechanisms Cantera ships (h2o2, GRI-Mech 3.0, n-dodecane), multipliers,
temperature derivatives, and bad input."""
import math

import pytest
import torch

ct = pytest.importorskip("cantera", reason="pyode.chem reads mechanisms with Cantera (pip install 'pyode[chem]')")

from pyode.chem import GAS_CONSTANT, Mechanism  # noqa: E402

F64 = torch.float64


def _ideal(name):
    gas = ct.Solution(name)
    if gas.thermo_model != "ideal-gas":       # nDodecane_Reitz.yaml is Redlich-Kwong
        gas = ct.Solution(thermo="ideal-gas", kinetics="gas", species=gas.species(), reactions=gas.reactions())
    return gas


def _states(gas, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = 800 + 1700 * torch.rand(B, generator=g, dtype=F64)
    P = torch.exp(math.log(1e4) + math.log(1e3) * torch.rand(B, generator=g, dtype=F64))
    Y = torch.rand(B, gas.n_species, generator=g, dtype=F64) ** 4
    return T, P, Y / Y.sum(-1, keepdim=True)


@pytest.mark.parametrize("name", ["h2o2.yaml", "gri30.yaml", "nDodecane_Reitz.yaml"])
def test_rates_equal_canteras(name):
    gas = _ideal(name)
    mech = Mechanism.from_cantera(gas)
    assert mech.species_names == list(gas.species_names) and len(mech.equations) == gas.n_reactions
    T, P, Y = _states(gas, 16)
    with torch.no_grad():
        C = mech.concentrations(T, P, Y)
        kf = mech.forward_rate_constants(T, C)
        Kc = mech.equilibrium_constants(T)
        fwd, rev, net = mech.rates_of_progress(T, P, Y)
        wdot = mech.net_production_rates(T, P, Y)
    for b in range(T.shape[0]):
        gas.TPY = float(T[b]), float(P[b]), Y[b].numpy()
        ref = {name: torch.tensor(getattr(gas, name), dtype=F64) for name in
               ("concentrations", "forward_rate_constants", "equilibrium_constants", "forward_rates_of_progress",
                "reverse_rates_of_progress", "net_rates_of_progress", "net_production_rates")}
        for mine, key in ((kf[b], "forward_rate_constants"), (Kc[b], "equilibrium_constants")):
            rel = (mine - ref[key]).abs() / ref[key].abs()
            assert float(rel.max()) < 1e-12, (key, int(rel.argmax()))
        for mine, key in ((C[b], "concentrations"), (fwd[b], "forward_rates_of_progress"),
                          (rev[b], "reverse_rates_of_progress"), (net[b], "net_rates_of_progress"),
                          (wdot[b], "net_production_rates")):
            scaled = (mine - ref[key]).abs().max() / ref[key].abs().max()
            assert float(scaled) < 1e-12, key


def test_multipliers_are_canteras_in_log():
    gas = ct.Solution("gri30.yaml")
    mech = Mechanism.from_cantera(gas)
    T, P, Y = _states(gas, 1, seed=3)
    factors = {37: 2.5, 100: 0.1, 240: 7.0}
    with torch.no_grad():
        for i, m in factors.items():
            mech.log_multipliers[i] = math.log(m)
            gas.set_multiplier(m, i)
        wdot = mech.net_production_rates(T, P, Y)[0]
    gas.TPY = float(T[0]), float(P[0]), Y[0].numpy()
    ref = torch.tensor(gas.net_production_rates, dtype=F64)
    assert float((wdot - ref).abs().max() / ref.abs().max()) < 1e-12


def test_derivatives_against_central_differences_of_cantera():
    gas = ct.Solution("gri30.yaml")
    mech = Mechanism.from_cantera(gas)
    T, P, Y = _states(gas, 1, seed=5)
    T = T.clone().requires_grad_(True)
    wdot = mech.net_production_rates(T, P, Y)[0]
    k = int(wdot.detach().abs().argmax())
    (dT,) = torch.autograd.grad(wdot[k], T, retain_graph=True)
    (dmult,) = torch.autograd.grad(wdot[k], mech.log_multipliers)
    h = 1e-5 * float(T.detach())

    def cantera_wdot(temp, mult=None):
        gas.set_multiplier(1.0)
        if mult is not None:
            gas.set_multiplier(math.exp(mult[1]), mult[0])
        gas.TPY = temp, float(P[0]), Y[0].numpy()
        return gas.net_production_rates[k]

    T0 = float(T.detach())
    fd = (cantera_wdot(T0 + h) - cantera_wdot(T0 - h)) / (2 * h)
    assert abs(float(dT) - fd) <= 1e-6 * abs(fd)
    for i in torch.argsort(dmult.abs(), descending=True)[:3].tolist():
        fd = (cantera_wdot(T0, (i, 1e-6)) - cantera_wdot(T0, (i, -1e-6))) / 2e-6
        assert abs(float(dmult[i]) - fd) <= 1e-6 * abs(fd)


def test_float32_and_batch_shapes():
    gas = ct.Solution("h2o2.yaml")
    T, P, Y = _states(gas, 6)
    m64 = Mechanism.from_cantera(gas)
    m32 = Mechanism.from_cantera(gas, dtype=torch.float32)
    with torch.no_grad():
        w64 = m64.net_production_rates(T.reshape(2, 3), P.reshape(2, 3), Y.reshape(2, 3, -1))
        w32 = m32.net_production_rates(T.float(), P.float(), Y.float())
    assert w64.shape == (2, 3, gas.n_species) and w32.dtype == torch.float32
    scale = w64.reshape(6, -1).abs().amax(-1, keepdim=True)
    assert float(((w32.double() - w64.reshape(6, -1)).abs() / scale).max()) < 1e-4
    assert abs(GAS_CONSTANT - ct.gas_constant) == 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Redlich-Kwong.*ideal_gas=True"):
        Mechanism.from_cantera("nDodecane_Reitz.yaml")
    with pytest.raises(TypeError, match="source must be a Cantera input file"):
        Mechanism.from_cantera(42)
    species = ct.Solution("h2o2.yaml").species()
    rate = ct.PlogRate([(ct.one_atm, ct.ArrheniusRate(3.5e12, -0.4, 6.9e7)),
                        (10 * ct.one_atm, ct.ArrheniusRate(3.5e13, -0.4, 6.9e7))])
    plog = ct.Solution(thermo="ideal-gas", kinetics="gas", species=species,
                       reactions=[ct.Reaction(equation="H + O2 <=> O + OH", rate=rate)])
    with pytest.raises(ValueError, match=r"reaction 0 \(H \+ O2 <=> O \+ OH\) has a 'pressure-dependent-Arrhenius'"):
        Mechanism.from_cantera(plog)
