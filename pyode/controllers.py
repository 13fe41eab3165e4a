"""Step-size controllers: strategy objects passed as ``solve(..., controller=...)``.

Gains left as ``None`` are filled in from the algorithm's order when the solve starts, so one
controller object serves every algorithm.

The integration loop drives a resolved controller through one per-member interface (tensors of
shape ``(B,)``, float64): ``init_state`` gives the controller memory, ``factors`` turns an error
estimate into the divisors of the step size after acceptance and after rejection, and ``update``
returns the memory after the accepted members took their step. Every member has its own memory,
so a member's steps never depend on the rest of its batch.
"""
from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch

__all__ = ["AbstractController", "PIController", "IController", "PredictiveController"]

State = Tuple[torch.Tensor, ...]


class AbstractController(abc.ABC):
    """Interface of a step-size controller.

    ``resolve`` returns a controller with every setting filled in for one solve; the loop then calls
    the resolved controller's :meth:`init_state`, :meth:`factors` and :meth:`update`.
    """

    qmin: float

    @abc.abstractmethod
    def resolve(self, order: int, adaptive_order: int, newton_maxiters: Optional[int] = None) -> "AbstractController":
        """The controller for a method of ``order`` whose error estimator has ``adaptive_order``;
        ``newton_maxiters`` is the most Newton iterations a stage solve may take (None: explicit)."""

    def init_state(self, batch: int, device) -> State:
        """Per-member controller memory before the first step."""
        return ()

    def factors(self, state: State, eest: torch.Tensor, h: torch.Tensor,
                newton_iters: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Divisors ``(q_accept, q_reject)``: the next step is ``h / q_accept`` if this one (of size
        ``h``, error ``eest``) is accepted, ``h / q_reject`` if it is rejected. ``newton_iters`` is
        the step's Newton iteration count per member, None for methods without Newton iterations."""
        raise NotImplementedError

    def update(self, state: State, ok: torch.Tensor, eest: torch.Tensor, h: torch.Tensor) -> State:
        """Memory after the members in ``ok`` accepted their step; the others keep theirs."""
        return state


def _check_q(gamma, qmin, qmax):
    for name, v in (("gamma", gamma), ("qmin", qmin), ("qmax", qmax)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must be a number; got {v!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1]; got {gamma!r}")
    if not 0 < qmin < 1 < qmax:
        raise ValueError(f"need 0 < qmin < 1 < qmax; got qmin={qmin!r}, qmax={qmax!r}")


@dataclass(frozen=True)
class PIController(AbstractController):
    """Proportional-integral control, the default of the non-ESDIRK methods (as in
    DifferentialEquations.jl).

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
        _check_q(self.gamma, self.qmin, self.qmax)

    def resolve(self, order: int, adaptive_order: int, newton_maxiters: Optional[int] = None) -> "PIController":
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

    def init_state(self, batch: int, device) -> State:
        return (torch.full((batch,), self.qoldinit, dtype=torch.float64, device=device),)

    def factors(self, state, eest, h, newton_iters):
        return self.accept_factor(eest, state[0]), self.reject_factor(eest)

    def update(self, state, ok, eest, h):
        return (torch.where(ok, self.next_qold(eest), state[0]),)


@dataclass(frozen=True)
class IController(AbstractController):
    """Integral (elementary) control: ``q = clamp(E^(1/(k+1)) / γ, 1/qmax, 1/qmin)`` with ``k`` the
    embedded (error estimator's) order, as DifferentialEquations.jl's ``IController`` and the
    controller of torchdiffeq/torchode by default."""

    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0

    def __post_init__(self):
        _check_q(self.gamma, self.qmin, self.qmax)

    def resolve(self, order: int, adaptive_order: int, newton_maxiters: Optional[int] = None) -> PIController:
        return PIController(beta1=1.0 / (adaptive_order + 1), beta2=0.0, gamma=self.gamma, qmin=self.qmin,
                            qmax=self.qmax)


@dataclass(frozen=True)
class PredictiveController(AbstractController):
    """Gustafsson's predictive control, OrdinaryDiffEq.jl's ``PredictiveController``; the default of
    the ESDIRK methods (KenCarp4, Kvaerno5).

    With ``E`` the error estimate of a step of size ``dt``, ``k`` the error estimator's order,
    ``it`` the Newton iterations of the step (those of its last stage solve, as OrdinaryDiffEq's
    ``nlsolver.iter``) and ``M`` the most a stage solve may take::

        fac  = min(γ, (1 + 2M) γ / (it + 2M))             (γ for methods without Newton iterations)
        q    = clamp(E^(1/(k+1)) / fac, 1/qmax, 1/qmin)    (1/qmax when E = 0)

    Accepted, once the member has accepted a step before (of size ``dtacc``, error ``erracc``)::

        qgus = clamp((dtacc / dt) (E² / erracc)^(1/(k+1)) / γ, 1/qmax, 1/qmin)
        qacc = max(q, qgus)                                 (q on the first accepted step)
        qacc = 1 if qsteady_min ≤ qacc ≤ qsteady_max
        dt_new = dt / qacc,   then dtacc = dt,  erracc = max(1e-2, E)

    Rejected: ``dt_new = dt / q``, or ``dt / 10`` before the first accepted step. A step whose
    Newton iterations fail (or whose values are not finite) is retried with ``dt · qmin`` by the
    integration loop, whatever the controller.

    Many Newton iterations (slow convergence) shrink the step; the Gustafsson term predicts from
    the last two accepted steps, which shrinks it early ahead of a fast transient. The steady band
    keeps the step (and with it the ESDIRK iteration matrix) unchanged when it would grow by less
    than ``qsteady_max``.

    Arguments (defaults as OrdinaryDiffEq.jl for its implicit methods): ``gamma = 0.9``,
    ``qmin = 1/5``, ``qmax = 10``, ``qsteady_min = 1``, ``qsteady_max = 6/5``. OrdinaryDiffEq's
    larger first-step bound ``qmax_first_step`` is not provided (nor by :class:`PIController`).

    Raises:
        ValueError: naming the argument, unless ``0 < gamma ≤ 1``, ``0 < qmin < 1 < qmax`` and
            ``0 < qsteady_min ≤ 1 ≤ qsteady_max``.

    K. Gustafsson, ACM TOMS 20 (1994) 496-517; Hairer & Wanner II, Sec. IV.8.
    """

    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0
    qsteady_min: float = 1.0
    qsteady_max: float = 1.2
    # Filled in by resolve: the error estimator's order and the Newton iteration limit.
    adaptive_order: Optional[int] = None
    newton_maxiters: Optional[int] = None

    def __post_init__(self):
        _check_q(self.gamma, self.qmin, self.qmax)
        for name in ("qsteady_min", "qsteady_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"{name} must be a number; got {v!r}")
        if not 0 < self.qsteady_min <= 1:
            raise ValueError(f"qsteady_min must be in (0, 1]; got {self.qsteady_min!r}")
        if not 1 <= self.qsteady_max < float("inf"):
            raise ValueError(f"qsteady_max must be a finite number >= 1; got {self.qsteady_max!r}")

    def resolve(self, order: int, adaptive_order: int, newton_maxiters: Optional[int] = None) -> "PredictiveController":
        return replace(self, adaptive_order=int(adaptive_order), newton_maxiters=newton_maxiters)

    # State per member: (dtacc, erracc, accepted) of the last accepted step.
    def init_state(self, batch: int, device) -> State:
        ones = torch.ones(batch, dtype=torch.float64, device=device)
        return ones, ones, torch.zeros(batch, dtype=torch.bool, device=device)

    def factors(self, state, eest, h, newton_iters):
        dtacc, erracc, accepted = state
        lo, hi = 1.0 / self.qmax, 1.0 / self.qmin
        expo = 1.0 / (self.adaptive_order + 1)
        if newton_iters is None or self.newton_maxiters is None:
            fac = self.gamma
        else:
            m2 = 2.0 * self.newton_maxiters
            fac = ((1.0 + m2) * self.gamma / (newton_iters.to(torch.float64) + m2)).clamp(max=self.gamma)
        q = (eest.pow(expo) / fac).clamp(lo, hi)
        q = torch.where(eest == 0, torch.full_like(q, lo), q)
        qgus = ((dtacc / h) * (eest.square() / erracc).pow(expo) / self.gamma).clamp(lo, hi)
        qacc = torch.where(accepted, torch.maximum(q, qgus), q)
        steady = (qacc >= self.qsteady_min) & (qacc <= self.qsteady_max)
        qacc = torch.where(steady, torch.ones_like(qacc), qacc)
        # Before any accepted step the starting step size is only a guess: cut it hard.
        qrej = torch.where(accepted, q, torch.full_like(q, 10.0))
        return qacc, qrej

    def update(self, state, ok, eest, h):
        dtacc, erracc, accepted = state
        return (torch.where(ok, h, dtacc), torch.where(ok, eest.clamp(min=1e-2), erracc), accepted | ok)
