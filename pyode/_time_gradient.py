"""Gradients with respect to the times: ``tspan`` entries and ``saveat`` tensors that require grad.

For the exact solution, a saved state ``u(τ)`` moves with its time as ``∂u(τ)/∂τ = f(u(τ), τ)``,
and with the start time as ``∂u(τ)/∂t0 = -Φ(τ, t0) f(u0, t0)`` (``Φ`` the flow's Jacobian, whose
transpose is what every sensealg applies to get ``∂L/∂u0``). So, whatever the sensealg,

    ∂L/∂τ_i = <∂L/∂u(τ_i), f(u(τ_i), τ_i)>      ∂L/∂t0 = -<∂L/∂u0, f(u0, t0)> (+ saved times tied to t0)

summed over batch members sharing the time. These are the gradients of the continuous solution
(as torchdiffeq's), consistent with the discrete one to the solver's tolerance; the step times a
solve picks itself (``sol.t`` without ``saveat``) are treated as fixed, but for its first and last
entries, which are ``t0`` and ``t1``.

Two autograd nodes carry them: :class:`_StartTime` sits between ``u0`` and the solve (the
gradient reaching ``u0`` is the total one, through every saved state), :class:`_SavedTimes`
between the solve's saved states and the user.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["attach_start_time", "attach_saved_times", "saved_time_graph"]


def _rhs_at(f: Callable, u: torch.Tensor, p, t: torch.Tensor) -> torch.Tensor:
    """``f(u, p, t)`` with zeros where ``u`` is not finite (a failed member never reached ``t``)."""
    with torch.no_grad():
        tt = torch.full(u.shape[:-1], float(t), dtype=torch.float64, device=u.device)
        out = f(u, p, tt if tt.ndim else tt.reshape(()))
        return torch.where(torch.isfinite(u).all(-1, keepdim=True), out, torch.zeros_like(out))


class _StartTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u0, t0, f, p):
        ctx.f, ctx.p = f, p
        ctx.save_for_backward(u0.detach(), t0.detach())
        return u0.clone()

    @staticmethod
    def backward(ctx, g):
        u0, t0 = ctx.saved_tensors
        g_t0 = None
        if ctx.needs_input_grad[1] and g is not None:
            fv = _rhs_at(ctx.f, u0, ctx.p, t0)
            g_t0 = -(g.double() * fv.double()).sum().to(t0.dtype).reshape(t0.shape)
        return g, g_t0, None, None


class _SavedTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, ts, f, p):
        ctx.f, ctx.p = f, p
        ctx.save_for_backward(u.detach(), ts.detach())
        return u.clone()

    @staticmethod
    def backward(ctx, g):
        u, ts = ctx.saved_tensors
        g_ts = None
        if ctx.needs_input_grad[1] and g is not None:
            # One call of f per saved time keeps f's batch contract ((*batch, n) states).
            g_ts = torch.stack([(g[i].double() * _rhs_at(ctx.f, u[i], ctx.p, ts[i]).double()).sum()
                                for i in range(u.shape[0])]).to(ts.dtype)
        return g, g_ts, None, None


def attach_start_time(u0: torch.Tensor, t0: Optional[torch.Tensor], f: Callable, p) -> torch.Tensor:
    """``u0`` routed through the start-time node when ``t0`` requires grad."""
    if t0 is None or not t0.requires_grad or not torch.is_grad_enabled():
        return u0
    return _StartTime.apply(u0, t0, f, p)


def saved_time_graph(ts: torch.Tensor, t0: Optional[torch.Tensor], t1: Optional[torch.Tensor],
                     saveat: Optional[torch.Tensor], every: bool) -> Optional[torch.Tensor]:
    """The saved times ``ts`` (float64 values) as a function of the time tensors that require grad,
    or None when none does.

    ``saveat`` given as a tensor: its entries are the times. ``saveat=Δ`` (a number): ``t0 + kΔ``
    and ``t1``. No ``saveat``: the first time is ``t0``, the last ``t1``, those in between are the
    solver's own steps (fixed).
    """
    def shift(x):   # x's value is already in ts: only its gradient is added
        return None if x is None or not x.requires_grad else (x - x.detach()).double().reshape(())

    if not torch.is_grad_enabled():
        return None
    if saveat is not None:
        if not saveat.requires_grad:
            return None
        return ts.to(saveat.device) + (saveat - saveat.detach()).double().reshape(-1).to(ts.device)
    d0, d1 = shift(t0), shift(t1)
    if d0 is None and d1 is None:
        return None
    zero = torch.zeros((), dtype=torch.float64, device=ts.device)
    d0 = zero if d0 is None else d0.to(ts.device)
    d1 = zero if d1 is None else d1.to(ts.device)
    T = ts.shape[0]
    if every:
        tied0 = torch.ones(T, dtype=torch.float64, device=ts.device)
        tied0[-1] = 0.0
    else:
        tied0 = torch.zeros(T, dtype=torch.float64, device=ts.device)
        tied0[0] = 1.0
    tied1 = torch.zeros(T, dtype=torch.float64, device=ts.device)
    tied1[-1] = 1.0
    return ts + tied0 * d0 + tied1 * d1


def attach_saved_times(u: torch.Tensor, ts: Optional[torch.Tensor], f: Callable, p) -> torch.Tensor:
    """The saved states ``u`` (``(T, *batch, n)``) with the gradient of their times attached."""
    if ts is None:
        return u
    return _SavedTimes.apply(u, ts, f, p)
