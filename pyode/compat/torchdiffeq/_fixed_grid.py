"""torchdiffeq 0.2.5's fixed-grid solvers: euler, midpoint, heun2, heun3, rk4 and the Adams family.

The results agree with torchdiffeq's to round-off and cost the same number of evaluations of
``func``: the same stages at the same times (including the ``perturb`` nudges), the same grid,
the same interpolation of the outputs and the same event bisection. Where torchdiffeq's
behaviour is surprising it is kept on purpose and the spot says so, because a drop-in
replacement that quietly differs is worse than one that is quietly odd.

The caller has already normalised the problem: ``y0`` is a flat floating tensor, ``t`` is
strictly increasing (decreasing time is handled by negation upstream) and ``func(t, y)`` maps a
0-d time and the flat state to the flat derivative. Only ``options`` is checked here.
"""
from __future__ import annotations

import collections
import functools
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Optional

import torch

# Method name -> the class name torchdiffeq gives it; the name appears in warning texts.
FIXED_GRID_METHODS = {
    "euler": "Euler",
    "midpoint": "Midpoint",
    "heun2": "Heun2",
    "heun3": "Heun3",
    "rk4": "RK4",
    "explicit_adams": "AdamsBashforth",
    "implicit_adams": "AdamsBashforthMoulton",
    "fixed_adams": "AdamsBashforthMoulton",
}

_ADAMS_METHODS = frozenset({"explicit_adams", "implicit_adams", "fixed_adams"})
_ADAMS_MIN_ORDER = 4  # below this many history terms the Adams solver takes RK4 steps
_ADAMS_MAX_ORDER = 12
_ADAMS_MAX_ITERS = 4
_MAX_EVENT_STEPS = 20000
_INTERPOLATIONS = ("linear", "cubic")
_COMMON_OPTIONS = frozenset({"step_size", "grid_constructor", "interp", "perturb"})
_ADAMS_OPTIONS = frozenset({"max_order", "max_iters", "implicit"})
# torchdiffeq hands its solvers rtol, atol and norm next to the options and drops them there.
_IGNORED_OPTIONS = frozenset({"rtol", "atol", "norm"})

_ONE_THIRD = 1 / 3
_TWO_THIRDS = 2 / 3


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    step_size: Any
    grid_constructor: Optional[Callable]
    interp: str
    perturb: bool
    implicit: bool
    max_order: int
    max_iters: int


def _parse_options(method: str, options: dict) -> _Options:
    """Reads and checks the options the way torchdiffeq's solver constructors do.

    The checks come in torchdiffeq's order (unknown keys, step_size/grid_constructor, Adams
    settings), so a user sees the same first complaint. torchdiffeq asserts where this module
    raises ValueError.
    """
    adams = method in _ADAMS_METHODS
    known = _COMMON_OPTIONS | _IGNORED_OPTIONS | (_ADAMS_OPTIONS if adams else frozenset())
    unknown = {key: value for key, value in options.items() if key not in known}
    if unknown:
        warnings.warn(f"{FIXED_GRID_METHODS[method]}: Unexpected arguments {unknown}")

    step_size = options.get("step_size")
    grid_constructor = options.get("grid_constructor")
    if step_size is not None and grid_constructor is not None:
        raise ValueError("step_size and grid_constructor are mutually exclusive arguments.")
    if step_size is not None and not bool(step_size > 0):
        raise ValueError(f"step_size must be positive, got {step_size}.")
    if grid_constructor is not None and not callable(grid_constructor):
        raise ValueError("grid_constructor must be a callable grid_constructor(func, y0, t).")

    interp = options.get("interp", "linear")
    if interp not in _INTERPOLATIONS:
        raise ValueError(f"interp must be one of {_INTERPOLATIONS}, got {interp!r}.")

    implicit, max_order, max_iters = False, _ADAMS_MAX_ORDER, _ADAMS_MAX_ITERS
    if adams:
        if method == "explicit_adams" and "implicit" in options:
            # torchdiffeq fails here too (a TypeError about a repeated keyword argument).
            raise ValueError("explicit_adams takes no 'implicit' option; implicit_adams has the corrector.")
        implicit = method != "explicit_adams" and bool(options.get("implicit", True))
        max_order = _adams_max_order(options.get("max_order", _ADAMS_MAX_ORDER))
        max_iters = int(options.get("max_iters", _ADAMS_MAX_ITERS))
        if max_iters < 1:
            raise ValueError(f"max_iters must be at least 1, got {max_iters}.")

    return _Options(step_size=step_size, grid_constructor=grid_constructor, interp=interp,
                    perturb=bool(options.get("perturb", False)), implicit=implicit,
                    max_order=max_order, max_iters=max_iters)


def _adams_max_order(max_order) -> int:
    """Checks the Adams solvers' max_order: at most 12 (the largest order whose coefficients
    torchdiffeq uses), at least 1; below 4 the solver only ever takes RK4 steps."""
    if max_order > _ADAMS_MAX_ORDER:
        raise ValueError(f"max_order must be at most {_ADAMS_MAX_ORDER}, got {max_order}.")
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}.")
    if max_order < _ADAMS_MIN_ORDER:
        warnings.warn(f"max_order is below {_ADAMS_MIN_ORDER}, so the solver reduces to `rk4`.")
    return int(max_order)


# --------------------------------------------------------------------------------------------
# Evaluating func
# --------------------------------------------------------------------------------------------

def _adjacent_time(t: torch.Tensor, later: bool) -> torch.Tensor:
    """The floating-point neighbour of ``t`` (towards t + 1 or t - 1), with the gradient of t
    passed straight through.

    Adding the one-ulp gap back onto t lands exactly on the neighbour (the gap is exactly
    representable), so the value is nextafter's while autograd sees the identity. Like
    torchdiffeq, the direction is ``t +/- 1``: where that rounds back to t there is no nudge.
    """
    with torch.no_grad():
        gap = torch.nextafter(t, t + 1 if later else t - 1) - t
    return t + gap


class _Rhs:
    """``func`` as the steps call it.

    The time is cast to the state's dtype first, as torchdiffeq does for every evaluation. With
    ``perturb`` on, the evaluation at a step's start sees the next representable time and the
    evaluation at its end the previous one, so a func with a jump at a grid point is sampled on
    the correct side of it.
    """

    def __init__(self, func: Callable, perturb: bool):
        self.func = func
        self.perturb = perturb

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t.to(y.dtype), y)

    def at_start(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = t.to(y.dtype)
        return self.func(_adjacent_time(t, later=True) if self.perturb else t, y)

    def at_end(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = t.to(y.dtype)
        return self.func(_adjacent_time(t, later=False) if self.perturb else t, y)


# --------------------------------------------------------------------------------------------
# One step of each method: step(rhs, t0, dt, t1, y0) -> (increment, f at the start)
# --------------------------------------------------------------------------------------------
# dt is t1 - t0 on a grid and the raw step_size in event mode (t1 is then t0 + step_size).
# The arithmetic is written in torchdiffeq's order of operations so the results agree to the
# last bit, not merely to the method's accuracy.

def _euler_step(rhs, t0, dt, t1, y0):
    f0 = rhs.at_start(t0, y0)
    return dt * f0, f0


def _midpoint_step(rhs, t0, dt, t1, y0):
    half_dt = 0.5 * dt
    f0 = rhs.at_start(t0, y0)
    y_mid = y0 + f0 * half_dt
    return dt * rhs(t0 + half_dt, y_mid), f0


def _heun2_step(rhs, t0, dt, t1, y0):
    """Heun's method (explicit trapezoid). Its second stage is evaluated at t0 + dt, as in
    torchdiffeq, which can differ from t1 in the last bit."""
    f0 = rhs.at_start(t0, y0)
    k2 = rhs.at_end(t0 + dt, y0 + dt * f0)
    return dt * (f0 * 0.5 + k2 * 0.5), f0


def _heun3_step(rhs, t0, dt, t1, y0):
    """Heun's third-order method: c = (0, 1/3, 2/3), b = (1/4, 0, 3/4). No stage sits at t1,
    so perturb only touches the first."""
    f0 = rhs.at_start(t0, y0)
    k2 = rhs(t0 + dt * _ONE_THIRD, y0 + dt * f0 * _ONE_THIRD)
    k3 = rhs(t0 + dt * _TWO_THIRDS, y0 + dt * (k2 * _TWO_THIRDS))
    return dt * (f0 * 0.25 + k3 * 0.75), f0


def _rk4_increment(rhs, t0, dt, t1, y0, f0):
    """Kutta's 3/8-rule fourth-order step, which torchdiffeq's 'rk4' uses (not the classical one)."""
    k2 = rhs(t0 + dt * _ONE_THIRD, y0 + dt * f0 * _ONE_THIRD)
    k3 = rhs(t0 + dt * _TWO_THIRDS, y0 + dt * (k2 - f0 * _ONE_THIRD))
    k4 = rhs.at_end(t1, y0 + dt * (f0 - k2 + k3))
    return (f0 + 3 * (k2 + k3) + k4) * dt * 0.125


def _rk4_step(rhs, t0, dt, t1, y0):
    f0 = rhs.at_start(t0, y0)
    return _rk4_increment(rhs, t0, dt, t1, y0, f0), f0


# --------------------------------------------------------------------------------------------
# Adams coefficients
# --------------------------------------------------------------------------------------------

def _lagrange_integrals(nodes: tuple[int, ...]) -> tuple[Fraction, ...]:
    """Exact integrals over [0, 1] of the Lagrange basis polynomials on ``nodes``: the weights
    of the quadrature that integrates the interpolant of f through those nodes over one step
    (time measured in steps from the current point)."""
    weights = []
    for j, node_j in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients, constant term first
        for i, node_i in enumerate(nodes):
            if i == j:
                continue
            scale = Fraction(1, node_j - node_i)
            # poly * (s - node_i) / (node_j - node_i)
            shifted = [Fraction(0)] + poly
            poly = [(shifted[k] - node_i * (poly[k] if k < len(poly) else 0)) * scale
                    for k in range(len(shifted))]
        weights.append(sum(c / (k + 1) for k, c in enumerate(poly)))
    return tuple(weights)


@functools.lru_cache(maxsize=None)
def adams_bashforth_coefficients(order: int) -> tuple[Fraction, ...]:
    """Weights of the explicit ``order``-step Adams-Bashforth formula, newest derivative first:
    y_{n+1} = y_n + h * sum_j b_j f_{n-j}."""
    return _lagrange_integrals(tuple(-j for j in range(order)))


@functools.lru_cache(maxsize=None)
def adams_moulton_coefficients(order: int) -> tuple[Fraction, ...]:
    """Weights of the implicit Adams-Moulton formula of order ``order`` (``order`` terms),
    newest derivative first: y_{n+1} = y_n + h * sum_j m_j f_{n+1-j}."""
    return _lagrange_integrals(tuple(1 - j for j in range(order)))


@functools.lru_cache(maxsize=None)
def _coefficient_tensor(kind: str, order: int, device: torch.device) -> torch.Tensor:
    """The coefficients as a float64 tensor. torchdiffeq keeps them in float64 whatever the
    state's dtype; the products with the state then round into the state's dtype."""
    exact = adams_bashforth_coefficients(order) if kind == "bashforth" else adams_moulton_coefficients(order)
    return torch.tensor([float(c) for c in exact], dtype=torch.float64, device=device)


def _weighted_sum(weights: torch.Tensor, terms) -> torch.Tensor:
    """sum_j weights[j] * terms[j], accumulated left to right as torchdiffeq does."""
    total = 0
    for weight, term in zip(weights, terms):
        total = total + weight * term
    return total


# --------------------------------------------------------------------------------------------
# Adams-Bashforth(-Moulton)
# --------------------------------------------------------------------------------------------

class _AdamsStepper:
    """The Adams steps of one solve, holding that solve's derivative history.

    The history holds f evaluated afresh at the start of each step, newest first, keyed on the
    step's start time. The corrector's last evaluation at t1 is not kept: torchdiffeq files it
    under the step's start time, which is already taken, so it is discarded there too.
    """

    def __init__(self, opts: _Options, y0: torch.Tensor, rtol, atol):
        self.implicit = opts.implicit
        self.max_order = opts.max_order
        self.max_iters = opts.max_iters
        self.rtol = torch.as_tensor(rtol, dtype=y0.dtype, device=y0.device)
        self.atol = torch.as_tensor(atol, dtype=y0.dtype, device=y0.device)
        # torchdiffeq sizes the history max_order - 1 (and fails for max_order = 1); one slot is
        # enough for the RK4 steps that max_order 1 and 2 reduce to.
        self.history = collections.deque(maxlen=max(self.max_order - 1, 1))
        self.history_t = None

    def _remember(self, t0: torch.Tensor, f0: torch.Tensor) -> None:
        # A repeated start time (a zero-length grid step) keeps the derivative already stored.
        if self.history_t is None or self.history_t != t0:
            self.history.appendleft(f0)
            self.history_t = t0

    def _converged(self, dy_old: torch.Tensor, dy: torch.Tensor) -> bool:
        """torchdiffeq's test: every component of the change of the increment within
        atol + rtol * max(|dy_old|, |dy|). The scale is the increment's, not the state's."""
        with torch.no_grad():
            tolerance = self.atol + self.rtol * torch.max(dy_old.abs(), dy.abs())
            return bool((torch.abs(dy_old - dy) / tolerance).abs().max() < 1)

    def __call__(self, rhs, t0, dt, t1, y0):
        f0 = rhs.at_start(t0, y0)
        self._remember(t0, f0)
        order = min(len(self.history), self.max_order - 1)
        if order < _ADAMS_MIN_ORDER - 1:
            # Too little history for a multistep formula yet (or ever, for max_order < 4).
            return _rk4_increment(rhs, t0, dt, t1, y0, self.history[0]), f0

        device = y0.device
        # The float64 coefficients meet the derivatives in 0-d arithmetic for a 0-d state, which
        # promotes to float64: cast back to the state's dtype where torchdiffeq does.
        dy = _weighted_sum(dt * _coefficient_tensor("bashforth", order, device), self.history).to(y0.dtype)
        if not self.implicit:
            return dy, f0

        # Functional iteration on the Moulton corrector of one order higher than the predictor.
        moulton = _coefficient_tensor("moulton", order + 1, device)
        delta = dt * _weighted_sum(moulton[1:], self.history).to(y0.dtype)
        converged = False
        for _ in range(self.max_iters):
            dy_old = dy
            f = rhs.at_end(t1, y0 + dy)
            dy = (dt * moulton[0] * f).to(y0.dtype) + delta
            converged = self._converged(dy_old, dy)
            if converged:
                break
        if not converged:
            warnings.warn("Functional iteration did not converge. Solution may be incorrect.")
            # torchdiffeq then drops the oldest derivative, so the next step uses one order less.
            self.history.pop()
        return dy, f0


# --------------------------------------------------------------------------------------------
# Grid, interpolation, solves
# --------------------------------------------------------------------------------------------

_RK_STEPS = {
    "euler": _euler_step,
    "midpoint": _midpoint_step,
    "heun2": _heun2_step,
    "heun3": _heun3_step,
    "rk4": _rk4_step,
}


def _make_stepper(method: str, opts: _Options, y0: torch.Tensor, rtol, atol) -> Callable:
    """A fresh step function for one solve (Adams steppers carry per-solve history)."""
    if method in _ADAMS_METHODS:
        return _AdamsStepper(opts, y0, rtol, atol)
    return _RK_STEPS[method]


def _step_size_grid(t: torch.Tensor, step_size) -> torch.Tensor:
    """t[0], t[0] + h, t[0] + 2h, ... with the last point replaced by t[-1] (torchdiffeq's grid:
    the final step is shortened, or lengthened by round-off, to land exactly on t[-1])."""
    start, end = t[0], t[-1]
    count = torch.ceil((end - start) / step_size + 1).item()
    grid = torch.arange(0, count, dtype=t.dtype, device=t.device) * step_size + start
    return torch.cat([grid[:-1], t[-1:]])


def _time_grid(opts: _Options, rhs: _Rhs, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if opts.step_size is not None:
        return _step_size_grid(t, opts.step_size)
    if opts.grid_constructor is None:
        return t
    grid = opts.grid_constructor(rhs, y0, t)
    if not (grid[0] == t[0] and grid[-1] == t[-1]):
        raise ValueError("grid_constructor must return a grid that starts at t[0] and ends at t[-1]; "
                         f"got one from {float(grid[0])} to {float(grid[-1])} for t from "
                         f"{float(t[0])} to {float(t[-1])}.")
    return grid


def _linear_interp(t0, t1, y0, y1, t):
    if t == t0:
        return y0
    if t == t1:
        return y1
    return y0 + (t - t0) / (t1 - t0) * (y1 - y0)


def _cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t):
    h = (t - t0) / (t1 - t0)
    h00 = (1 + 2 * h) * (1 - h) * (1 - h)
    h10 = h * (1 - h) * (1 - h)
    h01 = h * h * (3 - 2 * h)
    h11 = h * h * (h - 1)
    dt = t1 - t0
    return h00 * y0 + h10 * dt * f0 + h01 * y1 + h11 * dt * f1


def _interpolant(interp: str, rhs: _Rhs, t0, y0, f0, t1, y1) -> Callable:
    """y(t) within the step [t0, t1]. The cubic Hermite interpolant needs f at t1, evaluated
    without perturbation each time the interpolant is built, as torchdiffeq does."""
    if interp == "linear":
        return lambda t: _linear_interp(t0, t1, y0, y1, t)
    f1 = rhs(t1, y1)
    return lambda t: _cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t)


def solve_fixed_grid(method: str, func: Callable, y0: torch.Tensor, t: torch.Tensor, *,
                     rtol, atol, options: dict) -> torch.Tensor:
    """Solves dy/dt = func(t, y), y(t[0]) = y0 with a fixed-grid method; returns y at every t,
    shape (len(t), N), differentiable w.r.t. y0, t and whatever func closes over.

    The grid is ``t`` itself, or t[0] + k * options['step_size'] ending on t[-1], or what
    options['grid_constructor'](func, y0, t) returns. Outputs between grid points come from the
    step's linear (default) or cubic Hermite interpolant. For the cubic one torchdiffeq builds a
    fresh interpolant, with a fresh f at the step's end, for every output in the step; so does
    this, which keeps the count of func evaluations equal to torchdiffeq's.

    If ``func`` has a ``callback_step`` attribute it is called as callback_step(t0, y0, dt)
    before each grid step, as torchdiffeq does. rtol and atol matter to the Adams corrector only.
    """
    opts = _parse_options(method, options)
    rhs = _Rhs(func, opts.perturb)
    step = _make_stepper(method, opts, y0, rtol, atol)
    grid = _time_grid(opts, rhs, y0, t)
    callback = getattr(func, "callback_step", None)

    outputs = [y0]
    j = 1
    y_start = y0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        dt = t1 - t0
        if callback is not None:
            callback(t0, y_start, dt)
        dy, f0 = step(rhs, t0, dt, t1, y_start)
        y_end = y_start + dy
        while j < len(t) and t1 >= t[j]:
            outputs.append(_interpolant(opts.interp, rhs, t0, y_start, f0, t1, y_end)(t[j]))
            j += 1
        y_start = y_end
    # A 0-d float32 state can turn float64 on the way (see _odeint.integrate); torchdiffeq writes
    # each output into a tensor of y0's dtype.
    return torch.stack([y.to(y0.dtype) for y in outputs])


def _bisect_event(interp: Callable, sign0, t0, t1, event_fn, tol: float):
    """Bisects [t0, t1] on the step's interpolant until the bracket is below ``tol``
    (torchdiffeq's find_event). The event time carries no gradient; the state at it does,
    through the interpolant."""
    with torch.no_grad():
        halvings = torch.ceil(torch.log((t1 - t0) / tol) / math.log(2.0))
        for _ in range(int(halvings.long())):  # none when the step is already below tol
            t_mid = (t1 + t0) / 2.0
            if torch.sign(event_fn(t_mid, interp(t_mid))) == sign0:
                t0 = t_mid
            else:
                t1 = t_mid
        event_t = (t0 + t1) / 2.0
    return event_t, interp(event_t)


def solve_fixed_grid_until_event(method: str, func: Callable, y0: torch.Tensor, t0: torch.Tensor,
                                 event_fn: Callable, *, rtol, atol, options: dict):
    """Steps from t0 by options['step_size'] until event_fn(t, y) changes sign, then bisects
    within that step on its interpolant to within atol in time.

    Returns (event_t, stack([y0, y(event_t)])). Raises RuntimeError after 20000 steps without
    an event, and ValueError without a step_size, as torchdiffeq does (it asserts the latter).
    """
    opts = _parse_options(method, options)
    if opts.step_size is None:
        raise ValueError("Event handling with a fixed-grid method requires options['step_size'].")
    rhs = _Rhs(func, opts.perturb)
    step = _make_stepper(method, opts, y0, rtol, atol)
    # The Adams solvers hand rtol to torchdiffeq's base solver as its atol, which reads as if
    # they bisected to rtol; but they overwrite that attribute with the real atol before it is
    # ever read, so every method bisects to atol.
    tol = float(atol)
    dt = opts.step_size

    t0 = t0.to(y0.dtype)
    y_start = y0
    sign0 = torch.sign(event_fn(t0, y0))
    for _ in range(_MAX_EVENT_STEPS):
        t1 = t0 + dt
        dy, f0 = step(rhs, t0, dt, t1, y_start)
        y_end = y_start + dy
        if torch.sign(event_fn(t1, y_end)) != sign0:
            interp = _interpolant(opts.interp, rhs, t0, y_start, f0, t1, y_end)
            event_t, y_event = _bisect_event(interp, sign0, t0, t1, event_fn, tol)
            return event_t, torch.stack([y0, y_event.to(y0.dtype)])
        t0, y_start = t1, y_end
    raise RuntimeError(f"Reached maximum number of iterations {_MAX_EVENT_STEPS}.")
