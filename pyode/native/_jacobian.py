"""Batched Jacobians ``∂f/∂u`` (and ``∂f/∂t``) of the right-hand side, per batch member.

Members are independent, so row ``i`` of every member's Jacobian (and component ``i`` of ``∂f/∂t``)
is one vector-Jacobian product of the whole batch with the cotangent ``e_i`` in each member: ``n``
reverse-mode products through one recorded evaluation of ``f``, batched into a single backward
pass. ``f`` keeps seeing the user's batch shape, so per-member parameters broadcast as in the solve
itself. The result stays differentiable with respect to ``y``, ``t`` and the parameters captured by
``f`` (the backward pass then records a graph of its own).

Reverse rather than forward mode: in forward mode every operation between a dual tensor and an
ordinary one (a parameter, a rate constant) meets an implicit zero tangent, and torch 2.13 computes
with such zero tensors through Python reference implementations, ~0.1 ms per operation. A
Jacobian of a small network (Kim et al.'s Robertson model) took 4.5 ms that way and takes 1.1 ms
in reverse mode; the mass-action Robertson right-hand side 1.2 ms against 0.43 ms. The fused path
(:meth:`JacobianEvaluator.evaluate`) keeps ``torch.func``'s forward mode: its compiled code does not
pay for the zero tangents.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp, vjp, vmap

from ._stepper import Differentiable

__all__ = ["JacobianEvaluator"]


class JacobianEvaluator:
    """Computes ``(J, dfdt)`` with ``J`` of shape ``(B, n, n)`` and ``dfdt`` of shape ``(B, n)``.

    Arguments:
        rhs: ``f(y, t)`` on flat ``(B, n)`` states and ``(B,)`` float64 times.
        user_jac: optional ``jac(y, t) -> (B, n, n)`` on the same flat shapes.
        user_tgrad: optional ``tgrad(y, t) -> (B, n)``, ``∂f/∂t`` beside ``user_jac`` (without a
            ``user_jac`` the AD pass gives ``∂f/∂t`` with the Jacobian anyway).
        autodiff: forward-mode AD (default); ``False`` uses finite differences (``n + 1`` extra
            evaluations of ``f``, counted in ``nf``), for functions forward-mode AD cannot trace.
    """

    def __init__(self, rhs: Callable, user_jac: Optional[Callable], autodiff: bool, time_derivative: bool = True,
                 user_tgrad: Optional[Callable] = None):
        self.rhs, self.user_jac, self.autodiff = rhs, user_jac, autodiff
        self.user_tgrad = user_tgrad
        # Only Rosenbrock methods use ∂f/∂t; the others get None and save its evaluation.
        self.time_derivative = time_derivative
        self.evaluations = 0
        self._cache = None
        # evaluate(): forward mode, which compiled code runs best; the eager fused loop switches to
        # the reverse mode of the reference loop (3.4x cheaper in eager PyTorch for a 6-layer MLP)
        self.reverse_mode = False
        # evaluate(): ∂f/∂t beside a user's jac by core dual numbers, which the eager loop's forward
        # pass allows (no torch.func transform around it) and sets while it runs
        self.dual_time_derivative = False

    def __call__(self, y: torch.Tensor, t: torch.Tensor, fy: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(J, dfdt)`` at ``(t, y)``; reused while the loop hands over the same ``t`` and ``y``
        tensors (it replaces them only when some member moved), i.e. after rejected steps."""
        cached = self._cache
        if cached is not None and cached[0] is y and cached[1] is t:
            return cached[2]
        result = self._evaluate(y, t, fy)
        self.evaluations += 1
        self._cache = (y, t, result)
        return result

    def evaluate(self, y: torch.Tensor, t: torch.Tensor, fy: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(J, dfdt)`` at ``(t, y)``, computed afresh and not counted (the fused path counts per
        iteration itself). The products go through ``torch.func`` throughout, which also runs under
        ``vmap`` and ``torch.compile``."""
        if not self.autodiff:
            return self._evaluate(y, t, fy)
        if self.user_jac is None:
            return self._reverse(y, t) if self.reverse_mode else self._forward(y, t)
        J = self.user_jac(y, t)
        if not self.time_derivative:
            return J, None
        if self.user_tgrad is not None:
            return J, self.user_tgrad(y, t)
        if self.dual_time_derivative:
            # the eager loop's forward pass, outside vmap: core dual numbers, 36 against 135 µs per
            # step on Robertson
            return J, self._dfdt_forward(y, t)
        return J, jvp(lambda s: self.rhs.uncounted(y, s), (t,), (torch.ones_like(t),))[1]

    def snapshot(self):
        """The cache, for checkpointing: its key is the loop's ``(y, t)`` objects, which a restored
        loop shares with it, so a resumed solve reuses ``J`` exactly where the original did."""
        if self._cache is None:
            return None
        y, t, result = self._cache
        return (y, t, Differentiable(result))

    def restore(self, state) -> None:
        self._cache = state

    @property
    def latest(self) -> Optional[torch.Tensor]:
        """The most recently evaluated ``J`` (``(B, n, n)``), or ``None`` before the first."""
        return None if self._cache is None else self._cache[2][0]

    def _evaluate(self, y, t, fy):
        if self.user_jac is not None:
            J = self.user_jac(y, t)
            if not self.time_derivative:
                return J, None
            if self.user_tgrad is not None:
                return J, self.user_tgrad(y, t)
            return J, (self._dfdt_forward(y, t) if self.autodiff else self._dfdt_fd(y, t, fy))
        if not self.autodiff:
            return self._fd(y, t, fy)
        return self._reverse(y, t)

    def _reverse(self, y, t):
        B, n = y.shape
        # torch.func.vjp, not torch.autograd.grad: it differentiates fresh copies of y and t at a
        # level of its own, so its backward pass walks f's graph only. torch.autograd.grad with
        # respect to a y that carries a solve's history walks all of that history on every call
        # (measured: 39 ms per Jacobian late in a DirectAdjoint solve, against 1 ms). The outer
        # graph still sees J as a function of y, t and f's parameters.
        try:
            out, pullback = vjp(self.rhs.uncounted, y, t)
            eye = torch.eye(n, dtype=out.dtype, device=out.device)
            rows_y, rows_t = vmap(pullback)(eye[:, None, :].expand(n, B, n))
        except RuntimeError as exc:
            raise _ad_failure("reverse", exc) from exc
        return rows_y.permute(1, 0, 2), (rows_t.T.to(y.dtype) if self.time_derivative else None)

    def _forward(self, y, t):
        B, n = y.shape
        try:
            eye = torch.eye(n, dtype=y.dtype, device=y.device)
            tangents_y = torch.cat([eye[:, None, :].expand(n, B, n), y.new_zeros(1, B, n)])
            tangents_t = torch.cat([t.new_zeros(n, B), t.new_ones(1, B)])
            cols = vmap(lambda vy, vt: jvp(self.rhs.uncounted, (y, t), (vy, vt))[1])(tangents_y, tangents_t)
        except RuntimeError as exc:  # an op without a forward-mode derivative, in-place writes, ...
            raise _ad_failure("forward", exc) from exc
        return cols[:n].permute(1, 2, 0), cols[n]

    def _dfdt_forward(self, y, t):
        # Core dual numbers: a fraction of torch.func.jvp's fixed overhead for this single direction.
        try:
            with fwAD.dual_level():
                d = fwAD.unpack_dual(self.rhs.uncounted(y, fwAD.make_dual(t, torch.ones_like(t)))).tangent
            return torch.zeros_like(y) if d is None else d
        except RuntimeError as exc:
            raise RuntimeError(f"forward-mode automatic differentiation of f in t failed ({exc}); use the "
                               "algorithm's autodiff=False option (e.g. Rodas5P(autodiff=False))") from exc

    def _fd(self, y, t, fy):
        # Forward differences with the usual sqrt(eps) scaling per component.
        B, n = y.shape
        eps = torch.finfo(y.dtype).eps ** 0.5
        if fy is None:          # methods that never need f(y) at the step start (BDF)
            fy = self.rhs(y, t)
        cols = []
        for j in range(n):
            delta = eps * y[:, j].abs().clamp(min=1.0)
            yj = y.clone()
            yj[:, j] = y[:, j] + delta
            cols.append((self.rhs(yj, t) - fy) / (yj[:, j] - y[:, j])[:, None])
        return torch.stack(cols, -1), (self._dfdt_fd(y, t, fy) if self.time_derivative else None)

    def _dfdt_fd(self, y, t, fy):
        if fy is None:
            fy = self.rhs(y, t)
        eps = torch.finfo(y.dtype).eps ** 0.5
        dt = eps * t.abs().clamp(min=1.0)
        t2 = t + dt
        return (self.rhs(y, t2) - fy) / (t2 - t).to(y.dtype)[:, None]


def _ad_failure(mode: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"{mode}-mode automatic differentiation of f failed while forming the Jacobian ({exc}). Pass jac=... "
        "to ODEProblem, or use finite differences with the algorithm's autodiff=False option "
        "(e.g. Rodas5P(autodiff=False))")
