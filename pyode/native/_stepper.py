"""The interface between the integration loop and a family of methods (explicit RK, Rosenbrock, ...)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

__all__ = ["Attempt", "AbstractStepper", "Differentiable"]


class Differentiable:
    """Marks the part of a state snapshot that depends on ``u0`` and the parameters.

    Snapshots (:meth:`AbstractStepper.snapshot`, ``Loop.snapshot``) are nested tuples, lists, dicts
    and tensors. Checkpointed DirectAdjoint restores the floating-point tensors inside a
    ``Differentiable`` as fresh leaves that require grad, and hands their gradients to the part of
    the solve that produced them; everything else (times, step sizes, counters, flags) is restored
    as it was. Restoring unwraps the marker.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


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
    #: Newton iterations per member (implicit methods), for step-size control: those of the last
    #: stage solve for the ESDIRK methods (OrdinaryDiffEq.jl's ``nlsolver.iter``)
    newton_iters: Optional[torch.Tensor] = None


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
    #: the most Newton iterations one stage solve may take (None: no Newton iterations reported);
    #: the predictive controller scales its safety factor by ``newton_iters`` against it
    newton_maxiters: Optional[int] = None
    #: set by the loop: False for fixed steps, where no error test catches a step spoiled by a stale
    #: Jacobian (OrdinaryDiffEq.jl then refreshes it every step too)
    reuse_jacobian: bool = True
    njac: int = 0
    nlu: int = 0
    nsolve: int = 0
    #: order used for the starting step size (multistep methods start at order 1)
    start_order: Optional[int] = None
    #: True when the stepper chooses its own step sizes (multistep order and step control):
    #: the loop then asks :meth:`propose` instead of its controller
    controls_steps: bool = False
    #: False when the method never needs ``f`` at the start of a step (multistep methods): the
    #: loop then skips that evaluation and may pass ``k1=None`` to :meth:`step`
    needs_fsal: bool = True

    @property
    def steps_onto_saveat(self) -> bool:
        """Interpolating ``saveat`` with an interpolant two or more orders below the method would
        throw away its accuracy: such methods step onto the save times instead."""
        return self.interpolant_order + 1 < self.order

    @abc.abstractmethod
    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        ...

    @abc.abstractmethod
    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        """The ``K`` of the continuous extension, ``(B, rows, n)``."""

    def propose(self, ok: torch.Tensor, finite: torch.Tensor, eest: torch.Tensor, h_used: torch.Tensor,
                attempt: Attempt) -> torch.Tensor:
        """Next step size (positive, float64, ``(B,)``) after accepted (``ok``) and rejected trials.

        Only called when :attr:`controls_steps` is set, under ``torch.no_grad``.
        """
        raise NotImplementedError

    def commit(self, ok: torch.Tensor, attempt: Attempt, hs: torch.Tensor) -> None:
        """The members in ``ok`` accepted ``attempt`` (of signed size ``hs``): update per-member
        history (multistep differences, Newton predictors). Runs with autograd on."""

    def restart(self, members: torch.Tensor) -> None:
        """``f`` jumps at the current time of ``members`` (a user ``tstop``): forget their history."""

    def snapshot(self) -> Any:
        """The per-solve history between steps, for checkpointing: tensors are shared, not copied
        (steppers never write into them in place); those that depend on the solution (stage
        increments, differences, Jacobians, factorisations) wrapped in :class:`Differentiable`.
        Work counters are not part of it. Stateless methods (explicit RK) have none."""
        return None

    def restore(self, state: Any) -> None:
        """Continue from a :meth:`snapshot` of this stepper (``Differentiable`` markers removed);
        the snapshot of a stepper before its first step starts it afresh."""
