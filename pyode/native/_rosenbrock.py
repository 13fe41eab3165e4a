"""One generic Rosenbrock (W-)method step, driven by a :class:`RosenbrockTableau`.

The stage loop of the transformed form (Hairer & Wanner II, IV.7, (7.25); OrdinaryDiffEq.jl's
generic Rosenbrock loop) with one Jacobian and one batched LU factorisation per step::

    W = I/(hγ) - J,   Y_i = y + Σ_j a_ij U_j,   W U_i = f(t + c_i h, Y_i) + Σ_j (C_ij / h) U_j + h d_i ∂f/∂t
    y1 = y + Σ b_i U_i,   err = Σ b_error_i U_i

The Jacobian is reused while neither ``t`` nor ``y`` changed (after a rejection); the factorisation
is redone whenever ``h`` changes. A singular ``W`` marks the member's step as failed (rejected, step
shrunk), never an exception.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._explicit_rk import lincomb
from ._iteration_matrix import factorize
from ._jacobian import JacobianEvaluator
from ._refinement import refined_solve
from ._small_lu import SMALL_LU_MAX, small_lu_factor
from ._stepper import AbstractStepper, Attempt
from .rosenbrock_tableau import RosenbrockTableau

__all__ = ["RosenbrockStepper"]


def _rosenbrock_dense_rows(b, dense):
    """``y(θ) = (1-θ) y + θ (y1 + (1-θ)(H_1 + θ H_2 + ...))`` rewritten as ``y + Σ_i P_i(θ) U_i``.

    Rows are the coefficients of ``θ¹..θ^{m+1}`` of ``P_i``; the loop's interpolant takes
    ``K_i = U_i / h``, which turns ``Σ P_i U_i`` into its ``h Σ P_i K_i``.
    """
    m = len(dense)
    rows = []
    for i, bi in enumerate(b):
        coef = [0.0] * (m + 1)
        coef[0] = bi
        for k in range(m):
            coef[k] += dense[k][i]        # θ^(k+1) ...
            coef[k + 1] -= dense[k][i]    # ... - θ^(k+2)
        rows.append(tuple(coef))
    return tuple(rows)


class RosenbrockStepper(AbstractStepper):
    """Per-solve numerics of a Rosenbrock method and its work counters."""

    def __init__(self, tableau: RosenbrockTableau, jacobian: JacobianEvaluator, refine: bool = False, mass=None):
        if tableau.dense is None:
            raise ValueError(f"{tableau.name} has no dense output rows; the generic Rosenbrock loop needs them")
        self.tableau = tableau
        self.gamma, self.a, self.C, self.c, self.d, self.b, self.b_error, dense = tableau.floats()
        self.order = tableau.order
        self.embedded_order = tableau.embedded_order
        self.interpolant_order = tableau.dense_order
        self.dense = _rosenbrock_dense_rows(self.b, dense)
        self.jacobian = jacobian
        # One correction of every stage solve from a residual in twice the precision (see
        # _refinement): decided once per solve from the tolerances, so the step has no branch.
        self.refine = refine and mass is None
        # M du/dt = f (Hairer & Wanner VI.4): W = M/(hγ) - J, and the coupling terms carry M.
        self.mass = mass
        self.nlu = self.nsolve = 0

    @property
    def njac(self) -> int:
        return self.jacobian.evaluations

    def snapshot(self):
        # No history of its own: a Jacobian is reused only after a rejection, from the cache.
        return self.jacobian.snapshot()

    def restore(self, state) -> None:
        self.jacobian.restore(state)

    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        J, dfdt = self.jacobian(y, t, k1)
        W = factorize(J, hs, self.gamma, rosenbrock=True, mass=self.mass)
        self.nlu += 1
        self.nsolve += len(self.c) * (2 if self.refine else 1)
        return self._stages(f, t, hs, t_end, y, k1, dfdt, W.h, W.keep, self._solver(W.solve, J, W.h, W.keep),
                            W.singular)

    def _solver(self, solve, J, h, keep):
        if not self.refine:
            return solve
        # Members that do not move solve with the identity: their residual must use it too.
        return refined_solve(solve, torch.where(keep[..., None], J, torch.zeros_like(J)), h * self.gamma)

    def fused_step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
                   k1: torch.Tensor) -> Attempt:
        """:meth:`step` as pure tensor code for the fused path: the Jacobian evaluated afresh (no
        cache, no counters) and, for small systems compiled, the LU written out in elementwise
        operations (which the compiled chunk fuses; eager, LAPACK's batched LU is cheaper: a
        Robertson gradient 183 -> 149 ms)."""
        J, dfdt = self.jacobian.evaluate(y, t, k1)
        n = J.shape[-1]
        if n > SMALL_LU_MAX or self.jacobian.reverse_mode:
            W = factorize(J, hs, self.gamma, rosenbrock=True)
            return self._stages(f, t, hs, t_end, y, k1, dfdt, W.h, W.keep, self._solver(W.solve, J, W.h, W.keep),
                                W.singular)
        moving = hs != 0
        keep = moving[:, None]
        h = torch.where(moving, hs, torch.ones_like(hs)).to(J.dtype)[:, None]
        eye = torch.eye(n, dtype=J.dtype, device=J.device)
        Wm = torch.where(keep[..., None], eye / (h * self.gamma)[..., None] - J, eye)
        lu = small_lu_factor(Wm)
        return self._stages(f, t, hs, t_end, y, k1, dfdt, h, keep, self._solver(lu.solve, J, h, keep),
                            moving & lu.singular)

    def _stages(self, f, t, hs, t_end, y, k1, dfdt, h, keep, solve, singular) -> Attempt:
        U = []
        for i in range(len(self.c)):
            if i == 0:
                Fi = k1
            else:
                Yi = y + lincomb(self.a[i][:i], U)
                ti = t_end if self.c[i] == 1.0 else t + self.c[i] * hs
                Fi = f(Yi, ti)
            rhs = Fi + (h * self.d[i]) * dfdt
            coupling = lincomb(self.C[i][:i], U) if i else None
            if coupling is not None:
                rhs = rhs + (coupling if self.mass is None else self.mass.apply(coupling)) / h
            Ui = solve(rhs)
            U.append(torch.where(keep, Ui, torch.zeros_like(Ui)))
        y1 = y + lincomb(self.b, U)
        err = None
        if self.b_error is not None:
            with torch.no_grad():
                err = lincomb(self.b_error, U)
        # FSAL (Rosenbrock23): the last stage was evaluated at (t_end, y1), the next step's F_1.
        f1 = Fi if self.tableau.fsal else None
        return Attempt(y1=y1, err=err, err_low=None, f1=f1, stages=U, failed=singular)

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        h = torch.where(hs != 0, hs, torch.ones_like(hs)).to(y.dtype)[:, None, None]
        return torch.stack(attempt.stages, -2) / h
