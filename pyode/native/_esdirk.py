"""One generic ESDIRK step with a simplified Newton solver, driven by an :class:`EsdirkTableau`.

In the z-formulation (``z_i = h k_i``) with the iteration matrix ``W = I - hγJ``::

    z_1 = h f(t, y)
    ψ_i = y + Σ_{j<i} a_ij z_j,   solve  z_i = h f(t + c_i h, ψ_i + γ z_i)      (i = 2..s)
    y1 = y + Σ b_i z_i,   err = W⁻¹ Σ (b - b̂)_i z_i

Each stage is solved by simplified Newton iterations ``W Δ = -(z_i - h f(ψ_i + γ z_i))`` starting
from the previous stage's ``z``, stopped per member with Hairer's rate-based test
``θ/(1-θ) ‖Δ‖ ≤ κ`` in the solve's error norm; a member whose iterations diverge or do not converge
within ``newton_maxiters`` fails the step (rejected, step shrunk; ``ConvergenceFailure`` if it
persists). Converged members stop iterating, so a member's result does not depend on the batch.
The error estimate is filtered through ``W⁻¹`` (Hairer & Wanner IV.8), as OrdinaryDiffEq.jl does by
default, which removes the spurious growth of stiff components.

``J`` and the LU of ``W`` are kept across steps, per member, in the spirit of OrdinaryDiffEq.jl's
nonlinear solver (simplified Newton only needs an approximate ``W``; the solution does not depend
on it, only the convergence rate does):

* a member asks for a new ``J`` at its next step when some stage solve of its accepted step needed
  more than ``_SLOW_ITERS`` iterations (or at a user ``tstop``, where ``f`` may jump);
* a member whose Newton iterations fail with a ``J`` from an earlier step gets a fresh ``J`` and
  redoes the whole step before the step is rejected (as FBDF does, and OrdinaryDiffEq's
  ``TryAgain``); a failure with a current ``J`` rejects the step (the loop shrinks it);
* with fixed steps (``adaptive=False``) ``J`` is re-evaluated every step;
* ``W`` is refactorised when ``J`` changed or some moving member's ``h`` differs from the one ``W``
  was factorised with (the predictive controller keeps ``h`` unchanged for small changes).

``J`` is evaluated for the whole batch in one call whenever some member asks for it; only the
members that asked adopt it, the others keep theirs, so a member's steps never depend on its batch
(``njac`` counts these batched evaluations, ``nlu`` the batched factorisations).
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional

import torch

from ._explicit_rk import lincomb
from ._iteration_matrix import IterationMatrix, factorize
from ._jacobian import JacobianEvaluator
from ._stepper import AbstractStepper, Attempt, Differentiable
from .esdirk_tableau import EsdirkTableau
from .tableau import hermite_dense

__all__ = ["EsdirkStepper"]

_KAPPA = 0.01          # Newton stopping tolerance relative to the error-test scale (SciML's κ)
_NEWTON_MAXITERS = 10  # OrdinaryDiffEq's NLNewton max_iter
# A stage solve that needs more Newton iterations than this (with a fresh J two or three do)
# makes the member re-evaluate J at its next step. Measured on Robertson and HIRES: a contraction
# rate cutoff (0.02-0.3) either refreshed as often or cost 15-45% more f evaluations.
_SLOW_ITERS = 3
_DIVERGED = 2.0              # OrdinaryDiffEq's NLNewton: θ > 2 is divergence
_ROUNDOFF_CONVERGED = 1e-5   # an update this far below the error scale: converged


class _Stages(NamedTuple):
    z: List[torch.Tensor]      # stage increments z_i = h k_i, (B, n) each; zero for failed members
    failed: torch.Tensor       # (B,) bool: Newton diverged, did not converge, or W singular
    iters: torch.Tensor        # (B,) long: Newton iterations of the last stage solve
    most: torch.Tensor         # (B,) long: most Newton iterations of any stage solve


class EsdirkStepper(AbstractStepper):
    """Per-solve numerics of an ESDIRK method: Jacobian and LU kept across steps, work counters."""

    newton_maxiters = _NEWTON_MAXITERS

    def __init__(self, tableau: EsdirkTableau, jacobian: JacobianEvaluator, reltol, abstol):
        self.tableau = tableau
        self.c, self.A, self.b, self.b_error, self.gamma = tableau.floats()
        self.order = tableau.order
        self.embedded_order = tableau.embedded_order
        self.interpolant_order = 3                    # cubic Hermite through (y, f0), (y1, f1)
        self.dense = tuple(tuple(float(x) for x in row) for row in hermite_dense(self.b))
        self.jacobian = jacobian
        self.reltol, self.abstol = reltol, abstol
        self.nlu = self.nsolve = 0
        self.J: Optional[torch.Tensor] = None         # (B, n, n), per member
        self.W: Optional[IterationMatrix] = None

    def _norm(self, d, y):
        with torch.no_grad():
            scale = self.abstol + self.reltol * y.abs()
            return (d / scale).to(torch.float64).square().mean(-1).sqrt()

    @property
    def njac(self) -> int:
        return self.jacobian.evaluations

    def snapshot(self):
        if self.J is None:
            return None         # before the first step
        return {"J": Differentiable(self.J), "W": Differentiable(self.W), "jac_current": self.jac_current,
                "need_jac": self.need_jac, "W_hs": self.W_hs, "slow": self._slow,
                "jacobian": self.jacobian.snapshot()}

    def restore(self, state) -> None:
        if state is None:
            self.J = self.W = None
            self.jacobian.restore(None)
            return
        self.J, self.W, self.jac_current, self.need_jac = state["J"], state["W"], state["jac_current"], state["need_jac"]
        self.W_hs, self._slow = state["W_hs"], state["slow"]
        self.jacobian.restore(state["jacobian"])

    def _init_state(self, y: torch.Tensor):
        B, dev = y.shape[0], y.device
        if isinstance(self.reltol, torch.Tensor):
            self.reltol = self.reltol.to(device=dev, dtype=y.dtype)
        if isinstance(self.abstol, torch.Tensor):
            self.abstol = self.abstol.to(device=dev, dtype=y.dtype)
        # jac_current: J was evaluated at the member's present (t, y); need_jac: asked for a new one.
        self.jac_current = torch.zeros(B, dtype=torch.bool, device=dev)
        self.need_jac = torch.ones(B, dtype=torch.bool, device=dev)
        self.W_hs = torch.zeros(B, dtype=torch.float64, device=dev)   # step W was factorised for
        self._slow = torch.zeros(B, dtype=torch.bool, device=dev)

    # ------------------------------------------------------------------------ J and W
    def _refresh_jacobian(self, y, t, k1, members: torch.Tensor) -> None:
        J, _ = self.jacobian(y, t, k1)
        self.J = J if self.J is None else torch.where(members[:, None, None], J, self.J)
        self.jac_current = self.jac_current | members
        self.need_jac = self.need_jac & ~members

    def _factorise(self, hs: torch.Tensor) -> None:
        self.W = factorize(self.J, hs, self.gamma, rosenbrock=False)
        self.W_hs = hs
        self.nlu += 1

    # ----------------------------------------------------------------------------- a step
    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        if self.J is None:
            self._init_state(y)
        moving = hs != 0
        want = moving & (self.need_jac if self.reuse_jacobian else True) & ~self.jac_current
        # One host synchronisation for both decisions.
        new_jac, new_lu = torch.stack([want.any(), (moving & (hs != self.W_hs)).any()]).tolist()
        if new_jac:
            self._refresh_jacobian(y, t, k1, want)
        if new_jac or new_lu or self.W is None:
            self._factorise(hs)
        out = self._stages(f, t, hs, t_end, y, k1, moving)
        # Failed with a Jacobian from an earlier step: a fresh one, and the whole step once more.
        retry = out.failed & ~self.jac_current
        if bool(retry.any()):
            self._refresh_jacobian(y, t, k1, retry)
            self._factorise(hs)
            again = self._stages(f, t, hs, t_end, y, k1, retry)
            z = [torch.where(retry[:, None], a, b) for a, b in zip(again.z, out.z)]
            out = _Stages(z, torch.where(retry, again.failed, out.failed), torch.where(retry, again.iters, out.iters),
                          torch.where(retry, again.most, out.most))
        z, failed = out.z, out.failed
        # Read by commit: only accepted members act on it (a recomputation of this step in the
        # same loop iteration then starts from the same J and W).
        self._slow = out.most > _SLOW_ITERS
        y1 = y + lincomb(self.b, z)
        with torch.no_grad():
            raw = lincomb(self.b_error, z)
            err = self.W.solve(raw)
            self.nsolve += 1
        return Attempt(y1=y1, err=err, err_low=None, f1=None, stages=z, failed=failed, newton_iters=out.iters)

    def _stages(self, f, t, hs, t_end, y, k1, members: torch.Tensor) -> _Stages:
        """The stages of the members in ``members`` (moving ones) with the current ``W``."""
        W = self.W
        h = torch.where(members, hs, torch.ones_like(hs)).to(y.dtype)[:, None]
        keep = members[:, None]
        failed = members & W.singular
        iters = torch.zeros(hs.shape, dtype=torch.long, device=hs.device)
        most = torch.zeros_like(iters)
        z = [torch.where(keep, h * k1, torch.zeros_like(k1))]
        for i in range(1, len(self.c)):
            psi = y + lincomb(self.A[i][:i], z)
            ti = t_end if self.c[i] == 1.0 else t + self.c[i] * hs
            active = members & ~failed
            zi, converged, it = self._newton(f, psi, ti, z[-1], h, W, active)
            failed = failed | (active & ~converged)
            iters = torch.where(active, it, iters)
            most = torch.maximum(most, iters)
            z.append(torch.where(keep & ~failed[:, None], zi, torch.zeros_like(zi)))
        return _Stages(z, failed, iters, most)

    def _newton(self, f, psi, ti, z0, h, W: IterationMatrix, active: torch.Tensor):
        """Simplified Newton for one stage; ``(z, converged, iterations)`` per member."""
        zi = z0
        done = ~active
        converged = torch.zeros_like(active)
        iters = torch.zeros(active.shape, dtype=torch.long, device=active.device)
        dn_old = None
        for _ in range(_NEWTON_MAXITERS):
            residual = zi - h * f(psi + self.gamma * zi, ti)
            d = W.solve(-residual)
            self.nsolve += 1
            zi = torch.where(done[:, None], zi, zi + d)
            with torch.no_grad():
                dn = self._norm(d, psi)
                iters = iters + (~done).long()
                if dn_old is None:
                    conv = dn <= _KAPPA * 1e-1
                    diverged = ~torch.isfinite(dn)
                else:
                    rate = dn / dn_old.clamp(min=1e-300)
                    conv = (rate < 1) & (rate / (1 - rate).clamp(min=1e-300) * dn <= _KAPPA)
                    # An update far below the tolerance has converged whatever its rate: at large
                    # steps the iterates stagnate at round-off (OrdinaryDiffEq: |θ - 1| ≈ 0 and
                    # ndz ≤ 1), where the rate is noise around 1.
                    conv = conv | (dn <= _ROUNDOFF_CONVERGED)
                    # Divergence only for a clearly growing update, as OrdinaryDiffEq (θ > 2);
                    # 1 ≤ θ ≤ 2 keeps iterating until the iteration limit.
                    diverged = (rate > _DIVERGED) & ~conv | ~torch.isfinite(dn)
                converged = converged | (~done & conv & ~diverged)
                done = done | conv | diverged
                dn_old = dn
                if bool(done.all()):
                    break
        return zi, converged & active, iters

    def commit(self, ok: torch.Tensor, attempt: Attempt, hs: torch.Tensor) -> None:
        # Accepted members moved: their J is from the previous point now.
        self.jac_current = self.jac_current & ~ok
        self.need_jac = torch.where(ok, self._slow, self.need_jac)

    def restart(self, members: torch.Tensor) -> None:
        # f jumped, or the member comes back from another method (AutoSwitch) after moving without
        # this stepper: whatever J it holds is not at its present point.
        if self.J is not None:
            self.need_jac = self.need_jac | members
            self.jac_current = self.jac_current & ~members

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        h = torch.where(hs != 0, hs, torch.ones_like(hs)).to(y.dtype)[:, None, None]
        return torch.cat([torch.stack(attempt.stages, -2) / h, f1[:, None, :]], -2)
