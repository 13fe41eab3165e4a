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
from typing import List, Sequence

import torch

from ._thermo import Nasa7

__all__ = ["Mechanism", "GAS_CONSTANT"]

#: J/kmol/K, as Cantera's ``ct.gas_constant``
GAS_CONSTANT = 8314.46261815324
# Cantera's guard against log(0) and division by 0 in the falloff functions
_SMALL = 1e-300
_LINDEMANN, _TROE, _SRI = 0, 1, 2


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
        fi, fp = _slots(orders, K)
        ri, rp = _slots(products, K)
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
        elif isinstance(source, str):
            gas = ct.Solution(source)
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
    def concentrations(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Molar concentrations (kmol/m³) of an ideal gas at ``T`` (K), ``P`` (Pa), mass fractions ``Y``."""
        moles = Y / self.molecular_weights                       # kmol/kg
        rho = P / (GAS_CONSTANT * T * moles.sum(-1))             # kg/m³
        return rho[..., None] * moles

    # ---- rates ----------------------------------------------------------------------------------------
    @staticmethod
    def _k(ln_A, b, Ea, T):
        return torch.exp(ln_A + b * torch.log(T[..., None]) - Ea / (GAS_CONSTANT * T[..., None]))

    def forward_rate_constants(self, T: torch.Tensor, C: torch.Tensor, P: torch.Tensor = None) -> torch.Tensor:
        """``kf`` per reaction ``(..., R)`` (three-body reactions without ``[M]``, falloff with it);
        ``P`` (Pa) is needed by PLOG and Chebyshev reactions."""
        kf = self._k(self.ln_A, self.b, self.Ea, T)
        if self.falloff.numel():
            kf = kf.index_copy(-1, self.falloff, self._falloff(T, C, kf[..., self.falloff]))
        if self.plog.numel() or self.cheb.numel():
            if P is None:
                raise ValueError("this mechanism has PLOG or Chebyshev reactions: pass the pressure P")
            P = torch.as_tensor(P, dtype=T.dtype).expand(T.shape)
            if self.plog.numel():
                kf = kf.index_copy(-1, self.plog, self._plog(T, P))
            if self.cheb.numel():
                kf = kf.index_copy(-1, self.cheb, self._chebyshev(T, P))
        return kf

    def _plog(self, T, P):
        """Cantera's PLOG: ln k linear in ln P between the grid pressures, the end values outside."""
        arr = self.plog_arrhenius                                               # (Rp, Np, M, 3)
        t = T[..., None, None, None]
        A, b, Ea = arr[..., 0], arr[..., 1], arr[..., 2]
        k_grid = (A * t ** b * torch.exp(-Ea / (GAS_CONSTANT * t))).sum(-1)      # (..., Rp, Np)
        ln_k = torch.log(k_grid.clamp(min=_SMALL))
        grid = self.plog_lnP                                                    # (Rp, Np)
        lnP = torch.log(P)[..., None].clamp(min=grid[:, 0], max=grid.max(-1).values)
        out = ln_k[..., 0]
        for j in range(grid.shape[1] - 1):
            lo, hi = grid[:, j], grid[:, j + 1]
            width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
            inside = (lnP >= lo) & (lnP <= hi) & (hi > lo)
            frac = (lnP - lo) / width
            out = torch.where(inside, ln_k[..., j] + (ln_k[..., j + 1] - ln_k[..., j]) * frac, out)
        return torch.exp(out)

    def _chebyshev(self, T, P):
        """Cantera's Chebyshev rate: ``log10 k = Σ_tp α_tp φ_t(T~) φ_p(P~)``, reduced coordinates in
        1/T and log10 P."""
        Tmin, Tmax = self.cheb_T[:, 0], self.cheb_T[:, 1]
        Pmin, Pmax = torch.log10(self.cheb_P[:, 0]), torch.log10(self.cheb_P[:, 1])
        Tr = (2 / T[..., None] - 1 / Tmin - 1 / Tmax) / (1 / Tmax - 1 / Tmin)
        Pr = (2 * torch.log10(P)[..., None] - Pmin - Pmax) / (Pmax - Pmin)

        def chebyshev(x, n):
            out = [torch.ones_like(x), x]
            for _ in range(2, n):
                out.append(2 * x * out[-1] - out[-2])
            return torch.stack(out[:n], -1)

        a = self.cheb_alpha                                                      # (Rc, nT, nP)
        phiT, phiP = chebyshev(Tr, a.shape[1]), chebyshev(Pr, a.shape[2])        # (..., Rc, n)
        return 10 ** torch.einsum("...rt,rtp,...rp->...r", phiT, a, phiP)

    def _falloff(self, T, C, k_inf):
        M = C @ self.efficiencies[self.falloff].T                              # (..., F)
        k0 = self._k(self.ln_A0, self.b0, self.Ea0, T)
        Pr = k0 * M / k_inf.clamp(min=_SMALL)
        logPr = torch.log10(Pr.clamp(min=_SMALL))
        c = self.falloff_coeffs
        t = T[..., None]
        safe = lambda x: torch.where(x != 0, x, torch.ones_like(x))           # noqa: E731
        kind = self.falloff_kind
        F = torch.ones_like(Pr)
        if self._has_troe:
            # F_cent from (A, T3, T1[, T2]); the terms with zero temperatures vanish, as Cantera's
            A, T3, T1, T2, has_T2 = c[:, 0], c[:, 1], c[:, 2], c[:, 3], c[:, 4]
            fcent = ((1 - A) * torch.where(T3 != 0, torch.exp(-t / safe(T3)), torch.zeros_like(t))
                     + A * torch.where(T1 != 0, torch.exp(-t / safe(T1)), torch.zeros_like(t))
                     + torch.where(has_T2 != 0, torch.exp(-T2 / t), torch.zeros_like(t)))
            log_fcent = torch.log10(fcent.clamp(min=_SMALL))
            cc = -0.4 - 0.67 * log_fcent
            nn_ = 0.75 - 1.27 * log_fcent
            f1 = (logPr + cc) / (nn_ - 0.14 * (logPr + cc))
            F = torch.where(kind == _TROE, 10 ** (log_fcent / (1 + f1 * f1)), F)
        if self._has_sri:
            # d (a exp(-b/T) + exp(-T/c))^X T^e, X = 1 / (1 + log10(Pr)^2)
            a, bb, cs, d, e = c[:, 0], c[:, 1], c[:, 2], c[:, 3], c[:, 4]
            X = 1 / (1 + logPr * logPr)
            base = a * torch.exp(-bb / t) + torch.where(cs != 0, torch.exp(-t / safe(cs)), torch.zeros_like(t))
            F = torch.where(kind == _SRI, d * base.clamp(min=_SMALL) ** X * t ** e, F)
        return k_inf * Pr / (1 + Pr) * F

    def equilibrium_constants(self, T: torch.Tensor) -> torch.Tensor:
        """``Kc`` per reaction in concentration units, ``(..., R)``."""
        dG = self.thermo.g_RT(T) @ self.net_stoich.T                              # ΔG°/RT
        ln_c0 = torch.log(self.reference_pressure / (GAS_CONSTANT * T))[..., None]
        return torch.exp(-dG + self.delta_nu * ln_c0)

    def rates_of_progress(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor):
        """``(forward, reverse, net)`` rates of progress (kmol/m³/s), each ``(..., R)``."""
        C = self.concentrations(T, P, Y)
        kf = self.forward_rate_constants(T, C, P)
        dG = self.thermo.g_RT(T) @ self.net_stoich.T
        ln_c0 = torch.log(self.reference_pressure / (GAS_CONSTANT * T))[..., None]
        # kr = kf / Kc, in logarithms: Kc spans hundreds of decades
        kr = torch.where(self.reversible, kf * torch.exp(dG - self.delta_nu * ln_c0), torch.zeros_like(kf))
        fwd = slot_product(C, self.fwd_index, self.fwd_power) * kf
        rev = slot_product(C, self.rev_index, self.rev_power) * kr
        scale = torch.exp(self.log_multipliers)
        M = C @ self.efficiencies.T
        scale = scale * torch.where(self.third_body, M, torch.ones_like(M))
        return fwd * scale, rev * scale, (fwd - rev) * scale

    def net_production_rates(self, T: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Net molar production rate of every species, kmol/m³/s, ``(..., K)`` (Cantera's
        ``net_production_rates``)."""
        return self.rates_of_progress(T, P, Y)[2] @ self.net_stoich

    def extra_repr(self) -> str:
        return f"{self.n_species} species, {self.n_reactions} reactions, {self.falloff.numel()} falloff"
