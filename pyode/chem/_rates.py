"""Rate laws as tensor functions, each with the derivatives a reactor's analytic Jacobian needs.

Every function works on any leading batch shape and returns its value and, when asked, the partial
derivatives of ``ln k`` (or of a concentration product) with respect to what the rate depends on.
The formulas are Cantera's (see :mod:`._mechanism`); the derivatives are written out by hand because
forward-mode automatic differentiation costs ~0.1 ms per operation in eager PyTorch and the reverse
mode would need one pass per species.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

# Cantera's guard against log(0) and division by 0 in the falloff functions
SMALL = 1e-300
LN10 = math.log(10.0)
LINDEMANN, TROE, SRI = 0, 1, 2

Tensor = torch.Tensor


def unit_slots(rows, K: int):
    """Per reaction the species of a concentration product ``Π_k C_k^{ν_k}`` as slots: an integer
    exponent ``n`` becomes ``n`` slots of exponent 1 (so the product is a ``prod`` of gathered values,
    with no ``pow``), a fractional remainder one slot with that exponent. Padded with species ``K`` (a
    column of ones). Returns ``(index (R, S) long, power (R, S) float64, fractional: bool)``."""
    expanded = []
    for r in rows:
        slots = []
        for k, v in sorted(r.items()):
            whole = int(math.floor(v + 1e-12))
            slots += [(k, 1.0)] * whole
            if abs(v - whole) > 1e-12:
                slots.append((k, v - whole))
        expanded.append(slots)
    S = max(1, max((len(s) for s in expanded), default=1))
    index = torch.full((len(rows), S), K, dtype=torch.long)
    power = torch.ones(len(rows), S, dtype=torch.float64)
    for i, slots in enumerate(expanded):
        for j, (k, v) in enumerate(slots):
            index[i, j], power[i, j] = k, v
    return index, power, bool((power != 1).any())


def concentration_product(C1: Tensor, index: Tensor, power: Tensor, fractional: bool,
                          derivative: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """``Π_s C1[index[r, s]] ** power[r, s]`` per reaction ``(..., R)`` with ``C1`` the concentrations
    followed by a one ``(..., K + 1)``; with ``derivative``, also each slot's partial derivative
    ``∂Π/∂C1[index[r, s]]`` through that slot ``(..., R, S)`` (a species in several slots sums them).

    At a zero concentration a fractional exponent's derivative is infinite; it is taken as 0 there
    (the product itself is 0, and the Jacobian stays finite)."""
    v = C1[..., index]                                                        # (..., R, S)
    # a fractional power of 0 has an infinite derivative: 0 there, so gradients stay finite
    if fractional:
        w = torch.where(power == 1, v, torch.where(v > 0, v.clamp(min=SMALL) ** power, torch.zeros_like(v)))
    else:
        w = v
    prod = w.prod(-1)
    if not derivative:
        return prod, None
    # product of the other slots: exclusive prefix times exclusive suffix
    ones = torch.ones_like(w[..., :1])
    before = torch.cumprod(torch.cat([ones, w[..., :-1]], -1), -1)
    after = torch.cumprod(torch.cat([ones, w[..., 1:].flip(-1)], -1), -1).flip(-1)
    partial = before * after
    if fractional:
        d = torch.where(v > 0, power * v.clamp(min=SMALL) ** (power - 1), (power >= 1).to(v.dtype))
        partial = partial * d
    return prod, partial


def sparse_jacobian_pattern(nu: Tensor, slot_index: Tensor, efficiencies: Tensor):
    """Where each term of ``∂ω̇/∂C = νᵀ ∂q/∂C`` lands, so that it is assembled by one ``index_add``
    without forming the dense ``(R, K)`` derivative of every reaction.

    ``∂q_r/∂C_j`` has two kinds of terms: slot ``s`` of reaction ``r`` (``j = slot_index[r, s]``,
    forward then reverse slots, coefficient ``c[r, s]``) and a third-body or falloff term
    ``ε_rj g_r``. With the coefficients laid out as ``cat([c.flatten(), g])``, returns ``(source,
    target, weight)``: ``A.flatten()[target] += weight * coefficients[source]`` gives
    ``A = ∂ω̇/∂C`` ``(K, K)``."""
    R, K = nu.shape
    S = slot_index.shape[1]
    pairs = nu.nonzero()                                        # (r, k) with ν_rk ≠ 0
    r, k = pairs[:, 0], pairs[:, 1]
    j = slot_index[r]                                           # (Z0, S)
    slot = torch.arange(S).expand_as(j)
    keep = j < K
    source = [(r[:, None] * S + slot)[keep]]
    target = [(k[:, None] * K + j)[keep]]
    weight = [nu[r, k][:, None].expand_as(j)[keep]]
    eff = efficiencies.nonzero()                                # (r, j) with ε_rj ≠ 0
    if eff.numel():
        # join on the reaction: every (r, k) of ν with every (r, j) of ε
        match = r[:, None] == eff[None, :, 0]
        a, b = match.nonzero(as_tuple=True)
        source.append(R * S + r[a])
        target.append(k[a] * K + eff[b, 1])
        weight.append(nu[r[a], k[a]] * efficiencies[r[a], eff[b, 1]])
    return torch.cat(source), torch.cat(target), torch.cat(weight)


def falloff_tables(kind: Tensor, coeffs: Tensor) -> dict:
    """Constants of the broadening functions, computed once per mechanism: Troe's
    ``F_cent = Σ_i w_i exp(a_i T + b_i / T)`` (the terms with zero temperatures dropped, as
    Cantera's), SRI's ``a, b, 1/c, d, e``."""
    troe, sri = kind == TROE, kind == SRI
    A, T3, T1, T2, has_T2 = coeffs.unbind(-1)
    inv = lambda x: torch.where(x != 0, 1 / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))  # noqa: E731
    zero = torch.zeros_like(A)
    troe_a = torch.stack([-inv(T3), -inv(T1), zero], -1)
    troe_b = torch.stack([zero, zero, -T2], -1)
    troe_w = torch.stack([(1 - A) * (T3 != 0), A * (T1 != 0), has_T2], -1) * troe[:, None]
    a, b, c, d, e = coeffs.unbind(-1)
    return {"troe": troe, "troe_a": troe_a, "troe_b": troe_b, "troe_w": troe_w, "sri": sri,
            "sri_a": torch.where(sri, a, zero), "sri_b": torch.where(sri, b, zero), "sri_inv_c": torch.where(sri, inv(c), zero),
            "sri_ln_d": torch.where(sri, torch.log(torch.where(sri, d, torch.ones_like(d))), zero),
            "sri_e": torch.where(sri, e, zero)}


def falloff(k_inf: Tensor, k0: Tensor, M: Tensor, T: Tensor, tables: dict, has_troe: bool, has_sri: bool,
            derivative: bool = False, dlnk_inf: Optional[Tensor] = None, dlnk0: Optional[Tensor] = None):
    """Falloff rate constants ``k∞ Pr/(1 + Pr) F`` ``(..., F)``, ``Pr = k0 [M] / k∞``, with
    ``tables`` from :func:`falloff_tables` (Lindemann: ``F = 1``).

    With ``derivative`` (and ``dlnk_inf``, ``dlnk0``: ``∂ln k/∂T`` of the two limits) also
    ``∂k/∂[M]`` and ``∂ln k/∂T`` at constant concentrations."""
    Pr = k0 * M / k_inf.clamp(min=SMALL)
    logPr = torch.log10(Pr.clamp(min=SMALL))
    t = T[..., None]
    lnF = torch.zeros_like(Pr)
    G = torch.zeros_like(Pr) if derivative else None                         # ∂ln F/∂ln Pr
    dlnF_T = torch.zeros_like(Pr) if derivative else None                    # ∂ln F/∂T at fixed Pr
    if has_troe:
        a, b, w = tables["troe_a"], tables["troe_b"], tables["troe_w"]
        terms = w * torch.exp(t[..., None] * a + b / t[..., None])             # (..., F, 3)
        fcent = terms.sum(-1)
        L = torch.log10(fcent.clamp(min=SMALL))
        x = logPr - 0.4 - 0.67 * L
        den = 0.75 - 1.27 * L - 0.14 * x
        f1 = x / den
        q = 1 + f1 * f1
        troe = tables["troe"]
        lnF = torch.where(troe, (LN10 * L) / q, lnF)
        if derivative:
            # log10 F = L / q: ∂/∂f1 = -2 L f1 / q², and f1 = x / den with x, den linear in L
            dF_df1 = -2 * L * f1 / (q * q)
            G = torch.where(troe, dF_df1 * (0.75 - 1.27 * L) / (den * den), G)
            df1_dL = (-0.67 * den + (1.27 - 0.14 * 0.67) * x) / (den * den)
            dlog10F_dL = 1 / q + dF_df1 * df1_dL
            dfcent = (terms * (a - b / (t * t)[..., None])).sum(-1)
            dlnF_T = torch.where(troe & (fcent > SMALL), dlog10F_dL * dfcent / fcent.clamp(min=SMALL), dlnF_T)
    if has_sri:
        # F = d (a exp(-b/T) + exp(-T/c))^X T^e, X = 1 / (1 + log10(Pr)²)
        X = 1 / (1 + logPr * logPr)
        ea = tables["sri_a"] * torch.exp(-tables["sri_b"] / t)
        inv_c = tables["sri_inv_c"]
        ec = torch.where(inv_c != 0, torch.exp(-t * inv_c), torch.zeros_like(ea))
        base = (ea + ec).clamp(min=SMALL)
        sri = tables["sri"]
        lnF = torch.where(sri, tables["sri_ln_d"] + X * torch.log(base) + tables["sri_e"] * torch.log(t), lnF)
        if derivative:
            G = torch.where(sri, -2 * logPr * X * X * torch.log(base) / LN10, G)
            dbase = ea * tables["sri_b"] / (t * t) - ec * inv_c
            dlnF_T = torch.where(sri, X * dbase / base + tables["sri_e"] / t, dlnF_T)
    F = torch.exp(lnF)
    k = k_inf * Pr / (1 + Pr) * F
    if not derivative:
        return k, None, None
    active = (Pr > SMALL).to(Pr.dtype)                     # below Cantera's clamp ln Pr is constant
    dlnk_dlnPr = 1 / (1 + Pr) + G * active
    dk_dM = k0 * F / (1 + Pr) * dlnk_dlnPr
    dlnk_dT = dlnk_inf + dlnk_dlnPr * (dlnk0 - dlnk_inf) + dlnF_T
    return k, dk_dM, dlnk_dT


def plog(T: Tensor, lnP: Tensor, grid: Tensor, arrhenius: Tensor, gas_constant: float, derivative: bool = False):
    """PLOG: ``ln k`` linear in ``ln P`` between the grid pressures, the end values outside.
    ``grid`` ``(Rp, Np)`` (padded by repeating its last pressure), ``arrhenius`` ``(Rp, Np, M, 3)``
    (summed sets, ``A = 0`` pads). With ``derivative`` also ``∂ln k/∂T`` and ``∂ln k/∂ln P``."""
    t = T[..., None, None, None]
    A, b, Ea = arrhenius[..., 0], arrhenius[..., 1], arrhenius[..., 2]
    k_m = A * t ** b * torch.exp(-Ea / (gas_constant * t))                   # (..., Rp, Np, M)
    k_grid = k_m.sum(-1).clamp(min=SMALL)                                   # (..., Rp, Np)
    ln_k = torch.log(k_grid)
    x = lnP[..., None]
    clamped = x.clamp(min=grid[:, 0], max=grid.max(-1).values)
    weight = torch.zeros_like(ln_k)
    slope = torch.zeros_like(ln_k)                                          # ∂weight/∂ln P
    weight[..., 0] = 1.0
    for j in range(grid.shape[1] - 1):
        lo, hi = grid[:, j], grid[:, j + 1]
        width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        inside = (clamped >= lo) & (clamped <= hi) & (hi > lo)
        frac = (clamped - lo) / width
        pair = torch.stack([1 - frac, frac], -1)
        dpair = torch.stack([-1 / width, 1 / width], -1).expand(pair.shape)
        head = torch.zeros_like(weight[..., :j])
        tail = torch.zeros_like(weight[..., j + 2:])
        weight = torch.where(inside[..., None], torch.cat([head, pair, tail], -1), weight)
        slope = torch.where(inside[..., None], torch.cat([head, dpair, tail], -1), slope)
    out = (weight * ln_k).sum(-1)
    if not derivative:
        return torch.exp(out), None, None
    dlnk_grid = (k_m * (b / t + Ea / (gas_constant * t * t))).sum(-1) / k_grid
    dT = (weight * dlnk_grid).sum(-1)
    outside = (x < grid[:, 0]) | (x > grid.max(-1).values)
    dlnP = torch.where(outside, torch.zeros_like(out), (slope * ln_k).sum(-1))
    return torch.exp(out), dT, dlnP


def chebyshev(T: Tensor, lnP: Tensor, alpha: Tensor, T_range: Tensor, P_range: Tensor, derivative: bool = False):
    """Chebyshev rates ``log10 k = Σ_tp α_tp φ_t(T~) φ_p(P~)`` in the reduced ``1/T`` and ``log10 P``;
    with ``derivative`` also ``∂ln k/∂T`` and ``∂ln k/∂ln P``."""
    Tmin, Tmax = T_range[:, 0], T_range[:, 1]
    Pmin, Pmax = torch.log10(P_range[:, 0]), torch.log10(P_range[:, 1])
    Tr = (2 / T[..., None] - 1 / Tmin - 1 / Tmax) / (1 / Tmax - 1 / Tmin)
    Pr = (2 * (lnP / LN10)[..., None] - Pmin - Pmax) / (Pmax - Pmin)

    def basis(x, n):
        val, der = [torch.ones_like(x), x], [torch.zeros_like(x), torch.ones_like(x)]
        for _ in range(2, n):
            val.append(2 * x * val[-1] - val[-2])
            der.append(2 * val[-2] + 2 * x * der[-1] - der[-2])
        return torch.stack(val[:n], -1), torch.stack(der[:n], -1)

    phiT, dphiT = basis(Tr, alpha.shape[1])
    phiP, dphiP = basis(Pr, alpha.shape[2])
    log10k = torch.einsum("...rt,rtp,...rp->...r", phiT, alpha, phiP)
    k = 10 ** log10k
    if not derivative:
        return k, None, None
    dTr_dT = -2 / (T[..., None] ** 2) / (1 / Tmax - 1 / Tmin)
    dT = LN10 * torch.einsum("...rt,rtp,...rp->...r", dphiT, alpha, phiP) * dTr_dT
    dlnP = 2 * torch.einsum("...rt,rtp,...rp->...r", phiT, alpha, dphiP) / (Pmax - Pmin)
    return k, dT, dlnP
