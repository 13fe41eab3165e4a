"""Events and callbacks for :func:`pyode.solve`, named as DiffEqCallbacks.jl's.

A callback is a small immutable object passed as ``solve(..., callback=cb)``:

- :class:`ContinuousCallback`: an event is a root of ``condition(u, p, t)`` in time. The solver finds
  the crossing on the step's dense output (to a few ulps of ``t``), stops the step there, applies
  ``affect`` and goes on (or stops the member with ``terminate=True``).
- :class:`VectorContinuousCallback`: several conditions at once; the first root fires.
- :class:`DiscreteCallback`: ``condition(u, p, t)`` is checked after every accepted step.
- :class:`PresetTimeCallback`: ``affect`` at given times, which every member steps onto.
- :class:`CallbackSet`: several callbacks together.

Conventions, in torch terms (the batch shape is ``u.shape[:-1]``; ``t`` is a float64 tensor of the
batch shape):

- ``condition(u, p, t)`` returns a tensor of the batch shape (``VectorContinuousCallback``: the batch
  shape plus ``(len,)``); a ``DiscreteCallback``'s returns booleans.
- ``affect(u, p, t)`` returns the new state, of ``u``'s shape; it is called with the whole batch and its
  result is taken for the members that had the event (so it must act on each member's row alone).
  ``VectorContinuousCallback``'s affect is ``affect(u, p, t, index)``, ``index`` a long tensor of the
  batch shape naming the condition that fired.

With every sensealg but ``BacksolveAdjoint`` the event times, the states at the events and everything
after them are differentiable (the continuous adjoints apply the transposed jump to ``λ``): the event time's gradient follows from the implicit function theorem on
``condition(u(t*), p, t*) = 0``, ``dt*/dθ = -(∂g/∂u du/dθ + ∂g/∂θ) / (dg/dt)``, and the states that
follow carry the jump's dependence on ``t*`` (the saltation term ``(f⁻ ∂a/∂u - f⁺) dt*/dθ``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

__all__ = ["ContinuousCallback", "VectorContinuousCallback", "DiscreteCallback", "PresetTimeCallback",
           "CallbackSet", "AbstractCallback"]


class AbstractCallback:
    """A callback accepted by ``solve(..., callback=...)``."""


def _check_callable(owner: str, name: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{owner}: {name} must be a function; got {type(value).__name__}")


def _check_continuous(cb) -> None:
    owner = type(cb).__name__
    _check_callable(owner, "condition", cb.condition)
    _check_callable(owner, "affect", cb.affect, optional=True)
    _check_callable(owner, "affect_neg", cb.affect_neg, optional=True)
    _check_common(owner, cb.direction, cb.interp_points, cb.terminate)


def _check_common(owner: str, direction, interp_points, terminate) -> None:
    if direction not in (-1, 0, 1) or isinstance(direction, bool):
        raise ValueError(f"{owner}: direction must be 0 (both ways), 1 (upcrossings, condition going from "
                         f"negative to positive) or -1 (downcrossings); got {direction!r}")
    if (isinstance(interp_points, bool) or not isinstance(interp_points, numbers.Integral)
            or interp_points < 1):
        raise ValueError(f"{owner}: interp_points must be a positive integer (points per step at which the "
                         f"condition is checked for crossings); got {interp_points!r}")
    if not isinstance(terminate, bool):
        raise TypeError(f"{owner}: terminate must be True or False; got {terminate!r}")


@dataclass(frozen=True, eq=False)
class ContinuousCallback(AbstractCallback):
    """An event at each root of ``condition(u, p, t)`` along the solution.

    Arguments:
        condition: ``condition(u, p, t)``, a tensor of the batch shape; an event is a sign change.
        affect: ``affect(u, p, t)`` -> new ``u`` at an upcrossing (the condition going from negative to
            positive); ``None`` changes nothing (the event is only recorded, or terminates).
        affect_neg: the same at a downcrossing; ``None`` means ``affect`` (as DiffEqCallbacks.jl's
            default ``affect_neg! = affect!``).
        terminate: stop the member at the event (``ReturnCode.Terminated``); its last state is the
            state at the event.
        direction: ``0`` both crossings, ``1`` upcrossings only, ``-1`` downcrossings only.
        interp_points: points per step at which the condition is sampled on the dense output, so that
            two crossings inside one step are not missed (DiffEqCallbacks.jl's default, 10).
    """

    condition: Callable
    affect: Optional[Callable] = None
    affect_neg: Optional[Callable] = None
    terminate: bool = False
    direction: int = 0
    interp_points: int = 10

    def __post_init__(self):
        _check_continuous(self)

    @property
    def length(self) -> Optional[int]:
        return None


@dataclass(frozen=True, eq=False)
class VectorContinuousCallback(AbstractCallback):
    """``len`` conditions at once: ``condition(u, p, t)`` returns the batch shape plus ``(len,)``; the
    first root in time of any of them is an event, and ``affect(u, p, t, index)`` receives which one
    (a long tensor of the batch shape). Other arguments as :class:`ContinuousCallback`."""

    condition: Callable
    affect: Optional[Callable]
    len: int
    affect_neg: Optional[Callable] = None
    terminate: bool = False
    direction: int = 0
    interp_points: int = 10

    def __post_init__(self):
        if isinstance(self.len, bool) or not isinstance(self.len, numbers.Integral) or self.len < 1:
            raise ValueError(f"VectorContinuousCallback: len must be a positive integer (the number of "
                             f"conditions); got {self.len!r}")
        _check_continuous(self)

    @property
    def length(self) -> Optional[int]:
        return int(self.len)


@dataclass(frozen=True, eq=False)
class DiscreteCallback(AbstractCallback):
    """After every accepted step, ``affect`` for the members where ``condition(u, p, t)`` is true.

    Arguments:
        condition: ``condition(u, p, t)``, a boolean tensor of the batch shape.
        affect: ``affect(u, p, t)`` -> new ``u``; ``None`` with ``terminate=True`` only stops.
        terminate: stop the member after the affect (``ReturnCode.Terminated``).
    """

    condition: Callable
    affect: Optional[Callable]
    terminate: bool = False

    def __post_init__(self):
        _check_callable("DiscreteCallback", "condition", self.condition)
        _check_callable("DiscreteCallback", "affect", self.affect, optional=True)
        if not isinstance(self.terminate, bool):
            raise TypeError(f"DiscreteCallback: terminate must be True or False; got {self.terminate!r}")
        if self.affect is None and not self.terminate:
            raise ValueError("DiscreteCallback: give affect, or terminate=True (a callback that does "
                             "neither does nothing)")


@dataclass(frozen=True, eq=False)
class PresetTimeCallback(AbstractCallback):
    """``affect(u, p, t)`` at each of ``times``: every member steps onto them (as ``tstops``), so
    the affect acts at exactly those times (doses, feeds, resets).

    Arguments:
        times: a number or a 1-D sequence of times (inside ``tspan``; others are never reached).
        affect: ``affect(u, p, t)`` -> new ``u``.
        terminate: stop the member after the affect.
    """

    times: Any
    affect: Optional[Callable]
    terminate: bool = False

    def __post_init__(self):
        _check_callable("PresetTimeCallback", "affect", self.affect, optional=True)
        if not isinstance(self.terminate, bool):
            raise TypeError(f"PresetTimeCallback: terminate must be True or False; got {self.terminate!r}")
        try:
            times = torch.as_tensor(self.times, dtype=torch.float64).detach().reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"PresetTimeCallback: times must be a number or a 1-D sequence of numbers; "
                            f"got {type(self.times).__name__}") from None
        if times.numel() == 0 or not bool(torch.isfinite(times).all()):
            raise ValueError(f"PresetTimeCallback: times must be finite and not empty; got {self.times!r}")
        if self.affect is None and not self.terminate:
            raise ValueError("PresetTimeCallback: give affect, or terminate=True")
        object.__setattr__(self, "_times", torch.unique(times.cpu()))

    @property
    def time_tensor(self) -> torch.Tensor:
        return self._times


class CallbackSet(AbstractCallback):
    """Several callbacks together (nested sets are flattened). At one time, continuous callbacks act
    first (the earliest root among them), then discrete and preset-time ones, in the order given."""

    def __init__(self, *callbacks: AbstractCallback):
        flat = []
        for i, cb in enumerate(callbacks):
            if isinstance(cb, CallbackSet):
                flat.extend(cb.callbacks)
            elif isinstance(cb, AbstractCallback):
                flat.append(cb)
            else:
                raise TypeError(f"CallbackSet: argument {i} must be a pyode callback (ContinuousCallback, "
                                f"DiscreteCallback, ...); got {type(cb).__name__}")
        self.callbacks: Tuple[AbstractCallback, ...] = tuple(flat)

    def __repr__(self) -> str:
        return f"CallbackSet({', '.join(type(c).__name__ for c in self.callbacks)})"


def flatten(callback) -> Tuple[AbstractCallback, ...]:
    """``solve``'s ``callback`` argument as a tuple of callbacks, validated."""
    if callback is None:
        return ()
    if isinstance(callback, CallbackSet):
        return callback.callbacks
    if isinstance(callback, AbstractCallback):
        return (callback,)
    if isinstance(callback, (list, tuple)):
        return CallbackSet(*callback).callbacks
    raise TypeError(f"callback must be a pyode callback (ContinuousCallback, VectorContinuousCallback, "
                    f"DiscreteCallback, PresetTimeCallback) or a CallbackSet; got {type(callback).__name__}")
