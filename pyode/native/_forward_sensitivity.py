"""``ForwardSensitivity``: the sensitivity equations integrated alongside the state.

With ``θ`` the parameter entries that require grad (flattened, ``P`` of them) and, when ``u0``
requires grad, the ``n`` initial values, ``S = ∂u/∂(u0, θ)`` has ``m`` columns per member and obeys

    S' = J S + [0, ∂f/∂θ],    S(t0) = [I, 0]

The augmented state ``z = (u, vec S)`` (row-major ``S``, ``n (1 + m)`` components per member) is
solved by the ordinary integrator with the user's algorithm, tolerances and step control;
``J S + ∂f/∂θ`` is one ``torch.func.jvp`` per column, the ``m`` columns vmapped into one call.

The solve runs without autograd; :class:`_Attach` then hands out the states with a backward that
contracts the incoming gradient with the saved ``S``: ``∂L/∂u0 = Σ_t S_u0ᵀ g(t)`` per member and
``∂L/∂θ = Σ_members Σ_t S_θᵀ g(t)``.
"""
from __future__ import annotations

from typing import List

import torch
from torch.func import jvp, vmap

from .._params import ParameterizedRHS, parameter_leaves
from ..callbacks import (ContinuousCallback, DiscreteCallback, PresetTimeCallback, VectorContinuousCallback)

__all__ = ["ForwardSensitivitySystem"]


class ForwardSensitivitySystem:
    """The augmented system of one problem, and the translation of its solution back."""

    def __init__(self, prob):
        paths, leaves, modules = parameter_leaves(prob.p)
        self.prob = prob
        self.paths, self.modules = paths, modules
        self.user_callbacks = ()
        self.rhs = ParameterizedRHS(prob.f, prob.p, paths, modules)
        self.leaves: List[torch.Tensor] = leaves
        self.values = [t.detach() for t in leaves]
        u0 = prob.u0
        self.n = u0.shape[-1]
        self.n_u0 = self.n if u0.requires_grad else 0
        self.sizes = [t.numel() for t in leaves]
        self.P = sum(self.sizes)
        self.m = self.n_u0 + self.P
        self.batch_shape = prob.batch_shape
        dev, dtype = u0.device, u0.dtype
        # Constant tangents in θ, column by column: one-hot in the column's entry, zero for the u0 columns.
        self.param_tangents = []
        offset = self.n_u0
        for t, k in zip(leaves, self.sizes):
            T = torch.zeros(self.m, k, dtype=t.dtype, device=t.device)
            T[offset + torch.arange(k), torch.arange(k)] = 1
            self.param_tangents.append(T.reshape(self.m, *t.shape))
            offset += k
        S0 = torch.zeros(*self.batch_shape, self.n, self.m, dtype=dtype, device=dev)
        if self.n_u0:
            S0[..., :, :self.n] = torch.eye(self.n, dtype=dtype, device=dev)
        self.z0 = torch.cat([u0.detach(), S0.reshape(*self.batch_shape, self.n * self.m)], -1)

    @property
    def trivial(self) -> bool:
        """Nothing requires grad: the plain solve is all there is to do."""
        return self.m == 0

    def f(self, z: torch.Tensor, _p, t: torch.Tensor) -> torch.Tensor:
        n, m = self.n, self.m
        u = z[..., :n]
        S = z[..., n:].reshape(*z.shape[:-1], n, m)
        values = self.values

        def rhs(uu, *vals):
            return self.rhs(uu, vals, t)

        du = rhs(u, *values)

        def column(tu, *tv):
            return jvp(rhs, (u, *values), (tu, *tv))[1]

        dS = vmap(column)(S.movedim(-1, 0), *self.param_tangents)          # (m, *batch, n)
        return torch.cat([du, dS.movedim(0, -1).reshape(*u.shape[:-1], n * m)], -1)

    # ---- events: the sensitivities across a jump -------------------------------------------------
    def _columns(self, fn, point, S):
        """``∂fn/∂(u, θ) · [S; param tangents]`` for the ``m`` columns of ``S`` ``(*batch, n, m)``:
        ``(*batch, ..., m)``. ``fn(u, *values)``."""
        def column(tu, *tv):
            return jvp(fn, (point, *self.values), (tu, *tv))[1]
        out = vmap(column)(S.movedim(-1, 0), *self.param_tangents)
        return out.movedim(0, -1)

    def _call(self, fn, extra=()):
        """``fn(u, p, t, *extra)`` as a function of ``(u, *values)`` at time ``t``."""
        def bound(t):
            call = ParameterizedRHS(lambda u, p, tt: fn(u, p, tt, *extra), self.prob.p, self.paths, self.modules)
            return lambda u, *vals: call(u, vals, t)
        return bound

    def augmented_callbacks(self, callbacks):
        """The user's callbacks on the augmented state: conditions read ``u``; affects also carry
        ``S`` by the chain rule, ``S⁺ = a_u S + a_θ`` (the event time's part is added by
        :meth:`pre_jump` and :meth:`post_jump`)."""
        n = self.n

        def on_u(cond):
            return lambda z, _p, t: cond(z[..., :n], self.prob.p, t)

        def chained(fn, terminate_only=False):
            if fn is None:
                return None

            def affect(z, _p, t, *index):
                u, S = self.split(z)
                result = fn(u, self.prob.p, t, *index)
                if isinstance(result, tuple):
                    raise ValueError("an affect that returns (u, p) is not supported with ForwardSensitivity(); "
                                     "use DirectAdjoint(), the default")
                dS = self._columns(self._call(fn, index)(t), u, S)
                return torch.cat([result, dS.reshape(*u.shape[:-1], n * self.m)], -1)
            return affect

        out = []
        for cb in callbacks:
            if isinstance(cb, VectorContinuousCallback):
                out.append(VectorContinuousCallback(on_u(cb.condition), chained(cb.affect), cb.len,
                                                    chained(cb.affect_neg), terminate=cb.terminate,
                                                    direction=cb.direction, interp_points=cb.interp_points))
            elif isinstance(cb, ContinuousCallback):
                out.append(ContinuousCallback(on_u(cb.condition), chained(cb.affect), chained(cb.affect_neg),
                                              terminate=cb.terminate, direction=cb.direction,
                                              interp_points=cb.interp_points))
            elif isinstance(cb, DiscreteCallback):
                out.append(DiscreteCallback(on_u(cb.condition), chained(cb.affect), terminate=cb.terminate))
            else:
                out.append(PresetTimeCallback(cb.times, chained(cb.affect), terminate=cb.terminate))
        self.user_callbacks = tuple(callbacks)
        return tuple(out)

    def pre_jump(self, handler, z, t, f_minus, ev, which, comp, rate):
        """At the events of the members in ``ev``: the event times' sensitivities
        ``τ = -(g_u S + g_θ) / ġ`` ``(B, m)``, and ``S + f⁻ τ``, the state's total sensitivity at the
        event, in place of ``S`` in ``z`` (flat ``(B, n (1 + m))``)."""
        B, n, m = z.shape[0], self.n, self.m
        zu = z.reshape(*self.batch_shape, -1)
        u, S = self.split(zu)
        tt = t.reshape(self.batch_shape)
        tau = torch.zeros(*self.batch_shape, m, dtype=z.dtype, device=z.device)
        for k, (i, _) in enumerate(handler.continuous):
            mine = (ev & (which == k)).reshape(self.batch_shape)
            if not bool(mine.any()):
                continue
            cb = self.user_callbacks[i]
            g = self._call(cb.condition)(tt)
            dg = self._columns(g, u, S)                                     # (*batch[, L], m)
            if cb.length is not None:
                c = comp.reshape(*self.batch_shape, 1, 1).expand(*self.batch_shape, 1, m)
                dg = dg.gather(-2, c).squeeze(-2)
            r = rate.reshape(self.batch_shape).to(z.dtype)
            r = torch.where(mine, r, torch.ones_like(r))
            tau = torch.where(mine[..., None], -dg / r[..., None], tau)
        fm = f_minus.reshape(*self.batch_shape, -1)[..., :n]
        S_total = S + fm[..., :, None] * tau[..., None, :]
        out = torch.cat([u, S_total.reshape(*u.shape[:-1], n * m)], -1).reshape(B, -1)
        return torch.where(ev[:, None], out, z), tau.reshape(B, m)

    def post_jump(self, z, t, f_plus, moving, tau):
        """``S - f⁺ τ`` for the members that go on after their event (the flow's start moved by ``τ``)."""
        B, n, m = z.shape[0], self.n, self.m
        fp = f_plus[:, :n]
        S = z[:, n:].reshape(B, n, m) - fp[:, :, None] * tau[:, None, :]
        out = torch.cat([z[:, :n], S.reshape(B, n * m)], -1)
        return torch.where(moving[:, None], out, z)

    def attach_events(self, events):
        """``(t_events, u_events, ...)`` of the augmented solve with their gradients: ``u_events``
        through their sensitivities, ``t_events`` through ``τ``."""
        t_ev, z_ev, which, index, tau = events
        B, E = t_ev.shape
        tau = torch.where(torch.isnan(t_ev)[..., None], torch.zeros_like(tau), tau)
        # _Attach takes (saved times, *batch, ...) like sol.u
        z = z_ev.transpose(0, 1).reshape(E, *self.batch_shape, -1)
        u_ev = self.attach(z).reshape(E, B, self.n).transpose(0, 1)
        t_in = t_ev.T.reshape(E, *self.batch_shape, 1).to(tau.dtype)
        tau_in = tau.transpose(0, 1).reshape(E, *self.batch_shape, 1, self.m)
        t_att = _Attach.apply(t_in, tau_in, self, self.prob.u0, *self.leaves)
        return t_att.reshape(E, B).T.to(torch.float64), u_ev, which, index

    def tolerance(self, tol):
        """A per-component tolerance ``(n,)`` repeated for the rows of ``S``; numbers pass through."""
        if isinstance(tol, torch.Tensor):
            return torch.cat([tol, tol.repeat_interleave(self.m)])
        return tol

    def split(self, z: torch.Tensor):
        """``(u, S)`` from augmented states ``(..., n (1 + m))``."""
        return z[..., :self.n], z[..., self.n:].reshape(*z.shape[:-1], self.n, self.m)

    def attach(self, z: torch.Tensor) -> torch.Tensor:
        """The states in ``z`` as a function of ``u0`` and the parameters, through ``S``."""
        u, S = self.split(z)
        return _Attach.apply(u, S, self, self.prob.u0, *self.leaves)


class _Attach(torch.autograd.Function):
    """Returns ``u``; its backward is the chain rule through the sensitivities ``S``."""

    @staticmethod
    def forward(ctx, u, S, system: ForwardSensitivitySystem, u0, *leaves):
        ctx.save_for_backward(S)
        ctx.system = system
        return u.clone()

    @staticmethod
    def backward(ctx, grad):
        (S,) = ctx.saved_tensors
        sys_ = ctx.system
        # A failed member's unreached values are NaN constants, as without ForwardSensitivity.
        S = torch.where(torch.isnan(S), torch.zeros_like(S), S)
        g = (grad.unsqueeze(-1) * S).sum(-2)                                 # (..., m)
        g = g.reshape(-1, *sys_.batch_shape, sys_.m).sum(0)                  # summed over saved times
        grad_u0 = g[..., :sys_.n_u0] if sys_.n_u0 else None
        grads, offset = [], 0
        if not sys_.P:      # u0 alone
            return (None, None, None, grad_u0)
        gp = g[..., sys_.n_u0:].reshape(-1, sys_.P).sum(0)
        for leaf, k in zip(sys_.leaves, sys_.sizes):
            grads.append(gp[offset:offset + k].reshape(leaf.shape).to(leaf.dtype))
            offset += k
        return (None, None, None, grad_u0, *grads)


class SensitivityDense:
    """Dense output of the augmented solve, handing out differentiable states like ``sol.u``."""

    def __init__(self, dense, system: ForwardSensitivitySystem):
        self.dense, self.system = dense, system

    def __call__(self, tq: torch.Tensor) -> torch.Tensor:
        return self.system.attach(self.dense(tq))
