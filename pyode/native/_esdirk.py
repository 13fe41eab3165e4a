"""One generic ESDIRK step with a simplified Newton solver, driven by an :class:`EsdirkTableau`.

In the z-formulation (``z_i = h k_i``) with ``W = I - hγJ`` factorised once per step::

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
"""
from __future__ import annotations

from typing import Callable

import torch

from ._explicit_rk import lincomb
from ._iteration_matrix import factorize
from ._jacobian import JacobianEvaluator
from ._stepper import AbstractStepper, Attempt
from .esdirk_tableau import EsdirkTableau
from .tableau import hermite_dense

__all__ = ["EsdirkStepper"]

_KAPPA = 0.01          # Newton stopping tolerance relative to the error-test scale (SciML's κ)
_NEWTON_MAXITERS = 10


class EsdirkStepper(AbstractStepper):
    """Per-solve numerics of an ESDIRK method and its work counters."""

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

    def _norm(self, d, y):
        with torch.no_grad():
            scale = self.abstol + self.reltol * y.abs()
            return (d / scale).to(torch.float64).square().mean(-1).sqrt()

    @property
    def njac(self) -> int:
        return self.jacobian.evaluations

    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        if isinstance(self.reltol, torch.Tensor):
            self.reltol = self.reltol.to(device=y.device, dtype=y.dtype)
        if isinstance(self.abstol, torch.Tensor):
            self.abstol = self.abstol.to(device=y.device, dtype=y.dtype)
        J, _ = self.jacobian(y, t, k1)
        W = factorize(J, hs, self.gamma, rosenbrock=False)
        h, keep = W.h, W.keep
        moving = keep[:, 0]
        self.nlu += 1
        failed = W.singular
        z = [torch.where(keep, h * k1, torch.zeros_like(k1))]
        for i in range(1, len(self.c)):
            psi = y + lincomb(self.A[i][:i], z)
            ti = t_end if self.c[i] == 1.0 else t + self.c[i] * hs
            zi = z[-1]
            done = ~moving | failed
            dn_old = None
            for _ in range(_NEWTON_MAXITERS):
                residual = zi - h * f(psi + self.gamma * zi, ti)
                d = W.solve(-residual)
                self.nsolve += 1
                zi = torch.where(done[:, None], zi, zi + d)
                with torch.no_grad():
                    dn = self._norm(d, psi)
                    if dn_old is None:
                        converged = dn <= _KAPPA * 1e-1
                        diverged = ~torch.isfinite(dn)
                    else:
                        rate = dn / dn_old.clamp(min=1e-300)
                        converged = (rate < 1) & (rate / (1 - rate).clamp(min=1e-300) * dn <= _KAPPA)
                        converged = converged | (dn <= 1e-12)
                        diverged = (rate >= 1) & (dn > 1e-12) | ~torch.isfinite(dn)
                    failed = failed | (~done & diverged)
                    done = done | converged | failed
                    dn_old = dn
                    if bool(done.all()):
                        break
            failed = failed | ~done
            z.append(torch.where(keep & ~failed[:, None], zi, torch.zeros_like(zi)))
        y1 = y + lincomb(self.b, z)
        with torch.no_grad():
            raw = lincomb(self.b_error, z)
            err = W.solve(raw)
            self.nsolve += 1
        return Attempt(y1=y1, err=err, err_low=None, f1=None, stages=z, failed=failed)

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        h = torch.where(hs != 0, hs, torch.ones_like(hs)).to(y.dtype)[:, None, None]
        return torch.cat([torch.stack(attempt.stages, -2) / h, f1[:, None, :]], -2)
