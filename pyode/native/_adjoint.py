"""Continuous adjoints: ``InterpolatingAdjoint`` and ``GaussAdjoint``.

For a loss on the saved states ``u(t_1..t_T)`` with ``g_k = ∂L/∂u(t_k)``, the adjoint ``λ`` solves,
backwards from ``λ(t_T) = g_T``,

    λ' = -J(u(t), t)ᵀ λ         between save times,    λ(t_k) += g_k  at each of them,

and gives ``∂L/∂u0 = λ(t0)`` and ``∂L/∂θ = ∫_{t0}^{t_T} λᵀ ∂f/∂θ dt``. ``u(t)`` comes from the forward
solve's dense output, or (checkpointing) from re-solving forward from the saved state at the start
of each interval between save times. ``λ`` is solved per batch member (own steps, own error
control) by the forward algorithm with the forward tolerances; for a stiff algorithm the adjoint
is stiff too and gets its Jacobian from the problem's ``jac`` or automatic differentiation of ``f``.

The parameter integral, two ways (SciMLSensitivity's):

* ``InterpolatingAdjoint``: ``μ' = -λᵀ ∂f/∂θ`` is part of the ODE state, per member (``(B, P)``,
  by one vector-Jacobian product per member, vmapped), error-controlled with ``λ`` unless
  ``seminorm`` leaves it out of the error norm (Kidger, Chen & Lyons 2021). A stiff method's
  iteration matrix is then ``(n + P)``-square per member.
* ``GaussAdjoint``: only ``λ`` is solved; on every accepted adjoint step the integral is
  accumulated by 3-point Gauss-Legendre quadrature of ``λ(t)ᵀ ∂f/∂θ(u(t), t)``, ``λ`` from the
  adjoint's dense output, one vector-Jacobian product of the whole batch per node (summing the
  members): O(n³) per member plus O(P) per step, one gradient's worth of memory.
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

# Gauss-Kronrod G7/K15 on [-1, 1] (QUADPACK's qk15): the 15 Kronrod nodes (the odd-indexed ones,
# 1, 3, 5, and the centre, are the 7 Gauss nodes), their weights, and the Gauss weights.
_XK = (0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
       0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
       0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
       0.207784955007898467600689403773245, 0.0)
_WK = (0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
       0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
       0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
       0.204432940075298892414161999234649, 0.209482141084727828012999174891714)
_WG = (0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
       0.381830050505118944950369775488975, 0.417959183673469387755102040816327)


#: up to this many states a one-member parameter Jacobian takes a reverse pass per row of f
_ROWWISE_MAX_STATES = 16


def _kronrod_rule():
    """Nodes on [0, 1] with Kronrod and Gauss weights (Gauss weight 0 off the Gauss nodes)."""
    nodes, wk, wg = [], [], []
    for i, (x, w) in enumerate(zip(_XK, _WK)):
        g = _WG[i // 2] if i % 2 == 1 else (_WG[3] if i == 7 else 0.0)
        for sign in ((-1.0, 1.0) if x else (1.0,)):
            nodes.append(0.5 + 0.5 * sign * x)
            wk.append(0.5 * w)
            wg.append(0.5 * g)
    return tuple(nodes), tuple(wk), tuple(wg)


KRONROD_NODES, KRONROD_WEIGHTS, GAUSS7_WEIGHTS = _kronrod_rule()
_MAX_BISECTIONS = 8

# A backward re-solve of u may take this many times the forward solve's steps (its longest
# member's, accepted and rejected) plus _BACKSOLVE_STEP_SLACK on each interval between save times
# before it is declared diverging. A non-stiff problem needs about as many steps backwards as
# forwards (measured on the tests' problems, λ and μ in the error norm: one interval backwards
# takes at most 1.3x the steps of the whole forward solve); on a stiff one the backward u leaves
# the true solution and the steps shrink towards zero (Robertson: 2000 steps down to dt = 2e-11).
_BACKSOLVE_STEP_FACTOR = 4
_BACKSOLVE_STEP_SLACK = 100
# The backsolve's stability check forms J and its eigenvalues at every save time while the batch
# has at most this many Jacobian entries (batch size times n²): 8 MiB in float64.
_SPECTRAL_CHECK_ENTRIES = 1 << 20

_BACKSOLVE_ADVICE = ("use InterpolatingAdjoint(checkpointing=True), GaussAdjoint(checkpointing=True) or "
                     "QuadratureAdjoint(checkpointing=True) (they solve u forwards, and only the adjoint "
                     "backwards), or DirectAdjoint()")


class AdjointSystem:
    """What the backward pass needs of one forward solve, and the backward pass itself."""

    def __init__(self, prob, alg, opts, make_stepper: Callable, integrate: Callable, sensealg, *,
                 quadrature: bool, checkpointing: bool = False, seminorm: bool = False, backsolve: bool = False,
                 adaptive_quadrature=None):
        paths, leaves, modules = parameter_leaves(prob.p)
        self.prob, self.alg, self.opts, self.sensealg = prob, alg, opts, sensealg
        self.make_stepper, self.integrate = make_stepper, integrate
        self.rhs = ParameterizedRHS(prob.f, prob.p, paths, modules)
        self.leaves = leaves
        self.values = [t.detach() for t in leaves]
        self.batch_shape = prob.batch_shape
        self.n = prob.u0.shape[-1]
        self.forward = self.fwd_dense = None      # the forward RawSolution and its dense output
        self.quadrature, self.checkpointing, self.seminorm = quadrature, checkpointing, seminorm
        self.backsolve = backsolve
        self.adaptive_quadrature = adaptive_quadrature      # (abstol, reltol) of QuadratureAdjoint
        self.P = sum(v.numel() for v in self.values)
        self.vmappable = True       # f runs under vmap (else the quadratures go node by node)

    # ---- the pieces of f the adjoint needs -------------------------------------------------------
    def _user(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*self.batch_shape, self.n)

    def _times(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.batch_shape)

    def vjp_u(self, u, t, cot, functional: bool = False, J: torch.Tensor = None) -> torch.Tensor:
        """``Jᵀ cot`` per member, flat (B, n): from the problem's ``jac`` when it has one (cheaper
        than differentiating ``f``; ``J`` when the caller already has it), else one reverse pass
        through ``f``. ``functional`` for callers that run under ``torch.func`` transforms (a
        Jacobian of the backsolve system by forward AD), where ``torch.autograd.grad`` cannot run."""
        uu, tt = self._user(u), self._times(t)
        if functional:
            _, pullback = torch.func.vjp(lambda x: self.rhs(x, self.values, tt), uu)
            return pullback(self._user(cot))[0].reshape(u.shape)
        if self.prob.jac is not None:
            if J is None:
                J = self.jacobian(u, t)
            return (cot.to(J.dtype)[:, None, :] @ J)[:, 0].to(u.dtype)
        with torch.enable_grad():
            x = uu.detach().requires_grad_()
            out = self.rhs(x, self.values, tt)
            (g,) = torch.autograd.grad(out, x, self._user(cot), allow_unused=True)
        return torch.zeros_like(u) if g is None else g.reshape(u.shape)

    def vjp_params_many(self, u, t, cot) -> List[torch.Tensor]:
        """``Σ_q (∂f/∂θ)ᵀ cot_q`` over ``Q`` batches of states (``u``, ``cot`` (Q, B, n), ``t`` (Q, B)),
        summed over members too: one reverse pass through ``f`` vmapped over ``Q``."""
        Q = u.shape[0]
        uu = u.reshape(Q, *self.batch_shape, self.n)
        tt = t.reshape(Q, *self.batch_shape)

        def F(*vals):
            return vmap(lambda x, s: self.rhs(x, vals, s))(uu, tt)

        _, pullback = torch.func.vjp(F, *self.values)
        return list(pullback(cot.reshape(uu.shape).to(uu.dtype)))

    def member_vjps(self, u, t, cot):
        """``(Jᵀ cot, (∂f_b/∂θ)ᵀ cot_b)``: (B, n) and (B, P). One member: both from one reverse
        pass through ``f``."""
        if u.shape[0] != 1:
            return self.vjp_u(u, t, cot), self.member_vjp_params(u, t, cot)
        with torch.enable_grad():
            x = self._user(u).detach().requires_grad_()
            vals = [v.detach().requires_grad_() for v in self.values]
            out = self.rhs(x, vals, self._times(t))
            grads = torch.autograd.grad(out, [x] + vals, self._user(cot), allow_unused=True)
        gu = torch.zeros_like(u) if grads[0] is None else grads[0].reshape(u.shape)
        gp = [torch.zeros_like(v) if g is None else g for v, g in zip(vals, grads[1:])]
        return gu, torch.cat([g.reshape(-1) for g in gp])[None].to(u.dtype)

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

    def member_vjp_params(self, u, t, cot, functional: bool = False) -> torch.Tensor:
        """``(∂f_b/∂θ)ᵀ cot_b`` for every member ``b`` separately: (B, P), parameters flattened
        (``functional`` as for :meth:`vjp_u`)."""
        n = self.n
        if u.shape[0] == 1 and not functional:
            # One member: the batch-summed product by one reverse pass, 4x cheaper than vmap's.
            return torch.cat([g.reshape(-1) for g in self.vjp_params(u, t, cot)])[None].to(u.dtype)

        def one(ub, tb, cb):
            def fb(*vals):
                out = self.rhs(ub, vals, tb)
                if out.shape != ub.shape:
                    raise ValueError(
                        f"f returned shape {tuple(out.shape)} for one batch member's state {tuple(ub.shape)}: "
                        f"{self.sensealg!r} evaluates f member by member and needs parameters shared by the "
                        "batch; use GaussAdjoint() for per-member parameters")
                return out
            _, pullback = torch.func.vjp(fb, *self.values)
            return torch.cat([g.reshape(-1) for g in pullback(cb)])

        return vmap(one)(u.reshape(-1, n), t.reshape(-1), cot.reshape(-1, n))

    def member_param_jacobian(self, u, t) -> torch.Tensor:
        """``∂f_b/∂θ`` per member: (B, n, P)."""
        if u.shape[0] == 1 and self.n <= _ROWWISE_MAX_STATES:
            # One member, a small state: a reverse pass per row of f through one recorded graph,
            # 4x cheaper than jacrev's vmapped one for Robertson (150 against 600 µs).
            with torch.enable_grad():
                vals = [v.detach().requires_grad_() for v in self.values]
                out = self.rhs(self._user(u).detach(), vals, self._times(t)).reshape(-1)
                rows = []
                for i in range(self.n):
                    grads = torch.autograd.grad(out[i], vals, retain_graph=i < self.n - 1, allow_unused=True)
                    rows.append(torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1)
                                           for v, g in zip(vals, grads)]))
            return torch.stack(rows)[None].to(u.dtype)
        if u.shape[0] == 1:
            uu, tt = self._user(u), self._times(t)
            cols = torch.func.jacrev(lambda *vals: self.rhs(uu, vals, tt), argnums=tuple(range(len(self.values))))(
                *self.values)
            return torch.cat([c.reshape(self.n, -1) for c in cols], -1)[None]
        def one(ub, tb):
            cols = torch.func.jacrev(lambda *vals: self.rhs(ub, vals, tb), argnums=tuple(range(len(self.values))))(
                *self.values)
            return torch.cat([c.reshape(self.n, -1) for c in cols], -1)

        return vmap(one)(u.reshape(-1, self.n), t.reshape(-1))

    # ---- forward --------------------------------------------------------------------------------
    def solve_forward(self):
        # Dense output feeds u(t) to the adjoint; with checkpointing the saved states do instead,
        # and the backsolve adjoint solves u backwards itself.
        opts = self.opts if (self.checkpointing or self.backsolve) else replace(self.opts, dense=True)
        with torch.no_grad():
            raw = self.integrate(self.prob.f, self.prob.u0.detach(), self.prob.p, self.make_stepper(self.alg, self.prob),
                                 opts, self.batch_shape)
        self.forward, self.fwd_dense = raw, raw.dense
        return raw

    def _forward_on(self, t_lo: float, t_hi: float, u_lo: torch.Tensor):
        """Dense output of the forward solution on ``[t_lo, t_hi]``: kept, or re-solved from ``u_lo``."""
        if not self.checkpointing:
            return self.fwd_dense
        from .._problem import ODEProblem

        prob = ODEProblem(self.prob.f, u_lo.reshape(*self.batch_shape, self.n), (t_lo, t_hi), self.prob.p,
                          jac=self.prob.jac, tgrad=self.prob.tgrad)
        opts = replace(self.opts, callbacks=(), t0=t_lo, t1=t_hi, saveat=None, save_steps=False, dense=True, dt=self._dt,
                       tstops=None, progress=False, dtmax=abs(t_hi - t_lo))
        with torch.no_grad():
            raw = self.integrate(self.prob.f, prob.u0, self.prob.p, self.make_stepper(self.alg, prob), opts,
                                 self.batch_shape)
        self._check(raw, "forward re-solve", t_lo, t_hi)
        return raw.dense

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
        saved = [raw.u[i].detach() for i in range(len(ts))][::-1] + ([self.prob.u0.detach().reshape(raw.u[0].shape)]
                                                                     if ts[0] != t0 else [])
        if self.backsolve:
            self._check_backsolve_stability(stops, saved)
        u_hi = saved[0]
        for k in range(1, len(stops)):
            if self.backsolve:
                # checkpointing: restart u from the saved forward state at each save time
                lam, u_hi = self._interval_backsolve(lam, saved[k - 1] if self.checkpointing else u_hi,
                                                     stops[k - 1], stops[k], mu)
            else:
                lam = self._interval(lam, stops[k - 1], stops[k], saved[k], mu)
            if k < len(ts):
                lam = lam + grad_u[len(ts) - 1 - k].to(lam.dtype)
        return lam, mu

    @property
    def _dt(self):
        """Step of the backward solves: the forward's fixed step when it had one (without error
        control nothing else could choose it), else the initial-step heuristic's."""
        return None if self.opts.adaptive else self.opts.dt

    def _check(self, raw, what: str, t_lo: float, t_hi: float, budget: int = None) -> None:
        bad = raw.retcode != ReturnCode.Success
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            code = ReturnCode(int(raw.retcode[i]))
            if budget is not None and code == ReturnCode.MaxIters:
                reason = (f"MaxIters: more than {budget} steps, {_BACKSOLVE_STEP_FACTOR}x the forward solve's "
                          f"{self._forward_steps} plus {_BACKSOLVE_STEP_SLACK}, stopped at "
                          f"t={float(raw.t_final[i]):g}")
            else:
                reason = f"{code.name} at t={float(raw.t_final[i]):g}"
            advice = ("solving u backwards in time is unstable on stiff or dissipative problems: " + _BACKSOLVE_ADVICE
                      if self.backsolve else "tighten the tolerances or use DirectAdjoint()")
            raise RuntimeError(f"the {what} of {self.sensealg!r} failed for batch member {i} between "
                               f"t={t_lo:g} and t={t_hi:g} ({reason}); {advice}")

    @property
    def _forward_steps(self) -> int:
        """Steps (accepted and rejected) of the forward solve's longest member."""
        return int((self.forward.naccept + self.forward.nreject).max())

    def _check_backsolve_stability(self, stops: List[float], saved: List[torch.Tensor]) -> None:
        """Refuse, before any backward solve, a backsolve that must diverge.

        Backwards in time a perturbation of ``u`` along an eigenvector of ``J = ∂f/∂u`` grows like
        ``exp(-Re λ Δt)``, while the solution itself moves with the slowest of these rates; so the
        re-solved ``u`` keeps a correct digit over an interval of length ``Δt`` only while
        ``(max Re λ - min Re λ) Δt`` stays below ``ln(1/eps)`` (36 in float64, 16 in float32), for
        rounding errors alone. The spread is taken at the saved forward states at both ends of each
        interval (the smaller of the two: both ends must be stiff), per batch member. Robertson
        (spread 2e3 to 9e3 after t = 1e-3) exceeds it on every interval longer than 0.02.

        ``J`` comes from the problem's ``jac``, else forward-mode AD for a stiff method (which needs
        it anyway) or reverse-mode AD (the vector-Jacobian products the adjoint needs anyway).
        Skipped above ``_SPECTRAL_CHECK_ENTRIES`` Jacobian entries per saved time (batch size times
        ``n²``); the step budget of :meth:`_interval_backsolve` then stops a diverging solve.
        """
        u = torch.stack([x.reshape(-1, self.n) for x in saved])    # (S, B, n), newest first
        S, B, n = u.shape
        if S < 2 or B * n * n > _SPECTRAL_CHECK_ENTRIES:
            return
        t = torch.tensor(stops, dtype=torch.float64, device=u.device)
        rates = []
        for s in range(S):
            J = self._state_jacobian(u[s], t[s].expand(B))          # (B, n, n)
            if not bool(torch.isfinite(J).all()):
                return                                              # nothing to conclude; the solves decide
            rates.append(torch.linalg.eigvals(J.to(torch.float64)).real)
        re = torch.stack(rates)                                     # (S, B, n)
        spread = re.max(-1).values - re.min(-1).values              # (S, B)
        dt = (t[:-1] - t[1:]).abs()[:, None]                        # (S-1, 1): interval k between stops k, k+1
        growth = torch.minimum(spread[:-1], spread[1:]) * dt        # (S-1, B)
        limit = math.log(1.0 / torch.finfo(u.dtype).eps)
        hopeless = growth > limit
        if not bool(hopeless.any()):
            return
        k, i = (int(x) for x in torch.nonzero(hopeless)[0])
        lo, hi = float(re[k, i].min()), float(re[k, i].max())
        raise RuntimeError(
            f"{self.sensealg!r} cannot differentiate this solve: between t={stops[k + 1]:g} and t={stops[k]:g} "
            f"batch member {i}'s Jacobian has eigenvalues with real parts from {lo:.3g} to {hi:.3g} (at "
            f"t={stops[k]:g}), so re-solving u backwards in time over that interval amplifies errors by about "
            f"exp({float(growth[k, i]):.3g}) relative to u itself, beyond {str(u.dtype).replace('torch.', '')}'s "
            f"precision (exp({limit:.0f})): the backwards-in-time re-solve of a stiff problem is unstable. "
            + _BACKSOLVE_ADVICE[0].upper() + _BACKSOLVE_ADVICE[1:]
            + " (or, keeping BacksolveAdjoint, save at more times so that each interval is shorter)")

    def _state_jacobian(self, u, t) -> torch.Tensor:
        """``J`` per member (B, n, n): :meth:`jacobian` for a stiff method or with ``jac``, else by
        reverse mode (rows ``e_jᵀ J`` of all members at once: the members are independent)."""
        if self.prob.jac is not None or _is_stiff(self.alg):
            return self.jacobian(u, t)
        uu, tt = self._user(u), self._times(t)
        _, pullback = torch.func.vjp(lambda x: self.rhs(x, self.values, tt), uu)
        eye = torch.eye(self.n, dtype=u.dtype, device=u.device)
        basis = eye.reshape(self.n, *([1] * len(self.batch_shape)), self.n).expand(self.n, *uu.shape)
        rows = vmap(lambda e: pullback(e)[0])(basis)                # (n, *batch, n): rows[j] = e_jᵀ J
        return rows.reshape(self.n, u.shape[0], self.n).transpose(0, 1)

    def _tolerances(self):
        """Tolerances of the adjoint state ``[λ, μ]``: the forward ones; ``seminorm`` takes ``μ`` out
        of the error norm (infinite abstol) and rescales λ's so the RMS is over λ alone."""
        rtol, atol = self.opts.reltol, self.opts.abstol
        if self.quadrature or not self.P:
            return rtol, atol
        n, P = self.n, self.P

        def full(tol, mu_value):
            lam = tol if isinstance(tol, torch.Tensor) else torch.full((n,), float(tol), dtype=torch.float64)
            lam = lam.to(torch.float64)
            if mu_value is None:
                mu_value = float(lam.min())
            return torch.cat([lam, torch.full((P,), mu_value, dtype=torch.float64)])

        if not self.seminorm:
            return full(rtol, None), full(atol, None)
        shrink = math.sqrt(n / (n + P))
        # an infinite abstol makes μ's error weight zero whatever its reltol
        return full(rtol * shrink, None), full(atol * shrink, float("inf"))

    # ---- events (one problem): λ's jumps at the event times -----------------------------------------
    def backward_with_events(self, grad_u: torch.Tensor, grad_t_ev: torch.Tensor, grad_u_ev: torch.Tensor):
        """:meth:`backward` for a solve with events: the save times and the event times are the
        stops; at an event ``λ`` and ``μ`` take the vector-Jacobian product of the event map
        ``u⁻ ↦ a(u⁻ + f⁻δ) - f⁺δ`` (δ: the event time's shift, the implicit function's), plus the
        cotangents of ``t_events`` and ``u_events``."""
        raw = self.forward
        if bool(((raw.retcode != ReturnCode.Success) & (raw.retcode != ReturnCode.Terminated)).any()):
            raise RuntimeError(f"{self.sensealg!r} cannot differentiate a failed solve "
                               f"({ReturnCode(int(raw.retcode[0])).name})")
        ts = raw.t.tolist()
        records, discrete = raw.event_records
        dtype = raw.u.dtype
        # kinds in forward order at one time: the save (a left limit), the event, the discrete affect
        points = ([(t, 2, i) for i, t in enumerate(ts)] + [(float(r[0][0]), 1, j) for j, r in enumerate(records)]
                  + [(float(r[0][0]), 0, j) for j, r in enumerate(discrete)])
        points.sort(key=lambda q: (-self.direction * q[0], q[1]))
        mu = [torch.zeros_like(v) for v in self.values]
        lam = torch.zeros(1, self.n, dtype=dtype, device=raw.u.device)
        current, after_event = points[0][0], None
        for t, kind, i in points:
            if t != current:
                lam = self._interval(lam, current, t, None, mu, after_event=after_event)
                current, after_event = t, None
            if kind == 2:
                lam = lam + grad_u[i].reshape(1, self.n).to(dtype)
            elif kind == 1:
                lam = self._event_jump(records[i], lam, grad_t_ev[i], grad_u_ev[i], mu)
                after_event = t
            else:
                lam = self._discrete_jump(discrete[i], lam, mu)
                after_event = t
        t0 = self.opts.t0
        if current != t0:
            lam = self._interval(lam, current, t0, None, mu, after_event=after_event)
        return lam, mu

    @property
    def direction(self) -> float:
        return 1.0 if self.opts.t1 > self.opts.t0 else -1.0

    def _discrete_jump(self, record, lam_plus, mu: List[torch.Tensor]) -> torch.Tensor:
        """``λ⁻ = a_uᵀ λ⁺``, ``μ += a_θᵀ λ⁺`` at a discrete or preset-time affect (its time is fixed)."""
        t, y_before, _, i = record
        cb = self.opts.callbacks[i]
        tt = t.reshape(())
        with torch.enable_grad():
            y = y_before.detach().reshape(self.n).requires_grad_(True)
            out = cb.affect(y, self.prob.p, tt)
            grads = torch.autograd.grad(out, [y] + list(self.leaves), lam_plus.reshape(self.n).to(out.dtype),
                                        allow_unused=True)
        for acc, gr in zip(mu, grads[1:]):
            if gr is not None:
                acc.add_(gr.to(acc.dtype))
        lam_minus = grads[0] if grads[0] is not None else torch.zeros_like(y)
        return lam_minus.reshape(1, self.n).to(lam_plus.dtype)

    def _event_jump(self, record, lam_plus, g_t, g_u, mu: List[torch.Tensor]) -> torch.Tensor:
        from ..callbacks import ContinuousCallback, VectorContinuousCallback

        t_diff, y_minus, _, which, comp, _, up = record
        continuous = [cb for cb in self.opts.callbacks if isinstance(cb, (ContinuousCallback, VectorContinuousCallback))]
        cb = continuous[int(which[0])]
        p = self.prob.p
        t = torch.tensor(float(t_diff[0]), dtype=torch.float64, device=y_minus.device)
        index = comp.reshape(()) if cb.length is not None else None
        fn = cb.affect if bool(up[0]) else (cb.affect_neg if cb.affect_neg is not None else cb.affect)
        with torch.enable_grad():
            y = y_minus.detach().reshape(self.n).requires_grad_(True)
            g = cb.condition(y, p, t)
            g = g[int(comp[0])] if cb.length is not None else g
            f_minus = self.prob.f(y.detach(), p, t).detach()
            # ġ = g_u f⁻ + g_t, without a graph
            yd = y.detach().requires_grad_(True)
            td = t.clone().requires_grad_(True)
            gd = cb.condition(yd, p, td)
            gd = gd[int(comp[0])] if cb.length is not None else gd
            gu, gt = torch.autograd.grad(gd, (yd, td), allow_unused=True)
            rate = (0.0 if gu is None else float((gu * f_minus).sum())) + (0.0 if gt is None else float(gt))
            delta = -(g - g.detach()) / rate
            y_ev = y + f_minus * delta
            t_expr = t.to(delta.dtype) + delta
            if fn is None:
                y_plus = y_ev
            else:
                y_plus = fn(y_ev, p, t, index) if index is not None else fn(y_ev, p, t)
            if fn is not None and not cb.terminate:
                E = y_plus - self.prob.f(y_plus.detach(), p, t).detach() * delta
            else:
                E = y_plus
            outs = [E, y_ev, t_expr]
            cots = [lam_plus.reshape(self.n).to(E.dtype), g_u.reshape(self.n).to(y_ev.dtype),
                    g_t.reshape(()).to(t_expr.dtype)]
            grads = torch.autograd.grad(outs, [y] + list(self.leaves), cots, allow_unused=True)
        for acc, gr in zip(mu, grads[1:]):
            if gr is not None:
                acc.add_(gr.to(acc.dtype))
        lam_minus = grads[0] if grads[0] is not None else torch.zeros_like(y)
        return lam_minus.reshape(1, self.n).to(lam_plus.dtype)

    def _interval(self, lam, t_hi: float, t_lo: float, u_lo, mu: List[torch.Tensor],
                  after_event: float = None) -> torch.Tensor:
        """Solve the adjoint from ``t_hi`` back to ``t_lo``, adding the parameter gradient to ``mu``.

        Each interval restarts the step-size control: ``λ``'s jump at a save time excites the
        adjoint's fast modes, which need small steps again whatever the step before was (carrying
        the step over cost Robertson 5 % more backward steps, not fewer)."""
        from .._problem import ODEProblem

        fwd = self._forward_on(t_lo, t_hi, u_lo)
        if after_event is not None:
            fwd = _RightOf(fwd, after_event, t_hi)
        system, n, P = self, self.n, self.P
        with_mu = not self.quadrature and P > 0
        # u(t) and, with the problem's jac, J(u(t)) at the last time asked for: a Rosenbrock step
        # evaluates several stages at one time (Rodas5P: three at t + h) and its Jacobian where the
        # step before ended. Robertson's GaussAdjoint: 9 interpolations and Jacobians per step -> 5.
        last = {}

        def state_at(tf, with_jac):
            if not (last and torch.equal(last["t"], tf)):
                last.clear()
                last.update(t=tf.clone(), u=fwd.at(tf), J=None)
            if with_jac and last["J"] is None:
                last["J"] = system.jacobian(last["u"], tf)
            return last["u"], last["J"]

        def f_adj(z, _p, t):
            tf, zf = t.reshape(-1), z.reshape(-1, z.shape[-1])
            lam_ = zf[:, :n]
            u, J = state_at(tf, not with_mu and system.prob.jac is not None)
            if not with_mu:
                return -system.vjp_u(u, tf, lam_, J=J).reshape(z.shape)
            dlam, dmu = system.member_vjps(u, tf, lam_)
            return -torch.cat([dlam, dmu.to(zf.dtype)], -1).reshape(z.shape)

        def jac_adj(z, _p, t):
            tf = t.reshape(-1)
            u, J = state_at(tf, True)
            JT = -J.transpose(-1, -2)
            if with_mu:
                # d(λ, μ)'/d(λ, μ) = [[-Jᵀ, 0], [-(∂f/∂θ)ᵀ, 0]]
                Fp = system.member_param_jacobian(u, tf).to(JT.dtype)             # (B, n, P)
                top = torch.cat([JT, JT.new_zeros(JT.shape[0], n, P)], -1)
                bottom = torch.cat([-Fp.transpose(-1, -2), JT.new_zeros(JT.shape[0], P, P)], -1)
                JT = torch.cat([top, bottom], -2)
            return JT.reshape(*z.shape, z.shape[-1])

        z0 = lam if not with_mu else torch.cat([lam, lam.new_zeros(lam.shape[0], P)], -1)
        adj_prob = ODEProblem(f_adj, z0.reshape(*self.batch_shape, z0.shape[-1]), (t_hi, t_lo), None, jac=jac_adj)
        rtol, atol = self._tolerances()
        opts = replace(self.opts, callbacks=(), t0=t_hi, t1=t_lo, saveat=None, save_steps=False, dense=self.quadrature,
                       dt=self._dt, tstops=None, progress=False, dtmax=abs(t_hi - t_lo), reltol=rtol, abstol=atol,
                       internalnorm=None)
        alg = _with_fd_time_derivative(self.alg)
        raw = self.integrate(f_adj, adj_prob.u0, None, self.make_stepper(alg, adj_prob, rtol, atol), opts,
                             self.batch_shape)
        self._check(raw, "adjoint solve", t_lo, t_hi)
        z1 = raw.u[-1].reshape(z0.shape)
        if self.quadrature and self.adaptive_quadrature is not None:
            self._adaptive_quadrature(raw.dense, fwd, mu, *self.adaptive_quadrature)
        elif self.quadrature:
            self._quadrature(raw.dense, fwd, mu)
        elif with_mu:
            # μ per member, summed; μ' = -λᵀ ∂f/∂θ integrated backwards is the positive integral
            _add_flat(mu, z1[:, n:].sum(0))
        return z1[:, :n]

    def _interval_backsolve(self, lam, u_hi, t_hi: float, t_lo: float, mu: List[torch.Tensor]):
        """``(u, λ, μ)`` solved together from ``t_hi`` back to ``t_lo``; returns ``(λ, u)`` at ``t_lo``."""
        from .._problem import ODEProblem

        system, n, P = self, self.n, self.P

        def f_bs(z, _p, t):
            tf, zf = t.reshape(-1), z.reshape(-1, z.shape[-1])
            u, lam_ = zf[:, :n], zf[:, n:2 * n]
            du = system.rhs(system._user(u), system.values, system._times(tf)).reshape(u.shape)
            parts = [du, -system.vjp_u(u, tf, lam_, functional=True)]
            if P:
                parts.append(-system.member_vjp_params(u, tf, lam_, functional=True).to(zf.dtype))
            return torch.cat(parts, -1).reshape(z.shape)

        z0 = torch.cat([u_hi.reshape(lam.shape), lam] + ([lam.new_zeros(lam.shape[0], P)] if P else []), -1)
        prob = ODEProblem(f_bs, z0.reshape(*self.batch_shape, z0.shape[-1]), (t_hi, t_lo), None)

        seminorm = self.seminorm and P > 0

        def widen(tol, mu_value=None):
            if not isinstance(tol, torch.Tensor) and not seminorm:
                return tol
            tol = torch.as_tensor(tol, dtype=torch.float64).expand(n)
            if seminorm:
                # μ out of the error norm (infinite abstol), the RMS then over u and λ alone
                tol = tol * math.sqrt(2 * n / (2 * n + P))
            mu = float(tol.min()) if mu_value is None else mu_value
            return torch.cat([tol, tol, torch.full((P,), mu, dtype=torch.float64)])

        rtol = widen(self.opts.reltol)
        atol = widen(self.opts.abstol, float("inf") if seminorm else None)
        # A diverging backward u shrinks its steps without end: bound them by the forward's.
        budget = _BACKSOLVE_STEP_FACTOR * self._forward_steps + _BACKSOLVE_STEP_SLACK
        opts = replace(self.opts, callbacks=(), t0=t_hi, t1=t_lo, saveat=None, save_steps=False, dense=False, dt=self._dt,
                       tstops=None, progress=False, dtmax=abs(t_hi - t_lo), reltol=rtol, abstol=atol,
                       internalnorm=None, maxiters=min(self.opts.maxiters, budget))
        # A stiff method differentiates this right-hand side (second derivatives of f) by forward-mode AD.
        raw = self.integrate(f_bs, prob.u0, None, self.make_stepper(self.alg, prob, rtol, atol), opts,
                             self.batch_shape)
        self._check(raw, "backsolve adjoint", t_lo, t_hi, budget if budget < self.opts.maxiters else None)
        z1 = raw.u[-1].reshape(z0.shape)
        if P:
            _add_flat(mu, z1[:, 2 * n:].sum(0))
        return z1[:, n:2 * n], z1[:, :n]

    def _quadrature(self, lam_dense, fwd, mu: List[torch.Tensor]) -> None:
        """``mu -= Σ_steps Σ_q w_q h λ(t_q)ᵀ ∂f/∂θ(u(t_q), t_q)`` (steps run backwards: ``h < 0``):
        every node of every adjoint step in one vmapped product, or node by node for an ``f`` that
        cannot be vmapped."""
        if not self.values or lam_dense is None or lam_dense.max_steps == 0:
            return
        if self.vmappable:
            ts, cots = [], []
            for c, w in zip(_GL_NODES, _GL_WEIGHTS):
                tq, lam_q, hs, exists = lam_dense.all_steps_at(c)
                scale = torch.where(exists, w * hs, torch.zeros_like(hs)).to(lam_q.dtype)
                ts.append(tq)
                cots.append(torch.where(exists[..., None], lam_q, torch.zeros_like(lam_q)) * scale[..., None])
            tq, cot = torch.cat(ts), torch.cat(cots)                  # (3S, B), (3S, B, n)
            try:
                grads = self.vjp_params_many(fwd.at(tq), tq, cot)
            except RuntimeError as err:
                if "vmap" not in str(err) and "functorch" not in str(err):
                    raise
                self.vmappable = False
            else:
                for acc, g in zip(mu, grads):
                    acc.sub_(g)
                return
        for s in range(lam_dense.max_steps):
            t_lo, hs, exists = lam_dense.step(s)
            for c, w in zip(_GL_NODES, _GL_WEIGHTS):
                tq = t_lo + c * hs
                lam_q = lam_dense.on_step(s, c)
                scale = torch.where(exists, w * hs, torch.zeros_like(hs)).to(lam_q.dtype)
                cot = torch.where(exists[:, None], lam_q, torch.zeros_like(lam_q)) * scale[:, None]
                for acc, g in zip(mu, self.vjp_params(fwd.at(tq), tq, cot)):
                    acc.sub_(g)


    def _adaptive_quadrature(self, lam_dense, fwd, mu: List[torch.Tensor], abstol: float, reltol: float) -> None:
        """As :meth:`_quadrature` with Gauss-Kronrod G7/K15 on each adjoint step, bisected (for the
        whole batch at once) until ``max|K15 - G7| ≤ max(abstol, reltol max|K15|)`` over the parameter
        gradient's entries, at most ``_MAX_BISECTIONS`` levels deep (SciMLSensitivity's
        ``QuadratureAdjoint`` integrates the same integrand with adaptive Gauss-Kronrod)."""
        if not self.values or lam_dense is None:
            return

        def rule(s, a, b, t_lo, hs, exists):
            kron = [torch.zeros_like(v) for v in self.values]
            gauss = [torch.zeros_like(v) for v in self.values]
            for c, wk, wg in zip(KRONROD_NODES, KRONROD_WEIGHTS, GAUSS7_WEIGHTS):
                theta = a + (b - a) * c
                tq = t_lo + theta * hs
                lam_q = lam_dense.on_step(s, theta)
                scale = torch.where(exists, (b - a) * hs, torch.zeros_like(hs)).to(lam_q.dtype)
                cot = torch.where(exists[:, None], lam_q, torch.zeros_like(lam_q)) * scale[:, None]
                for kacc, gacc, g in zip(kron, gauss, self.vjp_params(fwd.at(tq), tq, cot)):
                    kacc.add_(wk * g)
                    if wg:
                        gacc.add_(wg * g)
            return kron, gauss

        for s in range(lam_dense.max_steps):
            t_lo, hs, exists = lam_dense.step(s)
            pending = [(0.0, 1.0, 0)]
            while pending:
                a, b, depth = pending.pop()
                kron, gauss = rule(s, a, b, t_lo, hs, exists)
                err = max(float((k - g).abs().max()) for k, g in zip(kron, gauss))
                size = max(float(k.abs().max()) for k in kron)
                if err <= max(abstol, reltol * size) or depth >= _MAX_BISECTIONS:
                    for acc, k in zip(mu, kron):
                        acc.sub_(k)
                else:
                    mid = 0.5 * (a + b)
                    pending += [(a, mid, depth + 1), (mid, b, depth + 1)]


def _add_flat(mu: List[torch.Tensor], flat: torch.Tensor) -> None:
    """Add a flattened parameter gradient (leaves concatenated in order) onto the per-leaf ``mu``."""
    offset = 0
    for acc in mu:
        k = acc.numel()
        acc.add_(flat[offset:offset + k].reshape(acc.shape).to(acc.dtype))
        offset += k


def _is_stiff(alg) -> bool:
    """A method for stiff problems (an AutoSwitch counts: it turns stiff where the problem is)."""
    from ..algorithms import AutoSwitch

    return isinstance(alg, AutoSwitch) or bool(getattr(alg, "stiff", False))


def _with_fd_time_derivative(alg):
    """The adjoint's Jacobian is given exactly; its ∂/∂t (Rosenbrock methods) must come from
    differences, since forward-mode AD cannot see through the interpolated ``u(t)``."""
    from ..algorithms import AutoSwitch

    if isinstance(alg, AutoSwitch):
        return replace(alg, stiffalg=_with_fd_time_derivative(alg.stiffalg))
    if getattr(alg, "stiff", False) and getattr(alg, "autodiff", False):
        return replace(alg, autodiff=False)
    return alg


class _RightOf:
    """The forward's dense output with the event time ``t_event`` read from the side of ``toward``:
    an interval that starts at an event must see the state after the jump there."""

    def __init__(self, dense, t_event: float, toward: float):
        self.dense, self.t_event, self.toward = dense, t_event, toward

    def at(self, t: torch.Tensor) -> torch.Tensor:
        te = torch.tensor(self.t_event, dtype=t.dtype, device=t.device)
        nudged = torch.nextafter(te, torch.tensor(self.toward, dtype=t.dtype, device=t.device))
        return self.dense.at(torch.where(t == te, nudged, t))


class AdjointAttachEvents(torch.autograd.Function):
    """:class:`AdjointAttach` for a solve with events: the states, event times and event states."""

    @staticmethod
    def forward(ctx, u, t_ev, u_ev, system: AdjointSystem, u0, *leaves):
        ctx.system = system
        return u.clone(), t_ev.clone(), u_ev.clone()

    @staticmethod
    def backward(ctx, grad_u, grad_t, grad_uev):
        system = ctx.system
        E = system.forward.events[0].shape[1]
        g_t = grad_t.reshape(E) if grad_t is not None else torch.zeros(E, dtype=torch.float64)
        g_ue = grad_uev.reshape(E, system.n) if grad_uev is not None else torch.zeros(E, system.n)
        g_t = torch.nan_to_num(g_t)
        g_ue = torch.nan_to_num(g_ue)
        lam, mu = system.backward_with_events(grad_u, g_t, g_ue)
        grad_u0 = lam.reshape(system.prob.u0.shape).to(system.prob.u0.dtype)
        return (None, None, None, None, grad_u0, *[m.to(leaf.dtype) for m, leaf in zip(mu, system.leaves)])


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
