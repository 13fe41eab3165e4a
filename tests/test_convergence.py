"""Observed orders of convergence: every method, and the dense output, on nonlinear problems.

Each check runs a fixed-step ladder (``adaptive=False`` for the adaptive methods, ``dt`` halved
between rungs, ``dt`` dividing the span so every step has the same length) and fits the slope of
log(error) against log(dt) by least squares. The ladders were chosen so that every error lies in
the asymptotic regime: above round-off (~1e-13 here) and below the point where the next term of the
error expansion still matters. The measured slopes are listed next to each case.

Problems:

* Kepler, eccentricity 0.5 (``pyode.problems.kepler`` / ``kepler_exact``): nonlinear, autonomous.
  Vern7 and DP8 are not ladder-tested on it: with fixed steps their error at pericentre stays
  pre-asymptotic down to round-off (local slopes 5.5..7.9 for Vern7 and 6.9..7.9 for DP8 with
  errors between 1e-5 and 1e-13), so no ladder fits within ±0.25 there (the same holds for Vern7's
  dense output: local slopes 6.0, 6.5, 6.9). They are tested on:
* a non-autonomous nonlinear oscillator ``x' = -ω(t) y + x (1 - r²)``, ``y' = ω(t) x + y (1 - r²)``
  with ``ω(t) = 1 + t`` and exact solution ``(cos θ, sin θ)``, ``θ = t + t²/2`` (the attracting unit
  circle traversed at an accelerating rate). It also exercises the stage times ``t + c_i h``.
"""
import math

import numpy as np
import pytest
import torch

import pyode
from pyode.problems import kepler, kepler_exact

TOL_SLOPE = 0.25
ECC = 0.5

ALGS = {a.__class__.__name__: a for a in (pyode.Euler(), pyode.Midpoint(), pyode.RK4(), pyode.BS3(),
                                          pyode.Tsit5(), pyode.DP5(), pyode.Vern7(), pyode.DP8())}
NOMINAL = {"Euler": 1, "Midpoint": 2, "RK4": 4, "BS3": 3, "Tsit5": 5, "DP5": 5, "Vern7": 7, "DP8": 8}


# ---- problems -----------------------------------------------------------------------------------

def spiral_rhs(u, p, t):
    x, y = u[..., 0], u[..., 1]
    damp = 1 - (x * x + y * y)
    w = 1 + t
    return torch.stack([-w * y + x * damp, w * x + y * damp], -1)


def spiral_problem(T: float) -> pyode.ODEProblem:
    return pyode.ODEProblem(spiral_rhs, torch.tensor([1.0, 0.0], dtype=torch.float64), (0.0, T))


def spiral_exact(t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    theta = t + t * t / 2
    return torch.stack([theta.cos(), theta.sin()], -1)


def kepler_problem(T: float) -> pyode.ODEProblem:
    return kepler(ECC, tspan=(0.0, T))


def kepler_exact_many(ts: torch.Tensor) -> torch.Tensor:
    """Vectorised :func:`kepler_exact` (Newton on Kepler's equation ``E - e sin E = t``)."""
    t = torch.as_tensor(ts, dtype=torch.float64)
    e = ECC
    E = t.clone()
    for _ in range(50):
        E = E - (E - e * E.sin() - t) / (1 - e * E.cos())
    c, s = E.cos(), E.sin()
    rfac = 1 - e * c
    w = math.sqrt(1 - e * e)
    return torch.stack([c - e, w * s, -s / rfac, w * c / rfac], -1)


def test_vectorised_exact_solution_matches_pyode_problems():
    ts = torch.tensor([0.0, 0.3, 1.0, 2.0, 3.1, 5.5], dtype=torch.float64)
    torch.testing.assert_close(kepler_exact_many(ts), torch.stack([kepler_exact(float(t), ECC) for t in ts]),
                               rtol=0, atol=1e-15)


PROBLEMS = {"kepler": (kepler_problem, kepler_exact_many), "spiral": (spiral_problem, spiral_exact)}


# ---- helpers ------------------------------------------------------------------------------------

def fixed_step(prob: pyode.ODEProblem, alg, N: int, **kw) -> pyode.ODESolution:
    t0, t1 = prob.tspan
    adaptive = {"adaptive": False} if alg.adaptive else {}
    return pyode.solve(prob, alg, dt=abs(t1 - t0) / N, **adaptive, **kw)


def fitted_slope(dts, errs) -> float:
    errs = np.asarray(errs, dtype=float)
    assert np.all(np.isfinite(errs)) and np.all(errs > 0), f"errors must be finite and positive: {errs}"
    return float(np.polyfit(np.log(np.asarray(dts, dtype=float)), np.log(errs), 1)[0])


def describe(Ns, errs) -> str:
    return ", ".join(f"N={N}: {e:.2e}" for N, e in zip(Ns, errs))


def assert_slope(name, expected, Ns, dts, errs, lo=1e-13, hi=0.2):
    errs = np.asarray(errs)
    # The ladder must stay in the asymptotic, round-off-free range it was designed for; otherwise
    # the fitted slope means nothing (and a broken method would show up here too).
    assert errs.max() < hi and errs.min() > lo, f"{name}: errors left the range ({lo:g}, {hi:g}): {describe(Ns, errs)}"
    slope = fitted_slope(dts, errs)
    assert abs(slope - expected) <= TOL_SLOPE, \
        f"{name}: observed order {slope:.3f}, expected {expected} ± {TOL_SLOPE}; {describe(Ns, errs)}"
    return slope


# ---- global order of the end point --------------------------------------------------------------

# (method, problem, T, N of the coarsest rung, rungs); measured slopes in the comment.
GLOBAL_CASES = [
    ("Euler", "kepler", 1.0, 256, 4),     # 0.99  (3.2e-2 .. 4.0e-3)
    ("Midpoint", "kepler", 2.0, 128, 4),  # 2.02  (9.6e-4 .. 1.4e-5)
    ("RK4", "kepler", 2.0, 64, 4),        # 4.06  (6.0e-6 .. 1.3e-9)
    ("BS3", "kepler", 2.0, 32, 4),        # 3.00  (7.1e-4 .. 1.4e-6)
    ("Tsit5", "kepler", 2.0, 16, 4),      # 5.04  (2.0e-5 .. 5.6e-10)
    ("DP5", "kepler", 2.0, 64, 4),        # 5.11  (1.9e-8 .. 4.6e-13)
    ("Euler", "spiral", 3.5, 128, 4),     # 0.99  (1.2e-1 .. 1.5e-2)
    ("Midpoint", "spiral", 3.5, 64, 4),   # 2.00  (5.1e-2 .. 8.0e-4)
    ("RK4", "spiral", 3.5, 32, 4),        # 3.96  (1.4e-3 .. 3.7e-7)
    ("BS3", "spiral", 3.5, 32, 4),        # 2.98  (8.4e-3 .. 1.7e-5)
    ("Tsit5", "spiral", 3.5, 32, 4),      # 5.08  (8.3e-6 .. 2.0e-10)
    ("DP5", "spiral", 3.5, 32, 4),        # 5.09  (2.0e-5 .. 5.1e-10)
    ("Vern7", "spiral", 3.5, 16, 4),      # 7.03  (1.9e-6 .. 8.4e-13)
    ("DP8", "spiral", 3.5, 16, 3),        # 8.00  (6.8e-8 .. 1.0e-12)
]


@pytest.mark.parametrize("alg_name, problem, T, N0, rungs", GLOBAL_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in GLOBAL_CASES])
def test_global_order(alg_name, problem, T, N0, rungs):
    make, exact = PROBLEMS[problem]
    alg = ALGS[alg_name]
    assert alg.order == NOMINAL[alg_name]
    Ns = [N0 * 2 ** k for k in range(rungs)]
    u_exact = exact(torch.tensor([T], dtype=torch.float64))[0]
    errs = []
    for N in Ns:
        sol = fixed_step(make(T), alg, N, saveat=[T])
        assert sol.success and float(sol.t[-1]) == T
        # Fixed steps: exactly N steps of length T/N, none rejected.
        assert sol.stats.naccept == N and sol.stats.nreject == 0, (sol.stats, N)
        errs.append(float((sol.u[-1] - u_exact).norm()))
    assert_slope(f"{alg_name} on {problem}", NOMINAL[alg_name], Ns, [T / N for N in Ns], errs)


def test_fixed_step_ladder_is_sensitive_to_a_wrong_order():
    """The fit is not vacuous: a method's ladder misses every other method's nominal order."""
    Ns = [32 * 2 ** k for k in range(4)]
    errs = [float((fixed_step(spiral_problem(3.5), pyode.RK4(), N, saveat=[3.5]).u[-1]
                   - spiral_exact(3.5)).norm()) for N in Ns]
    slope = fitted_slope([3.5 / N for N in Ns], errs)
    others = sorted(set(NOMINAL.values()) - {4})
    assert all(abs(slope - p) > TOL_SLOPE for p in others), (slope, others)


# ---- dense output order -------------------------------------------------------------------------

def expected_dense_order(alg) -> int:
    """Global order of ``sol(t)`` inside steps: ``min(p, q + 1)`` for a method of order ``p`` whose
    continuous extension has order ``q`` (local interpolation error ``O(h^(q+1))``)."""
    return min(alg.order, alg.tableau.interpolant_order + 1)


# Interpolants: Tsit5/DP5 free 4th-order ones (dense order 5); Vern7 Verner's degree-7 one (order 6
# by the order conditions, with order-7 defects < 3e-7: dense order min(7, 7) = 7); DP8 DOP853's
# 7th-order one (dense order min(8, 8) = 8); all others cubic Hermite (order 3: min(p, 4), i.e. 3
# for BS3 and 4 for RK4). (alg, problem, T, N of the coarsest rung, rungs); measured slopes.
DENSE_CASES = [
    ("Euler", "kepler", 2.0, 128, 4),     # 0.96  (2.8e-1 .. 3.9e-2)
    ("Midpoint", "kepler", 2.0, 32, 4),   # 2.09  (1.8e-2 .. 2.4e-4)
    ("RK4", "kepler", 2.0, 32, 4),        # 4.12  (1.1e-4 .. 2.1e-8)
    ("BS3", "kepler", 2.0, 32, 4),        # 2.99  (7.0e-4 .. 1.4e-6)
    ("Tsit5", "kepler", 2.0, 32, 4),      # 5.17  (7.0e-7 .. 1.5e-11)
    ("DP5", "kepler", 2.0, 32, 4),        # 5.13  (8.7e-7 .. 2.0e-11)
    # On Kepler, Vern7's dense output is pre-asymptotic like its steps (local slopes 6.0, 6.5, 6.9).
    ("Vern7", "spiral", 3.5, 16, 4),      # 6.99  (1.7e-6 .. 8.5e-13)
    ("DP8", "spiral", 3.5, 16, 3),        # 7.85  (3.6e-7 .. 6.8e-12)
]
THETAS = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
OWN_INTERPOLANT = {"Tsit5": (4, 5), "DP5": (4, 5), "Vern7": (6, 7), "DP8": (7, 8)}  # (q, dense order)


@pytest.mark.parametrize("alg_name, problem, T, N0, rungs", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense_output_order(alg_name, problem, T, N0, rungs):
    make, exact = PROBLEMS[problem]
    alg = ALGS[alg_name]
    expected = expected_dense_order(alg)
    if alg_name in OWN_INTERPOLANT:
        assert (alg.tableau.interpolant_order, expected) == OWN_INTERPOLANT[alg_name]
    else:
        assert alg.tableau.dense is None and alg.tableau.interpolant_order == min(3, alg.order)
    Ns = [N0 * 2 ** k for k in range(rungs)]
    errs = []
    for N in Ns:
        sol = fixed_step(make(T), alg, N)       # single problem, no saveat: every step + dense
        assert sol.has_dense and sol.t.shape == (N + 1,)
        torch.testing.assert_close(sol.t, torch.linspace(0, T, N + 1, dtype=torch.float64), rtol=0, atol=1e-12)
        lo, hi = sol.t[:-1, None], sol.t[1:, None]
        tq = (lo + THETAS * (hi - lo)).reshape(-1)        # strictly inside every step
        u = sol(tq)
        assert u.shape == (tq.numel(), sol.u.shape[-1])
        errs.append(float((u - exact(tq)).norm(dim=-1).max()))
    assert_slope(f"{alg_name} dense output on {problem}", expected, Ns, [T / N for N in Ns], errs, hi=0.5)


# One step from the exact state: the interpolation error alone, O(h^(q+1)).
# Measured on the spiral from t = 1 (errors at θ = 0.2, 0.5, 0.8; h = 0.2, 0.1, 0.05):
# Vern7 9.4e-9, 2.6e-11, 9.4e-14 (slopes 8.5, 8.1); DP8 3.0e-9, 9.9e-12, 3.9e-14 (8.2, 8.0).
@pytest.mark.parametrize("alg_name", ["Vern7", "DP8"])
def test_local_interpolation_error_is_eighth_order(alg_name):
    """Both interpolants have a local error O(h⁸) in practice: DOP853's is of order 7; Vern7's
    order-7 defects (< 3e-7, see test_tableaus) stay invisible above round-off."""
    alg = ALGS[alg_name]
    t0 = 1.0
    hs = [0.2, 0.1, 0.05]
    errs = []
    for h in hs:
        prob = pyode.ODEProblem(spiral_rhs, spiral_exact(t0), (t0, t0 + h))
        sol = pyode.solve(prob, alg, dt=h, adaptive=False)
        assert sol.stats.naccept == 1
        tq = t0 + THETAS * h
        errs.append(float((sol(tq) - spiral_exact(tq)).norm(dim=-1).max()))
    slope = fitted_slope(hs, errs)
    assert min(errs) > 1e-14 and 7.75 <= slope <= 8.75, (slope, errs)


@pytest.mark.parametrize("alg_name, N, factor", [("Tsit5", 128, 50), ("Vern7", 32, 1e4), ("DP8", 32, 1e4)])
def test_dense_output_beats_hermite_on_the_same_grid(alg_name, N, factor):
    """On the same fixed grid a method's own interpolant is far more accurate than cubic Hermite:
    a regression to Hermite would be caught even if the slope test were loosened.
    Measured ratios: Tsit5 170 (N = 128), Vern7 4.0e4, DP8 1.1e5 (N = 32)."""
    T = 2.0
    sol = fixed_step(kepler_problem(T), ALGS[alg_name], N)
    lo, hi = sol.t[:-1, None], sol.t[1:, None]
    tq = (lo + THETAS * (hi - lo)).reshape(-1)
    exact = kepler_exact_many(tq)
    err_own = float((sol(tq) - exact).norm(dim=-1).max())
    # Cubic Hermite through the same saved steps, with f at the saved states.
    t0, t1 = lo.reshape(-1).repeat_interleave(3), hi.reshape(-1).repeat_interleave(3)
    y0, y1 = sol.u[:-1].repeat_interleave(3, 0), sol.u[1:].repeat_interleave(3, 0)
    f = sol.prob.f
    f0, f1 = f(y0, None, t0), f(y1, None, t1)
    h = (t1 - t0)[:, None]
    th = ((tq - t0) / (t1 - t0))[:, None]
    herm = ((1 + 2 * th) * (1 - th) ** 2 * y0 + th * (1 - th) ** 2 * h * f0
            + th ** 2 * (3 - 2 * th) * y1 + th ** 2 * (th - 1) * h * f1)
    err_herm = float((herm - exact).norm(dim=-1).max())
    assert err_own < err_herm / factor, (err_own, err_herm)
