"""Checkpointed ``DirectAdjoint``: backpropagation through the solver's steps, with memory bounded by
recomputation.

The forward solve runs without an autograd graph and keeps at most ``K`` states of the complete
integration loop (``Loop.snapshot``: time, state, ``f`` at the state, step size, controller memory,
counters, the recorders' positions and the stepper's history). They split the solve into at most
``K`` segments, the first starting from ``u0`` itself. The backward pass takes the segments last
first. A segment of at most ``K`` loop iterations is a leaf: restore its snapshot, recompute its
iterations with autograd on (the same step sizes, the same accept/reject decisions: they are taken
from the same values), and backpropagate through them the gradients of the values the segment
recorded (``sol.u``, dense output) together with the gradient of the next segment's start state;
what comes out for the segment's own start state goes on to the previous segment, and what comes
out for the parameters is summed. A longer segment is recomputed without a graph first, keeping
at most ``K - 1`` snapshots at equal spacing inside it, and its parts are taken last first the same
way (recursive checkpointing, as in Griewank's ``revolve`` without its optimal placement). The
result is the gradient of plain ``DirectAdjoint`` up to round-off.

Online thinning: the number of loop iterations is not known in advance, so a snapshot is taken
every ``s`` iterations (``s = 1`` at first); when ``K - 1`` are held and another is due, every other
one is dropped and ``s`` doubles. Segments then have ``s`` iterations each (the last one at most
``s``), and ``s ≤ max(1, 2N/K)`` for ``N`` iterations: ``s`` last doubled at iteration ``K s / 2``.

Memory: the forward's ``K`` snapshots, ``K - 1`` more per level of the recursion (``log_K(N/K)``
levels) and the graph of at most ``K`` iterations — independent of ``N`` but for the logarithm.
Cost: every level runs the solve once more without a graph, the leaves once with it (measured,
``K = 8``: forward plus backward 1.5-2x the time without checkpoints for 100-1600 steps).

Snapshots are handed to ``ctx.save_for_backward``, so ``torch.autograd.graph.saved_tensors_hooks``
(``save_on_cpu``, memory accounting) see them as they see any saved tensor.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._params import parameter_leaves
from ._integrate import Loop, SolveOptions
from ._stepper import Differentiable

__all__ = ["checkpointed_integrate"]


class _Slot:
    """A tensor of a frozen snapshot: its index in the list handed to ``save_for_backward``."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _rebuild(tree: Any, leaf: Callable[[Any, bool], Any], keep_marker: bool, diff: bool = False) -> Any:
    """``tree`` with ``leaf(x, inside_differentiable)`` applied to every tensor or slot.

    Containers are tuples (named ones too), lists and dicts; anything else (numbers, flags, the
    recorders, whose position tensors are small) is kept as it is.
    """
    if isinstance(tree, Differentiable):
        inner = _rebuild(tree.value, leaf, keep_marker, True)
        return Differentiable(inner) if keep_marker else inner
    if isinstance(tree, (torch.Tensor, _Slot)):
        return leaf(tree, diff)
    if isinstance(tree, dict):
        return {k: _rebuild(v, leaf, keep_marker, diff) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rebuild(v, leaf, keep_marker, diff) for v in tree]
    if isinstance(tree, tuple):
        items = [_rebuild(v, leaf, keep_marker, diff) for v in tree]
        return tuple(items) if type(tree) is tuple else type(tree)._make(items)
    return tree


def _differentiable(x: torch.Tensor) -> bool:
    return x.is_floating_point() or x.is_complex()


def _freeze(tree: Any, tensors: List[torch.Tensor], index: Dict[int, int]) -> Any:
    """Replace tensors by slots into ``tensors`` (each tensor object stored once)."""
    def slot(x, diff):
        i = index.get(id(x))
        if i is None:
            i = index[id(x)] = len(tensors)
            tensors.append(x)
        return _Slot(i)
    return _rebuild(tree, slot, keep_marker=True)


def _thaw(frozen: Any, saved: Tuple[torch.Tensor, ...]) -> Tuple[Any, List[torch.Tensor]]:
    """The snapshot with its differentiable tensors as fresh leaves that require grad.

    Returns ``(tree, leaves)`` with the leaves in first-appearance order. A tensor that appears
    several times (the Jacobian cache's key is the loop's ``y``) becomes one leaf everywhere, so
    identity-based caches behave as in the original solve.
    """
    order: List[int] = []

    def collect(s, diff):
        if diff and _differentiable(saved[s.index]) and s.index not in order:
            order.append(s.index)
        return s
    _rebuild(frozen, collect, keep_marker=True)
    leaves = {i: saved[i].detach().requires_grad_() for i in order}
    tree = _rebuild(frozen, lambda s, diff: leaves.get(s.index, saved[s.index]), keep_marker=False)
    return tree, [leaves[i] for i in order]


def _differentiable_tensors(tree: Any) -> List[torch.Tensor]:
    """The tensors of a live snapshot that :func:`_thaw` would make leaves, in the same order."""
    out: List[torch.Tensor] = []
    seen = set()

    def collect(x, diff):
        if diff and _differentiable(x) and id(x) not in seen:
            seen.add(id(x))
            out.append(x)
        return x
    _rebuild(tree, collect, keep_marker=False)
    return out


class _CheckpointedSolve:
    """One checkpointed solve: the no-grad forward with snapshots, and the segment-wise backward."""

    def __init__(self, f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable, opts: SolveOptions,
                 batch_shape: torch.Size, checkpoints: int, params: List[torch.Tensor]):
        self.loop = Loop(f_user, u0, p, make_stepper, opts, batch_shape)
        self.K = checkpoints
        self.params = params

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, u0: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Run the solve without a graph; returns ``(outputs, tensors to save)``.

        ``outputs`` are the distinct differentiable values the recorders hold (a value recorded
        twice, e.g. a step's end as saved state and as the next step's start, is one output).
        """
        loop = self.loop
        loop.begin(u0.detach().clone())
        held: List[Tuple[int, dict, Tuple[int, int]]] = []    # (iteration, snapshot, output marks)
        stride = 1
        while not loop.all_done:
            loop.iterate()
            if self.K == 1 or loop.all_done or loop.n_iter % stride:
                continue
            if len(held) == self.K - 1:
                # Full: keep every other snapshot and take them half as often from now on.
                stride *= 2
                held = [h for h in held if h[0] % stride == 0]
                if loop.n_iter % stride:
                    continue
            held.append((loop.n_iter, loop.snapshot(), self._marks()))
        loop.close()

        outputs = loop.outputs()
        self.n_saver_outputs = len(loop.saver.outputs())
        uniq: List[torch.Tensor] = []
        where: Dict[int, int] = {}
        self.position = []          # output position -> distinct output
        for o in outputs:
            self.position.append(where.setdefault(id(o), len(uniq)))
            if self.position[-1] == len(uniq):
                uniq.append(o)
        # Each distinct output's gradient enters the recomputation once, at its first position;
        # a later position holding the same value gets it through the state carried in between.
        self.first = [None] * len(uniq)
        for q, u in enumerate(self.position):
            if self.first[u] is None:
                self.first[u] = q

        tensors: List[torch.Tensor] = []
        index: Dict[int, int] = {}
        self.segments = [(0, None, (0, 0))] + [(it, _freeze(snap, tensors, index), marks)
                                                for it, snap, marks in held]
        self.t_final_slot = _freeze(loop.t, tensors, index)
        self.total_marks = self._marks()
        self.n_iter = loop.n_iter
        # autograd must not see an output that is a view of the input
        return [o.clone() if o._base is not None else o for o in uniq], tensors

    def _marks(self) -> Tuple[int, int]:
        loop = self.loop
        return len(loop.saver.outputs()), 0 if loop.dense_rec is None else len(loop.dense_rec.outputs())

    def expand(self, uniq: Tuple[torch.Tensor, ...]) -> List[torch.Tensor]:
        """The recorders' values from the distinct outputs, position by position."""
        return [uniq[u] for u in self.position]

    # ---- backward --------------------------------------------------------------------------------
    def backward(self, u0: torch.Tensor, saved: Tuple[torch.Tensor, ...], grads: Tuple[Optional[torch.Tensor], ...]):
        """``(∂L/∂u0, [∂L/∂θ])`` from the gradients of the distinct outputs (None: zero)."""
        self.saved, self.grads, self.u0 = saved, grads, u0
        self.g_params: List[Optional[torch.Tensor]] = [None] * len(self.params)
        segs = self.segments
        g_next: List[Optional[torch.Tensor]] = []     # gradient of the start state of the segment after
        try:
            for j in range(len(segs) - 1, -1, -1):
                it0, frozen, m0 = segs[j]
                if j == len(segs) - 1:
                    end = (self.n_iter, saved[self.t_final_slot.index], self.total_marks, True)
                else:
                    end = (segs[j + 1][0], saved[segs[j + 1][1]["t"].index], segs[j + 1][2], False)
                g_next = self._backward_range(("frozen", frozen), it0, m0, end, g_next)
        finally:
            self.loop.release()
            del self.saved, self.grads, self.u0
        return g_next[0], self.g_params

    def _start(self, start, with_leaves: bool) -> List[torch.Tensor]:
        """Put the loop at a range's start; returns the start state's differentiable leaves (or [])."""
        kind, tree = start
        if tree is None:
            leaf = self.u0.detach().requires_grad_(with_leaves)
            self.loop.begin(leaf, report=False)
            return [leaf] if with_leaves else []
        if kind == "live":          # a snapshot taken while recomputing: freeze it to thaw it alike
            tensors: List[torch.Tensor] = []
            tree, saved = _freeze(tree, tensors, {}), tuple(tensors)
        else:
            saved = self.saved
        if with_leaves:
            tree, leaves = _thaw(tree, saved)
        else:
            tree, leaves = _rebuild(tree, lambda s, diff: saved[s.index], keep_marker=False), []
        self.loop.restore(tree)
        return leaves

    def _check_end(self, it0: int, it1: int, t_end: torch.Tensor) -> None:
        if not torch.equal(self.loop.t, t_end):
            raise RuntimeError(
                "DirectAdjoint(checkpoints=...) recomputed steps that differ from the forward solve's "
                f"(between loop iterations {it0} and {it1}): f must return the same values for the same "
                "inputs; use DirectAdjoint() without checkpoints for a non-deterministic f")

    def _backward_range(self, start, it0: int, m0: Tuple[int, int], end, g_next):
        """Backpropagate through loop iterations ``it0 .. it1`` given the gradient of the state at
        ``it1`` (``g_next``); returns the gradient of the state at ``it0``.

        A range longer than ``K`` iterations is first recomputed without a graph, taking at most
        ``K - 1`` snapshots inside it, and its at most ``K`` sub-ranges are taken last first, each
        the same way (recursive checkpointing): the graph held at any time spans at most ``K``
        iterations, and at most ``K - 1`` snapshots are held per level of the recursion, whose
        depth is ``log_K`` of the number of iterations.
        """
        it1, t_end, m1, last = end
        loop, K = self.loop, self.K
        n = it1 - it0
        if K > 1 and n > K:
            stride = -(-n // K)
            subs = [(start, it0, m0)]
            with torch.no_grad():
                self._start(start, with_leaves=False)
                while not loop.all_done and loop.n_iter < it1:
                    loop.iterate()
                    if loop.n_iter < it1 and (loop.n_iter - it0) % stride == 0:
                        s, d = self._marks()
                        subs.append((("live", loop.snapshot()), loop.n_iter, (m0[0] + s, m0[1] + d)))
                self._check_end(it0, it1, t_end)
            ends = [(a, snap["t"], ma, False) for (_, snap), a, ma in subs[1:]] + [end]
            for k in range(len(subs) - 1, -1, -1):
                sub_start, a, ma = subs[k]
                subs[k] = None      # this level's snapshot is no longer needed once its range is done
                g_next = self._backward_range(sub_start, a, ma, ends[k], g_next)
            return g_next
        return self._backward_leaf(start, it0, m0, end, g_next)

    def _backward_leaf(self, start, it0: int, m0: Tuple[int, int], end, g_next):
        """Recompute iterations ``it0 .. it1`` with autograd on and backpropagate through them."""
        it1, t_end, (s1, d1), last = end
        s0, d0 = m0
        loop, grads = self.loop, self.grads
        with torch.enable_grad():
            leaves = self._start(start, with_leaves=True)
            while not loop.all_done and loop.n_iter < it1:
                loop.iterate()
            if last:
                loop.close()
        self._check_end(it0, it1, t_end)

        pairs: Dict[int, List[Any]] = {}

        def add(x: torch.Tensor, g: Optional[torch.Tensor]) -> None:
            if g is None or not x.requires_grad:
                return
            if id(x) in pairs:
                pairs[id(x)][1] = pairs[id(x)][1] + g
            else:
                pairs[id(x)] = [x, g]

        recorded = loop.saver.outputs()
        positions = list(range(s0, s1))
        if loop.dense_rec is not None:
            recorded = recorded + loop.dense_rec.outputs()
            positions += list(range(self.n_saver_outputs + d0, self.n_saver_outputs + d1))
        if len(recorded) != len(positions):
            raise RuntimeError("checkpointed DirectAdjoint: the recomputed segment recorded "
                               f"{len(recorded)} values, the forward solve {len(positions)}")
        for q, x in zip(positions, recorded):
            u = self.position[q]
            if self.first[u] == q:
                add(x, grads[u])
        if not last:
            ends = _differentiable_tensors(loop.snapshot())
            if len(ends) != len(g_next) or any(e.shape != g.shape for e, g in zip(ends, g_next) if g is not None):
                raise RuntimeError("checkpointed DirectAdjoint: the recomputed end state of a segment does not "
                                   "match the next segment's snapshot")
            for x, g in zip(ends, g_next):
                add(x, g)
        inputs = leaves + self.params
        if pairs:
            outs, gs = zip(*pairs.values())
            res = torch.autograd.grad(outs, inputs, gs, allow_unused=True)
        else:
            res = [None] * len(inputs)
        for i, g in enumerate(res[len(leaves):]):
            if g is not None:
                self.g_params[i] = g if self.g_params[i] is None else self.g_params[i] + g
        # Nothing of this range's graph may outlive it: the loop drops its references on the next
        # restore, the locals here go now.
        return list(res[:len(leaves)])


class _Function(torch.autograd.Function):
    """Outputs the recorded values of a no-grad solve; the backward recomputes segment by segment."""

    @staticmethod
    def forward(ctx, solve: _CheckpointedSolve, u0: torch.Tensor, *params: torch.Tensor):
        outputs, tensors = solve.forward(u0)
        ctx.solve = solve
        ctx.save_for_backward(u0, *tensors)
        ctx.set_materialize_grads(False)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        u0, *saved = ctx.saved_tensors
        g_u0, g_params = ctx.solve.backward(u0, tuple(saved), grads)
        if not ctx.needs_input_grad[1]:
            g_u0 = None
        elif g_u0 is not None:
            g_u0 = g_u0.reshape(u0.shape)
        return (None, g_u0, *g_params)


def checkpointed_integrate(f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable, opts: SolveOptions,
                           batch_shape: torch.Size, checkpoints: int):
    """``integrate`` for ``DirectAdjoint(checkpoints=K)``: the same ``RawSolution``, whose ``u`` and
    dense output carry the gradient with respect to ``u0`` and the tensors in ``p``."""
    from ._integrate import integrate

    _, found, _ = parameter_leaves(p)
    params, seen = [], set()
    for t in found:
        if id(t) not in seen:
            seen.add(id(t))
            params.append(t)
    if not torch.is_grad_enabled() or not (u0.requires_grad or params):
        return integrate(f_user, u0, p, make_stepper, opts, batch_shape)
    solve = _CheckpointedSolve(f_user, u0, p, make_stepper, opts, batch_shape, checkpoints, params)
    outputs = _Function.apply(solve, u0, *params)
    loop = solve.loop
    loop.set_outputs(solve.expand(outputs))
    raw = loop.result()
    loop.release()          # the forward's last state is in the result or no longer needed
    return raw
