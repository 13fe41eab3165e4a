"""Losses and regularisers for fitting ODE models to data.

* :func:`scaled_mse`, :func:`scaled_mae`: errors divided by a per-species scale, so that species of
  very different magnitude weigh alike (Kim et al. 2021, "Stiff neural ordinary differential
  equations", Chaos 31, 093122).
* :func:`collocation_weights`, :func:`collocation_loss`: a right-hand side fitted to derivative
  estimates without a solve (a warm start), each residual weighted by how far it would move the
  trajectory, so that fast species in quasi-steady state and slow species over long times count as
  they do in a solve.
* :func:`multiple_shooting_loss`: DiffEqFlux's multiple shooting; short windows that each start
  from the data, tied together by a continuity penalty, so the loss landscape of oscillating
  systems loses the local minima of a fit over one long horizon.
* :class:`ConservationLoss`: penalises the drift of user-given invariants (mass, energy, a quantity
  from a Lie symmetry) along a predicted trajectory.
* :class:`AugmentedLagrangian`: equality and inequality constraints on outputs or internal states,
  with multipliers updated between epochs as a callback of :func:`pyode.train.fit`.

This module builds on the core (``ODEProblem``, ``solve``) only; it does not import the training loop.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ._problem import ODEProblem
from ._solve import solve

__all__ = ["scaled_mse", "scaled_mae", "collocation_weights", "collocation_loss", "group_ranges",
           "multiple_shooting_loss", "ConservationLoss", "AugmentedLagrangian"]


# ---- scaled errors -------------------------------------------------------------------------------

def _scaled_residual(name: str, pred: torch.Tensor, target: Any, scale: Any) -> torch.Tensor:
    """``(pred - target) / scale`` after checking shapes and the scale."""
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"{name}: pred must be a torch.Tensor; got {type(pred).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: target must be a torch.Tensor; got {type(target).__name__}")
    if pred.shape != target.shape:
        # Broadcasting (T, n) against (T, 1) or (n,) would silently average the wrong differences.
        raise ValueError(f"{name}: pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
                         "they must match exactly (no broadcasting)")
    residual = pred - target
    if scale is None:
        return residual
    if pred.ndim == 0:
        raise ValueError(f"{name}: a per-species scale needs a last (species) dimension; pred is 0-d")
    s = _check_scale(name, scale, pred.shape[-1], "species", pred.dtype, pred.device)
    return residual / s


def _check_scale(name: str, scale: Any, n: int, what: str, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """``scale`` as a tensor of shape () or (n,), positive and finite."""
    try:
        s = torch.as_tensor(scale, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: scale must be a number or a tensor of shape ({n},); "
                        f"got {type(scale).__name__}") from None
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != n):
        raise ValueError(f"{name}: scale must be a number or have shape ({n},), one entry per {what} "
                         f"(the last dimension); got shape {tuple(s.shape)}")
    flat = s.detach().reshape(-1)
    bad = ~(torch.isfinite(flat) & (flat > 0))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        where = f"scale[{i}]" if s.ndim == 1 else "scale"
        raise ValueError(f"{name}: scale must be positive and finite for every {what}; got {where} = "
                         f"{float(flat[i])!r}. Use the typical magnitude of each {what}, e.g. TimeSeries.scale "
                         "(max |u| per column, never 0)")
    return s


def scaled_mse(pred: torch.Tensor, target: torch.Tensor, scale: Any = None) -> torch.Tensor:
    """Mean over every element of ``((pred - target) / scale)²``.

    Arguments:
        pred, target: tensors of the same shape ``(..., n)``; the last dimension holds the species.
        scale: ``None`` (no scaling), a positive number, or a tensor of shape ``(n,)`` broadcast
            over the last dimension: each species' typical magnitude, so that a species of size
            1e-5 counts as much as one of size 1 (Kim et al. 2021 scale by each species' range).
            A scale that requires grad is differentiated through; usually it is data.

    Returns:
        A 0-d tensor.

    Raises:
        TypeError: ``pred`` or ``target`` is not a tensor, or ``scale`` is not numeric.
        ValueError: the shapes differ, ``scale`` has the wrong shape, or an entry of ``scale`` is
            not positive and finite.
    """
    return _scaled_residual("scaled_mse", pred, target, scale).square().mean()


def scaled_mae(pred: torch.Tensor, target: torch.Tensor, scale: Any = None) -> torch.Tensor:
    """Mean over every element of ``|pred - target| / scale``.

    Arguments, Returns and Raises as :func:`scaled_mse`. Less sensitive to outliers than the MSE;
    its gradient does not shrink as the fit improves, so pair it with a decaying learning rate.
    """
    return _scaled_residual("scaled_mae", pred, target, scale).abs().mean()


# ---- collocation ---------------------------------------------------------------------------------

def collocation_weights(model: Callable, t: Any, u: torch.Tensor, scale: Any = None, *, t0: float = 0.0
                        ) -> torch.Tensor:
    """Weights ``w_ks = 1 / (scale_s (1/(t_k - t0) + |∂f_s/∂u_s(u_k)|))`` for :func:`collocation_loss`.

    An error ``δ`` in the derivative of species ``s`` at ``u_k`` moves the trajectory by about
    ``δ τ_ks``, where ``τ_ks`` is the shorter of the time elapsed since ``t0`` (a slow species
    accumulates the error) and the species' relaxation time ``1 / |∂f_s/∂u_s|`` (a fast species in
    quasi-steady state is shifted once, by the error over its restoring rate). Weighting by
    ``τ / scale`` therefore measures a derivative residual in units of the trajectory error it
    causes. For slow species at log-spaced times this is the usual weight ``t`` (a fit of
    ``du/d ln t``); for Robertson's B, whose three rates cancel to 1e-3 of their size, it is up to
    1e4 times smaller, and without it a fit spends its effort on B's derivative and misses A and C.

    Arguments:
        model: the right-hand side ``model(u)``; its Jacobian's diagonal at ``u`` (detached, from
            pyode's layer-by-layer Jacobians where the model is built from them, else reverse mode).
        t: times ``(K,)``; u: states ``(K, n)``; scale: per-species scale (``None``: 1).
        t0: the time the dynamics start from (every ``t > t0``).

    Returns:
        ``(K, n)`` weights, detached. Recompute them as the model changes (every few hundred
        iterations): the relaxation times are the model's own.
    """
    tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if u.ndim != 2 or u.shape[0] != tt.shape[0]:
        raise ValueError(f"t must be (K,) and u (K, n); got {tuple(tt.shape)} and {tuple(u.shape)}")
    elapsed = tt - float(t0)
    if not bool((elapsed > 0).all()):
        raise ValueError(f"every time must be after t0={float(t0):g}; the first is {float(tt.min()):g}")
    n = u.shape[-1]
    sc = torch.ones(n, dtype=u.dtype, device=u.device) if scale is None else \
        _check_scale("collocation_weights", scale, n, "species", u.dtype, u.device)
    with torch.no_grad():
        diag = torch.diagonal(_jacobian(model, u.detach()), dim1=-2, dim2=-1).abs()
    return (1.0 / (sc * (1.0 / elapsed.to(u.dtype)[:, None] + diag))).detach()


def collocation_loss(model: Callable, u: torch.Tensor, dudt: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``((model(u) - dudt) · weights)²``: a right-hand side fitted to derivative estimates
    (e.g. :func:`pyode.data.estimate_derivatives`) with :func:`collocation_weights`, no solve needed."""
    if dudt.shape != u.shape or weights.shape != u.shape:
        raise ValueError(f"u, dudt and weights must have the same shape (K, n); got {tuple(u.shape)}, "
                         f"{tuple(dudt.shape)} and {tuple(weights.shape)}")
    return ((model(u) - dudt) * weights).square().mean()


def _jacobian(model: Callable, u: torch.Tensor) -> torch.Tensor:
    from ._model_jacobian import supports, value_and_jacobian

    if supports(model):
        return value_and_jacobian(model, u)[1]
    return torch.func.vmap(torch.func.jacrev(lambda x: model(x[None])[0]))(u)


# ---- multiple shooting ---------------------------------------------------------------------------

def group_ranges(T: int, group_size: int) -> List[Tuple[int, int]]:
    """The index ranges ``[start, stop)`` of multiple shooting's groups over ``T`` data points.

    Consecutive groups share one point (``stop`` of one group is ``start + 1`` of the next), as
    DiffEqFlux's ``group_ranges``: ``group_ranges(9, 3) == [(0, 3), (2, 5), (4, 7), (6, 9)]``. Every
    group has ``group_size`` points except possibly the last, which has between 2 and
    ``group_size``.

    Raises:
        ValueError: ``T < 2`` or ``group_size`` not an integer in ``[2, T]``.
    """
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 2:
        raise ValueError(f"multiple shooting needs at least 2 data points; got T = {T!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise ValueError(f"group_size must be an integer in [2, {T}]; got {group_size!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (a group needs a start and an end point); got "
                         f"{group_size}. Use group_size=2 for the shortest windows")
    if group_size > T:
        raise ValueError(f"group_size={group_size} is larger than the number of data points T = {T}; use "
                         f"group_size <= {T} (group_size={T} is single shooting over the whole series)")
    step = int(group_size) - 1
    return [(s, min(s + int(group_size), int(T))) for s in range(0, int(T) - 1, step)]


def _as_times(t: Any, T: int) -> torch.Tensor:
    try:
        ts = torch.as_tensor(t, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"t must be a 1-D sequence of times; got {type(t).__name__}") from None
    if ts.ndim != 1 or ts.shape[0] != T:
        raise ValueError(f"t must have shape (T,) = ({T},) to match u's first dimension; got {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("t contains NaN or infinite values")
    steps = ts[1:] - ts[:-1]
    if bool((steps <= 0).any()):
        i = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(f"t must strictly increase; t[{i}] = {float(ts[i])!r} and t[{i + 1}] = {float(ts[i + 1])!r}")
    return ts


def multiple_shooting_loss(f: Callable, p: Any, t: Any, u: torch.Tensor, *, group_size: int, alg: Any,
                           continuity_weight: float = 100.0, loss: Callable = scaled_mse, scale: Any = None,
                           jac: Optional[Callable] = None,
                           **solve_kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multiple-shooting loss of the model ``du/dt = f(u, p, t)`` against data ``(t, u)``.

    The data are split into consecutive groups of ``group_size`` points that overlap by one
    point (:func:`group_ranges`). Group ``i`` is solved from the data value at its first point
    over its own window, saving at its own times (one ``solve`` call per group: the windows
    differ). The loss is::

        Σ_i loss(pred_i, u[group i], scale)
          + continuity_weight · Σ_i loss(pred_i[-1], pred_{i+1}[0], scale)

    where ``pred_{i+1}[0]`` is the data value at the shared point. This is DiffEqFlux's
    ``multiple_shoot`` except for the continuity measure: DiffEqFlux defaults to
    ``sum(abs, û_end - u_0)``; here ``loss`` serves for both terms, so the scale applies to both
    and the continuity term is on the same footing as the data. Because every group restarts
    from the data, an error made early cannot push later windows off course; the continuity
    term makes the groups agree where they meet, so that at a minimum they join into one
    trajectory. With data starts the continuity term is a second penalty, weighted by
    ``continuity_weight``, on each group's last point (the next group's first data value).

    Arguments:
        f: right-hand side ``f(u, p, t)`` as for :class:`~pyode.ODEProblem`.
        p: parameters handed to ``f`` (a tensor, container of tensors or ``nn.Module``); the loss
            is differentiable with respect to every tensor in it that requires grad.
        t: data times, shape ``(T,)``, strictly increasing; used as float64 and not differentiated.
        u: data values, shape ``(T, n)`` or ``(T, *batch, n)`` for a batch of series observed at
            the same times.
        group_size: points per group, an integer in ``[2, T]``; ``T`` is single shooting.
        alg: the algorithm object, e.g. ``pyode.Tsit5()`` or ``pyode.Rodas5P()``.
        continuity_weight: weight (``>= 0``) of the continuity term; DiffEqFlux's default is 100.
        loss: ``loss(pred, target, scale=scale) -> 0-d tensor``, used for the data and for the
            continuity term (default :func:`scaled_mse`).
        scale: per-species scale passed to ``loss`` (see :func:`scaled_mse`).
        jac: optional Jacobian ``jac(u, p, t)`` for stiff algorithms.
        **solve_kwargs: passed to :func:`pyode.solve` for every group (``reltol``, ``abstol``,
            ``sensealg``, ...); ``saveat`` is set per group and may not be given.

    Returns:
        ``(loss, prediction)``: the 0-d loss, and the groups' predictions joined into one tensor
        of the shape of ``u``. ``prediction[0]`` is ``u[0]``; at a point shared by groups ``i``
        and ``i+1`` it holds the end of group ``i``'s prediction (group ``i+1`` starts from the
        data there), so every other entry is a genuine prediction from the start of its group.

    Raises:
        TypeError / ValueError naming the argument: ``u`` is not a tensor of at least 2
        dimensions, ``t`` does not match it or does not increase, ``group_size`` is not in
        ``[2, T]``, ``continuity_weight`` is negative or not finite, ``loss`` is not callable, or
        ``saveat`` was given. :class:`pyode.SolveError` when a group's solve fails.
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor of shape (T, n); got {type(u).__name__}")
    if u.ndim < 2:
        raise ValueError(f"u must have shape (T, n) or (T, *batch, n); got {tuple(u.shape)}")
    T = u.shape[0]
    ts = _as_times(t, T).to(u.device)
    ranges = group_ranges(T, group_size)
    if (isinstance(continuity_weight, bool) or not isinstance(continuity_weight, numbers.Real)
            or not math.isfinite(continuity_weight) or continuity_weight < 0):
        raise ValueError(f"continuity_weight must be a finite number >= 0; got {continuity_weight!r}")
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(pred, target, scale=scale); got {type(loss).__name__}")
    if "saveat" in solve_kwargs:
        raise ValueError("multiple_shooting_loss saves each group at its own data times; remove saveat")

    preds = []
    for start, stop in ranges:
        prob = ODEProblem(f, u[start], (float(ts[start]), float(ts[stop - 1])), p, jac=jac)
        preds.append(solve(prob, alg, saveat=ts[start:stop], **solve_kwargs).u)
    total = sum(loss(pred, u[start:stop], scale=scale) for pred, (start, stop) in zip(preds, ranges))
    if continuity_weight > 0 and len(preds) > 1:
        total = total + continuity_weight * sum(loss(a[-1], b[0], scale=scale) for a, b in zip(preds, preds[1:]))
    prediction = torch.cat([preds[0]] + [pred[1:] for pred in preds[1:]], 0)
    return total, prediction


# ---- conservation laws ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ConservationLoss:
    """Penalty on the drift of quantities that the true dynamics conserve.

    ``loss = ConservationLoss(invariants)``; ``loss(u_pred, t)`` returns::

        weight · mean over times, batch members and invariants of ((I(u(t)) - I(u(t0))) / scale)²

    where ``t0`` is the first time (the mean includes that zero term) and ``I = invariants``.
    The regulariser needs no data: apply it to predictions over a longer window than the data
    cover, or from extra initial states, to carry the conservation law where there are no data.

    Arguments:
        invariants: ``invariants(u, t) -> (*u.shape[:-1], m)``: the ``m`` conserved quantities
            (total mass, energy, a quantity from a Lie symmetry) at states ``u`` and float64 times
            ``t`` of shape ``u.shape[:-1]``; e.g. ``lambda u, t: charged_particle_invariants(u, p, t)``.
        weight: factor of the penalty, a finite number ``>= 0``.
        scale: ``None``, a positive number, or a tensor of shape ``(m,)``: the size of each
            invariant's drift that counts as 1. The default is, per invariant, ``|I(u(t0))|``
            maximised over the batch members and detached (so the penalty measures relative drift
            and does not reward growing ``|I0|``), clamped below at ``min_scale``. The maximum over
            the batch, rather than each member's own ``|I0|``, keeps a member whose invariant
            happens to be 0 at ``t0`` (a zero momentum, say) from dividing its drift by
            ``min_scale``; an invariant that is (nearly) 0 for every member still does, which
            inflates its penalty by up to ``1 / min_scale²``: pass ``scale`` for such invariants.
        min_scale: the clamp of the default scale, a positive number (default 1e-6).

    Raises:
        TypeError / ValueError naming the argument for a non-callable ``invariants``, a negative
        or non-finite weight, or a scale that is not positive and finite.
    """

    invariants: Callable
    weight: float = 1.0
    scale: Any = None
    min_scale: float = 1e-6

    def __post_init__(self):
        if not callable(self.invariants):
            raise TypeError(f"invariants must be callable as invariants(u, t) -> (..., m); got "
                            f"{type(self.invariants).__name__}")
        if (isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real)
                or not math.isfinite(self.weight) or self.weight < 0):
            raise ValueError(f"ConservationLoss weight must be a finite number >= 0; got {self.weight!r}")
        if (isinstance(self.min_scale, bool) or not isinstance(self.min_scale, numbers.Real)
                or not math.isfinite(self.min_scale) or self.min_scale <= 0):
            raise ValueError(f"ConservationLoss min_scale must be a finite number > 0; got {self.min_scale!r}")
        if self.scale is not None:
            s = torch.as_tensor(self.scale, dtype=torch.float64).detach()
            if s.ndim > 1:
                raise ValueError(f"ConservationLoss scale must be a number or have shape (m,), one entry per "
                                 f"invariant; got shape {tuple(s.shape)}")
            _check_scale("ConservationLoss", s, s.numel() if s.ndim else 1, "invariant", torch.float64, "cpu")

    def _evaluate(self, u: torch.Tensor, t: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(I, I0)`` of shapes ``(T, *batch, m)`` and ``(*batch, m)``."""
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"u_pred must be a torch.Tensor of shape (T, *batch, n); got {type(u).__name__}")
        if u.ndim < 2:
            raise ValueError(f"u_pred must have shape (T, *batch, n) with a leading time dimension; got "
                             f"{tuple(u.shape)}")
        T = u.shape[0]
        try:
            ts = torch.as_tensor(t, dtype=torch.float64, device=u.device).detach()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"t must be a 1-D sequence of times; got {type(t).__name__}") from None
        if ts.ndim != 1 or ts.shape[0] != T:
            raise ValueError(f"t must have shape (T,) = ({T},) to match u_pred's first dimension; got "
                             f"{tuple(ts.shape)}")
        tb = ts.reshape(T, *([1] * (u.ndim - 2))).expand(u.shape[:-1])
        values = self.invariants(u, tb)
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"invariants(u, t) must return a tensor; it returned {type(values).__name__}")
        if values.ndim != u.ndim or values.shape[:-1] != u.shape[:-1] or values.shape[-1] == 0:
            lead = ", ".join(map(str, u.shape[:-1]))
            raise ValueError(f"invariants(u, t) must return shape (*u.shape[:-1], m) = ({lead}, m) "
                             f"with m >= 1; it returned {tuple(values.shape)} for u of shape {tuple(u.shape)}. "
                             "For a single invariant, return value[..., None]")
        return values, values[0]

    def _scale(self, I0: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return I0.detach().abs().reshape(-1, I0.shape[-1]).amax(0).clamp(min=self.min_scale)
        return _check_scale("ConservationLoss", self.scale, I0.shape[-1], "invariant", I0.dtype, I0.device)

    def __call__(self, u_pred: torch.Tensor, t: Any) -> torch.Tensor:
        """The penalty (a 0-d tensor, differentiable) for a trajectory ``u_pred`` of shape
        ``(T, *batch, n)`` saved at times ``t`` of shape ``(T,)``.

        Raises:
            TypeError / ValueError when the shapes of ``u_pred``, ``t`` or the invariants' output
            do not fit, or a given ``scale`` does not have one entry per invariant.
        """
        values, start = self._evaluate(u_pred, t)
        return self.weight * ((values - start) / self._scale(start)).square().mean()

    def drift(self, u_pred: torch.Tensor, t: Any) -> torch.Tensor:
        """The raw drift for monitoring: ``max |I(u(t)) - I(u(t0))|`` over times and batch members.

        Returns:
            A detached tensor of shape ``(m,)``, one entry per invariant, unscaled and unweighted.
        """
        with torch.no_grad():
            values, start = self._evaluate(u_pred, t)
            return (values - start).abs().reshape(-1, values.shape[-1]).amax(0)


# ---- augmented Lagrangian ------------------------------------------------------------------------

def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (the number of constraint values after flattening); "
                         f"got {value!r}")
    return int(value)


def _real(name: str, value: Any, *, low: float, inclusive: bool, hint: str = "") -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value >= low if inclusive else value > low))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {low:g}; got {value!r}{hint}")
    return float(value)


class AugmentedLagrangian:
    """Equality constraints ``h = 0`` and inequality constraints ``g <= 0`` by an augmented Lagrangian.

    Add :meth:`penalty` to the loss and pass the object as a callback to :func:`pyode.train.fit`
    (which calls :meth:`on_epoch_end` and checkpoints :meth:`state_dict`)::

        al = AugmentedLagrangian(n_equality=1, n_inequality=4)
        fit(model, lambda m, e: objective(m) + al.penalty(h=h(m), g=g(m)), epochs=50,
            optimizer="lbfgs", callbacks=[al])

    The penalty is the augmented Lagrangian of Nocedal & Wright, "Numerical Optimization", 2nd
    ed., §17.3 (equalities) and §17.4 (inequalities through slacks eliminated in closed form)::

        λᵀh + μ/2 ‖h‖² + Σ_j (max(0, λ_g,j + μ g_j)² - λ_g,j²) / (2μ)

    Between epochs the multipliers move to the first-order estimates ``λ ← λ + μ h`` and
    ``λ_g ← max(0, λ_g + μ g)``, from the constraint values of the last :meth:`penalty` call.
    They converge to the Lagrange multipliers of ``objective + λᵀh + λ_gᵀg`` (so ``λ_g >= 0``).

    Schedule: every ``update_every`` epochs (after epochs ``update_every - 1``, ``2 update_every
    - 1``, ...; counted by fit's epoch numbers, so resuming keeps the schedule) the multipliers
    are updated with the current μ; then, if the violation (see :attr:`violation`) exceeds
    ``tolerance`` and is more than ``shrink`` times the violation at the previous update, μ is
    multiplied by ``growth`` up to ``mu_max``. The first update never grows μ. This is the
    classic rule (Conn, Gould & Toint's LANCELOT; Birgin & Martínez 2014): raise μ only when
    the multiplier steps stop reducing the violation. The method assumes each epoch (or each
    ``update_every`` epochs) roughly minimises the penalised loss for fixed multipliers; L-BFGS
    epochs do, a single Adam step does not (use a larger ``update_every`` with Adam).

    Constraint values may have any shape (per time, per batch member); they are flattened, and
    their number must equal ``n_equality`` / ``n_inequality`` on every call.

    Unlike the configuration objects of this package an AugmentedLagrangian is mutable: it holds
    the multipliers, μ and the last constraint values. Multipliers are kept in float64 on the CPU
    and converted to the constraints' dtype and device in :meth:`penalty`.

    Arguments:
        n_equality: number of equality constraint values (after flattening), ``>= 0``.
        n_inequality: number of inequality constraint values, ``>= 0``; at least one count is positive.
        mu: initial penalty parameter, ``> 0``.
        growth: factor by which μ grows, ``>= 1`` (1 keeps μ fixed).
        mu_max: upper bound of μ, ``>= mu``.
        update_every: epochs between multiplier updates, an integer ``>= 1``.
        tolerance: violation at or below which μ is not increased, ``>= 0``.
        shrink: the factor by which the violation must shrink between updates to keep μ, in ``(0, 1]``.

    Raises:
        ValueError naming the argument for any value outside the ranges above.
    """

    def __init__(self, *, n_equality: int = 0, n_inequality: int = 0, mu: float = 1.0, growth: float = 2.0,
                 mu_max: float = 1e6, update_every: int = 1, tolerance: float = 1e-6, shrink: float = 0.25):
        self.n_equality = _count("n_equality", n_equality)
        self.n_inequality = _count("n_inequality", n_inequality)
        if self.n_equality == 0 and self.n_inequality == 0:
            raise ValueError("AugmentedLagrangian needs at least one constraint; pass n_equality=... (number of "
                             "values h with h = 0) and/or n_inequality=... (number of values g with g <= 0)")
        self._mu = _real("mu", mu, low=0.0, inclusive=False)
        self.growth = _real("growth", growth, low=1.0, inclusive=True)
        self.mu_max = _real("mu_max", mu_max, low=self._mu, inclusive=True, hint=f" (it must be >= mu = {self._mu:g})")
        if isinstance(update_every, bool) or not isinstance(update_every, numbers.Integral) or update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1 (epochs between multiplier updates); got "
                             f"{update_every!r}")
        self.update_every = int(update_every)
        self.tolerance = _real("tolerance", tolerance, low=0.0, inclusive=True)
        self.shrink = _real("shrink", shrink, low=0.0, inclusive=False)
        if self.shrink > 1:
            raise ValueError(f"shrink must be in (0, 1]: the violation must fall to shrink times its previous value "
                             f"to keep mu; got {shrink!r}")
        self._lambda_eq = torch.zeros(self.n_equality, dtype=torch.float64)
        self._lambda_ineq = torch.zeros(self.n_inequality, dtype=torch.float64)
        self._last_eq: Optional[torch.Tensor] = None
        self._last_ineq: Optional[torch.Tensor] = None
        self._previous_violation: Optional[float] = None

    # -- the penalty ------------------------------------------------------------------------------

    def _flatten(self, name: str, value: Any, expected: int, count_name: str) -> Optional[torch.Tensor]:
        if expected == 0:
            if value is not None:
                n = value.numel() if isinstance(value, torch.Tensor) else "some"
                raise ValueError(f"penalty got {name} ({n} values) but the AugmentedLagrangian was built with "
                                 f"{count_name}=0; pass {count_name}={n} when constructing it")
            return None
        if value is None:
            raise ValueError(f"penalty needs {name}: the AugmentedLagrangian was built with {count_name}="
                             f"{expected}; pass {name}=... on every call (the multiplier update uses the last values)")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"penalty: {name} must be a floating torch.Tensor; got "
                            f"{type(value).__name__ if not isinstance(value, torch.Tensor) else value.dtype}")
        flat = value.reshape(-1)
        if flat.shape[0] != expected:
            raise ValueError(f"penalty: {name} has {flat.shape[0]} values (shape {tuple(value.shape)}) but "
                             f"{count_name}={expected}; the number of constraint values must stay fixed, "
                             f"one multiplier per value")
        return flat

    def penalty(self, h: Optional[torch.Tensor] = None, g: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The augmented-Lagrangian terms for equality values ``h`` and inequality values ``g``.

        Arguments:
            h: values that should be 0, any shape with ``n_equality`` elements (``None`` when
                ``n_equality == 0``).
            g: values that should be ``<= 0``, any shape with ``n_inequality`` elements.

        Returns:
            A 0-d tensor ``λᵀh + μ/2 ‖h‖² + Σ (max(0, λ_g + μ g)² - λ_g²) / (2μ)``, differentiable
            with respect to ``h`` and ``g``. The detached values are remembered for the next
            multiplier update and for :attr:`violation`.

        Raises:
            ValueError: a declared constraint is missing, an undeclared one is given, or the number
                of values differs from the declared count. TypeError: not a floating tensor.
        """
        h_flat = self._flatten("h", h, self.n_equality, "n_equality")
        g_flat = self._flatten("g", g, self.n_inequality, "n_inequality")
        mu = self._mu
        terms = []
        if h_flat is not None:
            lam = self._lambda_eq.to(dtype=h_flat.dtype, device=h_flat.device)
            terms.append((lam * h_flat).sum() + 0.5 * mu * h_flat.square().sum())
        if g_flat is not None:
            lam = self._lambda_ineq.to(dtype=g_flat.dtype, device=g_flat.device)
            # Minimising over the slack s >= 0 of g + s = 0 in closed form (N&W 17.64-17.65).
            terms.append(((lam + mu * g_flat).clamp(min=0).square() - lam.square()).sum() / (2 * mu))
        self._last_eq = None if h_flat is None else h_flat.detach().to("cpu", torch.float64).clone()
        self._last_ineq = None if g_flat is None else g_flat.detach().to("cpu", torch.float64).clone()
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    # -- monitoring -------------------------------------------------------------------------------

    @staticmethod
    def _violation_of(h: Optional[torch.Tensor], g: Optional[torch.Tensor]) -> float:
        parts = [0.0]
        if h is not None:
            parts.append(float(h.abs().max()))
        if g is not None:
            parts.append(float(g.clamp(min=0).max()))
        return max(parts)

    @property
    def violation(self) -> float:
        """``max(max |h|, max(g, 0))`` of the last :meth:`penalty` call; ``inf`` before the first."""
        if self._last_eq is None and self._last_ineq is None:
            return math.inf
        return self._violation_of(self._last_eq, self._last_ineq)

    @property
    def mu(self) -> float:
        """The current penalty parameter μ."""
        return self._mu

    @property
    def lambda_eq(self) -> torch.Tensor:
        """A copy of the equality multipliers (float64, shape ``(n_equality,)``)."""
        return self._lambda_eq.clone()

    @property
    def lambda_ineq(self) -> torch.Tensor:
        """A copy of the inequality multipliers (float64, shape ``(n_inequality,)``, all ``>= 0``)."""
        return self._lambda_ineq.clone()

    def __repr__(self) -> str:
        return (f"AugmentedLagrangian(n_equality={self.n_equality}, n_inequality={self.n_inequality}, "
                f"mu={self._mu:g}, violation={self.violation:.3g})")

    # -- callback ---------------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, history: Any = None) -> None:
        """Update the multipliers and μ after every ``update_every``-th epoch (see the class docstring).

        Raises:
            RuntimeError: :meth:`penalty` was never called, so there are no constraint values.
        """
        if (int(epoch) + 1) % self.update_every != 0:
            return
        if self._last_eq is None and self._last_ineq is None:
            raise RuntimeError("AugmentedLagrangian.on_epoch_end: penalty(h=..., g=...) has not been called; add "
                               "al.penalty(...) to the loss so that the multipliers see the constraint values")
        mu = self._mu
        if self._last_eq is not None:
            self._lambda_eq = self._lambda_eq + mu * self._last_eq
        if self._last_ineq is not None:
            self._lambda_ineq = (self._lambda_ineq + mu * self._last_ineq).clamp(min=0)
        violation = self.violation
        previous = self._previous_violation
        if previous is not None and violation > self.tolerance and violation > self.shrink * previous:
            self._mu = min(mu * self.growth, self.mu_max)
        self._previous_violation = violation

    def state_dict(self) -> Dict[str, Any]:
        """Multipliers, μ, the violation at the last update and the last constraint values."""
        return {
            "n_equality": self.n_equality,
            "n_inequality": self.n_inequality,
            "lambda_eq": self._lambda_eq.clone(),
            "lambda_ineq": self._lambda_ineq.clone(),
            "mu": self._mu,
            "previous_violation": self._previous_violation,
            "last_eq": None if self._last_eq is None else self._last_eq.clone(),
            "last_ineq": None if self._last_ineq is None else self._last_ineq.clone(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, so that a resumed run continues exactly.

        Raises:
            ValueError: the state was saved for other constraint counts.
        """
        counts = (state.get("n_equality"), state.get("n_inequality"))
        if counts != (self.n_equality, self.n_inequality):
            raise ValueError(f"the AugmentedLagrangian state holds n_equality={counts[0]}, n_inequality={counts[1]} "
                             f"but this one has n_equality={self.n_equality}, n_inequality={self.n_inequality}; "
                             "construct it with the counts of the run that saved the state")
        self._lambda_eq = torch.as_tensor(state["lambda_eq"], dtype=torch.float64).clone()
        self._lambda_ineq = torch.as_tensor(state["lambda_ineq"], dtype=torch.float64).clone()
        self._mu = float(state["mu"])
        self._previous_violation = None if state["previous_violation"] is None else float(state["previous_violation"])
        self._last_eq = None if state["last_eq"] is None else torch.as_tensor(state["last_eq"]).clone()
        self._last_ineq = None if state["last_ineq"] is None else torch.as_tensor(state["last_ineq"]).clone()
