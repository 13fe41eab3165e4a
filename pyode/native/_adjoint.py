"""Continuous adjoints: ``GaussAdjoint``.

For a loss on the saved states ``u(t_1..t_T)`` with ``g_k = ∂L/∂u(t_k)``, the adjoint ``λ`` solves,
backwards from ``λ(t_T) = g_T``,

    λ' = -J(u(t), t)ᵀ λ         between save times,    λ(t_k) += g_k  at each of them,

and gives ``∂L/∂u0 = λ(t0)`` and ``∂L/∂θ = ∫_{t0}^{t_T} λᵀ ∂f/∂θ dt``. ``u(t)`` comes from the forward
solve's dense output. ``λ`` is solved per batch member (own steps, own error control) by the
forward algorithm with the forward tolerances; for a stiff algorithm the adjoint is stiff too and
gets its Jacobian ``-Jᵀ`` from the problem's ``jac`` or forward-mode AD of ``f``.

The parameter integral is not part of the ODE state (SciMLSensitivity's ``GaussAdjoint``): on
every accepted adjoint step it is accumulated by 3-point Gauss-Legendre quadrature of
``λ(t)ᵀ ∂f/∂θ(u(t), t)``, ``λ`` from the adjoint's dense output. One vector-Jacobian product of the
whole batch per node sums the members' contributions, so the cost is O(n³) per member plus O(P)
per step, and memory holds one copy of the parameters' gradient however large the batch.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, List

import torch
from torch.func import jvp, vmap

from .._params import ParameterizedRHS, parameter_leaves
from .._retcode import ReturnCode

__all__ = ["AdjointSystem"]

# Gauss-Legendre nodes and weights on [0, 1] (3 points: exact for polynomials of degree 5)
_GL_NODES = (0.5 - math.sqrt(15.0) / 10.0, 0.5, 0.5 + math.sqrt(15.0) / 10.0)
_GL_WEIGHTS = (5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0)


class AdjointSystem:
    """What the backward pass needs of one forward solve, and the backward pass itself."""

    def __init__(self, prob, alg, opts, make_stepper: Callable, integrate: Callable, sensealg):
        paths, leaves, modules = parameter_leaves(prob.p)
        self.prob, self.alg, self.opts, self.sensealg = prob, alg, opts, sensealg
        self.make_stepper, self.integrate = make_stepper, integrate
        self.rhs = ParameterizedRHS(prob.f, prob.p, paths, modules)
        self.leaves = leaves
        self.values = [t.detach() for t in leaves]
        self.batch_shape = prob.batch_shape
        self.n = prob.u0.shape[-1]
        self.forward = self.fwd_dense = None      # the forward RawSolution and its dense output

    # ---- the pieces of f the adjoint needs -------------------------------------------------------
    def _user(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*self.batch_shape, self.n)

    def _times(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.batch_shape)

    def vjp_u(self, u, t, cot) -> torch.Tensor:
        """``Jᵀ cot`` per member, flat (B, n)."""
        uu, tt = self._user(u), self._times(t)
        _, pullback = torch.func.vjp(lambda x: self.rhs(x, self.values, tt), uu)
        return pullback(self._user(cot))[0].reshape(u.shape)

    def jacobian(self, u, t) -> torch.Tensor:
        """``J`` per member, (B, n, n): the problem's ``jac`` or forward-mode AD of ``f``."""
        uu, tt = self._user(u), self._times(t)
        if self.prob.jac is not None:
            return self.prob.jac(uu, self.prob.p, tt).reshape(u.shape[0], self.n, self.n).detach()
        eye = torch.eye(self.n, dtype=u.dtype, device=u.device)
        tangents = eye.reshape(self.n, *([1] * len(self.batch_shape)), self.n).expand(self.n, *uu.shape)
        cols = vmap(lambda v: jvp(lambda x: self.rhs(x, self.values, tt), (uu,), (v,))[1])(tangents)
        return cols.reshape(self.n, u.shape[0], self.n).permute(1, 2, 0)

    def vjp_params(self, u, t, cot) -> List[torch.Tensor]:
        """``(∂f/∂θ)ᵀ cot`` summed over members, one tensor per parameter leaf."""
        with torch.enable_grad():
            vals = [v.detach().requires_grad_() for v in self.values]
            out = self.rhs(self._user(u), vals, self._times(t))
            grads = torch.autograd.grad(out, vals, self._user(cot), allow_unused=True)
        return [torch.zeros_like(v) if g is None else g for v, g in zip(vals, grads)]

    # ---- forward --------------------------------------------------------------------------------
    def solve_forward(self):
        opts = replace(self.opts, dense=True)
        with torch.no_grad():
            raw = self.integrate(self.prob.f, self.prob.u0.detach(), self.prob.p, self.make_stepper(self.alg, self.prob),
                                 opts, self.batch_shape)
        self.forward, self.fwd_dense = raw, raw.dense
        return raw

    # ---- backward -------------------------------------------------------------------------------
    def backward(self, grad_u: torch.Tensor):
        """``(∂L/∂u0 flat (B, n), [∂L/∂θ per leaf])`` from ``grad_u`` (T, B, n) on the saved times."""
        raw = self.forward
        failed = raw.retcode != ReturnCode.Success
        if bool(failed.any()):
            i = int(torch.nonzero(failed)[0])
            raise RuntimeError(f"{self.sensealg!r} cannot differentiate a solve whose batch member {i} failed "
                               f"({ReturnCode(int(raw.retcode[i])).name}); use DirectAdjoint() for gradients through "
                               "partially failed batches, or fix the failure")
        ts = raw.t.tolist()
        t0 = self.opts.t0
        lam = grad_u[-1].to(raw.u.dtype)
        mu = [torch.zeros_like(v) for v in self.values]
        stops = ts[::-1] + ([t0] if ts[0] != t0 else [])
        for k in range(1, len(stops)):
            lam = self._interval(lam, stops[k - 1], stops[k], mu)
            if k < len(ts):
                lam = lam + grad_u[len(ts) - 1 - k].to(lam.dtype)
        return lam, mu

    def _interval(self, lam, t_hi: float, t_lo: float, mu: List[torch.Tensor]) -> torch.Tensor:
        """Solve the adjoint from ``t_hi`` back to ``t_lo`` and add the parameter quadrature to ``mu``."""
        from .._problem import ODEProblem

        fwd = self.fwd_dense
        system = self

        def f_adj(l, _p, t):
            tf = t.reshape(-1)
            return -system.vjp_u(fwd.at(tf), tf, l.reshape(-1, system.n)).reshape(l.shape)

        def jac_adj(l, _p, t):
            tf = t.reshape(-1)
            J = system.jacobian(fwd.at(tf), tf)
            return (-J.transpose(-1, -2)).reshape(*l.shape, system.n)

        adj_prob = ODEProblem(f_adj, lam.reshape(*self.batch_shape, self.n), (t_hi, t_lo), None, jac=jac_adj)
        alg = self.alg
        if getattr(alg, "stiff", False) and getattr(alg, "autodiff", False):
            # jac_adj is exact; ∂/∂t of the adjoint right-hand side (Rosenbrock) by differences, since
            # forward-mode AD cannot see through the interpolated u(t)
            alg = replace(alg, autodiff=False) if hasattr(alg, "__dataclass_fields__") else alg
        opts = replace(self.opts, t0=t_hi, t1=t_lo, saveat=None, save_steps=False, dense=True, dt=None,
                       tstops=None, progress=False, dtmax=abs(t_hi - t_lo))
        raw = self.integrate(f_adj, adj_prob.u0, None, self.make_stepper(alg, adj_prob), opts, self.batch_shape)
        bad = raw.retcode != ReturnCode.Success
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise RuntimeError(f"the adjoint solve of {self.sensealg!r} failed for batch member {i} between "
                               f"t={t_lo:g} and t={t_hi:g} ({ReturnCode(int(raw.retcode[i])).name} at "
                               f"t={float(raw.t_final[i]):g}); tighten the tolerances or use DirectAdjoint()")
        self._quadrature(raw.dense, mu)
        return raw.u[-1].reshape(lam.shape)

    def _quadrature(self, lam_dense, mu: List[torch.Tensor]) -> None:
        """``mu -= Σ_steps Σ_q w_q h λ(t_q)ᵀ ∂f/∂θ(u(t_q), t_q)`` (steps run backwards: ``h < 0``)."""
        if not self.values or lam_dense is None:
            return
        fwd = self.fwd_dense
        for s in range(lam_dense.max_steps):
            t_lo, hs, exists = lam_dense.step(s)
            for c, w in zip(_GL_NODES, _GL_WEIGHTS):
                tq = t_lo + c * hs
                lam_q = lam_dense.on_step(s, c)
                scale = torch.where(exists, w * hs, torch.zeros_like(hs)).to(lam_q.dtype)
                cot = torch.where(exists[:, None], lam_q, torch.zeros_like(lam_q)) * scale[:, None]
                for acc, g in zip(mu, self.vjp_params(fwd.at(tq), tq, cot)):
                    acc.sub_(g)


class AdjointAttach(torch.autograd.Function):
    """Hands out the forward solve's saved states; the backward pass runs the adjoint."""

    @staticmethod
    def forward(ctx, u, system: AdjointSystem, u0, *leaves):
        ctx.system = system
        return u.clone()

    @staticmethod
    def backward(ctx, grad):
        system = ctx.system
        lam, mu = system.backward(grad)
        grad_u0 = lam.reshape(system.prob.u0.shape).to(system.prob.u0.dtype)
        return (None, None, grad_u0, *[m.to(leaf.dtype) for m, leaf in zip(mu, system.leaves)])
