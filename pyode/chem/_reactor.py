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
from ._thermo import temperature_basis

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


class _Reactor:
    """Right-hand side and analytic Jacobian of one reactor kind, ``f(u, mech, t)`` and
    ``jac(u, mech, t)`` for :class:`~pyode.ODEProblem` (``u = (T, Y)``).

    The Jacobian is assembled by the chain rule from the mechanism's ``∂q/∂C``, ``∂q/∂T`` and
    ``∂q/∂ln P`` (see :meth:`Mechanism._progress`): ``C = ρ Y/W`` with ``ρ = P W̄/(RT)`` at constant
    pressure (``ρ`` fixed and ``P = ρRT/W̄`` at constant volume), then ``dY/dt = ω̇ W/ρ`` and the
    energy equation with ``∂c_p/∂T`` from the NASA polynomials. It is exact up to round-off
    (``tests/test_reactor_jacobian.py`` compares it with automatic differentiation).
    """

    def __init__(self, kind: str, P: torch.Tensor, rho0: torch.Tensor):
        self.kind, self.P, self.rho0 = kind, P, rho0
        self.lnP = torch.log(P)

    def _state(self, u, mech):
        R = GAS_CONSTANT
        T, Y = u[..., 0], u[..., 1:]
        W = mech.molecular_weights
        moles = Y / W                                                      # kmol/kg
        S = moles.sum(-1)                                                  # 1 / W̄
        if self.kind == "const-volume":
            rho = self.rho0
            lnP = torch.log(rho * R * T * S)
        else:
            rho = self.P / (R * T * S)
            lnP = self.lnP
        C = rho[..., None] * moles
        return T, Y, W, moles, S, rho, lnP, C

    def rhs(self, u, mech, t):
        T, Y, W, moles, S, rho, lnP, C = self._state(u, mech)
        basis = temperature_basis(T)
        thermo = mech.thermo.evaluate(T, basis)
        q = mech._progress(T, lnP, C, thermo, basis=basis)[2]
        wdot = q @ mech.net_stoich                                         # kmol/m³/s
        dY = wdot * (W / rho[..., None])
        if self.kind == "isothermal":
            return torch.cat([torch.zeros_like(T)[..., None], dY], -1)
        cp = (thermo.cp_R * moles).sum(-1)                                 # c_p / R, per kg
        if self.kind == "const-pressure":
            dT = -T * (thermo.h_RT * wdot).sum(-1) / (rho * cp)
        else:
            dT = -T * ((thermo.h_RT - 1) * wdot).sum(-1) / (rho * (cp - S))
        return torch.cat([dT[..., None], dY], -1)

    def jac(self, u, mech, t):
        T, Y, W, moles, S, rho, lnP, C = self._state(u, mech)
        basis = temperature_basis(T)
        thermo = mech.thermo.evaluate(T, basis)
        _, _, q, dq_dC, dq_dT, dq_dlnP = mech._progress(T, lnP, C, thermo, derivative=True, basis=basis)
        nu = mech.net_stoich                                               # (R, K)
        wdot = q @ nu
        A = mech._production_jacobian(dq_dC)                              # ∂ω̇/∂C (..., K, K)
        w_T = dq_dT @ nu                                                   # ∂ω̇/∂T at constant C, P
        invW = 1 / W
        Tc, Sc = T[..., None], S[..., None]
        rho_c = rho[..., None] if rho.ndim == T.ndim else rho[..., None].expand_as(Sc)
        x = invW / Sc
        # ∂ω̇/∂Y = A diag(ρ/W) + v_w ⊗ (1/W)/S, and dY/dt = ω̇ W/ρ: the ρ of ∂C/∂Y cancels the 1/ρ,
        # so ∂(dY/dt)/∂Y = A ⊙ (W_k / W_j) + v ⊗ (1/W)/S with one matrix operation per member
        h = thermo.h_RT if self.kind != "const-volume" else thermo.h_RT - 1      # h/RT, or u/RT at constant volume
        hA = (h[..., None, :] @ A)[..., 0, :]
        if self.kind == "const-volume":
            w_P = dq_dlnP @ nu if dq_dlnP is not None else torch.zeros_like(w_T)   # ln P = ln(ρ R T S)
            v_w = w_P
            dw_dT = w_T + w_P / Tc
            v = W / rho_c * w_P
            dY_dT = dw_dT * (W / rho_c)
        else:
            AC = (A @ C[..., None])[..., 0]                                # ∂C/∂Y = diag(ρ/W) - C ⊗ (1/W)/S
            v_w = -AC
            dw_dT = w_T - AC / Tc
            wW = wdot * W / rho_c                                          # 1/ρ = R T S / P
            v = wW - W / rho_c * AC
            dY_dT = dw_dT * (W / rho_c) + wW / Tc
        dY_dY = torch.addcmul(A * mech._weight_ratio(), v[..., :, None], x[..., None, :])
        if self.kind == "isothermal":
            top = torch.zeros_like(u)
        else:
            cp = (thermo.cp_R * moles).sum(-1) if self.kind == "const-pressure" else (thermo.cp_R * moles).sum(-1) - S
            dcp_dY = (thermo.cp_R if self.kind == "const-pressure" else thermo.cp_R - 1) * invW
            dcp_dT = (thermo.dcp_R * moles).sum(-1)
            E = T * (h * wdot).sum(-1)                                     # Σ h_k ω̇_k / R
            dE_dY = Tc * (rho_c * invW * hA + (h * v_w).sum(-1, keepdim=True) * x)     # T h·∂ω̇/∂Y
            dE_dT = ((thermo.cp_R - float(self.kind != "const-pressure")) * wdot).sum(-1) + T * (h * dw_dT).sum(-1)
            inv_rho_cp = 1 / (rho * cp)
            dT_dt = -E * inv_rho_cp
            if self.kind == "const-pressure":                               # ∂(1/ρ)/∂Y = 1/(ρ S W), ∂/∂T = 1/(ρ T)
                drho_Y, drho_T = invW / Sc, 1 / T
            else:
                drho_Y, drho_T = torch.zeros_like(invW / Sc), torch.zeros_like(T)
            top_Y = -dE_dY * inv_rho_cp[..., None] + dT_dt[..., None] * (drho_Y - dcp_dY / cp[..., None])
            top_T = -dE_dT * inv_rho_cp + dT_dt * (drho_T - dcp_dT / cp)
            top = torch.cat([top_T[..., None], top_Y], -1)
        n = u.shape[-1]
        J = dY_dY.new_empty(*u.shape[:-1], n, n)          # filled by blocks: cheaper than concatenating rows
        J[..., 0, :] = top
        J[..., 1:, 0] = dY_dT
        J[..., 1:, 1:] = dY_dY
        return J

    def tgrad(self, u, mech, t):
        return torch.zeros_like(u)


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
    mech.check_state(T0, P, Y0, names=("T0", "P", "Y0"))
    rho0 = P / (GAS_CONSTANT * T0 * (Y0 / mech.molecular_weights).sum(-1))
    u0 = torch.cat([T0[..., None], Y0], -1)
    model = _Reactor(reactor, P, rho0)
    return ODEProblem(model.rhs, u0, tspan, mech, jac=model.jac, tgrad=model.tgrad)


def ignition_delay(mech: Mechanism, T0: Any, P: Any, X0: Any, t_end: float, *, delta_T: float = 400.0,
                   reactor: str = "const-pressure", alg=None, reltol: float = 1e-6, abstol: float = 1e-15,
                   sensealg=None, maxiters: int = 100_000) -> torch.Tensor:
    """The time at which a reactor's temperature reaches ``T0 + delta_T`` (constant pressure by
    default; ``reactor="const-volume"`` for a closed vessel).

    Batched over ``T0``, ``P`` and ``X0``; differentiable with respect to the mechanism's parameters
    (and ``T0``, ``X0``) through the event time (:class:`~pyode.ContinuousCallback`, implicit
    function theorem). A member that does not ignite before ``t_end`` raises an error naming it.
    Defaults: ``FBDF()`` (variable-order BDF with a Jacobian kept across steps, as Cantera's CVODES;
    on GRI-Mech 3.0 three times faster than ``Rodas5P()`` at the same accuracy), reltol 1e-6,
    abstol 1e-15 (Cantera's reactor tolerances). ``reltol=1e-4`` keeps τ within ~1e-4 of the tight
    value in half the time. The absolute tolerance is on mass fractions: radicals start near 1e-15,
    and a looser ``abstol`` (1e-10, say) can step over the induction period (no ignition found).
    """
    from .._solve import solve
    from ..algorithms import FBDF
    from ..callbacks import ContinuousCallback

    if reactor == "isothermal":
        raise ValueError("an isothermal reactor does not ignite (T is fixed); use 'const-pressure' or 'const-volume'")
    prob = reactor_problem(mech, T0, P, X0, (0.0, float(t_end)), reactor)
    target = prob.u0[..., 0].detach() + delta_T
    hot = ContinuousCallback(lambda u, p, t: u[..., 0] - target, terminate=True, direction=1)
    kw = {} if sensealg is None else {"sensealg": sensealg}
    if sensealg is not None and prob.u0.ndim == 1:
        kw["saveat"] = [float(t_end)]
    sol = solve(prob, alg if alg is not None else FBDF(), callback=hot, reltol=reltol, abstol=abstol,
                maxiters=maxiters, dense=False, **kw)
    t_ev = sol.t_events
    if t_ev.shape[-1] == 0 or bool(torch.isnan(t_ev[..., 0]).any()):
        raise ValueError(f"no ignition (T0 + {delta_T:g} K) before t_end={t_end:g} s for some member; "
                         "raise t_end")
    return t_ev[..., 0]
