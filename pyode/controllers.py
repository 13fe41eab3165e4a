"""Step-size controllers: strategy objects passed as ``solve(..., controller=...)``.

Gains left as ``None`` are filled in from the algorithm's order when the solve starts, so one
controller object serves every algorithm.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Optional

import torch

__all__ = ["AbstractController", "PIController", "IController"]


class AbstractController(abc.ABC):
    """Interface: ``resolve`` returns a :class:`PIController` with every gain set."""

    @abc.abstractmethod
    def resolve(self, order: int, adaptive_order: int) -> "PIController":
        ...


@dataclass(frozen=True)
class PIController(AbstractController):
    """Proportional-integral control, the default (as in DifferentialEquations.jl).

    After an accepted step ``q = clamp(E^β1 / qold^β2 / γ, 1/qmax, 1/qmin)`` and ``dt_new = dt / q``;
    after a rejection ``dt /= min(1/qmin, E^β1 / γ)``. Defaults: ``β1 = 7/(10 p)``,
    ``β2 = 2/(5 p)`` for a method of order ``p``, ``γ = 0.9``, ``qmin = 1/5``, ``qmax = 10``,
    ``qoldinit = 1e-4``.

    The integral memory ``qold`` makes the step grow slowly when the error estimate is far below
    tolerance but roughly constant (float32 round-off floors, nearly linear problems);
    :class:`IController` grows faster there.
    """

    beta1: Optional[float] = None
    beta2: Optional[float] = None
    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0
    qoldinit: float = 1e-4

    def __post_init__(self):
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ValueError(f"{name} must be a number in [0, 1) or None; got {v!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1]; got {self.gamma!r}")
        if not 0 < self.qmin < 1 < self.qmax:
            raise ValueError(f"need 0 < qmin < 1 < qmax; got qmin={self.qmin!r}, qmax={self.qmax!r}")

    def resolve(self, order: int, adaptive_order: int) -> "PIController":
        beta1 = 7.0 / (10.0 * order) if self.beta1 is None else float(self.beta1)
        beta2 = 2.0 / (5.0 * order) if self.beta2 is None else float(self.beta2)
        return replace(self, beta1=beta1, beta2=beta2)

    # The methods below expect a resolved controller and float64 tensors of shape (B,).
    def accept_factor(self, eest: torch.Tensor, qold: torch.Tensor) -> torch.Tensor:
        """Divisor ``q`` of the step size after an accepted step."""
        q = eest.pow(self.beta1) / qold.pow(self.beta2) / self.gamma
        q = q.clamp(1.0 / self.qmax, 1.0 / self.qmin)
        return torch.where(eest == 0, torch.full_like(q, 1.0 / self.qmax), q)

    def reject_factor(self, eest: torch.Tensor) -> torch.Tensor:
        """Divisor of the step size after a rejected step (> 1)."""
        return (eest.pow(self.beta1) / self.gamma).clamp(min=1.0, max=1.0 / self.qmin)

    def next_qold(self, eest: torch.Tensor) -> torch.Tensor:
        return eest.clamp(min=self.qoldinit)


@dataclass(frozen=True)
class IController(AbstractController):
    """Integral (elementary) control: ``q = clamp(E^(1/(k+1)) / γ, 1/qmax, 1/qmin)`` with ``k`` the
    embedded (error estimator's) order, as DifferentialEquations.jl's ``IController`` and the
    controller of torchdiffeq/torchode by default."""

    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0

    def resolve(self, order: int, adaptive_order: int) -> PIController:
        return PIController(beta1=1.0 / (adaptive_order + 1), beta2=0.0, gamma=self.gamma, qmin=self.qmin,
                            qmax=self.qmax)
