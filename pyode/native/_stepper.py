"""The interface between the integration loop and a family of methods (explicit RK, Rosenbrock, ...)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

__all__ = ["Attempt", "AbstractStepper"]


@dataclass
class Attempt:
    """One trial step for every batch member.

    ``y1`` is the proposed state; ``err`` (and ``err_low`` for DOP853-style pairs) the local error
    estimate, ``None`` for fixed-step methods; ``f1 = f(y1, t1)`` when the step computed it
    (FSAL), else ``None``; ``stages`` is whatever :meth:`AbstractStepper.dense_stages` needs.
    ``failed`` marks members whose step could not be formed (e.g. a singular iteration matrix).
    """

    y1: torch.Tensor
    err: Optional[torch.Tensor]
    err_low: Optional[torch.Tensor]
    f1: Optional[torch.Tensor]
    stages: Any
    failed: Optional[torch.Tensor] = None


class AbstractStepper(abc.ABC):
    """Per-solve numerics of one method; the loop owns time, step size, saving and return codes.

    The loop carries ``(t, y, k1)`` with ``k1 = f(y, t)`` between steps. Steps have signed size
    ``hs`` (float64, ``(B,)``; zero for members that must not move) and end at ``t_end``.
    """

    order: int
    embedded_order: Optional[int]
    interpolant_order: int
    #: continuous extension rows: ``y(t + θh) = y + h Σ_i P_i(θ) K_i`` with ``K`` from ``dense_stages``
    dense: Tuple[Tuple[float, ...], ...]
    njac: int = 0
    nlu: int = 0
    nsolve: int = 0

    @abc.abstractmethod
    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        ...

    @abc.abstractmethod
    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        """The ``K`` of the continuous extension, ``(B, rows, n)``."""
