"""The result of a solve."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ._retcode import ReturnCode

__all__ = ["ODESolution", "SolverStats"]

PerMember = Union[int, torch.Tensor]


@dataclass(frozen=True)
class SolverStats:
    """Work done by a solve.

    ``nf`` counts calls of ``f`` (one call evaluates the whole batch), ``njac``/``nlu``/``nsolve``
    Jacobians, factorisations and linear solves (stiff algorithms). ``nsteps``, ``naccept`` and
    ``nreject`` are per member: ints for one problem, tensors of the batch shape for a batch.
    """

    nf: int
    naccept: PerMember
    nreject: PerMember
    njac: int = 0
    nlu: int = 0
    nsolve: int = 0
    #: per member: switches between the two methods of an ``AutoSwitch`` algorithm (0 otherwise)
    nswitch: PerMember = 0

    @property
    def nsteps(self) -> PerMember:
        return self.naccept + self.nreject


class ODESolution:
    """Saved times and states, return codes, statistics and (when kept) dense output.

    Attributes:
        t: ``(T,)`` float64 saved times.
        u: ``(T, *u0.shape)`` saved states, differentiable with respect to ``u0`` and ``p``.
        retcode: a :class:`ReturnCode` for one problem; for a batch, a long tensor of the batch
            shape holding ``ReturnCode`` values (compare with ``== pyode.ReturnCode.Success``).
        stats: :class:`SolverStats`.
        t_final: where each member stopped (float for one problem, tensor for a batch).
        prob, alg: the problem and algorithm solved.
        t_events, u_events: with continuous callbacks, each member's events in time order: times
            ``(E,)`` and states just before the affect ``(E, n)`` for one problem, ``(*batch, E)`` and
            ``(*batch, E, n)`` for a batch (NaN-padded to the member with most events); differentiable
            like ``u`` (the event time through the implicit function theorem). ``None`` without callbacks.
        event_callback, event_index: which callback of the (flattened) set fired, and which
            condition of a ``VectorContinuousCallback`` (0 for a ``ContinuousCallback``); -1 as padding.
    """

    def __init__(self, *, t, u, retcode, stats, prob, alg, t_final, dense, batch_shape, events=None):
        self.t = t
        self.u = u
        self.retcode = retcode
        self.stats = stats
        self.prob = prob
        self.alg = alg
        self.t_final = t_final
        self._dense = dense
        self._batch_shape = batch_shape
        self.t_events, self.u_events, self.event_callback, self.event_index = events or (None,) * 4

    @property
    def success(self) -> bool:
        """True when every member reached the end of ``tspan``."""
        if isinstance(self.retcode, ReturnCode):
            return self.retcode.successful
        return bool((self.retcode == ReturnCode.Success).all())

    @property
    def has_dense(self) -> bool:
        return self._dense is not None

    def __call__(self, t: Any) -> torch.Tensor:
        """Dense output at time(s) ``t``: a number gives ``u0.shape``, a 1-D sequence ``(len(t), *u0.shape)``.

        Available when the solve kept dense output (the default without ``saveat``; pass
        ``dense=True`` otherwise). Values are differentiable like ``u``. A batch member that failed
        before ``t`` gives NaN there (its ``retcode`` says why).
        """
        if self._dense is None:
            raise ValueError("this solution has no dense output: solve() keeps it only when saveat is not "
                             "given (as DifferentialEquations.jl does); pass dense=True to solve() to keep it")
        scalar = not isinstance(t, torch.Tensor) and not hasattr(t, "__len__")
        tq = torch.as_tensor(t, dtype=torch.float64, device=self.u.device).detach()
        scalar = scalar or tq.ndim == 0
        tq = tq.reshape(-1)
        t0, t1 = self.prob.tspan
        lo, hi = min(t0, t1), max(t0, t1)
        span = hi - lo
        if tq.numel() == 0:
            raise ValueError("t is empty; pass a time or a 1-D sequence of times inside tspan")
        if bool(((tq < lo - 1e-12 * span) | (tq > hi + 1e-12 * span) | ~torch.isfinite(tq)).any()):
            raise ValueError(f"t={t!r} lies outside tspan {self.prob.tspan}; dense output interpolates, "
                             "it does not extrapolate")
        tq = tq.clamp(lo, hi)
        out = self._dense(tq)                                   # (Q, B, n)
        out = out.reshape(tq.shape[0], *self._batch_shape, out.shape[-1])
        return out[0] if scalar else out

    def __repr__(self) -> str:
        code = self.retcode.name if isinstance(self.retcode, ReturnCode) else \
            f"{int((self.retcode == ReturnCode.Success).sum())}/{self.retcode.numel()} Success"
        return (f"ODESolution(alg={self.alg!r}, retcode={code}, t: {tuple(self.t.shape)}, "
                f"u: {tuple(self.u.shape)}, nf={self.stats.nf})")
