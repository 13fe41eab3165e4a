"""Sensitivity algorithms: how ``solve`` differentiates, passed as ``solve(..., sensealg=...)``.

Named as in SciMLSensitivity.jl. Whatever the choice, gradients reach ``u0`` and every tensor in
``p`` that requires grad (a tensor, a tuple/list/dict of tensors or an ``nn.Module``) as ordinary
torch gradients; they differ in cost, memory and in which gradient they compute (of the discrete
solution, or a discretisation of the exact one).
"""
from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass, fields
from typing import Optional

__all__ = ["AbstractSensitivityAlgorithm", "DirectAdjoint", "ForwardSensitivity", "BacksolveAdjoint",
           "InterpolatingAdjoint", "QuadratureAdjoint", "GaussAdjoint"]


class AbstractSensitivityAlgorithm(abc.ABC):
    """Interface of every sensitivity algorithm."""

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("bool", bool) and not isinstance(v, bool):
                raise ValueError(f"{f.name} must be True or False; got {v!r}")

    def __repr__(self) -> str:
        args = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != f.default] \
            if hasattr(self, "__dataclass_fields__") else []
        return f"{type(self).__name__}({', '.join(args)})"


@dataclass(frozen=True, repr=False)
class DirectAdjoint(AbstractSensitivityAlgorithm):
    """Backpropagation through the solver's operations: the default.

    The exact gradient of the computed discrete solution (reverse-accurate, as PNODE argues),
    stages, Jacobians, LU solves and Newton iterations included; step sizes and accept/reject
    decisions are treated as fixed. Works with every algorithm, and also reaches tensors ``f``
    captures from outside ``p``. Memory grows with the number of steps (the autograd graph of the
    whole solve is kept); the backward pass costs about 2-3x the forward solve.

    Arguments:
        checkpoints: ``None`` (default) keeps the whole graph, as described above. An integer
            ``K ≥ 1`` bounds the memory by recomputation: the forward solve runs without a graph
            and keeps at most ``K`` snapshots of the complete solver state (the first is ``u0``
            itself; then one every ``s`` loop iterations, ``s`` doubling whenever a snapshot would
            exceed ``K``, so each of the at most ``K`` segments between them has at most
            ``max(1, 2N/K)`` of the solve's ``N`` loop iterations). The backward pass takes the
            segments last first, recursively: a segment of more than ``K`` iterations is
            recomputed without a graph keeping at most ``K - 1`` snapshots inside it, and its
            parts are taken the same way; a part of at most ``K`` iterations is recomputed with
            autograd on and backpropagated through. Memory: ``K`` snapshots per level of the
            recursion (``log_K(N / K)`` levels) plus the graph of at most ``K`` iterations,
            whatever ``N`` (with ``K = 1``: one snapshot, the whole solve's graph in the backward
            pass). Cost: each level recomputes the solve once without a graph, and the last once
            more with it: measured 1.5-2x the time of forward plus backward without checkpoints
            for 100-1600 steps with ``K = 8``. The gradient is the same as
            without checkpoints, to round-off: the recomputation repeats the same steps, the same
            accept/reject decisions and the same Jacobian reuse. The forward's snapshots are saved with
            ``ctx.save_for_backward``, so ``torch.autograd.graph.save_on_cpu`` and other
            saved-tensor hooks apply to them.

            With checkpoints only ``u0`` and the tensors in ``p`` are differentiated (``sol.u`` and
            ``sol(t)``): a tensor that ``f`` captures from elsewhere gets no gradient, as with
            :class:`ForwardSensitivity`. ``f`` must be deterministic (the recomputation checks
            that it reproduces the forward solve's steps and raises otherwise).

    Raises:
        ValueError: ``checkpoints`` is neither None nor a positive integer.
    """

    checkpoints: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        k = self.checkpoints
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise ValueError(f"checkpoints must be None or a positive integer (the most snapshots of the solver "
                             f"state kept for the backward pass); got {k!r}. Pass e.g. checkpoints=8, or None "
                             "to keep the whole graph")


@dataclass(frozen=True, repr=False)
class ForwardSensitivity(AbstractSensitivityAlgorithm):
    """Forward sensitivity equations: ``S = ∂u/∂(u0, θ)`` integrated alongside ``u``.

    ``S' = J S + ∂f/∂θ`` with ``S(t0) = [I, 0]``, solved together with ``u`` by the chosen
    algorithm (the augmented system is stiff exactly when the problem is; stiff methods get its
    Jacobian by forward-mode AD), with the error of ``S`` controlled too, as in SciMLSensitivity.
    The Jacobian-vector products come from ``torch.func.jvp``, one column of ``S`` per tangent, all
    columns in one vmapped call. The gradient is then ``Σ_t Sᵀ(t) ∂L/∂u(t)`` for any loss, at no
    extra solve.

    The cost grows with ``m = n + P`` (states plus parameter entries that require grad): the
    augmented state has ``n (1 + m)`` components per batch member. The choice for few parameters
    (SciML uses forward mode below about 100 states plus parameters). Only tensors in ``u0`` and
    ``p`` are differentiated: a tensor that ``f`` captures from elsewhere gets no gradient.
    ``f`` must be traceable by ``torch.func`` (vmap and forward-mode AD).
    """


@dataclass(frozen=True, repr=False)
class BacksolveAdjoint(AbstractSensitivityAlgorithm):
    """Chen et al.'s adjoint (torchdiffeq's ``odeint_adjoint``): ``u``, ``λ`` and ``μ`` solved
    together backwards from the final state, so the forward solve keeps nothing but the saved states.

    ``u' = f``, ``λ' = -Jᵀλ``, ``μ' = -λᵀ ∂f/∂θ`` per member (μ as in :class:`InterpolatingAdjoint`),
    by the forward algorithm at the forward tolerances; a stiff method gets the Jacobian of this
    system (second derivatives of ``f``) by forward-mode AD.

    Warning: solving ``u`` backwards is unstable when the forward problem is dissipative: on stiff
    problems (Robertson, kinetics) the backward ``u`` leaves the true solution and the gradient is
    wrong or the backward solve fails. ``checkpointing=True`` (the default, as SciMLSensitivity)
    restarts ``u`` from the saved forward state at every save time, which helps when the save times
    are dense enough; prefer :class:`InterpolatingAdjoint` or :class:`GaussAdjoint` for stiff problems.

    Raises (in the backward pass) ``RuntimeError`` naming the interval and the alternatives:

    * before solving anything backwards, when at the saved states on both ends of an interval
      between save times the real parts of ``∂f/∂u``'s eigenvalues spread so far that re-solving
      ``u`` over it amplifies rounding errors beyond ``u`` itself (spread × length > ln(1/eps): 36
      in float64, 16 in float32). Checked while batch size × n² ≤ 2²⁰;
    * when a backward interval takes more than 4× the forward solve's steps plus 100 (a diverging
      ``u`` shrinks its steps towards zero), or fails as a solve.

    Arguments:
        checkpointing: as above.
        seminorm: leave ``μ`` out of the backward solve's error control (Kidger, Chen & Lyons 2021;
            torchdiffeq's ``adjoint_options=dict(norm="seminorm")``); ``u`` and ``λ`` stay in it.
    """

    checkpointing: bool = True
    seminorm: bool = False


@dataclass(frozen=True, repr=False)
class InterpolatingAdjoint(AbstractSensitivityAlgorithm):
    """Continuous adjoint with ``u(t)`` interpolated from the forward solve (SciMLSensitivity's
    ``InterpolatingAdjoint``).

    ``λ' = -Jᵀλ`` and ``μ' = -λᵀ ∂f/∂θ`` are solved together backwards, per batch member, by the
    forward algorithm at the forward tolerances (the adjoint of a stiff problem is stiff; its
    Jacobian ``[[-Jᵀ, 0], [-(∂f/∂θ)ᵀ, 0]]`` is formed per member, so a stiff solve costs
    O((n + P)³) per step and member: prefer :class:`GaussAdjoint` for many parameters).

    Arguments:
        checkpointing: ``False`` keeps the forward dense output (memory: every step's interpolant);
            ``True`` keeps only the saved states and re-solves forward on each interval between save
            times during the backward pass (memory: the saved states plus one interval's steps).
        seminorm: leave ``μ`` out of the adjoint's error control (Kidger, Chen & Lyons, "Hey, that's
            not an ODE", 2021): fewer backward steps, the parameter integral as accurate as the steps
            make it.

    ``μ`` is per member (``(B, P)`` in the state) and needs ``f`` evaluated member by member
    (``torch.func.vmap``) with parameters shared by the batch; per-member parameters raise an error
    pointing to :class:`GaussAdjoint`. Gradients reach ``u0`` and tensors in ``p`` through ``sol.u``;
    ``sol(t)`` is not differentiable with it, nor a batch in which a member failed.
    """

    checkpointing: bool = False
    seminorm: bool = False


@dataclass(frozen=True, repr=False)
class GaussAdjoint(AbstractSensitivityAlgorithm):
    """Continuous adjoint with the parameter gradient by Gauss-Legendre quadrature
    (SciMLSensitivity's ``GaussAdjoint``): the choice for stiff problems with many parameters.

    The adjoint ``λ' = -Jᵀλ`` is solved backwards, per batch member, by the forward algorithm at
    the forward tolerances, with ``u(t)`` from the forward solve's dense output or, with
    ``checkpointing=True``, re-solved from the saved states interval by interval; ``∂L/∂θ = ∫ λᵀ
    ∂f/∂θ dt`` is accumulated on every adjoint step by 3-point Gauss-Legendre quadrature, one
    vector-Jacobian product of the whole batch per node. Cost O(n³) per member and step (the
    adjoint of a stiff problem is stiff, and is solved with the stiff method's machinery, Jacobian
    ``-Jᵀ``) plus O(P) per step; memory independent of P beyond one gradient.

    The gradient is that of the exact solution, discretised (not of the discrete solution, as
    :class:`DirectAdjoint`): the two agree to the tolerances. Gradients reach ``u0`` and the tensors
    in ``p`` through ``sol.u`` (the saved states); ``sol(t)`` values are not differentiable with
    it, and a batch in which a member failed cannot be differentiated (use DirectAdjoint).
    """

    checkpointing: bool = False


@dataclass(frozen=True, repr=False)
class QuadratureAdjoint(AbstractSensitivityAlgorithm):
    """Continuous adjoint for ``λ`` alone, the parameter gradient by adaptive Gauss-Kronrod
    quadrature (SciMLSensitivity's ``QuadratureAdjoint``, same defaults).

    As :class:`GaussAdjoint`, but ``∫ λᵀ ∂f/∂θ dt`` is integrated on each adjoint step with the
    G7/K15 pair, bisecting the step until the Kronrod and Gauss values of the gradient agree to
    ``max(abstol, reltol · max|gradient piece|)`` (at most 8 levels): 15 vector-Jacobian products
    per step and level instead of GaussAdjoint's 3, for a parameter gradient whose accuracy is set
    by ``abstol``/``reltol`` rather than by the adjoint's steps.

    Arguments:
        abstol, reltol: tolerances of the quadrature (defaults 1e-6, 1e-3).
        checkpointing: as for :class:`GaussAdjoint`.
    """

    abstol: float = 1e-6
    reltol: float = 1e-3
    checkpointing: bool = False

    def __post_init__(self):
        super().__post_init__()
        for name in ("abstol", "reltol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive number; got {v!r}")
