"""What a solve keeps: values at ``saveat``, every accepted step, or the end points; dense output.

Batch members cross save points at different loop iterations, so values are recorded as events
``(values, index, mask)`` and assembled once at the end by a single differentiable gather.

For checkpointed DirectAdjoint every recorder also lists its differentiable values in recording
order (``outputs``), lets them be replaced (``set_outputs``), and ``fork``s: an empty recorder at the
same position, which records what a resumed part of the solve adds.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import torch

__all__ = ["interpolate", "SaveatRecorder", "StepRecorder", "EndRecorder", "DenseRecorder", "DenseOutput"]


def interpolate(dense: torch.Tensor, theta: torch.Tensor, y0: torch.Tensor, hs: torch.Tensor,
                K: torch.Tensor) -> torch.Tensor:
    """Continuous extension ``y0 + h * sum_i P_i(θ) K_i``.

    Arguments: ``dense`` (s+1, D) polynomial coefficients of θ¹..θᴰ; ``theta`` (...,); ``y0`` (..., n);
    ``hs`` (...,) signed step; ``K`` (..., s+1, n) stage derivatives followed by ``f(t1, y1)``.
    """
    # θ¹..θᴰ by a running product: a tensor-exponent pow costs ~10x more (133 against 11 µs for 4096
    # members on the CPU), and every save point of a large batch pays it.
    th = theta.to(dense.dtype).unsqueeze(-1)
    powers = th.expand(*th.shape[:-1], dense.shape[1]).cumprod(-1)       # (..., D)
    P = (powers @ dense.T).to(y0.dtype)                                   # (..., s+1)
    if K.requires_grad and K.shape[-1] >= _STAGE_SUM_MIN_STATES and torch.is_grad_enabled():
        return y0 + hs.to(y0.dtype)[..., None] * _StageSum.apply(P, K)
    return y0 + hs.to(y0.dtype)[..., None] * (P.unsqueeze(-2) @ K).squeeze(-2)


#: from this many states per member the interpolant's stage sum differentiates by hand (below,
#: the custom function's ~15 µs of overhead per call outweighs what its backward saves)
_STAGE_SUM_MIN_STATES = 16


class _StageSum(torch.autograd.Function):
    """``Σ_i P_i K_i`` per member: (..., s+1), (..., s+1, n) -> (..., n).

    Forwards a batched matrix product; backwards the outer product ``P gᵀ`` elementwise, which
    autograd's batched-matmul backward does 4-5x slower for many members with many states (4096
    members, n = 64: 6.4 against 1.4 ms for the interpolation and its gradient)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(P, K):
        return (P.unsqueeze(-2) @ K).squeeze(-2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        P, K = ctx.saved_tensors
        gP = (K @ g.unsqueeze(-1)).squeeze(-1) if ctx.needs_input_grad[0] else None
        gK = P.unsqueeze(-1) * g.unsqueeze(-2) if ctx.needs_input_grad[1] else None
        return gP, gK


class SaveatRecorder:
    """Values at user-given times, interpolated inside the step that crosses them."""

    needs_stages = True

    def __init__(self, ts: torch.Tensor, direction: float, B: int, t0: float, y0: torch.Tensor):
        self.ts, self.direction, self.B = ts, direction, B
        self.T = ts.shape[0]
        self.empty = y0.new_zeros(0, *y0.shape)     # what a batch that saved nothing returns
        self.next = torch.zeros(B, dtype=torch.long, device=ts.device)
        self.events: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.everyone = torch.ones(B, dtype=torch.bool, device=ts.device)
        # While every member has saved at the same points: the next save index as a Python int (see
        # record_together); None once the members' indices may differ.
        self.next_together: Optional[int] = 0
        self._ts_list = ts.tolist()
        if self._ts_list[0] == t0:
            self.events.append((y0, self.next.clone(), self.everyone))
            self.next += 1
            self.next_together = 1

    def _want(self, ok, t1):
        j = self.next.clamp(max=self.T - 1)
        tj = self.ts[j]
        return j, tj, ok & (self.next < self.T) & (self.direction * (tj - t1) <= 0)

    def due(self, ok, t1) -> torch.Tensor:
        """0-d bool tensor: does any member that accepted a step cross a save point?"""
        return self._want(ok, t1)[2].any()

    def record(self, ok, t, hs, y, t1, y1, K, dense):
        """Emit every save point in ``(t, t1]`` of the members that accepted a step (called when due)."""
        self.next_together = None
        j, tj, want = self._want(ok, t1)
        while True:
            theta = torch.where(want, (tj - t) / torch.where(want, hs, torch.ones_like(hs)), torch.zeros_like(hs))
            value = interpolate(dense, theta, y, hs, K)
            value = torch.where((tj == t1)[:, None], y1, value)   # landed exactly: no interpolation error
            self.events.append((value, j, want))
            self.next = self.next + want.long()
            j, tj, want = self._want(ok, t1)
            if not bool(want.any()):  # several save points inside one step: rare, one sync each
                return

    def record_together(self, t: float, hs: float, y, t1: float, y1, K, dense_rows) -> None:
        """:meth:`record` for a batch that moves as one (shared steps, every member accepted, none
        finished): one step ``t -> t1`` for all, so the interpolant's weights are Python floats and
        each save point costs one weighted sum of the stages, not the per-member control's ~20
        tensor operations (batch 4096: ~0.3 ms a save point, a tenth of the solve at 10 of them).
        ``dense_rows``: the interpolant's coefficients as nested lists (s+1, D)."""
        k = self.next_together
        while k < self.T and self.direction * (self._ts_list[k] - t1) <= 0:
            tj = self._ts_list[k]
            if tj == t1:
                value = y1                         # landed exactly: no interpolation error
            else:
                theta = (tj - t) / hs
                powers = [theta ** (d + 1) for d in range(len(dense_rows[0]))]
                weights = torch.tensor([hs * sum(c * q for c, q in zip(row, powers)) for row in dense_rows],
                                       dtype=K.dtype, device=K.device)
                value = y + weights @ K
            self.events.append((value, torch.full_like(self.next, k), self.everyone))
            k += 1
        self.next_together = k
        self.next = torch.full_like(self.next, k)

    def fork(self) -> "SaveatRecorder":
        twin = copy.copy(self)
        twin.events = []
        return twin

    def outputs(self) -> List[torch.Tensor]:
        return [v for v, _, _ in self.events]

    def set_outputs(self, values: List[torch.Tensor]) -> None:
        self.events = [(v, j, m) for v, (_, j, m) in zip(values, self.events)]

    def result(self, single: bool):
        if not self.events:
            return self.ts[:0], self.empty
        V = torch.stack([v for v, _, _ in self.events])                   # (E, B, n)
        E, B, n = V.shape
        V = torch.cat([V, V.new_full((1, B, n), float("nan"))])          # row E: never reached
        J = torch.stack([j for _, j, _ in self.events])                   # (E, B) save index
        M = torch.stack([m for _, _, m in self.events])                   # (E, B) written?
        event = torch.arange(E, device=V.device)[:, None].expand(E, B)
        # each (j, b) is written once; unwritten events go to a spare row T, dropped (a scatter: boolean
        # indexing of (E, B) costs 5x more at B = 4096)
        idx = torch.full((self.T + 1, B), E, dtype=torch.long, device=V.device)
        idx.scatter_(0, torch.where(M, J, self.T), event)
        out = V.gather(0, idx[:self.T, :, None].expand(self.T, B, n))
        if single:
            reached = int(self.next[0])
            return self.ts[:reached], out[:reached]
        return self.ts, out


class StepRecorder:
    """Every accepted step of a single problem (no ``saveat``)."""

    needs_stages = False

    def __init__(self, t0: float, y0: torch.Tensor):
        self.t = [torch.tensor([t0], dtype=torch.float64, device=y0.device)]
        self.y = [y0]

    def due(self, ok, t1) -> torch.Tensor:
        return ok.any()

    def record(self, ok, t, hs, y, t1, y1, K, dense):
        self.t.append(t1)
        self.y.append(y1)

    def fork(self) -> "StepRecorder":
        twin = copy.copy(self)
        twin.t, twin.y = [], []
        return twin

    def outputs(self) -> List[torch.Tensor]:
        return list(self.y)

    def set_outputs(self, values: List[torch.Tensor]) -> None:
        self.y = list(values)

    def result(self, single: bool):
        return torch.cat(self.t), torch.stack(self.y)


class EndRecorder:
    """Start and end of each member of a batch (no ``saveat``); members that failed get NaN at the end."""

    needs_stages = False

    def __init__(self, t0: float, t1: float, y0: torch.Tensor):
        self.ts = torch.tensor([t0, t1], dtype=torch.float64, device=y0.device)
        self.y0 = y0
        self.y_end = None

    def due(self, ok, t1) -> torch.Tensor:
        return torch.zeros((), dtype=torch.bool, device=ok.device)

    def record(self, ok, t, hs, y, t1, y1, K, dense):
        pass

    def finish(self, y: torch.Tensor, success: torch.Tensor):
        self.y_end = torch.where(success[:, None], y, torch.full_like(y, float("nan")))

    def fork(self) -> "EndRecorder":
        twin = copy.copy(self)
        twin.y0 = twin.y_end = None
        return twin

    def outputs(self) -> List[torch.Tensor]:
        return [v for v in (self.y0, self.y_end) if v is not None]

    def set_outputs(self, values: List[torch.Tensor]) -> None:
        values = list(values)
        if self.y0 is not None:
            self.y0 = values.pop(0)
        if self.y_end is not None:
            self.y_end = values.pop(0)

    def result(self, single: bool):
        return self.ts, torch.stack([self.y0, self.y_end])


class DenseRecorder:
    """Keeps each accepted step's ``(t, h, y, K)`` so that ``sol(t)`` can interpolate later."""

    def __init__(self):
        self.steps: List[tuple] = []
        #: per step, where each member's piece of the interpolant ends when an event cut the step
        #: short of ``t + h`` (None: at ``t + h``)
        self.ends: List[Optional[torch.Tensor]] = []

    def record(self, ok, t, hs, y, K, t_end: Optional[torch.Tensor] = None):
        self.steps.append((t, hs, y, K, ok))
        self.ends.append(t_end)

    def fork(self) -> "DenseRecorder":
        return DenseRecorder()

    def outputs(self) -> List[torch.Tensor]:
        return [v for t, hs, y, K, ok in self.steps for v in (y, K)]

    def set_outputs(self, values: List[torch.Tensor]) -> None:
        self.steps = [(t, hs, values[2 * i], values[2 * i + 1], ok) for i, (t, hs, _, _, ok) in enumerate(self.steps)]

    def build(self, dense: torch.Tensor, direction: float, t0: float, t_reached: torch.Tensor) -> "DenseOutput":
        ends = None
        if any(e is not None for e in self.ends):
            ends = torch.stack([s[0] + s[1] if e is None else e for s, e in zip(self.steps, self.ends)])
        return DenseOutput(self.steps, dense, direction, t0, t_reached, ends)


class DenseOutput:
    """Per-member piecewise-polynomial interpolant over the accepted steps."""

    def __init__(self, steps, dense, direction, t0, t_reached, ends: Optional[torch.Tensor] = None):
        self.dense, self.direction, self.t0, self.t_reached = dense, direction, t0, t_reached
        T0 = torch.stack([s[0] for s in steps])                          # (S, B)
        H = torch.stack([s[1] for s in steps])
        M = torch.stack([s[4] for s in steps])
        # Compact each member's accepted steps to the front, in order (stable sort on "rejected").
        order = torch.sort((~M).to(torch.int8), dim=0, stable=True).indices
        self.count = M.sum(0)                                              # (B,)
        self.T0 = T0.gather(0, order)
        self.H = H.gather(0, order)
        S = T0.shape[0]
        valid = torch.arange(S, device=T0.device)[:, None] < self.count[None, :]
        ends = direction * (self.T0 + self.H if ends is None else ends.gather(0, order))
        self.keys = torch.where(valid, ends, torch.full_like(ends, float("inf"))).T.contiguous()  # (B, S)
        self.order = order
        # Past its last step a member extrapolates that step, not a padding row of a longer member's.
        self.last = (self.count - 1).clamp(min=0)
        self.Y0 = torch.stack([s[2] for s in steps])                      # (S, B, n)
        self.K = torch.stack([s[3] for s in steps])                       # (S, B, s+1, n)
        # member-major copies for at(), which adjoint solves call at every stage
        self._T0_b, self._H_b, self._order_b = (x.T.contiguous() for x in (self.T0, self.H, order))

    def at(self, t: torch.Tensor) -> torch.Tensor:
        """Each member at its own times: ``t`` (B,) -> (B, n), or (Q, B) -> (Q, B, n) (adjoint
        solves and their quadratures need this)."""
        B = self.keys.shape[0]
        tq = t[None] if t.dim() == 1 else t                                                # (Q, B)
        key = (self.direction * tq).T.contiguous()                                         # (B, Q)
        pos = torch.minimum(torch.searchsorted(self.keys, key), self.last[:, None])        # (B, Q)
        t_lo = self._T0_b.gather(1, pos)
        hs = self._H_b.gather(1, pos)
        step = self._order_b.gather(1, pos)
        cols = torch.arange(B, device=t.device)[:, None].expand_as(step)
        theta = (tq.T - t_lo) / torch.where(hs != 0, hs, torch.ones_like(hs))
        out = interpolate(self.dense, theta, self.Y0[step, cols], hs, self.K[step, cols]).transpose(0, 1)
        return out[0] if t.dim() == 1 else out

    def all_steps_at(self, theta: float):
        """Every member's accepted steps at fraction ``theta``: ``(t, y, signed size, exists)``, of
        shapes (S, B), (S, B, n), (S, B), (S, B) with ``S`` = :attr:`max_steps`."""
        S, B = self.max_steps, self.count.shape[0]
        step = self.order[:S]
        cols = torch.arange(B, device=step.device)[None, :].expand_as(step)
        hs = self.H[:S]
        th = torch.full_like(hs, theta)
        y = interpolate(self.dense, th, self.Y0[step, cols], hs, self.K[step, cols])
        exists = torch.arange(S, device=step.device)[:, None] < self.count[None, :]
        return self.T0[:S] + theta * hs, y, hs, exists

    @property
    def max_steps(self) -> int:
        """The most accepted steps any member took."""
        return int(self.count.max()) if self.count.numel() else 0

    def step(self, s: int):
        """Member-wise ``s``-th accepted step: ``(t_start, signed size, exists)``, each (B,)."""
        return self.T0[s], self.H[s], s < self.count

    def on_step(self, s: int, theta: float) -> torch.Tensor:
        """Each member's ``s``-th step interpolated at fraction ``theta``: (B, n) (rows of members
        with fewer steps are meaningless)."""
        B = self.count.shape[0]
        step = self.order[s]
        cols = torch.arange(B, device=step.device)
        th = torch.full((B,), theta, dtype=self.H.dtype, device=step.device)
        return interpolate(self.dense, th, self.Y0[step, cols], self.H[s], self.K[step, cols])

    def __call__(self, tq: torch.Tensor) -> torch.Tensor:
        """Interpolated states at times ``tq`` (Q,), shape (Q, B, n); NaN where a member never got."""
        B = self.keys.shape[0]
        key = (self.direction * tq)[None, :].expand(B, -1).contiguous()     # (B, Q)
        pos = torch.minimum(torch.searchsorted(self.keys, key), self.last[:, None])  # (B, Q)
        step = self.order.T.gather(1, pos)                                  # (B, Q) index into S
        cols = torch.arange(B, device=tq.device)[:, None].expand_as(step)
        t_lo = self.T0.T.gather(1, pos)
        hs = self.H.T.gather(1, pos)
        y0 = self.Y0[step, cols]                                            # (B, Q, n)
        K = self.K[step, cols]                                              # (B, Q, s+1, n)
        theta = (tq[None, :] - t_lo) / hs
        out = interpolate(self.dense, theta, y0, hs, K)
        reached = self.direction * (tq[None, :] - self.t_reached[:, None]) <= 0
        out = torch.where(reached[..., None], out, torch.full_like(out, float("nan")))
        return out.transpose(0, 1)                                          # (Q, B, n)
