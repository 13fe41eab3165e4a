"""Gas-phase reaction mechanisms as torch modules, read from Cantera.

Rates follow Cantera's definitions (SI units with kmol: concentrations in kmol/m³, rates in
kmol/m³/s, activation energies in J/kmol), so that ``net_production_rates`` equals Cantera's:

- Arrhenius: ``k = A T^b exp(-Ea / (R T))``;
- three-body: the rate of progress is multiplied by ``[M] = Σ ε_k C_k`` (the forward rate constant
  is not, as Cantera 3's ``forward_rate_constants``);
- falloff: ``k = k∞ Pr / (1 + Pr) F``, ``Pr = k0 [M] / k∞``, with ``F = 1`` (Lindemann), Troe's or
  SRI's broadening;
- PLOG: ``ln k`` interpolated linearly in ``ln P`` between Arrhenius rates given at pressures (those
  at one pressure summed; the end pressures' rates outside the grid); Chebyshev: ``log10 k`` a
  double Chebyshev series in the reduced ``1/T`` and ``log10 P``;
- reversible reactions: ``kr = kf / Kc``, ``Kc = exp(-ΔG°/RT) (p°/RT)^Δν`` from the NASA-7
  polynomials, ``p°`` the mechanism's reference pressure;
- every rate of progress is multiplied by ``exp(log_multipliers)`` (Cantera's multipliers).

Batched over any leading shape of ``T``, ``P`` and ``Y``; differentiable in the state and in the
trainable tensors (``log_multipliers`` and the Arrhenius ``ln_A``, ``b``, ``Ea`` of each reaction,
``ln_A0``, ``b0``, ``Ea0`` of the low-pressure limits of falloff reactions).
"""
from __future__ import annotations

import math
import os
import warnings
from typing import List, Sequence

import torch

from . import _rates
from ._rates import unit_slots
from ._thermo import Nasa7, ThermoState, temperature_basis, temperature_basis_derivative

__all__ = ["Mechanism", "GAS_CONSTANT"]

#: J/kmol/K, as Cantera's ``ct.gas_constant``
GAS_CONSTANT = 8314.46261815324
_LINDEMANN, _TROE, _SRI = _rates.LINDEMANN, _rates.TROE, _rates.SRI


def _slots(rows: Sequence[dict], K: int):
    """Per reaction its species and exponents, padded to the longest with species ``K`` (a column of
    ones) and exponent 0: ``(index (R, S), exponent (R, S))``."""
    S = max(1, max((len(r) for r in rows), default=1))
    index = torch.full((len(rows), S), K, dtype=torch.long)
    power = torch.zeros(len(rows), S, dtype=torch.float64)
    for i, r in enumerate(rows):
        for j, (k, v) in enumerate(sorted(r.items())):
            index[i, j], power[i, j] = k, v
    return index, power


def slot_product(x: torch.Tensor, index: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """``Π_s x[index[r, s]] ** power[r, s]`` per reaction ``(..., R)``, with ``x`` ``(..., K)`` and
    index ``K`` (the padding of :func:`_slots`) reading a one."""
    x1 = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    return (x1[..., index] ** power).prod(-1)


class Mechanism(torch.nn.Module):
    """Species, reactions and thermodynamics of a gas-phase mechanism; see the module docstring.

    Build one with :meth:`from_cantera`. Attributes: ``species_names``, ``equations``,
    ``molecular_weights`` (kg/kmol), ``reference_pressure`` (Pa).
    """

    def __init__(self, *, species_names: List[str], equations: List[str], molecular_weights: torch.Tensor,
                 nasa: torch.Tensor, reference_pressure: float, reactants: List[dict], products: List[dict],
                 orders: List[dict], reversible: torch.Tensor, arrhenius: torch.Tensor, third_body: torch.Tensor,
                 efficiencies: torch.Tensor, falloff: torch.Tensor, falloff_kind: torch.Tensor,
                 low: torch.Tensor, falloff_coeffs: torch.Tensor, plog=None, chebyshev=None,
                 dtype=torch.float64):
        super().__init__()
        self.species_names, self.equations = list(species_names), list(equations)
        K, R = len(species_names), len(equations)
        self.n_species, self.n_reactions = K, R
        self.reference_pressure = float(reference_pressure)
        self.thermo = Nasa7(nasa.to(dtype))
        self.register_buffer("molecular_weights", molecular_weights.to(dtype))
        nu = torch.zeros(R, K, dtype=torch.float64)
        for i, (r, p) in enumerate(zip(reactants, products)):
            for k, v in p.items():
                nu[i, k] += v
            for k, v in r.items():
                nu[i, k] -= v
        self.register_buffer("net_stoich", nu.to(dtype))                 # (R, K) products - reactants
        self.register_buffer("delta_nu", nu.sum(1).to(dtype))
        fi, fp, self._fwd_fractional = unit_slots(orders, K)
        ri, rp, self._rev_fractional = unit_slots(products, K)
        self.register_buffer("fwd_index", fi)
        self.register_buffer("fwd_power", fp.to(dtype))
        self.register_buffer("rev_index", ri)
        self.register_buffer("rev_power", rp.to(dtype))
        self.register_buffer("reversible", reversible.bool())
        # Arrhenius of every reaction (the high-pressure limit of a falloff reaction)
        self.ln_A = torch.nn.Parameter(arrhenius[:, 0].to(dtype).clone())
        self.b = torch.nn.Parameter(arrhenius[:, 1].to(dtype).clone())
        self.Ea = torch.nn.Parameter(arrhenius[:, 2].to(dtype).clone())
        self.log_multipliers = torch.nn.Parameter(torch.zeros(R, dtype=dtype))
        # third bodies: which reactions multiply by [M] (three-body) or use it in Pr (falloff)
        self.register_buffer("third_body", third_body.bool())            # (R,) three-body, not falloff
        self.register_buffer("efficiencies", efficiencies.to(dtype))      # (R, K)
        self.register_buffer("falloff", falloff.long())                  # (F,) reaction indices
        self.register_buffer("falloff_kind", falloff_kind.long())        # (F,)
        self.register_buffer("falloff_coeffs", falloff_coeffs.to(dtype))  # (F, 5)
        # which broadening functions to evaluate at all (Python flags: no work for absent kinds)
        self._has_troe = bool((falloff_kind == _TROE).any())
        self._has_sri = bool((falloff_kind == _SRI).any())
        tables = _rates.falloff_tables(falloff_kind.long(), falloff_coeffs.to(dtype))
        self._falloff_names = tuple(tables)
        for name, value in tables.items():
            self.register_buffer("_falloff_" + name, value)
        self._cache_key, self._cache = None, None
        self._pattern = None
        self._triplets = None
        self.ln_A0 = torch.nn.Parameter(low[:, 0].to(dtype).clone())
        self.b0 = torch.nn.Parameter(low[:, 1].to(dtype).clone())
        self.Ea0 = torch.nn.Parameter(low[:, 2].to(dtype).clone())
        # PLOG: per reaction, Arrhenius sets at a grid of pressures (summed per pressure), padded
        plog = plog or {"index": [], "lnP": [], "arrhenius": []}
        self.register_buffer("plog", torch.tensor(plog["index"], dtype=torch.long))
        n_p = max([len(g) for g in plog["lnP"]], default=1)
        n_m = max([len(sets) for grid in plog["arrhenius"] for sets in grid], default=1)
        lnP = torch.full((len(plog["index"]), n_p), float("inf"), dtype=torch.float64)
        arr = torch.zeros(len(plog["index"]), n_p, n_m, 3, dtype=torch.float64)
        for r, (grid, sets) in enumerate(zip(plog["lnP"], plog["arrhenius"])):
            lnP[r, :len(grid)] = torch.tensor(grid, dtype=torch.float64)
            lnP[r, len(grid):] = grid[-1]              # padding repeats the last pressure
            for j, rates in enumerate(sets):
                arr[r, j, :len(rates)] = torch.tensor(rates, dtype=torch.float64)
            for j in range(len(sets), n_p):
                arr[r, j] = arr[r, len(sets) - 1]
        self.register_buffer("plog_lnP", lnP.to(dtype))
        self.register_buffer("plog_arrhenius", arr.to(dtype))       # (A, b, Ea); A = 0 pads a set
        # Chebyshev: log10 k = Σ α_tp φ_t(T~) φ_p(P~), coefficients padded with zeros
        cheb = chebyshev or {"index": [], "alpha": [], "T": [], "P": []}
        self.register_buffer("cheb", torch.tensor(cheb["index"], dtype=torch.long))
        n_t = max([len(a) for a in cheb["alpha"]], default=1)
        n_q = max([len(a[0]) for a in cheb["alpha"]], default=1)
        alpha = torch.zeros(len(cheb["index"]), n_t, n_q, dtype=torch.float64)
        for r, a in enumerate(cheb["alpha"]):
            alpha[r, :len(a), :len(a[0])] = torch.tensor(a, dtype=torch.float64)
        self.register_buffer("cheb_alpha", alpha.to(dtype))
        self.register_buffer("cheb_T", torch.tensor(cheb["T"], dtype=dtype).reshape(-1, 2))
        self.register_buffer("cheb_P", torch.tensor(cheb["P"], dtype=dtype).reshape(-1, 2))

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_cantera(cls, source, dtype: torch.dtype = torch.float64, ideal_gas: bool = False) -> "Mechanism":
        """A mechanism from a Cantera input file (``"gri30.yaml"``, a path) or a ``cantera.Solution``.

        Species and reactions keep Cantera's order. Supported: elementary Arrhenius, three-body with
        efficiencies (or a named collider), falloff (Lindemann, Troe, SRI), PLOG, Chebyshev,
        duplicates, reaction orders, reversible and irreversible reactions, NASA-7 thermodynamics.
        (PLOG and Chebyshev rates are data: their coefficients are buffers, not trained.)

        pyode's gas is ideal. A phase Cantera models otherwise (``nDodecane_Reitz.yaml`` declares
        Redlich-Kwong) is refused unless ``ideal_gas=True``: then its species and reactions are read
        and evaluated as an ideal gas (what ``ct.Solution(thermo="ideal-gas", kinetics="gas",
        species=..., reactions=...)`` computes).
        """
        try:
            import cantera as ct
        except ImportError:
            raise ImportError("pyode.chem.Mechanism.from_cantera needs Cantera: pip install 'pyode[chem]' "
                              "(or pip install cantera)") from None
        if isinstance(source, ct.Solution):
            gas = source
        elif isinstance(source, (str, os.PathLike)):
            try:
                gas = ct.Solution(os.fspath(source))
            except ct.CanteraError as exc:
                if "findInputFile" in str(exc) or "could not find" in str(exc).lower():
                    raise FileNotFoundError(
                        f"mechanism file {os.fspath(source)!r} not found: give a path to a Cantera YAML file, or "
                        f"the name of one Cantera ships (gri30.yaml, h2o2.yaml, ...)") from None
                raise ValueError(f"Cantera could not read {os.fspath(source)!r}: {str(exc).strip()}") from None
        else:
            raise TypeError(f"source must be a Cantera input file name or path, or a cantera.Solution; "
                            f"got {type(source).__name__}")
        if gas.thermo_model != "ideal-gas" and not ideal_gas:
            raise ValueError(f"the phase is {gas.thermo_model!r}, but pyode.chem models an ideal gas; pass "
                             "ideal_gas=True to read its species and reactions as an ideal gas")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float64 (recommended) or torch.float32; got {dtype}")
        names = list(gas.species_names)
        index = {s: k for k, s in enumerate(names)}
        K, R = gas.n_species, gas.n_reactions
        nasa = []
        for sp in gas.species():
            if type(sp.thermo).__name__ != "NasaPoly2":
                raise ValueError(f"species {sp.name!r} has {type(sp.thermo).__name__} thermodynamics; "
                                 "pyode.chem reads NASA 7-coefficient polynomials (NasaPoly2) only")
            nasa.append(list(sp.thermo.coeffs))
        reactants, products, orders, equations = [], [], [], []
        arrhenius = torch.zeros(R, 3, dtype=torch.float64)
        reversible = torch.zeros(R, dtype=torch.bool)
        third_body = torch.zeros(R, dtype=torch.bool)
        efficiencies = torch.zeros(R, K, dtype=torch.float64)
        falloff, kinds, low, coeffs = [], [], [], []
        plog = {"index": [], "lnP": [], "arrhenius": []}
        cheb = {"index": [], "alpha": [], "T": [], "P": []}
        for i, r in enumerate(gas.reactions()):
            equations.append(r.equation)
            reac = {index[s]: float(v) for s, v in r.reactants.items()}
            prod = {index[s]: float(v) for s, v in r.products.items()}
            reactants.append(reac)
            products.append(prod)
            order = dict(reac)
            for s, v in (r.orders or {}).items():
                order[index[s]] = float(v)
            orders.append(order)
            reversible[i] = bool(r.reversible)
            kind = r.reaction_type
            if r.third_body is not None:
                eff = torch.full((K,), float(r.third_body.default_efficiency), dtype=torch.float64)
                for s, v in r.third_body.efficiencies.items():
                    eff[index[s]] = float(v)
                if r.third_body.name != "M":          # a named collider: that species alone
                    eff = torch.zeros(K, dtype=torch.float64)
                    eff[index[r.third_body.name]] = 1.0
                efficiencies[i] = eff
            rate = r.rate
            if kind in ("Arrhenius", "three-body-Arrhenius"):
                arrhenius[i] = torch.tensor(cls._arrhenius(rate, r), dtype=torch.float64)
                third_body[i] = kind == "three-body-Arrhenius"
            elif kind.startswith("falloff-"):
                name = kind[len("falloff-"):]
                if name not in ("Lindemann", "Troe", "SRI"):
                    raise ValueError(f"reaction {i} ({r.equation}) is a {kind} reaction; pyode.chem supports "
                                     "Lindemann, Troe and SRI falloff")
                arrhenius[i] = torch.tensor(cls._arrhenius(rate.high_rate, r), dtype=torch.float64)
                falloff.append(i)
                low.append(cls._arrhenius(rate.low_rate, r))
                kinds.append({"Lindemann": _LINDEMANN, "Troe": _TROE, "SRI": _SRI}[name])
                c = [float(x) for x in rate.falloff_coeffs]
                if name == "Troe":
                    c = c + [0.0] * (4 - len(c)) + [1.0 if len(c) == 4 else 0.0]   # [A, T3, T1, T2, has T2]
                elif name == "SRI":
                    c = c + [1.0, 0.0][len(c) - 3:] if len(c) < 5 else c          # [a, b, c, d, e]
                else:
                    c = [0.0] * 5
                coeffs.append(c)
            elif kind == "pressure-dependent-Arrhenius":
                grid: dict = {}
                for pressure, arr in rate.rates:
                    grid.setdefault(float(pressure), []).append(
                        [float(arr.pre_exponential_factor), float(arr.temperature_exponent),
                         float(arr.activation_energy)])
                pressures = sorted(grid)
                plog["index"].append(i)
                plog["lnP"].append([math.log(q) for q in pressures])
                plog["arrhenius"].append([grid[q] for q in pressures])
            elif kind == "Chebyshev":
                cheb["index"].append(i)
                cheb["alpha"].append([[float(x) for x in row] for row in rate.data])
                cheb["T"].append([float(x) for x in rate.temperature_range])
                cheb["P"].append([float(x) for x in rate.pressure_range])
            else:
                raise ValueError(f"reaction {i} ({r.equation}) has a {kind!r} rate, which pyode.chem does not "
                                 "support (supported: Arrhenius, three-body, Lindemann/Troe/SRI falloff, PLOG, "
                                 "Chebyshev)")
        F = len(falloff)
        return cls(species_names=names, equations=equations,
                   molecular_weights=torch.tensor(gas.molecular_weights, dtype=torch.float64),
                   nasa=torch.tensor(nasa, dtype=torch.float64), reference_pressure=gas.reference_pressure,
                   reactants=reactants, products=products, orders=orders, reversible=reversible,
                   arrhenius=arrhenius, third_body=third_body, efficiencies=efficiencies,
                   falloff=torch.tensor(falloff, dtype=torch.long),
                   falloff_kind=torch.tensor(kinds, dtype=torch.long),
                   low=torch.tensor(low, dtype=torch.float64).reshape(F, 3),
                   falloff_coeffs=torch.tensor(coeffs, dtype=torch.float64).reshape(F, 5), plog=plog,
                   chebyshev=cheb, dtype=dtype)

    @staticmethod
    def _arrhenius(rate, reaction):
        A = float(rate.pre_exponential_factor)
        if not A > 0:
            raise ValueError(f"reaction {reaction.equation!r} has pre-exponential factor {A:g}; ln A needs A > 0")
        return [math.log(A), float(rate.temperature_exponent), float(rate.activation_energy)]

    # ---- state --------------------------------------------------------------------------------------
    def check_state(self, T: torch.Tensor, P, Y: torch.Tensor, names=("T", "P", "Y")) -> None:
        """Raise a ValueError naming the argument and the first offending member when ``T`` or ``P``
        is not finite and positive, or ``Y`` has the wrong length, entries below -1e-8 (round-off
        negatives of a solve pass) or sums that differ from 1 by more than 1e-6."""
        def first(bad):
            return tuple(int(i) for i in bad.nonzero()[0]) if bad.ndim else ()

        def where(at):
            return f" at member {at}" if at else ""

        T = torch.as_tensor(T)
        P = torch.as_tensor(P)
        for name, x, unit in ((names[0], T, "K"), (names[1], P, "Pa")):
            bad = ~(torch.isfinite(x) & (x > 0))
            if bool(bad.any()):
                at = first(bad)
                raise ValueError(f"{name} must be finite and positive ({unit}); got {float(x[at]):g}{where(at)}")
        y = names[2]
        if Y.shape[-1] != self.n_species:
            raise ValueError(f"{y} has {Y.shape[-1]} entries on its last axis; the mechanism has {self.n_species} species")
        bad = (Y < -1e-8).any(-1)
        if bool(bad.any()):
            at = first(bad)
            k = int(Y[at].argmin())
            raise ValueError(f"{y} must be mass fractions, non-negative:{where(at)} {self.species_names[k]} = "
                             f"{float(Y[at][k]):g}")
        total = Y.sum(-1)
        bad = ~((total - 1).abs() <= 1e-6)
        if bool(bad.any()):
            at = first(bad)
            raise ValueError(f"{y} must be mass fractions summing to 1:{where(at)} the sum is {float(total[at]):.9g}; "
                             "normalise it (Y / Y.sum(-1, keepdim=True))")

    def concentrations(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Molar concentrations (kmol/m³) of an ideal gas at ``T`` (K), ``P`` (Pa), mass fractions ``Y``."""
        moles = Y / self.molecular_weights                       # kmol/kg
        rho = P / (GAS_CONSTANT * T * moles.sum(-1))             # kg/m³
        return rho[..., None] * moles

    # ---- rates ----------------------------------------------------------------------------------------
    def _parameter_tensors(self):
        """``(coefficients (7, R + F), multipliers (R,))``: the Arrhenius parameters of every reaction,
        then of every falloff reaction's low-pressure limit, as rows on :func:`temperature_basis`
        (``ln k = basis @ coefficients``: ``ln A`` on 1, ``-Ea/R`` on 1/T, ``b`` on ln T), and
        ``exp(log_multipliers)``. Cached while no gradient is recorded and the parameters are
        unchanged (their version counters)."""
        params = (self.ln_A, self.b, self.Ea, self.ln_A0, self.b0, self.Ea0, self.log_multipliers)
        recording = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        key = None if recording or torch.compiler.is_compiling() else tuple((p._version, p.data_ptr()) for p in params)
        if key is not None and key == self._cache_key:
            return self._cache
        lnA, b, Ea = torch.cat([self.ln_A, self.ln_A0]), torch.cat([self.b, self.b0]), torch.cat([self.Ea, self.Ea0])
        zero = torch.zeros_like(lnA)
        coef = torch.stack([lnA, zero, zero, zero, zero, Ea * (-1.0 / GAS_CONSTANT), b])
        out = (coef, torch.exp(self.log_multipliers))
        if key is not None:
            self._cache_key, self._cache = key, out
        return out

    def _kf(self, T: torch.Tensor, lnP, C: torch.Tensor, M: torch.Tensor, derivative: bool, basis=None, coef=None):
        """``kf`` ``(..., R)`` and, with ``derivative``, ``∂kf/∂[M]`` (falloff), ``∂ln kf/∂T`` and
        ``∂ln kf/∂ln P`` (PLOG, Chebyshev; None without them)."""
        R = self.n_reactions
        if coef is None:
            coef = self._parameter_tensors()[0]
        if basis is None:
            basis = temperature_basis(T)
        k = torch.exp(basis @ coef)
        kf = k[..., :R]
        dkf_dM = dlnkf_dT = dlnkf_dlnP = None
        if derivative:
            dlnk_dT = temperature_basis_derivative(T) @ coef
            dlnkf_dT = dlnk_dT[..., :R]
        if self.falloff.numel():
            fi = self.falloff
            tables = {name: getattr(self, "_falloff_" + name) for name in self._falloff_names}
            kfall, dM, dT = _rates.falloff(
                kf[..., fi], k[..., R:], M[..., fi], T, tables, self._has_troe, self._has_sri, derivative,
                dlnkf_dT[..., fi] if derivative else None, dlnk_dT[..., R:] if derivative else None)
            kf = kf.index_copy(-1, fi, kfall)
            if derivative:
                dkf_dM = torch.zeros_like(kf).index_copy(-1, fi, dM)
                dlnkf_dT = dlnkf_dT.index_copy(-1, fi, dT)
        if self.plog.numel() or self.cheb.numel():
            if lnP is None:
                raise ValueError("this mechanism has PLOG or Chebyshev reactions: pass the pressure P")
            lnP = lnP.expand(T.shape)
            if derivative:
                dlnkf_dlnP = torch.zeros_like(kf)
            for rows, (value, dT, dlnP) in (
                    (self.plog, _rates.plog(T, lnP, self.plog_lnP, self.plog_arrhenius, GAS_CONSTANT, derivative)
                     if self.plog.numel() else (None, None, None)),
                    (self.cheb, _rates.chebyshev(T, lnP, self.cheb_alpha, self.cheb_T, self.cheb_P, derivative)
                     if self.cheb.numel() else (None, None, None))):
                if value is None:
                    continue
                kf = kf.index_copy(-1, rows, value)
                if derivative:
                    dlnkf_dT = dlnkf_dT.index_copy(-1, rows, dT)
                    dlnkf_dlnP = dlnkf_dlnP.index_copy(-1, rows, dlnP)
        return kf, dkf_dM, dlnkf_dT, dlnkf_dlnP

    def forward_rate_constants(self, T: torch.Tensor, C: torch.Tensor, P: torch.Tensor = None) -> torch.Tensor:
        """``kf`` per reaction ``(..., R)`` (three-body reactions without ``[M]``, falloff with it);
        ``P`` (Pa) is needed by PLOG and Chebyshev reactions."""
        lnP = None if P is None else torch.log(torch.as_tensor(P, dtype=T.dtype))
        return self._kf(T, lnP, C, C @ self.efficiencies.T, False)[0]

    def equilibrium_constants(self, T: torch.Tensor) -> torch.Tensor:
        """``Kc`` per reaction in concentration units, ``(..., R)``."""
        dG = self.thermo.g_RT(T) @ self.net_stoich.T                              # ΔG°/RT
        ln_c0 = torch.log(self.reference_pressure / (GAS_CONSTANT * T))[..., None]
        return torch.exp(-dG + self.delta_nu * ln_c0)

    def _progress(self, T: torch.Tensor, lnP, C: torch.Tensor, thermo: ThermoState, derivative: bool = False,
                  basis: torch.Tensor = None):
        """Forward, reverse and net rates of progress ``(..., R)`` at ``T``, ``ln P`` and concentrations
        ``C``; with ``derivative`` also ``∂q/∂C`` (factored: the coefficients of the concentration-product
        slots and of ``[M]``, see :meth:`_production_jacobian`), ``∂q/∂T`` and ``∂q/∂ln P`` (or None) of
        the net rates, each at constant other arguments."""
        M = C @ self.efficiencies.T                                               # (..., R)
        if basis is None:
            basis = temperature_basis(T)
        coef, mult = self._parameter_tensors()
        kf, dkf_dM, dlnkf_dT, dlnkf_dlnP = self._kf(T, lnP, C, M, derivative, basis, coef)
        dG = thermo.g_RT @ self.net_stoich.T
        ln_c0 = math.log(self.reference_pressure / GAS_CONSTANT) - basis[..., 6:]   # ln(p°/(RT))
        # kr = kf / Kc, in logarithms: Kc spans hundreds of decades
        inv_Kc = torch.where(self.reversible, torch.exp(dG - self.delta_nu * ln_c0), torch.zeros_like(kf))
        C1 = torch.cat([C, torch.ones_like(C[..., :1])], -1)
        pf, dpf = _rates.concentration_product(C1, self.fwd_index, self.fwd_power, self._fwd_fractional, derivative)
        pr, dpr = _rates.concentration_product(C1, self.rev_index, self.rev_power, self._rev_fractional, derivative)
        tb = torch.where(self.third_body, M, torch.ones_like(M))
        a = mult * tb * kf
        fwd, rev = a * pf, a * inv_Kc * pr
        if not derivative:
            return fwd, rev, fwd - rev
        D = pf - inv_Kc * pr
        # [M] enters through three-body factors and falloff rate constants
        gM = mult * D * (kf * self.third_body.to(kf.dtype) + (dkf_dM if dkf_dM is not None else 0.0))
        slots = torch.cat([a[..., None] * dpf, -(a * inv_Kc)[..., None] * dpr], -1)
        dlnKc_dT = (thermo.h_RT @ self.net_stoich.T - self.delta_nu) / T[..., None]
        dq_dT = a * (D * dlnkf_dT + inv_Kc * pr * dlnKc_dT)
        dq_dlnP = None if dlnkf_dlnP is None else a * D * dlnkf_dlnP
        return fwd, rev, fwd - rev, (slots, gM), dq_dT, dq_dlnP

    def _production_jacobian(self, dq_dC) -> torch.Tensor:
        """``∂ω̇/∂C`` ``(..., K, K)`` from :meth:`_progress`'s factored ``∂q/∂C``: one sparse matrix
        product over the nonzero terms (:func:`~._rates.sparse_jacobian_pattern`), 5-12 times faster
        than gathering them into a dense ``(R, K)`` derivative per member."""
        slots, gM = dq_dC
        K = self.n_species
        coeffs = torch.cat([slots.flatten(-2), gM], -1)
        batch = coeffs.shape[:-1]
        flat = coeffs.reshape(-1, coeffs.shape[-1])
        try:
            # (K², B) from the sparse product, laid out as (B, K, K) once: the batched matrix products
            # and concatenations that follow copy member by member from a transposed layout
            out = (self._jacobian_pattern(flat) @ flat.T).T.contiguous()
        except RuntimeError:
            # under torch.func transforms (the fused loop's vmap) sparse tensors cannot be batched:
            # the same sum by a gather and an index_add
            source, target, weight = self._jacobian_triplets(flat)
            out = torch.zeros(flat.shape[0], K * K, dtype=flat.dtype, device=flat.device)
            out = out.index_add(-1, target, flat[:, source] * weight)
        return out.reshape(*batch, K, K)

    def _jacobian_triplets(self, like: torch.Tensor):
        if self._triplets is None or self._triplets[0].device != like.device:
            source, target, weight = _rates.sparse_jacobian_pattern(
                self.net_stoich.double().cpu(), torch.cat([self.fwd_index, self.rev_index], -1).cpu(),
                self.efficiencies.double().cpu())
            self._triplets = (source.to(like.device), target.to(like.device), weight.to(like.device))
        source, target, weight = self._triplets
        return source, target, weight.to(like.dtype)

    def _weight_ratio(self) -> torch.Tensor:
        """``W_k / W_j`` ``(K, K)``."""
        W = self.molecular_weights
        return W[:, None] / W[None, :]

    def _jacobian_pattern(self, like: torch.Tensor) -> torch.Tensor:
        """The constant ``(K², terms)`` CSR matrix of :meth:`_production_jacobian`, built once per
        device and dtype."""
        key = (like.device, like.dtype)
        if self._pattern is None or self._pattern[0] != key:
            source, target, weight = _rates.sparse_jacobian_pattern(
                self.net_stoich.double().cpu(), torch.cat([self.fwd_index, self.rev_index], -1).cpu(),
                self.efficiencies.double().cpu())
            K, terms = self.n_species, self.fwd_index.numel() + self.rev_index.numel() + self.n_reactions
            with warnings.catch_warnings():       # CSR support is marked beta; these products are tested
                warnings.simplefilter("ignore")
                matrix = torch.sparse_coo_tensor(torch.stack([target, source]), weight, (K * K, terms)).coalesce()
                matrix = matrix.to(device=like.device, dtype=like.dtype).to_sparse_csr()
            self._pattern = (key, matrix)
        return self._pattern[1]

    def rates_of_progress(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor):
        """``(forward, reverse, net)`` rates of progress (kmol/m³/s), each ``(..., R)``. Raises a
        ValueError for a state :meth:`check_state` rejects."""
        self.check_state(T, P, Y)
        C = self.concentrations(T, P, Y)
        lnP = torch.log(torch.as_tensor(P, dtype=T.dtype))
        basis = temperature_basis(T)
        return self._progress(T, lnP, C, self.thermo.evaluate(T, basis), basis=basis)

    def net_production_rates(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Net molar production rate of every species, kmol/m³/s, ``(..., K)`` (Cantera's
        ``net_production_rates``)."""
        return self.rates_of_progress(T, P, Y)[2] @ self.net_stoich

    def extra_repr(self) -> str:
        return f"{self.n_species} species, {self.n_reactions} reactions, {self.falloff.numel()} falloff"
