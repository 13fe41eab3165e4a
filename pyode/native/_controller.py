"""Error norm and initial step size, per batch member.

All quantities are detached: step sizes are decisions of the integrator, not functions of the
parameters, so the gradient is that of the discrete solution on the chosen time grid.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["error_norm", "attempt_error", "controlled_step", "initial_step"]


def error_norm(err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, reltol, abstol,
               internalnorm: Optional[Callable] = None) -> torch.Tensor:
    """Hairer's RMS norm of ``err / (abstol + reltol * max(|y0|, |y1|))`` over the last axis, in float64
    (or ``internalnorm`` of that scaled error, when given)."""
    with torch.no_grad():
        scale = abstol + reltol * torch.maximum(y0.abs(), y1.abs())
        r = (err / scale).to(torch.float64)
        return _rms(r) if internalnorm is None else apply_internalnorm(internalnorm, r)


def attempt_error(att, y0: torch.Tensor, y1: torch.Tensor, reltol, abstol,
                  internalnorm: Optional[Callable] = None) -> torch.Tensor:
    """The error estimate of a trial step (an :class:`Attempt`), ``(B,)`` float64; with a second
    (DOP853-style) estimator, ``e² / sqrt(e² + 0.01 e_low²)``."""
    eest = error_norm(att.err, y0, y1, reltol, abstol, internalnorm)
    if att.err_low is not None:
        e_low = error_norm(att.err_low, y0, y1, reltol, abstol, internalnorm)
        denom = (eest.square() + 0.01 * e_low.square()).sqrt()
        eest = torch.where(denom > 0, eest.square() / denom.clamp(min=1e-300), eest)
    return eest


def shared_error(eest: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """One error for the whole batch (``batch_steps="shared"``): the RMS over the moving members of
    their errors, which for RMS member norms is the RMS over every entry of the batch's state, as
    torchdiffeq's norm of the whole tensor. A non-finite member makes it non-finite for all."""
    e = torch.where(active, eest, torch.zeros_like(eest))
    rms = (e.square().sum() / active.sum().clamp(min=1)).sqrt()
    return torch.where(active, rms, eest)


def shared_step(h: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The smallest proposed step of the moving members, for all of them (the Newton-based
    methods propose their own steps; with one shared error they differ only by their histories)."""
    m = torch.where(active, h, torch.full_like(h, float("inf"))).min()
    return torch.where(active, m, h)


def controlled_step(ctrl, state, ok: torch.Tensor, rejected: torch.Tensor, finite: torch.Tensor,
                    eest: torch.Tensor, h: torch.Tensor, h_used: torch.Tensor, h_try: torch.Tensor,
                    land: torch.Tensor, newton_iters: Optional[torch.Tensor]) -> tuple:
    """The next step size of every member and the controller's memory, ``(h, state)``, after the
    trial of size ``h_used`` (``h_try`` before it was shortened to ``land`` on a stop)."""
    q_acc, q_rej = ctrl.factors(state, eest, h_used, newton_iters)
    h_acc = h_used / q_acc
    # A step shortened to land on a stop says little about the step size to come.
    h_acc = torch.where(land & (h_acc < h_try), torch.maximum(h_acc, h_try), h_acc)
    h_rej = torch.where(finite, h_used / q_rej, h_used * ctrl.qmin)
    h = torch.where(ok, h_acc, torch.where(rejected, h_rej, h))
    return h, ctrl.update(state, ok, eest, h_used)


def _rms(r: torch.Tensor) -> torch.Tensor:
    return r.square().mean(-1).sqrt()


def apply_internalnorm(internalnorm: Callable, r: torch.Tensor) -> torch.Tensor:
    """The user's norm of scaled values ``r`` of shape ``(B, n)``: ``(B,)`` float64, checked."""
    out = internalnorm(r)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out, dtype=torch.float64, device=r.device)
    if out.shape != r.shape[:-1]:
        raise ValueError(f"internalnorm returned shape {tuple(out.shape)} for scaled errors of shape "
                         f"{tuple(r.shape)}; it must reduce the last axis only (shape {tuple(r.shape[:-1])}), "
                         "e.g. lambda e: e.abs().amax(-1)")
    return out.to(torch.float64).abs()


def initial_step(f, t0, y0, f0, direction: float, order: int, reltol, abstol, hmax,
                 internalnorm: Optional[Callable] = None, shared: Optional[torch.Tensor] = None) -> tuple:
    """Hairer's starting step size (Solving ODEs I, Sec. II.4), per member; returns ``(h, nf)``.

    ``h`` is a positive float64 tensor of shape ``(B,)``; one extra evaluation of ``f`` is made.
    ``shared``: the members that share one step size (``batch_steps="shared"``); their norms are
    then taken over the whole batch, as torchdiffeq takes them over the whole tensor, rather than
    the smallest of their own starting steps.
    """
    with torch.no_grad():
        sk = abstol + reltol * y0.abs()

        def rms(x):
            r = (x / sk).to(torch.float64)
            e = _rms(r) if internalnorm is None else apply_internalnorm(internalnorm, r)
            return e if shared is None else shared_error(e, shared)

        d0, d1 = rms(y0), rms(f0)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp(min=1e-300))
        h0 = torch.minimum(h0, hmax)
        y1 = y0 + (direction * h0).to(y0.dtype)[:, None] * f0
        f1 = f(y1, t0 + direction * h0)
        d2 = rms(f1 - f0) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / dmax.clamp(min=1e-300)).pow(1.0 / (order + 1)))
        h = torch.minimum(torch.minimum(100 * h0, h1), hmax)
        # A non-finite probe (f blows up near u0) falls back to the cautious first guess.
        h = torch.where(torch.isfinite(h) & (h > 0), h, h0)
    return h, 1
