"""pyode.compat.torchdiffeq's fixed-grid solvers: agreement with torchdiffeq 0.2.5 (values, the
exact sequence of func evaluations, warnings, gradients, events) and the methods' convergence orders."""
import importlib
import math
import re
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from pyode.compat import torchdiffeq as compat
from pyode.compat.torchdiffeq import _fixed_grid as fg

METHODS = list(fg.FIXED_GRID_METHODS)
ADAMS = ["explicit_adams", "implicit_adams", "fixed_adams"]
F64 = torch.float64
# torchdiffeq's default tolerances; at these the Adams corrector sometimes fails to converge in
# four iterations on the test problem, so its warning-and-drop-history path is exercised too.
RTOL, ATOL = 1e-7, 1e-9


@pytest.fixture
def tdq():
    return pytest.importorskip("torchdiffeq")


class Oscillator:
    """A damped oscillator with a cubic spring and forcing sin(3t), plus a third state driven by
    the first. Records the time (dtype and value) of every evaluation, so that two solvers'
    sequences of evaluations, perturbed times included, can be compared exactly."""

    def __init__(self, damping=None):
        self.damping = torch.tensor(0.3, dtype=F64) if damping is None else damping
        self.times = []

    def __call__(self, t, y):
        self.times.append((t.dtype, t.item()))
        x, v, z = y.unbind()
        c = self.damping.to(y.dtype)
        return torch.stack([v, -c * v - x - x ** 3 + torch.sin(3 * t), -0.5 * z * x + 0.1 * t])


def y0_of(dtype=F64):
    return torch.tensor([1.0, 0.0, 0.5], dtype=dtype)


def warped_grid(func, y0, t):
    """A non-uniform grid from t[0] to t[-1], denser at the start."""
    s = torch.linspace(0, 1, 41, dtype=t.dtype)
    return torch.cat([t[:1], t[0] + (t[-1] - t[0]) * s[1:-1] ** 1.5, t[-1:]])


def grid_with_repeat(func, y0, t):
    """A grid with one point twice: a zero-length step, which Adams' history treats specially."""
    g = torch.linspace(float(t[0]), float(t[-1]), 31, dtype=t.dtype)
    return torch.cat([g[:10], g[9:]])


def grid_with_inexact_step(func, y0, t):
    """A grid with a step whose t0 + (t1 - t0) rounds to a value other than t1, so a stage placed
    at t0 + dt and one placed at t1 see different times (heun2's second stage uses t0 + dt)."""
    inner = torch.tensor([0.06163157803847613, 0.9462511025301213, 1.2, 1.6], dtype=t.dtype)
    return torch.cat([t[:1], t[0] + inner, t[-1:]])


T_NONUNIFORM = 2 * torch.linspace(0, 1, 31, dtype=F64) ** 1.3
T_COARSE = torch.linspace(0, 2, 9, dtype=F64)
T_DENSE = torch.linspace(0, 2, 17, dtype=F64)  # several outputs per step when step_size = 0.45

CONFIGS = {
    "default-grid": (T_NONUNIFORM, {}),
    "step_size": (T_COARSE, {"step_size": 0.037}),
    "grid_constructor": (T_COARSE, {"grid_constructor": warped_grid}),
    "repeated-grid-point": (T_COARSE, {"grid_constructor": grid_with_repeat}),
    "inexact-step": (T_COARSE, {"grid_constructor": grid_with_inexact_step, "perturb": True}),
    "cubic": (T_DENSE, {"step_size": 0.045, "interp": "cubic"}),
    "cubic-coarse-steps": (T_DENSE, {"step_size": 0.45, "interp": "cubic"}),
    "perturb": (T_COARSE, {"step_size": 0.037, "perturb": True}),
    "cubic-perturb-default-grid": (T_NONUNIFORM, {"interp": "cubic", "perturb": True}),
}


def tame(method, options):
    """The options, with explicit Adams capped at order 6. At the default max_order 12 it reaches
    the eleventh-order Bashforth formula, unstable on this problem for steps above ~0.002 (its
    parasitic roots leave the unit circle once h*|f'| exceeds ~0.003); torchdiffeq blows up there
    identically, but comparing overflowed values shows nothing. test_explicit_adams_default_order
    covers max_order 12 with a step small enough."""
    if method == "explicit_adams" and "max_order" not in options:
        return {**options, "max_order": 6}
    return options


def recorded(call):
    """call()'s result and the texts of the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call()
    return out, [str(w.message) for w in caught]


def both(tdq, method, y0, t, options, rtol=RTOL, atol=ATOL):
    """Solves with torchdiffeq and with ours; returns (ref, ours, ref_func, our_func, ref_warnings,
    our_warnings)."""
    options = tame(method, options)
    ref_f, our_f = Oscillator(), Oscillator()
    ref, ref_w = recorded(lambda: tdq.odeint(ref_f, y0, t, method=method, rtol=rtol, atol=atol,
                                             options=dict(options)))
    ours, our_w = recorded(lambda: fg.solve_fixed_grid(method, our_f, y0, t, rtol=rtol, atol=atol,
                                                       options=dict(options)))
    return ref, ours, ref_f, our_f, ref_w, our_w


# --------------------------------------------------------------------------------------------
# Agreement with torchdiffeq
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
def test_matches_torchdiffeq(tdq, method, config):
    t, options = CONFIGS[config]
    ref, ours, ref_f, our_f, ref_w, our_w = both(tdq, method, y0_of(), t, options)
    assert ours.shape == (len(t), 3) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    # Same evaluations at the same (possibly nudged) times in the same dtype, in the same order.
    assert our_f.times == ref_f.times
    assert our_w == ref_w


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_default_order_matches_torchdiffeq(tdq, method):
    """The default max_order 12 up to the eleventh-order formulas, at a step where the explicit
    one is stable."""
    t = torch.linspace(0, 1, 5, dtype=F64)
    ref, ours, ref_f, our_f, ref_w, our_w = both(tdq, method, y0_of(), t,
                                                 {"step_size": 0.002, "max_order": 12})
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert len(our_f.times) >= 500 and our_f.times == ref_f.times
    assert our_w == ref_w


@pytest.mark.parametrize("t_dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", METHODS)
def test_float32_state_matches_torchdiffeq(tdq, method, t_dtype):
    """A float32 state: func sees float32 times even when t is float64, and the float64 Adams
    coefficients round into float32 as in torchdiffeq."""
    t = T_COARSE.to(t_dtype)
    options = {"step_size": 0.037, "perturb": True}
    ref, ours, ref_f, our_f, ref_w, our_w = both(tdq, method, y0_of(torch.float32), t, options,
                                                 rtol=1e-4, atol=1e-6)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert all(dtype == torch.float32 for dtype, _ in our_f.times)
    assert our_f.times == ref_f.times
    assert our_w == ref_w


class ZeroDim:
    """torchdiffeq's SineODE on a 0-d state, logging the dtypes and values of every (t, y) seen."""

    def __init__(self):
        self.seen = []

    def __call__(self, t, y):
        self.seen.append((t.dtype, t.item(), y.dtype, tuple(y.shape), y.item()))
        return 2 * y / t + t ** 4 * torch.sin(2 * t) - t ** 2 + 4 * t ** 3


@pytest.mark.parametrize("options", [{}, {"step_size": 0.05, "interp": "cubic"}, {"step_size": 0.07, "perturb": True}],
                         ids=["grid", "cubic", "perturb"])
@pytest.mark.parametrize("method", METHODS)
def test_zero_dim_float32_state_matches_torchdiffeq_to_the_bit(tdq, method, options):
    """A 0-d state stays 0-d, as in torchdiffeq. A float32 one then meets float64 step sizes in
    0-d arithmetic, which promotes: torchdiffeq integrates it in float64 from the first step on
    (func sees float64 t and y) and stores float32 outputs. So does the drop-in, to the bit."""
    t = torch.linspace(1.0, 3.0, 6, dtype=F64)
    y0 = torch.tensor(math.pi - 0.25 + 1.5 * math.sin(2.0) - 0.25 * math.cos(2.0), dtype=torch.float32)
    results = []
    for lib in (tdq, compat):
        f = ZeroDim()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the Adams corrector's convergence warning
            out = lib.odeint(f, y0, t, method=method, options=tame(method, options))
        results.append((out, f.seen))
    (ref, ref_seen), (ours, our_seen) = results
    assert ours.shape == (6,) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)
    assert our_seen == ref_seen
    assert our_seen[-1][0] == our_seen[-1][2] == F64        # func sees float64 t and y by the end


@pytest.mark.parametrize("method", METHODS)
def test_zero_dim_float32_event_matches_torchdiffeq_to_the_bit(tdq, method):
    """Event mode steps by the Python float step_size: the state stays float32 through the Runge-Kutta
    steps, while the Adams sums promote and are cast back, as in torchdiffeq."""
    y0 = torch.tensor(3.0, dtype=torch.float32)
    results = []
    for lib in (tdq, compat):
        f = ZeroDim()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            event_t, sol = lib.odeint(f, y0, torch.tensor([1.0, 2.0], dtype=F64), method=method,
                                      options=tame(method, {"step_size": 0.01, "interp": "cubic"}),
                                      event_fn=lambda tt, y: y - 40.0)
        results.append((event_t, sol, f.seen))
    (ref_t, ref_sol, ref_seen), (our_t, our_sol, our_seen) = results
    assert our_sol.shape == (2,) and 1.5 < float(our_t) < 3
    assert torch.equal(our_t, ref_t) and torch.equal(our_sol, ref_sol)
    assert our_seen == ref_seen


@pytest.mark.parametrize("max_order", [2, 3, 5, 8])
@pytest.mark.parametrize("method", ADAMS)
def test_adams_max_order_matches_torchdiffeq(tdq, method, max_order):
    ref, ours, ref_f, our_f, ref_w, our_w = both(tdq, method, y0_of(), T_COARSE,
                                                 {"step_size": 0.037, "max_order": max_order})
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert our_f.times == ref_f.times
    assert our_w == ref_w


@pytest.mark.parametrize("max_iters,rtol,atol", [(1, 1e-12, 1e-14), (2, 1e-3, 1e-5), (6, 1e-10, 1e-12)])
def test_adams_corrector_settings_match_torchdiffeq(tdq, max_iters, rtol, atol):
    """Tight tolerances with few iterations fail to converge (warning, shorter history); the
    results and warnings must still be torchdiffeq's."""
    ref, ours, ref_f, our_f, ref_w, our_w = both(tdq, "implicit_adams", y0_of(), T_COARSE,
                                                 {"step_size": 0.037, "max_iters": max_iters},
                                                 rtol=rtol, atol=atol)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert our_f.times == ref_f.times
    assert our_w == ref_w


def test_implicit_option_false_is_explicit_adams():
    t, options = CONFIGS["step_size"]
    options = {**options, "max_order": 6}
    explicit = fg.solve_fixed_grid("explicit_adams", Oscillator(), y0_of(), t, rtol=RTOL, atol=ATOL,
                                   options=options)
    switched_off = fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), t, rtol=RTOL, atol=ATOL,
                                       options={**options, "implicit": False})
    corrected = fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), t, rtol=RTOL, atol=ATOL,
                                    options=options)
    assert torch.isfinite(explicit).all()
    assert torch.equal(explicit, switched_off) and not torch.equal(explicit, corrected)


def test_adams_history_belongs_to_one_solve():
    t, options = CONFIGS["step_size"]
    first, second = [fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), t, rtol=1e-3,
                                          atol=1e-5, options=options) for _ in range(2)]
    assert torch.equal(first, second)


def test_callback_step_as_torchdiffeq(tdq):
    class WithCallback(Oscillator):
        def __init__(self):
            super().__init__()
            self.steps = []

        def callback_step(self, t0, y0, dt):
            self.steps.append((t0.item(), dt.item(), y0[0].item()))

    ref_f, our_f = WithCallback(), WithCallback()
    t = T_COARSE
    tdq.odeint(ref_f, y0_of(), t, method="midpoint", options={"step_size": 0.1})
    fg.solve_fixed_grid("midpoint", our_f, y0_of(), t, rtol=RTOL, atol=ATOL, options={"step_size": 0.1})
    assert len(our_f.steps) == 20
    assert our_f.steps == ref_f.steps


def test_single_time_point_returns_y0(tdq):
    t = torch.zeros(1, dtype=F64)
    f = Oscillator()
    out = fg.solve_fixed_grid("rk4", f, y0_of(), t, rtol=RTOL, atol=ATOL, options={})
    torch.testing.assert_close(out, tdq.odeint(Oscillator(), y0_of(), t, method="rk4"))
    assert out.shape == (1, 3) and f.times == []


def test_outputs_at_grid_points_are_the_grid_values():
    """With linear interpolation an output at a grid point is that step's end value exactly: the
    solution on a grid that contains the outputs equals the same solve read off at them."""
    t_fine = torch.linspace(0, 2, 21, dtype=F64)
    full = fg.solve_fixed_grid("heun3", Oscillator(), y0_of(), t_fine, rtol=RTOL, atol=ATOL, options={})
    sub = fg.solve_fixed_grid("heun3", Oscillator(), y0_of(), t_fine[::4], rtol=RTOL, atol=ATOL,
                              options={"grid_constructor": lambda f, y0, t: t_fine})
    assert torch.equal(sub, full[::4])


# --------------------------------------------------------------------------------------------
# Adams coefficients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", range(1, 13))
def test_adams_coefficients_equal_torchdiffeq_tables(order):
    tables = pytest.importorskip("torchdiffeq._impl.fixed_adams")
    bashforth = torch.tensor([float(c) for c in fg.adams_bashforth_coefficients(order)], dtype=F64)
    torch.testing.assert_close(bashforth, tables._BASHFORTH_DIVISOR[order], rtol=1e-15, atol=0)
    moulton = fg.adams_moulton_coefficients(order)
    if order == 1:
        # torchdiffeq's first-order Moulton entry is 1/11 (its divisor table starts with the
        # Bashforth 11/11); backward Euler's weight is 1. torchdiffeq never uses that entry.
        assert moulton == (Fraction(1),)
        return
    torch.testing.assert_close(torch.tensor([float(c) for c in moulton], dtype=F64),
                               tables._MOULTON_DIVISOR[order], rtol=1e-15, atol=0)


@pytest.mark.parametrize("order", range(1, 13))
def test_adams_coefficients_integrate_polynomials_exactly(order):
    """An order-k formula integrates s^m over one step exactly for m < k (the definition,
    checked in exact arithmetic)."""
    for m in range(order):
        exact = Fraction(1, m + 1)
        ab = sum(b * Fraction(-j) ** m for j, b in enumerate(fg.adams_bashforth_coefficients(order)))
        am = sum(c * Fraction(1 - j) ** m for j, c in enumerate(fg.adams_moulton_coefficients(order)))
        assert ab == exact and am == exact


# --------------------------------------------------------------------------------------------
# Convergence order
# --------------------------------------------------------------------------------------------

ROTATION = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)


def observed_order(method, func, y0, exact_y1, steps_per_unit, options=None):
    """Slope of log(error at t = 1) against log(step size), least squares over the ladder."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    errors = []
    for n in steps_per_unit:
        y = fg.solve_fixed_grid(method, func, y0, t, rtol=RTOL, atol=ATOL,
                                options={"step_size": 1.0 / n, **(options or {})})
        errors.append(float((y[-1] - exact_y1).norm()))
    return np.polyfit(np.log([1.0 / n for n in steps_per_unit]), np.log(errors), 1)[0]


@pytest.mark.parametrize("method,order,ladder", [
    ("euler", 1, [32, 64, 128, 256]),
    ("midpoint", 2, [16, 32, 64, 128]),
    ("heun2", 2, [16, 32, 64, 128]),
    ("heun3", 3, [16, 32, 64, 128]),
    ("rk4", 4, [8, 16, 32, 64]),
])
def test_runge_kutta_convergence_order(method, order, ladder):
    """y' = A y with A a rotation plus decay; exact solution by the matrix exponential."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    exact = torch.linalg.matrix_exp(ROTATION) @ y0
    slope = observed_order(method, lambda t, y: ROTATION @ y, y0, exact, ladder)
    assert abs(slope - order) <= 0.3, slope


@pytest.mark.parametrize("method,lowest,highest,ladder", [
    # The first steps ramp up: two RK4 steps, then one third-order Bashforth step whose local
    # error O(h^4) caps the explicit solver's global order at 4.
    ("explicit_adams", 3.7, 4.3, [128, 256, 512, 1024]),
    # With the corrector that step is fourth order locally (O(h^5)), so the global order is >= 5.
    ("implicit_adams", 4.7, None, [16, 32, 64, 128]),
])
def test_adams_convergence_order(method, lowest, highest, ladder):
    """y' = -t y, exact y0 exp(-t^2 / 2). A decaying real problem: with an oscillatory one the
    eleventh-order Bashforth formula (default max_order 12) is unstable until h is below 1/128."""
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    slope = observed_order(method, lambda t, y: -t * y, y0, y0 * math.exp(-0.5), ladder)
    assert slope >= lowest, slope
    assert highest is None or slope <= highest, slope


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

WEIGHTS = torch.linspace(0.5, 1.5, 13 * 3, dtype=F64).reshape(13, 3)
T_GRAD = torch.linspace(0, 1.5, 13, dtype=F64)


def loss(method, y0, damping, t, solver="ours", tdq=None, options=None):
    f = Oscillator(damping)
    options = tame(method, options or {})
    if solver == "ours":
        sol = fg.solve_fixed_grid(method, f, y0, t, rtol=1e-3, atol=1e-5, options=options)
    else:
        sol = tdq.odeint(f, y0, t, method=method, rtol=1e-3, atol=1e-5, options=options)
    return (sol * WEIGHTS).sum()


def central_difference(fn, x, eps=1e-6):
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x)
        step.view(-1)[i] = eps
        grad.view(-1)[i] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("method", METHODS)
def test_gradients_match_finite_differences_and_torchdiffeq(tdq, method):
    y0 = y0_of().requires_grad_()
    damping = torch.tensor(0.3, dtype=F64, requires_grad=True)
    t = T_GRAD.clone().requires_grad_()
    g_y0, g_damping, g_t = torch.autograd.grad(loss(method, y0, damping, t), (y0, damping, t))

    with torch.no_grad():
        fd_y0 = central_difference(lambda v: loss(method, v, damping, T_GRAD), y0.detach())
        fd_damping = central_difference(lambda c: loss(method, y0, c, T_GRAD), damping.detach())
        # Interior output times move the grid points themselves (the grid is t).
        fd_t = central_difference(lambda s: loss(method, y0, damping, s), T_GRAD)
    torch.testing.assert_close(g_y0, fd_y0, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g_damping, fd_damping, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g_t, fd_t, rtol=1e-6, atol=1e-8)

    ref = torch.autograd.grad(loss(method, y0, damping, t, "torchdiffeq", tdq), (y0, damping, t))
    for ours, theirs in zip((g_y0, g_damping, g_t), ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def midpoint_refined_grid(func, y0, t):
    return torch.cat([t[:1], (t[:-1] + t[1:]) / 2, t[1:]]).sort().values


@pytest.mark.parametrize("options", [
    {"perturb": True, "interp": "cubic", "grid_constructor": midpoint_refined_grid},
    {"step_size": 0.1},
], ids=["perturb-cubic-grid_constructor", "step_size"])
@pytest.mark.parametrize("method", ["heun2", "rk4", "implicit_adams"])
def test_gradients_with_other_grids_match_torchdiffeq(tdq, method, options):
    """t's gradient through a constructed grid, through the step_size grid (which moves with t[0]
    and ends at t[-1]) and through perturb's nudged times (passed straight through)."""
    y0 = y0_of().requires_grad_()
    damping = torch.tensor(0.3, dtype=F64, requires_grad=True)
    t = T_GRAD.clone().requires_grad_()
    ours = torch.autograd.grad(loss(method, y0, damping, t, options=options), (y0, damping, t))
    ref = torch.autograd.grad(loss(method, y0, damping, t, "torchdiffeq", tdq, options=options),
                              (y0, damping, t))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

def crossing(t, y):
    """Positive at the start (x = 1), zero when x falls to 0.2."""
    return y[0] - 0.2


@pytest.mark.parametrize("options", [
    {"step_size": 0.05},
    {"step_size": 0.05, "interp": "cubic"},
    {"step_size": 0.03, "interp": "cubic", "perturb": True},
], ids=["linear", "cubic", "cubic-perturb"])
@pytest.mark.parametrize("method", METHODS)
def test_event_matches_torchdiffeq(tdq, method, options):
    # rtol and atol far apart: the bisection's tolerance is atol for every method (the Adams
    # solvers included), and an event time bisected to rtol would be off by ~1e-3.
    rtol, atol = 1e-3, 1e-10
    options = tame(method, options)
    y0 = y0_of().requires_grad_()
    ref_f, our_f = Oscillator(), Oscillator()
    (ref_t, ref_sol), ref_w = recorded(lambda: tdq.odeint(
        ref_f, y0, torch.tensor([0.0, 10.0], dtype=F64), method=method, rtol=rtol, atol=atol,
        options=dict(options), event_fn=crossing))
    (our_t, our_sol), our_w = recorded(lambda: fg.solve_fixed_grid_until_event(
        method, our_f, y0, torch.tensor(0.0, dtype=F64), crossing, rtol=rtol, atol=atol,
        options=dict(options)))
    assert our_sol.shape == (2, 3)
    assert 0.5 < float(our_t) < 2.0  # a genuine crossing, well inside the run
    torch.testing.assert_close(our_t, ref_t, rtol=0, atol=1e-12)
    torch.testing.assert_close(our_sol, ref_sol, rtol=0, atol=1e-12)
    assert abs(float(crossing(our_t, our_sol[1].detach()))) < 1e-7
    assert our_f.times == ref_f.times
    assert our_w == ref_w
    ours = torch.autograd.grad(our_sol[1].sum(), y0)[0]
    theirs = torch.autograd.grad(ref_sol[1].sum(), y0)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_event_requires_step_size():
    with pytest.raises(ValueError, match="step_size"):
        fg.solve_fixed_grid_until_event("rk4", Oscillator(), y0_of(), torch.tensor(0.0, dtype=F64),
                                        crossing, rtol=RTOL, atol=ATOL, options={})


def test_event_gives_up_after_20000_steps():
    calls = []

    def still(t, y):
        calls.append(1)
        return torch.zeros_like(y)

    with pytest.raises(RuntimeError, match="maximum number of iterations 20000"):
        fg.solve_fixed_grid_until_event("euler", still, torch.ones(1, dtype=F64),
                                        torch.tensor(0.0, dtype=F64), lambda t, y: y[0],
                                        rtol=RTOL, atol=ATOL, options={"step_size": 1.0})
    assert len(calls) == 20000


# --------------------------------------------------------------------------------------------
# Warnings and errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_warns_like_torchdiffeq(tdq, method):
    solver_class = importlib.import_module("torchdiffeq._impl.odeint").SOLVERS[method]
    assert fg.FIXED_GRID_METHODS[method] == solver_class.__name__
    options = {"step_size": 0.5, "foo": 1, "bar": "x"}
    expected = f"{solver_class.__name__}: Unexpected arguments {{'foo': 1, 'bar': 'x'}}"
    _, ref_w = recorded(lambda: tdq.odeint(Oscillator(), y0_of(), T_COARSE, method=method,
                                           options=dict(options)))
    assert expected in ref_w
    with pytest.warns(UserWarning, match=re.escape(expected)):
        # Loose tolerances: this test is about the option warning, not the corrector's.
        out = fg.solve_fixed_grid(method, Oscillator(), y0_of(), T_COARSE, rtol=1e-2, atol=1e-2,
                                  options=options)
    assert torch.isfinite(out).all()


def test_tolerance_and_norm_options_are_ignored_silently():
    options = {"step_size": 0.1, "rtol": 1.0, "atol": 1.0, "norm": lambda x: x.abs().max()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), T_COARSE, rtol=1e-3,
                                  atol=1e-5, options=options)
    plain = fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), T_COARSE, rtol=1e-3,
                                atol=1e-5, options={"step_size": 0.1})
    assert torch.equal(out, plain)


def test_adams_nonconvergence_warns():
    with pytest.warns(UserWarning, match="Functional iteration did not converge. Solution may be incorrect."):
        fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), T_COARSE, rtol=1e-13, atol=1e-15,
                            options={"step_size": 0.05, "max_iters": 1})


@pytest.mark.parametrize("max_order", [1, 2, 3])
def test_adams_low_max_order_warns_and_is_rk4(max_order):
    options = {"step_size": 0.05}
    with pytest.warns(UserWarning, match=re.escape("max_order is below 4, so the solver reduces to `rk4`.")):
        adams = fg.solve_fixed_grid("implicit_adams", Oscillator(), y0_of(), T_COARSE, rtol=RTOL, atol=ATOL,
                                    options={**options, "max_order": max_order})
    rk4 = fg.solve_fixed_grid("rk4", Oscillator(), y0_of(), T_COARSE, rtol=RTOL, atol=ATOL, options=options)
    assert torch.equal(adams, rk4)


@pytest.mark.parametrize("method,options,match", [
    ("euler", {"step_size": 0.1, "grid_constructor": warped_grid}, "mutually exclusive"),
    ("euler", {"step_size": 0.0}, "step_size must be positive"),
    ("rk4", {"grid_constructor": lambda f, y0, t: t[:-1]}, "grid_constructor"),
    ("rk4", {"grid_constructor": lambda f, y0, t: t[1:]}, "grid_constructor"),
    ("midpoint", {"interp": "quadratic"}, r"interp must be one of \('linear', 'cubic'\)"),
    ("implicit_adams", {"max_order": 13}, "max_order must be at most 12"),
    ("implicit_adams", {"max_order": 0}, "max_order must be at least 1"),
    ("fixed_adams", {"max_iters": 0}, "max_iters must be at least 1"),
    ("explicit_adams", {"implicit": True}, "implicit"),
])
def test_option_errors(method, options, match):
    with pytest.raises(ValueError, match=match):
        fg.solve_fixed_grid(method, Oscillator(), y0_of(), T_COARSE, rtol=RTOL, atol=ATOL, options=options)
