"""Reactors as ODE problems, and ignition delays through pyode's events.

Closed, adiabatic ideal-gas reactors with state ``u = (T, Y_1 … Y_K)`` and ``dY_k/dt = ω̇_k W_k / ρ``
(Cantera's equations):

- ``"const-pressure"`` (``IdealGasConstPressureReactor``): ``ρ = P W̄ / (R T)``,
  ``dT/dt = -Σ_k h_k ω̇_k / (ρ c_p)``;
- ``"const-volume"`` (``IdealGasReactor``): ``ρ`` fixed at its initial value, ``P = ρ R T / W̄``,
  ``dT/dt = -Σ_k u_k ω̇_k / (ρ c_v)`` with ``u_k = h_k - R T`` and ``c_v = c_p - R / W̄``;
- ``"isothermal"`` (constant pressure with the energy equation off): ``dT/dt = 0``.

Molar enthalpies ``h_k`` and mass-specific heat capacities come from the NASA-7 polynomials.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch

from ._mechanism import GAS_CONSTANT, Mechanism

__all__ = ["reactor_problem", "ignition_delay", "mass_fractions", "REACTORS"]

REACTORS = ("const-pressure", "const-volume", "isothermal")


def mass_fractions(mech: Mechanism, X: Any) -> torch.Tensor:
    """Mass fractions from mole fractions given as a tensor ``(..., K)`` or a dict ``{"CH4": 1, ...}``
    (normalised)."""
    if isinstance(X, dict):
        x = torch.zeros(mech.n_species, dtype=mech.molecular_weights.dtype)
        for name, v in X.items():
            if name not in mech.species_names:
                raise ValueError(f"X0 names species {name!r}, which the mechanism does not have")
            x[mech.species_names.index(name)] = float(v)
        X = x
    X = torch.as_tensor(X, dtype=mech.molecular_weights.dtype)
    if X.shape[-1] != mech.n_species:
        raise ValueError(f"X0 has {X.shape[-1]} entries; the mechanism has {mech.n_species} species")
    if bool((X < 0).any()) or not bool((X.sum(-1) > 0).all()):
        raise ValueError("X0 must be non-negative with a positive sum (mole fractions, normalised here)")
    m = X * mech.molecular_weights
    return m / m.sum(-1, keepdim=True)


def _reactor_rhs(kind: str, P: torch.Tensor, rho0: torch.Tensor):
    R = GAS_CONSTANT

    def rhs(u, mech, t):
        T, Y = u[..., 0], u[..., 1:]
        W = mech.molecular_weights
        moles = (Y / W).sum(-1)                                                # 1 / W̄
        if kind == "const-volume":
            rho = rho0
            pressure = rho * R * T * moles
        else:
            pressure = P
            rho = P / (R * T * moles)
        wdot = mech.net_production_rates(T, pressure, Y)                       # kmol/m³/s
        dY = wdot * W / rho[..., None]
        if kind == "isothermal":
            return torch.cat([torch.zeros_like(T)[..., None], dY], -1)
        cp = R * (mech.thermo.cp_R(T) * Y / W).sum(-1)                          # J/kg/K
        h = R * T[..., None] * mech.thermo.h_RT(T)                              # J/kmol
        if kind == "const-pressure":
            dT = -(h * wdot).sum(-1) / (rho * cp)
        else:
            dT = -((h - R * T[..., None]) * wdot).sum(-1) / (rho * (cp - R * moles))
        return torch.cat([dT[..., None], dY], -1)
    return rhs


def reactor_problem(mech: Mechanism, T0: Any, P: Any, X0: Any, tspan: Tuple[float, float],
                    reactor: str = "const-pressure"):
    """An :class:`~pyode.ODEProblem` of an ideal-gas reactor (see the module docstring), ``u = (T, Y)``,
    ``p = mech`` (so every sensealg reaches the mechanism's parameters). ``T0`` (K), ``P`` (Pa: the
    initial pressure of a constant-volume reactor) and ``X0`` (mole fractions, a tensor or a dict)
    broadcast to one batch."""
    from .._problem import ODEProblem

    if reactor not in REACTORS:
        raise ValueError(f"reactor={reactor!r}; choose one of {', '.join(REACTORS)}")
    dtype = mech.molecular_weights.dtype
    Y0 = mass_fractions(mech, X0)
    T0 = torch.as_tensor(T0, dtype=dtype)
    P = torch.as_tensor(P, dtype=dtype)
    batch = torch.broadcast_shapes(T0.shape, P.shape, Y0.shape[:-1])
    T0, P, Y0 = T0.expand(batch), P.expand(batch), Y0.expand(*batch, mech.n_species)
    rho0 = P / (GAS_CONSTANT * T0 * (Y0 / mech.molecular_weights).sum(-1))
    u0 = torch.cat([T0[..., None], Y0], -1)
    return ODEProblem(_reactor_rhs(reactor, P, rho0), u0, tspan, mech)


def ignition_delay(mech: Mechanism, T0: Any, P: Any, X0: Any, t_end: float, *, delta_T: float = 400.0,
                   reactor: str = "const-pressure", alg=None, reltol: float = 1e-6, abstol: float = 1e-15,
                   sensealg=None, maxiters: int = 100_000) -> torch.Tensor:
    """The time at which a reactor's temperature reaches ``T0 + delta_T`` (constant pressure by
    default; ``reactor="const-volume"`` for a closed vessel).

    Batched over ``T0``, ``P`` and ``X0``; differentiable with respect to the mechanism's parameters
    (and ``T0``, ``X0``) through the event time (:class:`~pyode.ContinuousCallback`, implicit
    function theorem). A member that does not ignite before ``t_end`` raises an error naming it.
    Defaults: ``Rodas5P()``, reltol 1e-6, abstol 1e-15 (Cantera's reactor tolerances).
    """
    from .._solve import solve
    from ..algorithms import Rodas5P
    from ..callbacks import ContinuousCallback

    if reactor == "isothermal":
        raise ValueError("an isothermal reactor does not ignite (T is fixed); use 'const-pressure' or 'const-volume'")
    prob = reactor_problem(mech, T0, P, X0, (0.0, float(t_end)), reactor)
    target = prob.u0[..., 0].detach() + delta_T
    hot = ContinuousCallback(lambda u, p, t: u[..., 0] - target, terminate=True, direction=1)
    kw = {} if sensealg is None else {"sensealg": sensealg}
    if sensealg is not None and prob.u0.ndim == 1:
        kw["saveat"] = [float(t_end)]
    sol = solve(prob, alg if alg is not None else Rodas5P(), callback=hot, reltol=reltol, abstol=abstol,
                maxiters=maxiters, dense=False, **kw)
    t_ev = sol.t_events
    if t_ev.shape[-1] == 0 or bool(torch.isnan(t_ev[..., 0]).any()):
        raise ValueError(f"no ignition (T0 + {delta_T:g} K) before t_end={t_end:g} s for some member; "
                         "raise t_end")
    return t_ev[..., 0]
