"""pyode.compat.torchdiffeq: torchdiffeq 0.2.5's API on pyode's solvers.

Checked against exact or scipy reference solutions, against finite differences, odeint against
odeint_adjoint, and against torchdiffeq 0.2.5 itself where both are right. The fixed-grid solvers have
their own file (test_compat_fixed_grid.py).
"""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode.compat import torchdiffeq as tdq

torchdiffeq = pytest.importorskip("torchdiffeq")

F64 = torch.float64
ADAPTIVE = ["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"]
FIXED = ["euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams"]
PYODE_NAMES = ["tsit5", "vern7", "rodas5p", "kencarp4", "fbdf"]


class Cubic(torch.nn.Module):
    """A small nonlinear network right-hand side with parameters (Chen et al.'s spiral, cubed input)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(0.5 * torch.randn(2, 16, generator=g, dtype=F64))
        self.w2 = torch.nn.Parameter(0.5 * torch.randn(16, 2, generator=g, dtype=F64))
        self.a = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64))

    def forward(self, t, y):
        return (y ** 3) @ self.a * 0.5 + torch.tanh(y @ self.w1) @ self.w2 * 0.1


def reference(f, y0, t, rtol=1e-13):
    """scipy DOP853 at tight tolerance on the flattened state."""
    shape = y0.shape

    def rhs(s, y):
        with torch.no_grad():
            return f(torch.tensor(s, dtype=F64), torch.tensor(y).reshape(shape)).reshape(-1).numpy()

    tt = t.detach().numpy()
    sol = solve_ivp(rhs, (tt[0], tt[-1]), y0.detach().reshape(-1).numpy(), t_eval=tt, method="DOP853",
                    rtol=rtol, atol=rtol)
    return torch.tensor(sol.y.T).reshape(len(tt), *shape)


Y0 = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=F64)
T = torch.linspace(0.0, 2.0, 7, dtype=F64)


# ---- shapes and layouts -----------------------------------------------------------------------
# Coarse grids (t itself) leave the Adams corrector unconverged, with torchdiffeq's warning.
@pytest.mark.filterwarnings("ignore:Functional iteration did not converge")
@pytest.mark.parametrize("method", ADAPTIVE + FIXED + PYODE_NAMES + ["scipy_solver"])
@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 1, 3)])
def test_output_shape_matches_torchdiffeq(method, shape):
    y0 = torch.linspace(0.5, 1.5, math.prod(shape), dtype=F64).reshape(shape)
    t = torch.linspace(0.0, 0.5, 4, dtype=F64)
    f = lambda t, y: -y * (1 + t)                                           # noqa: E731
    out = tdq.odeint(f, y0, t, method=method)
    assert out.shape == (4, *shape) and out.dtype == y0.dtype
    exact = y0 * torch.exp(-(t + t ** 2 / 2)).reshape(-1, *[1] * len(shape))
    tol = {"euler": 0.1, "midpoint": 1e-2, "heun2": 1e-2, "heun3": 1e-3, "explicit_adams": 5e-3}.get(method, 1e-4)
    assert torch.allclose(out, exact, atol=tol, rtol=0)
    if method in ADAPTIVE or method == "scipy_solver":
        ref = torchdiffeq.odeint(f, y0, t, method=method)
        assert ref.shape == out.shape


def test_single_output_time_returns_y0():
    y0 = torch.ones(2, 3, dtype=F64)
    out = tdq.odeint(lambda t, y: -y, y0, torch.tensor([0.3], dtype=F64))
    assert out.shape == (1, 2, 3) and torch.equal(out[0], y0)


def test_tuple_state_shapes_values_and_per_entry_tolerances():
    # A harmonic oscillator split into a scalar position and a (1,)-shaped velocity.
    def f(t, s):
        x, v = s
        return v.reshape(()), -x.reshape(1)

    y0 = (torch.tensor(1.0, dtype=F64), torch.tensor([0.0], dtype=F64))
    t = torch.linspace(0, 3, 5, dtype=F64)
    x, v = tdq.odeint(f, y0, t, rtol=(1e-9, 1e-9), atol=(1e-11, 1e-11))
    assert x.shape == (5,) and v.shape == (5, 1)
    assert torch.allclose(x, torch.cos(t), atol=1e-8) and torch.allclose(v[:, 0], -torch.sin(t), atol=1e-8)
    with pytest.raises(ValueError, match="rtol has 3 entries for a tuple y0 of 2 tensors"):
        tdq.odeint(f, y0, t, rtol=(1e-9, 1e-9, 1e-9))


def test_func_sees_a_0d_time_in_the_state_dtype_and_the_users_shape():
    seen = []

    def f(t, y):
        seen.append((t.shape, t.dtype, y.shape))
        return -y

    for dtype in (torch.float32, F64):
        seen.clear()
        tdq.odeint(f, torch.ones(2, 3, dtype=dtype), torch.tensor([0.0, 1.0], dtype=F64))
        assert set(seen) == {(torch.Size([]), dtype, torch.Size([2, 3]))}


class Constant(torch.nn.Module):
    """torchdiffeq's ConstantODE: a 0-d state, y = a t + b exactly, parameters a and b."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))
        self.b = torch.nn.Parameter(torch.tensor(3.0, dtype=F64))

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5


@pytest.mark.filterwarnings("ignore:Functional iteration did not converge")
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rodas5p", "rk4", "implicit_adams", "scipy_solver"])
def test_zero_dim_state_through_odeint(method):
    """A 0-d y0 (torchdiffeq's ConstantODE) gives outputs of shape (len(t),), exact here, with
    torchdiffeq's gradients."""
    t = torch.linspace(1.0, 8.0, 5, dtype=F64)
    results = []
    for lib in (tdq, torchdiffeq):
        if lib is torchdiffeq and method in PYODE_NAMES + ["rodas5p"]:
            continue
        f = Constant()
        y0 = torch.tensor(3.2, dtype=F64, requires_grad=True)
        out = lib.odeint(f, y0, t, method=method)
        assert out.shape == (5,)
        assert torch.allclose(out.detach(), 0.2 * t + 3.0, rtol=1e-10, atol=0)
        if method != "scipy_solver":
            results.append(torch.autograd.grad(out[-1], (y0, f.a, f.b)))
    if len(results) == 2:
        for ours, theirs in zip(*results):
            assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_zero_dim_state_through_odeint_adjoint_and_odeint_event(method):
    t = torch.linspace(1.0, 8.0, 5, dtype=F64)
    options = {"step_size": 0.01} if method == "rk4" else None
    grads = []
    for interface in ("odeint", "odeint_adjoint"):
        f = Constant()
        y0 = torch.tensor(3.2, dtype=F64, requires_grad=True)
        out = getattr(tdq, interface)(f, y0, t, method=method, options=options)
        assert out.shape == (5,)
        grads.append(torch.autograd.grad((out ** 2).sum(), (y0, f.a, f.b)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-6)
    # From y(1) = y0 the solution is y0 + a (t - 1) (to first order in y0 - a - b), reaching 4 at
    # t* = 1 + (4 - y0) / a = 5: dt*/da = -(4 - y0) / a**2 = -20, dt*/dy0 = -1/a = -5, dt*/db = 0.
    f = Constant()
    y0 = torch.tensor(3.2, dtype=F64, requires_grad=True)
    event_t, ys = tdq.odeint_event(f, y0, torch.tensor(1.0, dtype=F64), event_fn=lambda tt, y: y - 4.0,
                                   method=method, options=options, odeint_interface=tdq.odeint_adjoint)
    assert ys.shape == (2,) and abs(float(event_t) - 5.0) < 1e-7 and abs(float(ys[-1].detach()) - 4.0) < 1e-7
    da, db, dy0 = torch.autograd.grad(event_t, (f.a, f.b, y0))
    assert abs(float(da) + 20.0) < 1e-5 and abs(float(db)) < 1e-9 and abs(float(dy0) + 5.0) < 1e-6


def test_float32_state_runs_torchdiffeqs_rtol_as_given():
    """torchdiffeq's rtol=1e-7 with a float32 state, below what pyode.solve accepts for float32
    (4 eps = 4.8e-7), is run as given: the same steps as the float64 state and its accuracy (bosh3
    here: 737 evaluations either way, errors 1.3e-6 and 2.5e-6; rtol raised to 4.8e-7 took 449 and
    erred by 1.1e-5). With a pyode sensealg the solve is pyode.solve's, at rtol 4.8e-7."""
    f64 = Cubic(seed=2)
    f32 = Cubic(seed=2).float()
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    ref = reference(f64, Y0, t)
    runs = {}
    for name, f, y0, tt in (("float64", f64, Y0, t), ("float32", f32, Y0.float(), t.float())):
        g, n = count_calls(f)
        with torch.no_grad():
            out = tdq.odeint(g, y0, tt, method="bosh3")
        runs[name] = (n[0], float((out.double() - ref).abs().max()))
    # The same steps up to the round-off of a float32 state in the error estimates (the fused loop's
    # order of operations costs the float64 run 4 more evaluations: 741 against 737); rtol
    # raised to float32's floor would take 40 % fewer.
    assert abs(runs["float32"][0] - runs["float64"][0]) <= 0.01 * runs["float64"][0]
    assert runs["float32"][1] < 2 * runs["float64"][1] + 1e-6
    n_calls = [0]
    f32.register_forward_hook(lambda *_: n_calls.__setitem__(0, n_calls[0] + 1))
    with torch.no_grad():
        tdq.odeint(f32, Y0.float(), t.float(), method="bosh3", sensealg=pyode.InterpolatingAdjoint())
    assert n_calls[0] < runs["float32"][0]


# ---- accuracy --------------------------------------------------------------------------------
# Global error / tolerance measured on this problem at two tolerances, times about 3: the low-order
# pairs (and FBDF's variable-order error estimate) accumulate more global error per unit tolerance.
ERROR_PER_TOL = {"bosh3": 500, "fehlberg2": 1e4, "fbdf": 800}
TOLS = {"bosh3": (1e-5, 1e-7), "fehlberg2": (1e-5, 1e-7), "adaptive_heun": (1e-5, 1e-7)}


@pytest.mark.parametrize("method", ADAPTIVE + PYODE_NAMES)
def test_adaptive_methods_against_tight_reference(method):
    f = Cubic()
    ref = reference(f, Y0, T)
    loose, tight = TOLS.get(method, (1e-6, 1e-9))
    errors = []
    with torch.no_grad():
        for tol in (loose, tight):
            out = tdq.odeint(f, Y0, T, method=method, rtol=tol, atol=tol)
            errors.append(float((out - ref).abs().max()))
            assert errors[-1] < ERROR_PER_TOL.get(method, 200) * tol
    # tolerance proportionality: 100x tighter tolerances buy at least 20x smaller errors
    assert errors[1] < errors[0] / 20


@pytest.mark.parametrize("method", ADAPTIVE)
def test_agrees_with_torchdiffeq_where_both_converge(method):
    """At the same tolerances pyode's result is never less accurate than torchdiffeq's by more than
    a factor of 2 (on this problem it is as or more accurate for every method)."""
    f = Cubic(seed=1)
    ref = reference(f, Y0, T)
    rtol, atol = (1e-5 if method in TOLS else 1e-7), 1e-9
    with torch.no_grad():
        ours = tdq.odeint(f, Y0, T, method=method, rtol=rtol, atol=atol)
        theirs = torchdiffeq.odeint(f, Y0, T, method=method, rtol=rtol, atol=atol)
    err_ours, err_theirs = (ours - ref).abs().max(), (theirs - ref).abs().max()
    assert err_ours < 2 * err_theirs


def test_decreasing_time_matches_reference_and_func_sees_real_times():
    f = Cubic(seed=2)
    t = torch.linspace(1.0, -1.0, 5, dtype=F64)
    times = []

    def g(s, y):
        times.append(float(s))
        return f(s, y)

    with torch.no_grad():
        out = tdq.odeint(g, Y0, t, rtol=1e-10, atol=1e-10)
        ref = reference(f, Y0, t)
        theirs = torchdiffeq.odeint(f, Y0, t, rtol=1e-10, atol=1e-10)
    assert torch.allclose(out, ref, atol=1e-8)
    assert torch.allclose(out, theirs, atol=1e-8)
    assert min(times) >= -1.0 - 1e-12 and max(times) <= 1.0 + 1e-12 and min(times) < 0.0


@pytest.mark.filterwarnings("ignore:The following arguments have no effect")    # min_step, passed as torchdiffeq does
def test_scipy_solver_matches_reference_and_reports_failure():
    f = Cubic(seed=3)
    with torch.no_grad():
        out = tdq.odeint(f, Y0, T, method="scipy_solver", rtol=1e-10, atol=1e-10,
                         options={"solver": "DOP853"})
    assert torch.allclose(out, reference(f, Y0, T), atol=1e-8)
    blowup = lambda t, y: y ** 2                                             # noqa: E731
    with pytest.raises(RuntimeError, match="scipy_solver .* failed"):
        tdq.odeint(blowup, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), method="scipy_solver",
                   options={"solver": "RK45"})


def test_stiff_robertson_with_pyode_methods():
    """What torchdiffeq's explicit methods cannot do in reasonable time: Robertson to t = 1e4."""
    k1, k2, k3 = 0.04, 3e7, 1e4

    def rober(t, y):
        a, b, c = y.unbind(-1)
        return torch.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b], -1)

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 100.0, 1e4], dtype=F64)
    ref = solve_ivp(lambda s, y: rober(s, torch.tensor(y)).numpy(), (0, 1e4), y0.numpy(), t_eval=t.numpy(),
                    method="Radau", rtol=1e-11, atol=1e-14).y.T
    for method in ("rodas5p", "kencarp4", "fbdf", pyode.Rodas5P(autodiff=False)):
        out = tdq.odeint(rober, y0, t, method=method, rtol=1e-7, atol=1e-10)
        assert np.allclose(out.numpy(), ref, rtol=1e-4, atol=1e-9), method


# ---- options --------------------------------------------------------------------------------
def count_calls(f):
    n = [0]

    def g(t, y):
        n[0] += 1
        return f(t, y)

    return g, n


def test_max_num_steps_counts_per_output_interval_as_torchdiffeq():
    f = lambda t, y: -y                                                      # noqa: E731
    y0 = torch.ones(1, dtype=F64)
    t = torch.linspace(0, 10, 100, dtype=F64)
    ours = tdq.odeint(f, y0, t, options={"max_num_steps": 10})
    assert torch.allclose(ours, torchdiffeq.odeint(f, y0, t, options={"max_num_steps": 10}), rtol=1e-5)
    with pytest.raises(pyode.SolveError, match="MaxIters"):
        tdq.odeint(f, y0, t[[0, -1]], options={"max_num_steps": 10})


def test_max_step_and_first_step_bound_the_steps():
    f = lambda t, y: -y                                                      # noqa: E731
    t = torch.tensor([0.0, 10.0], dtype=F64)
    g, n = count_calls(f)
    tdq.odeint(g, torch.ones(1, dtype=F64), t, rtol=1e-3, atol=1e-3)
    g2, n2 = count_calls(f)
    out = tdq.odeint(g2, torch.ones(1, dtype=F64), t, rtol=1e-3, atol=1e-3, options={"max_step": 0.1})
    assert n2[0] >= 6 * 100 > n[0]            # at least 100 steps of 6 new stages each
    assert torch.allclose(out[-1], torch.exp(-t[-1:]), rtol=1e-3)


def test_jump_t_restores_accuracy_at_a_discontinuity():
    """f switches sign at t = 1: stepping onto the jump keeps the error at tolerance level."""
    f = lambda t, y: torch.where(t < 1.0, torch.ones_like(y), -torch.ones_like(y))   # noqa: E731
    t = torch.tensor([0.0, 2.0], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    plain = tdq.odeint(f, y0, t, rtol=1e-6, atol=1e-6)
    jumped = tdq.odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"jump_t": torch.tensor([1.0], dtype=F64)})
    stepped = tdq.odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"step_t": torch.tensor([1.0], dtype=F64)})
    assert abs(float(jumped[-1])) < 1e-12 and abs(float(stepped[-1])) < 1e-12
    assert abs(float(plain[-1])) > abs(float(jumped[-1]))
    # decreasing time: the jump is given in the user's times
    back = tdq.odeint(f, torch.zeros(1, dtype=F64), t.flip(0), options={"jump_t": torch.tensor([1.0], dtype=F64)})
    assert abs(float(back[-1])) < 1e-12


class Switching:
    """torchdiffeq's test problem for jump_t: dx/dt = -x/2 before t = 1/2, x**2 after, logging the
    times f sees. Exact: x(1/2) = x0 exp(-1/4), then x(t) = 1 / (1/x(1/2) - (t - 1/2))."""

    def __init__(self):
        self.times = []

    def __call__(self, t, x):
        self.times.append(t.item())
        return -0.5 * x if t < 0.5 else x ** 2

    @staticmethod
    def exact_at_1(x0):
        return 1 / (1 / (x0.double() * math.exp(-0.25)) - 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_jump_t_fewer_evaluations_and_accurate_across_the_discontinuity(method, dtype):
    """At the same tolerances, jump_t costs fewer evaluations than stepping blindly over the jump
    (dopri5: 123 against 272 in float32; bosh3: 231 against 320) and is more accurate. In float32 the
    step ending at the jump sees f's left limit and the next its right limit, as torchdiffeq's
    perturbation gives them: the float32 neighbours of 1/2, never 1/2 itself, which is f after the jump."""
    x0 = torch.tensor([1.0, 2.0], dtype=dtype)
    t = torch.tensor([0.0, 1.0])
    runs = {}
    for name, options in (("plain", None), ("jump", {"jump_t": torch.tensor([0.5])})):
        f = Switching()
        out = tdq.odeint(f, x0, t, rtol=1e-6, atol=1e-6, method=method, options=options)
        error = float(((out[-1].double() - Switching.exact_at_1(x0)) / Switching.exact_at_1(x0)).abs().max())
        runs[name] = (len(f.times), error, f.times)
    (n_plain, err_plain, _), (n_jump, err_jump, times) = runs["plain"], runs["jump"]
    assert n_jump < 0.8 * n_plain
    assert err_jump < min(err_plain, 5e-5)
    half = torch.tensor(0.5, dtype=dtype)
    left, right = (float(torch.nextafter(half, half + d)) for d in (-1, 1))
    assert left in times and right in times and 0.5 not in times


def test_jump_t_in_the_backward_solve_of_odeint_adjoint():
    """odeint_adjoint's backward solve takes jump_t from the options too: fewer evaluations there,
    and a more accurate gradient."""
    nfe, errors = [], []
    for options in (None, {"jump_t": torch.tensor([0.5])}):
        f = Switching()
        x0 = torch.tensor([1.0, 2.0], requires_grad=True)
        out = tdq.odeint_adjoint(f, x0, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6, options=options,
                                 adjoint_params=())
        f.times.clear()
        out.sum().backward()
        nfe.append(len(f.times))
        # the sum holds x(0) and x(1), and d x(1) / d x0 = exp(-1/4) (x(1) / x(1/2))**2
        x1, x_half = Switching.exact_at_1(x0.detach()), x0.detach().double() * math.exp(-0.25)
        exact = 1 + math.exp(-0.25) * (x1 / x_half) ** 2
        errors.append(float(((x0.grad.double() - exact) / exact).abs().max()))
    assert nfe[1] < 0.8 * nfe[0]
    assert errors[1] < min(errors[0], 1e-5)


def test_custom_norm_sees_the_users_layout_and_changes_the_steps():
    f = Cubic(seed=4)
    shapes = []

    def max_norm(x):
        shapes.append(tuple(x.shape))
        return x.abs().max()

    g1, n1 = count_calls(f)
    g2, n2 = count_calls(f)
    with torch.no_grad():
        rms = tdq.odeint(g1, Y0, T, rtol=1e-6, atol=1e-6)
        mx = tdq.odeint(g2, Y0, T, rtol=1e-6, atol=1e-6, options={"norm": max_norm})
    assert set(shapes) == {(2, 2)}
    assert n2[0] > n1[0]                      # the max norm is the stricter one
    assert (mx - reference(f, Y0, T)).abs().max() < 50e-6


def test_tuple_state_uses_the_mixed_norm_by_default():
    """torchdiffeq's default for tuples: the largest RMS norm over the tuple's tensors. A tiny second
    tensor therefore cannot dilute the error of the first, unlike one RMS over everything."""
    f = lambda t, s: (-s[0] * 3, torch.zeros_like(s[1]))                   # noqa: E731
    y0 = (torch.ones(1, dtype=F64), torch.zeros(99, dtype=F64))
    g1, n1 = count_calls(f)
    g2, n2 = count_calls(lambda t, y: -y * 3)
    tdq.odeint(g1, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-6)
    tdq.odeint(g2, y0[0], torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-6)
    assert n1[0] == n2[0]


def test_unknown_options_warn_as_torchdiffeq_does():
    f = lambda t, y: -y                                                      # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.warns(UserWarning, match=r"Dopri5Solver: Unexpected arguments \{'step_size': 0.1\}"):
        tdq.odeint(f, torch.ones(1, dtype=F64), t, options={"step_size": 0.1})
    with pytest.warns(UserWarning, match=r"Dopri5Solver: Unexpected arguments"):
        torchdiffeq.odeint(f, torch.ones(1, dtype=F64), t, options={"step_size": 0.1})


def test_safety_factors_select_the_controller():
    f = Cubic(seed=5)
    g1, n1 = count_calls(f)
    g2, n2 = count_calls(f)
    with torch.no_grad():
        tdq.odeint(g1, Y0, T, rtol=1e-6, atol=1e-6)
        out = tdq.odeint(g2, Y0, T, rtol=1e-6, atol=1e-6, options={"safety": 0.5, "ifactor": 1.5})
    assert n2[0] > n1[0]
    assert (out - reference(f, Y0, T)).abs().max() < 50e-6


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="dopri6"), ValueError, 'Invalid method "dopri6". Must be one of'),
    (dict(method=pyode.Tsit5), TypeError, "got the class Tsit5: pass Tsit5()"),
    (dict(t=torch.tensor([0.0, 1.0, 0.5], dtype=F64)), ValueError, "strictly increasing or decreasing"),
    (dict(t=torch.zeros(2, 2, dtype=F64)), ValueError, "one-dimensional"),
    (dict(t=torch.tensor([0, 1])), TypeError, "floating point"),
    (dict(t=[0.0, 1.0]), TypeError, "t must be a 1-D torch.Tensor"),
    (dict(y0=torch.ones(2, dtype=torch.int64)), TypeError, "y0 has dtype torch.int64"),
    (dict(y0=[1.0, 2.0]), TypeError, "y0 must be a torch.Tensor or a tuple"),
    (dict(rtol=torch.tensor(1e-6, requires_grad=True)), ValueError, "rtol cannot require gradient"),
    (dict(atol=-1.0), ValueError, "atol must be finite and non-negative"),
    (dict(options=[("max_step", 1.0)]), TypeError, "options must be a dict"),
    (dict(event_fn=lambda t, y: y[0], t=torch.tensor([0.0, 1.0, 2.0], dtype=F64)), ValueError, "len\\(t\\) == 2"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    call = dict(func=lambda t, y: -y, y0=torch.ones(2, dtype=F64), t=torch.tensor([0.0, 1.0], dtype=F64))
    call.update(kwargs)
    with pytest.raises(error, match=match):
        tdq.odeint(call.pop("func"), call.pop("y0"), call.pop("t"), **call)


def test_wrong_rhs_shape_is_reported():
    with pytest.raises(ValueError, match="func returned 3 values for a state of 2"):
        tdq.odeint(lambda t, y: torch.ones(3, dtype=F64), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


def test_solver_failure_raises_with_time_and_step():
    blowup = lambda t, y: y ** 2                                             # noqa: E731
    with pytest.raises(pyode.SolveError, match=r"t="):
        tdq.odeint(blowup, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64))


# ---- gradients -------------------------------------------------------------------------------
def loss_of(out):
    return (out[1:] ** 2).sum() + out[-1].sum()


def fd_grad(fn, x, eps=1e-6):
    """Central differences of the scalar fn() with respect to the tensor x (in place, restored)."""
    g = torch.zeros_like(x)
    flat, gflat = x.data.view(-1), g.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = float(fn())
        flat[i] = old - eps
        down = float(fn())
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("method", ["dopri5", "rk4", "tsit5"])
def test_odeint_and_odeint_adjoint_gradients_agree_with_finite_differences(method):
    """odeint differentiates the discrete solve (equal to its finite differences); odeint_adjoint
    solves the continuous adjoint, equal up to the truncation error: tolerance-sized for adaptive
    methods, O(h⁴) for fixed RK4 steps (and then equal to torchdiffeq's own adjoint to round-off)."""
    f = Cubic(seed=6)
    y0 = Y0.clone().requires_grad_()
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    opts = {"step_size": 0.002} if method == "rk4" else None
    kw = dict(method=method, options=opts, rtol=1e-10, atol=1e-10)
    grads = {}
    for name, fn in (("odeint", tdq.odeint), ("adjoint", tdq.odeint_adjoint)):
        f.zero_grad()
        y0.grad = None
        loss_of(fn(f, y0, t, **kw)).backward()
        grads[name] = (y0.grad.clone(), f.a.grad.clone())
    with torch.no_grad():
        fd_y0 = fd_grad(lambda: loss_of(tdq.odeint(f, y0.detach(), t, **kw)), y0)
        fd_a = fd_grad(lambda: loss_of(tdq.odeint(f, y0.detach(), t, **kw)), f.a)
    rtol = 1e-3 if method == "rk4" else 1e-5
    for name, (gy, ga) in grads.items():
        assert torch.allclose(gy, fd_y0, rtol=rtol, atol=1e-7), name
        assert torch.allclose(ga, fd_a, rtol=rtol, atol=1e-7), name
    assert torch.allclose(grads["odeint"][0], fd_y0, rtol=1e-6, atol=1e-8)
    if method == "rk4":
        y0.grad = None
        loss_of(torchdiffeq.odeint_adjoint(f, y0, t, **kw)).backward()
        assert torch.allclose(grads["adjoint"][0], y0.grad, rtol=1e-10, atol=1e-12)


def test_adjoint_with_closure_parameters_and_decreasing_time():
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    f = lambda t, y: -k * y * (1 + t)                                        # noqa: E731
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    out = tdq.odeint_adjoint(f, y0, t, adjoint_params=(k,), rtol=1e-10, atol=1e-10)
    out[-1].sum().backward()
    # y(0) = y(1) exp(k (1 + 1/2)) going back from t = 1 to 0
    assert torch.allclose(out[-1].detach(), y0.detach() * math.exp(0.7 * 1.5), rtol=1e-8)
    assert torch.allclose(k.grad, torch.tensor(1.5 * 3 * math.exp(0.7 * 1.5), dtype=F64), rtol=1e-7)
    assert torch.allclose(y0.grad, torch.full((2,), math.exp(0.7 * 1.5), dtype=F64), rtol=1e-8)


def test_adjoint_seminorm_same_gradient_fewer_backward_steps():
    f = Cubic(seed=7)
    y0 = Y0.clone().requires_grad_()
    counts, grads = {}, {}
    for norm in (None, "seminorm"):
        g, n = count_calls(f)
        f.zero_grad()
        out = tdq.odeint_adjoint(g, y0, T, rtol=1e-7, atol=1e-9, adjoint_params=tuple(f.parameters()),
                                 adjoint_options=None if norm is None else {"norm": norm})
        forward = n[0]
        loss_of(out).backward()
        counts[norm], grads[norm] = n[0] - forward, f.a.grad.clone()
    assert counts["seminorm"] < counts[None]
    assert torch.allclose(grads["seminorm"], grads[None], rtol=1e-5)


def test_time_gradients_match_torchdiffeq_and_the_exact_rule():
    """dL/dt_i = <dL/dy(t_i), f(y(t_i))>; dL/dt_0 = -<λ(t_0), f(y0)>."""
    f = Cubic(seed=8)
    grads = []
    for fn in (tdq.odeint, tdq.odeint_adjoint, torchdiffeq.odeint, torchdiffeq.odeint_adjoint):
        t = T.clone().requires_grad_()
        loss_of(fn(f, Y0, t, rtol=1e-10, atol=1e-10)).backward()
        grads.append(t.grad)
    tt = T.clone()
    with torch.no_grad():
        fd = fd_grad(lambda: loss_of(tdq.odeint(f, Y0, tt, rtol=1e-10, atol=1e-10)), tt)
    for g in grads:
        assert torch.allclose(g, fd, rtol=1e-5, atol=1e-6)


def test_tuple_state_adjoint_gradients():
    w = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)

    def f(t, s):
        x, v = s
        return v, -x + w[0] * v + w[1] * x ** 3

    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    t = torch.linspace(0, 1, 3, dtype=F64)
    gs = []
    for fn, kw in ((tdq.odeint, {}), (tdq.odeint_adjoint, {"adjoint_params": (w,)})):
        w.grad = None
        x, v = fn(f, y0, t, rtol=1e-10, atol=1e-10, **kw)
        (x[-1] * v[-1]).sum().backward()
        gs.append(w.grad.clone())
    with torch.no_grad():
        fd = fd_grad(lambda: (lambda s: (s[0][-1] * s[1][-1]).sum())(tdq.odeint(f, y0, t, rtol=1e-10, atol=1e-10)), w)
    assert torch.allclose(gs[0], fd, rtol=1e-5) and torch.allclose(gs[1], fd, rtol=1e-5)


@pytest.mark.parametrize("sensealg", [pyode.GaussAdjoint(), pyode.InterpolatingAdjoint(), pyode.BacksolveAdjoint(),
                                      pyode.ForwardSensitivity(), pyode.DirectAdjoint(checkpoints=3)])
def test_pyode_sensealg_through_odeint(sensealg):
    f = Cubic(seed=9)
    y0 = Y0.clone().requires_grad_()
    loss_of(tdq.odeint(f, y0, T, rtol=1e-10, atol=1e-10)).backward()
    want = (y0.grad.clone(), f.w1.grad.clone())
    f.zero_grad()
    y0.grad = None
    loss_of(tdq.odeint(f, y0, T, rtol=1e-10, atol=1e-10, method="tsit5", sensealg=sensealg)).backward()
    assert torch.allclose(y0.grad, want[0], rtol=1e-5, atol=1e-8)
    assert torch.allclose(f.w1.grad, want[1], rtol=1e-5, atol=1e-8)


def test_sensealg_refusals():
    f = lambda t, y: -y                                                      # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(TypeError, match="func must be an nn.Module"):
        tdq.odeint(f, y0, t, sensealg=pyode.GaussAdjoint())
    with pytest.raises(ValueError, match="needs one of pyode's methods"):
        tdq.odeint(Cubic(), Y0, t, method="rk4", sensealg=pyode.GaussAdjoint())
    with pytest.raises(TypeError, match="got the class GaussAdjoint"):
        tdq.odeint(Cubic(), Y0, t, sensealg=pyode.GaussAdjoint)


def test_adjoint_argument_errors_as_torchdiffeq():
    f = lambda t, y: -y                                                      # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match="func must be an instance of nn.Module"):
        tdq.odeint_adjoint(f, y0, t)
    with pytest.raises(ValueError, match="cannot infer `adjoint_options`"):
        tdq.odeint_adjoint(Cubic(), Y0, t, method="dopri5", adjoint_method="bosh3", options={"max_step": 1.0})
    with pytest.raises(ValueError, match="adjoint_options\\['norm'\\] must be 'seminorm' or a function"):
        tdq.odeint_adjoint(Cubic(), Y0, t, adjoint_options={"norm": "semi"})


class Robertson(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logk = torch.nn.Parameter(torch.tensor([math.log(0.04), math.log(3e7), math.log(1e4)], dtype=F64))

    def forward(self, t, y):
        k1, k2, k3 = self.logk.exp()
        a, b, c = y.unbind(-1)
        return torch.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b], -1)


def test_stiff_gradients_through_odeint_and_a_pyode_adjoint():
    """Robertson's rate constants: autograd through Rodas5P and GaussAdjoint (which, unlike a
    backsolve adjoint, stays stable on stiff problems) against finite differences."""
    rober = Robertson()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=F64)
    kw = dict(rtol=1e-9, atol=1e-12, method="rodas5p")
    with torch.no_grad():
        fd = fd_grad(lambda: tdq.odeint(rober, y0, t, **kw)[-1, 0], rober.logk, eps=1e-5)
    for sensealg in (None, pyode.GaussAdjoint()):
        rober.zero_grad()
        tdq.odeint(rober, y0, t, sensealg=sensealg, **kw)[-1, 0].backward()
        assert torch.allclose(rober.logk.grad, fd, rtol=1e-4, atol=1e-10), sensealg


def test_odeint_adjoint_with_a_stiff_method_on_both_passes():
    """A mildly stiff linear system (eigenvalues -1 and -20): the backward solve uses Rodas5P too,
    with finite-difference Jacobians of the augmented dynamics."""
    theta = torch.tensor([1.0, 20.0, 0.5], dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.stack([-theta[0] * y[0] + theta[2] * y[1], -theta[1] * y[1]])

    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.5], dtype=F64)
    kw = dict(rtol=1e-9, atol=1e-12, method="rodas5p")
    with pytest.warns(UserWarning, match="for a stiff problem that backward solve is unstable"):
        out = tdq.odeint_adjoint(f, y0, t, adjoint_params=(theta,), **kw)
    out[1:, 0].sum().backward()
    g_adj = theta.grad.clone()
    theta.grad = None
    tdq.odeint(f, y0, t, **kw)[1:, 0].sum().backward()
    assert torch.allclose(g_adj, theta.grad, rtol=1e-6, atol=1e-10)


# ---- events ----------------------------------------------------------------------------------
def ball(g):
    def f(t, s):
        h, v = s
        return v, -g * torch.ones_like(v)
    return f


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rodas5p", "bosh3"])
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_event_time_and_its_gradient_for_a_falling_ball(method, interface):
    """Drop from height h at speed v0: t* = (v0 + sqrt(v0² + 2 g h)) / g, known in closed form."""
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    v0 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=F64, requires_grad=True)
    f = ball(g)
    kw = dict(method=method, rtol=1e-10, atol=1e-12)
    if interface == "odeint":
        odeint_interface = tdq.odeint
    else:
        odeint_interface = tdq.odeint_adjoint
        kw["adjoint_params"] = (g,)
    with warnings.catch_warnings():
        # the stiff-adjoint warning (this problem is not stiff)
        warnings.filterwarnings("ignore", "odeint_adjoint with adjoint_method='rodas5p'")
        event_t, (hs, vs) = tdq.odeint_event(f, (h, v0), t0, event_fn=lambda t, s: s[0],
                                             odeint_interface=odeint_interface, **kw)
    exact = (v0 + torch.sqrt(v0 ** 2 + 2 * g * h)) / g
    assert hs.shape == (2,) and vs.shape == (2,)
    assert abs(float((event_t - exact).detach())) < 1e-9
    assert abs(float(hs[-1].detach())) < 1e-8
    want = torch.autograd.grad(t0 + exact, (g, h, v0, t0))
    got = torch.autograd.grad(event_t, (g, h, v0, t0), retain_graph=True)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    # the speed at impact: -sqrt(v0² + 2 g h), differentiable as well
    got_v = torch.autograd.grad(vs[-1], (g, h))
    want_v = torch.autograd.grad(-torch.sqrt(v0 ** 2 + 2 * g * h), (g, h))
    for a, b in zip(got_v, want_v):
        assert torch.allclose(a, b, rtol=1e-6)


def test_event_matches_torchdiffeq_and_handles_reverse_time_and_several_functions():
    f = lambda t, y: torch.stack([y[1], -y[0]])                              # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)
    # several event functions: the first to reach zero ends the solve (y0 = cos t hits 0.5 at pi/3)
    events = lambda t, y: torch.stack([y[0] - 0.5, y[1] + 2.0])              # noqa: E731
    ours = tdq.odeint_event(f, y0, t0, event_fn=events, rtol=1e-10, atol=1e-12)
    theirs = torchdiffeq.odeint_event(f, y0, t0, event_fn=events, rtol=1e-10, atol=1e-12)
    assert abs(float(ours[0]) - math.pi / 3) < 1e-9
    assert abs(float(ours[0] - theirs[0])) < 1e-9 and torch.allclose(ours[1], theirs[1], atol=1e-9)
    back_t, back = tdq.odeint_event(f, y0, t0, event_fn=lambda t, y: y[0] - 0.5, reverse_time=True,
                                    rtol=1e-10, atol=1e-12)
    assert abs(float(back_t) + math.pi / 3) < 1e-9 and abs(float(back[-1, 0]) - 0.5) < 1e-9


def test_odeint_with_event_fn_returns_event_time_and_endpoint_states():
    f = lambda t, y: -y                                                      # noqa: E731
    y0 = torch.tensor([4.0], dtype=F64)
    event_t, sol = tdq.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=lambda t, y: y[0] - 1.0,
                              rtol=1e-10, atol=1e-12)
    assert sol.shape == (2, 1) and abs(float(event_t) - math.log(4.0)) < 1e-9
    assert event_t.dtype == F64 and event_t.shape == ()


def test_event_never_reached_fails_clearly():
    with pytest.raises(RuntimeError, match="event may never happen"):
        tdq.odeint(lambda t, y: y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                   event_fn=lambda t, y: y[0], options={"max_num_steps": 200})
    with pytest.raises(ValueError, match="scipy_solver"):
        tdq.odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                   event_fn=lambda t, y: y[0] - 0.5, method="scipy_solver")


# ---- odeint_dense ---------------------------------------------------------------------------
def test_odeint_dense_interpolates_with_gradients():
    k = torch.tensor(0.5, dtype=F64, requires_grad=True)
    fn = tdq.odeint_dense(lambda t, y: -k * y, torch.ones(2, dtype=F64), torch.tensor(0.0, dtype=F64),
                          torch.tensor(2.0, dtype=F64), rtol=1e-10, atol=1e-10)
    tq = torch.tensor([0.3, 1.7], dtype=F64)
    y = fn(tq)
    assert y.shape == (2, 2)
    assert torch.allclose(y[:, 0], torch.exp(-0.5 * tq), rtol=1e-8)
    y[1, 0].backward()
    assert abs(float(k.grad) + 1.7 * math.exp(-0.85)) < 1e-7


# ---- callbacks --------------------------------------------------------------------------------
class Logged(torch.nn.Module):
    """A forced Duffing oscillator whose solver callbacks log (kind, t0, y0's shape, dt)."""

    def __init__(self):
        super().__init__()
        self.nfe, self.log = 0, []

    def forward(self, t, y):
        self.nfe += 1
        return torch.stack([y[1], -y[0] * (1 + y[0] ** 2) + torch.sin(7 * t)])

    def callback_step(self, t0, y0, dt):
        self.log.append(("step", float(t0), tuple(y0.shape), float(dt)))

    def callback_accept_step(self, t0, y0, dt):
        self.log.append(("accept", float(t0), tuple(y0.shape), float(dt)))

    def callback_reject_step(self, t0, y0, dt):
        self.log.append(("reject", float(t0), tuple(y0.shape), float(dt)))


# New evaluations of f per trial step of the FSAL pairs: f at t0 and one more for the starting
# step are the rest of nfe = 2 + new * steps, in torchdiffeq and here alike.
NEW_STAGES = {"dopri5": 6, "bosh3": 3}


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_methods_call_the_step_callbacks_around_every_trial_step(method, reverse):
    """torchdiffeq's adaptive solvers call callback_step before each trial step and then
    callback_accept_step or callback_reject_step. Checked against torchdiffeq: each trial step costs
    the same new evaluations of f in both, so nfe = 2 + new * (number of callback_step calls)."""
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    t = t.flip(0) if reverse else t
    y0 = torch.tensor([1.5, 0.0], dtype=F64)
    for lib in (torchdiffeq, tdq):
        f = Logged()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = lib.odeint(f, y0, t, method=method, rtol=1e-6, atol=1e-8)
        kinds = [entry[0] for entry in f.log]
        steps, accepts, rejects = kinds.count("step"), kinds.count("accept"), kinds.count("reject")
        assert steps == accepts + rejects and accepts > 10 and rejects > 0, (lib.__name__, steps, rejects)
        assert f.nfe == 2 + NEW_STAGES[method] * steps, lib.__name__
        # every accept or reject follows the callback_step of the same step, with the state's shape
        assert kinds[0::2] == ["step"] * steps
        assert all(a[1] == b[1] and a[2] == b[2] == (2,) for a, b in zip(f.log[0::2], f.log[1::2]))
    # Here the accepted steps tile [t[0], t[-1]] in the user's times (torchdiffeq may step past
    # the end and interpolate back).
    accepted = [(t0, dt) for kind, t0, _, dt in f.log if kind == "accept"]
    sign = -1.0 if reverse else 1.0
    assert accepted[0][0] == float(t[0])
    for (t0, dt), (t1, _) in zip(accepted, accepted[1:]):
        assert dt > 0 and t1 == pytest.approx(t0 + sign * dt, abs=1e-12)
    assert accepted[-1][0] + sign * accepted[-1][1] == pytest.approx(float(t[-1]), abs=1e-12)
    # the values are those of the same solve without callbacks
    plain = tdq.odeint(lambda tt, y: Logged()(tt, y), y0, t, method=method, rtol=1e-6, atol=1e-8)
    assert torch.equal(out, plain)


def test_callbacks_leave_values_and_gradients_unchanged():
    """With callbacks the drop-in steps pyode's loop itself: the same steps, values and gradients
    (to the output times as well) as without."""
    results = []
    for cls in (Cubic, type("CubicWithCallback", (Cubic,), {"callback_step": lambda self, t0, y0, dt: None})):
        f = cls(seed=3)
        t = torch.tensor([2.0, 1.2, 0.0], dtype=F64, requires_grad=True)
        y0 = Y0.clone().requires_grad_()
        out = tdq.odeint(f, y0, t, options={"jump_t": torch.tensor([0.7], dtype=F64)})
        grads = torch.autograd.grad(loss_of(out), (y0, t, *f.parameters()))
        results.append((out.detach(), grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_odeint_adjoint_calls_the_adjoint_callbacks_as_torchdiffeq():
    """odeint_adjoint calls func's *_adjoint callbacks around the backward solve's steps, with the
    augmented state (t, y, a, *params); the fixed-grid methods callback_step_adjoint once per step."""
    counts = {}
    for lib in (torchdiffeq, tdq):
        for method, options in (("dopri5", None), ("rk4", {"step_size": 0.1})):
            f = Cubic(seed=1)
            log = []
            for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
                setattr(f, name, lambda t0, y0, dt, _name=name: log.append(("forward " + _name,)))
                setattr(f, name + "_adjoint", lambda t0, z, dt, _name=name: log.append(
                    (_name + "_adjoint", tuple(tuple(x.shape) for x in z))))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")       # the fixed grid's warning about accept/reject
                out = lib.odeint_adjoint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method=method,
                                         options=options)
                n_forward = len(log)
                out.sum().backward()
            backward = log[n_forward:]
            shapes = {entry[1] for entry in backward}
            assert shapes == {((), (2, 2), (2, 2), (2, 16), (16, 2), (2, 2))}, lib.__name__
            kinds = [entry[0] for entry in backward]
            counts[lib.__name__, method] = (n_forward, kinds.count("callback_step_adjoint"),
                                            kinds.count("callback_accept_step_adjoint"),
                                            kinds.count("callback_reject_step_adjoint"))
    for lib in ("torchdiffeq", "pyode.compat.torchdiffeq"):
        steps, accepts, rejects = counts[lib, "dopri5"][1:]
        assert steps == accepts + rejects > 0
        assert counts[lib, "rk4"] == (10, 10, 0, 0)


def test_callbacks_a_method_does_not_call_warn_as_torchdiffeq():
    def with_callback(name):
        f = Cubic()
        setattr(f, name, lambda t0, y0, dt: None)
        return f

    t = torch.tensor([0.0, 0.5], dtype=F64)
    for method, names in (("rk4", ["callback_accept_step", "callback_reject_step"]),
                          ("scipy_solver", ["callback_step", "callback_accept_step", "callback_reject_step"])):
        for name in names:
            for lib in (torchdiffeq, tdq):
                with pytest.warns(UserWarning, match=f"Solver '{method}' does not support callbacks .*{name}"):
                    lib.odeint(with_callback(name), Y0, t, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
            tdq.odeint(with_callback(name), Y0, t, method="dopri5")
        tdq.odeint(with_callback("callback_step"), Y0, t, method="rk4")
        tdq.odeint(with_callback("callback_step_adjoint"), Y0, t, method="scipy_solver")
    # pyode's sensitivity algorithms run through pyode.solve, which calls no callbacks: said so
    with pytest.warns(UserWarning, match=r"calls no solver callbacks: \['callback_step'\]"):
        tdq.odeint(with_callback("callback_step"), Y0, t, method="tsit5", sensealg=pyode.GaussAdjoint())


def test_fixed_grid_methods_call_callback_step_in_the_users_frame():
    calls = []

    class WithCallback(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_step(self, t0, y0, dt):
            calls.append((float(t0), tuple(y0.shape), float(dt)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tdq.odeint(WithCallback(), torch.ones(2, 1, dtype=F64), torch.tensor([1.0, 0.5, 0.0], dtype=F64),
                   method="euler")
    assert calls == [(1.0, (2, 1), 0.5), (0.5, (2, 1), 0.5)]


# ---- more layouts and dtypes ------------------------------------------------------------------
def test_float32_state_default_tolerances_and_norm_dtype():
    """torchdiffeq's default rtol=1e-7 is below float32's resolution: the drop-in still runs (as
    torchdiffeq, at that rtol) and a custom norm sees float32 values."""
    f = Cubic(seed=10).float()
    y0 = Y0.float()
    seen = set()

    def norm(x):
        seen.add(x.dtype)
        return x.abs().max()

    out = tdq.odeint(f, y0, T.float(), options={"norm": norm})
    assert out.dtype == torch.float32 and seen == {torch.float32}
    ref = reference(Cubic(seed=10), Y0, T)
    assert (out.double() - ref).abs().max() < 1e-4
    # and the adjoint in float32 agrees with autograd through the solver
    y = y0.clone().requires_grad_()
    loss_of(tdq.odeint_adjoint(f, y, T.float())).backward()
    g_adj = y.grad.clone()
    y.grad = None
    loss_of(tdq.odeint(f, y, T.float())).backward()
    assert torch.allclose(g_adj, y.grad, rtol=1e-3, atol=1e-4)


def test_pyode_fixed_step_algorithm_object_takes_step_size():
    t = torch.linspace(0, 1, 3, dtype=F64)
    out = tdq.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), t, method=pyode.RK4(), options={"step_size": 0.05})
    assert torch.allclose(out[:, 0], torch.exp(-t), rtol=1e-6)
    with pytest.raises(ValueError, match="takes fixed steps: pass options=\\{'step_size'"):
        tdq.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), t, method=pyode.RK4())


def test_non_finite_y0_is_refused():
    with pytest.raises(ValueError, match="y0 contains NaN or Inf"):
        tdq.odeint(lambda t, y: -y, torch.tensor([1.0, float("nan")], dtype=F64), T)


def test_adjoint_finds_the_tensors_of_a_data_parallel_replica():
    """A DataParallel replica keeps its weights as plain attributes: they are still differentiated."""
    class Replica(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self._is_replica = True
            self.w = w                        # not an nn.Parameter, as in a replica

        def forward(self, t, y):
            return -self.w * y

    w = torch.tensor(0.8, dtype=F64, requires_grad=True)
    tdq.odeint_adjoint(Replica(w), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))[-1].sum().backward()
    assert abs(float(w.grad) + math.exp(-0.8)) < 1e-7


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_adjoint_norm_sees_the_augmented_state_in_torchdiffeqs_layout(shape):
    """A tensor state's backward solve holds (t, y, a, *params) with y and a in the state's shape,
    as torchdiffeq's, whose tests reach the backward options through the output's grad_fn and
    replace the norm there."""
    w = torch.tensor([0.5, 0.2], dtype=F64, requires_grad=True)

    def f(t, y):
        return -w[0] * y + w[1] * torch.sin(t)

    for lib in (torchdiffeq, tdq):
        seen = []

        def adjoint_norm(z):
            seen.append(tuple(tuple(x.shape) for x in z))
            return max(x.abs().max() for x in z)

        out = lib.odeint_adjoint(f, torch.ones(shape, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                                 adjoint_params=(w,), adjoint_options={"norm": adjoint_norm})
        assert out.shape == (2, *shape)
        assert out.grad_fn.adjoint_options["norm"] is adjoint_norm
        replaced = []
        out.grad_fn.adjoint_options["norm"] = lambda z: replaced.append(1) or adjoint_norm(z)
        out.sum().backward()
        assert set(seen) == {((), shape, shape, (2,))} and replaced, lib.__name__


def test_tuple_adjoint_custom_norm_sees_the_tuple_layout():
    seen = []

    def adjoint_norm(z):
        seen.append(tuple(tuple(x.shape) for x in z))
        return max(x.abs().max() for x in z)

    w = torch.tensor([0.5], dtype=F64, requires_grad=True)
    y0 = (torch.ones(2, dtype=F64), torch.zeros(3, 1, dtype=F64))
    f = lambda t, s: (-w * s[0], s[1] * 0 + w)                               # noqa: E731
    a, b = tdq.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), adjoint_params=(w,),
                              adjoint_options={"norm": adjoint_norm})
    (a[-1].sum() + b[-1].sum()).backward()
    assert set(seen) == {((), (2,), (3, 1), (2,), (3, 1), (1,))}
    assert abs(float(w.grad) - (-2 * math.exp(-0.5) + 3)) < 1e-7


def test_event_with_a_tuple_state_through_odeint_adjoint_matches_torchdiffeq():
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    grads = []
    for lib in (tdq, torchdiffeq):
        t_ev, (hs, vs) = lib.odeint_event(ball(g), (h, torch.tensor(0.0, dtype=F64)), torch.tensor(0.0, dtype=F64),
                                          event_fn=lambda t, s: s[0], odeint_interface=lib.odeint_adjoint,
                                          adjoint_params=(g,), rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(t_ev + vs[-1], (g, h)))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, rtol=1e-6)


class CNF(torch.nn.Module):
    """FFJORD's pattern: state (z, log p), func computing the exact divergence with autograd inside."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.w = torch.nn.Parameter(0.5 * torch.randn(2, 8, generator=g, dtype=F64))
        self.u = torch.nn.Parameter(0.5 * torch.randn(8, 2, generator=g, dtype=F64))

    def forward(self, t, state):
        z, _ = state
        with torch.enable_grad():
            z = z.requires_grad_(True)
            dz = torch.tanh(z @ self.w) @ self.u * (1 + t)
            div = sum(torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(2))
        return dz, -div.reshape(-1, 1)


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_continuous_normalizing_flow_matches_torchdiffeq(interface):
    cnf = CNF()
    z0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(12), dtype=F64)
    state0 = (z0, torch.zeros(16, 1, dtype=F64))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    results = []
    for lib in (tdq, torchdiffeq):
        cnf.zero_grad()
        z, logp = getattr(lib, interface)(cnf, state0, t, rtol=1e-8, atol=1e-10)
        loss = (0.5 * z[-1].pow(2).sum(-1) - logp[-1, :, 0]).mean()        # negative log-likelihood up to a constant
        loss.backward()
        results.append((z[-1].detach(), logp[-1].detach(), cnf.w.grad.clone()))
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_fixed_grid_event_through_odeint_event_matches_torchdiffeq(interp):
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    out = []
    for lib in (tdq, torchdiffeq):
        t_ev, (hs, vs) = lib.odeint_event(ball(g), (h, torch.tensor(0.0, dtype=F64)), torch.tensor(0.0, dtype=F64),
                                          event_fn=lambda t, s: s[0], method="rk4", atol=1e-10,
                                          options={"step_size": 0.05, "interp": interp})
        out.append((t_ev.detach(), vs[-1].detach(), *torch.autograd.grad(t_ev, (g, h))))
    for ours, theirs in zip(*out):
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert abs(float(out[0][0]) - math.sqrt(2 * 10.0 / 9.81)) < (1e-2 if interp == "linear" else 1e-4)
