"""Error norm, PI step-size controller and initial step size, per batch member.

All quantities are detached: step sizes are decisions of the integrator, not functions of the
parameters, so the gradient is that of the discrete solution on the chosen time grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PIController", "error_norm", "initial_step"]


def error_norm(err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, reltol, abstol) -> torch.Tensor:
    """Hairer's RMS norm of ``err / (abstol + reltol * max(|y0|, |y1|))`` over the last axis, in float64."""
    with torch.no_grad():
        scale = abstol + reltol * torch.maximum(y0.abs(), y1.abs())
        r = (err / scale).to(torch.float64)
        return r.square().mean(-1).sqrt()


@dataclass(frozen=True)
class PIController:
    """Proportional-integral step-size control with DifferentialEquations.jl's defaults.

    ``q = clamp(E^β1 / qold^β2 / γ, 1/qmax, 1/qmin)`` and ``dt_new = dt / q`` with
    ``β1 = 7/(10 p)``, ``β2 = 2/(5 p)`` for a method of order ``p``, ``γ = 0.9``, ``qmin = 1/5``,
    ``qmax = 10``; after a rejection ``dt /= min(1/qmin, E^β1 / γ)``.
    """

    beta1: float
    beta2: float
    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0
    qoldinit: float = 1e-4

    @classmethod
    def for_order(cls, order: int) -> "PIController":
        return cls(beta1=7.0 / (10.0 * order), beta2=2.0 / (5.0 * order))

    def accept_factor(self, eest: torch.Tensor, qold: torch.Tensor) -> torch.Tensor:
        """Divisor ``q`` of the step size after an accepted step."""
        q = eest.pow(self.beta1) / qold.pow(self.beta2) / self.gamma
        q = q.clamp(1.0 / self.qmax, 1.0 / self.qmin)
        return torch.where(eest == 0, torch.full_like(q, 1.0 / self.qmax), q)

    def reject_factor(self, eest: torch.Tensor) -> torch.Tensor:
        """Divisor of the step size after a rejected step (always > 1)."""
        return (eest.pow(self.beta1) / self.gamma).clamp(max=1.0 / self.qmin).clamp(min=1.0 + 1e-3)

    def next_qold(self, eest: torch.Tensor) -> torch.Tensor:
        return eest.clamp(min=self.qoldinit)


def initial_step(f, t0, y0, f0, direction: float, order: int, reltol, abstol, hmax) -> tuple:
    """Hairer's starting step size (Solving ODEs I, Sec. II.4), per member; returns ``(h, nf)``.

    ``h`` is a positive float64 tensor of shape ``(B,)``; one extra evaluation of ``f`` is made.
    """
    with torch.no_grad():
        sk = abstol + reltol * y0.abs()

        def rms(x):
            return (x / sk).to(torch.float64).square().mean(-1).sqrt()

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
