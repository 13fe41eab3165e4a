"""Rosenbrock tableaus: construction checks, order conditions, a reference step, stability.

The reference step below is a NumPy transcription of the stage loop documented in
``pyode.native.rosenbrock_tableau``, run directly on the stored coefficients: in float64, and (for
the local-error ladders, whose 6th-order errors float64 cannot resolve) on mpmath numbers through
the same code. Order conditions are
checked exactly (``Fraction``s of the stored values) through the B-series of a Rosenbrock method:
with ``g_i = y + Σ_{j<i} α_ij k_j`` and ``k_i = h f(g_i) + h J Σ_{j≤i} γ_ij k_j`` (autonomous form;
the non-autonomous terms follow from ``c_i = Σ α_ij``, ``d_i = Σ γ_ij``, checked at construction),
the coefficients of a tree ``t = [t_1, ..., t_m]`` are

    k_i(•) = 1,   k_i(t) = Π_l Σ_j α_ij k_j(t_l)   (+ Σ_{j≤i} γ_ij k_j(t_1) when m = 1),

and order ``p`` means ``Σ b_i k_i(t) = 1/γ(t)`` for ``ρ(t) ≤ p`` (Hairer-Wanner II, Sec. IV.7). For
W-methods (``J`` replaced by an arbitrary matrix ``A``) the ``J``-term becomes a separate vertex type
with one child, whose exact-solution coefficient is 0.
"""
import dataclasses
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from _trees import gamma as tree_density, rho, trees
from pyode.native.rosenbrock_tableau import RosenbrockTableau
from pyode.native.tableaus.rodas4 import RODAS4
from pyode.native.tableaus.rodas5p import RODAS5P
from pyode.native.tableaus.rosenbrock23 import ROSENBROCK23, ROSENBROCK23_D, ROSENBROCK23_E32

ALL = [ROSENBROCK23, RODAS4, RODAS5P]
RODAS = [RODAS4, RODAS5P]
by_name = pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)

# Residual of an order condition evaluated exactly on ~16-digit float coefficients.
FLOAT_TOL = 1e-11
# A condition counts as violated when it is off by far more than that.
VIOLATED = 1e-7

# W-orders (order kept with an arbitrary J in W), from the W-tree conditions below.
W_ORDER = {"Rosenbrock23": 2, "Rodas4": 1, "Rodas5P": 2}


# ---------------------------------------------------------------------------- exact B-series


class RosenbrockSeries:
    """B-series coefficients ``k_i(t)`` of the increments ``k_i`` of the original form, exactly."""

    def __init__(self, tab: RosenbrockTableau):
        orig = tab.original_form(exact=True)
        self.alpha, self.gam = orig.alpha, orig.gamma
        self.s = tab.stages
        self._memo = {}

    def _g(self, k):
        return [sum((self.alpha[i][j] * k[j] for j in range(i)), Fraction(0)) for i in range(self.s)]

    def __call__(self, tree) -> list:
        """``tree`` is a rooted tree from ``_trees`` (exact J), or a W-tree (see ``w_trees``)."""
        if tree in self._memo:
            return self._memo[tree]
        if isinstance(tree, tuple) and len(tree) == 2 and tree[0] in ("f", "J"):
            kind, children = tree
        else:
            kind, children = "exact", tree
        s = self.s
        if kind == "J":
            sub = self(children[0])
            k = [sum((self.gam[i][j] * sub[j] for j in range(i + 1)), Fraction(0)) for i in range(s)]
        else:
            k = [Fraction(1)] * s
            for child in children:
                g = self._g(self(child))
                k = [x * y for x, y in zip(k, g)]
            if kind == "exact" and len(children) == 1:
                sub = self(children[0])
                k = [x + sum((self.gam[i][j] * sub[j] for j in range(i + 1)), Fraction(0))
                     for i, x in enumerate(k)]
        self._memo[tree] = k
        return k

    def increments(self, tree) -> list:
        """Coefficients of the transformed increments ``U_i = Σ_{j≤i} γ_ij k_j``."""
        k = self(tree)
        return [sum((self.gam[i][j] * k[j] for j in range(i + 1)), Fraction(0)) for i in range(self.s)]


def w_trees(n: int) -> set:
    """Rooted trees with ``n`` vertices whose one-child vertices are each ``f`` or ``J`` vertices."""
    def marked(tree):
        if not tree:
            yield ("f", ())
            return
        options = [()]
        for child in tree:
            options = [o + (m,) for o in options for m in marked(child)]
        for o in options:
            yield ("f", tuple(sorted(o)))
            if len(o) == 1:
                yield ("J", o)
    return {m for t in trees(n) for m in marked(t)}


def w_exact(tree) -> Fraction:
    """Coefficient of a W-tree in the exact solution: 1/γ(t) without J vertices, else 0."""
    def strip(t):
        kind, children = t
        if kind == "J":
            return None
        out = []
        for c in children:
            sc = strip(c)
            if sc is None:
                return None
            out.append(sc)
        return tuple(sorted(out))
    plain = strip(tree)
    return Fraction(0) if plain is None else Fraction(1, tree_density(plain))


def w_rho(tree) -> int:
    return 1 + sum(w_rho(c) for c in tree[1])


def weights(tab, embedded=False):
    orig = tab.original_form(exact=True)
    return orig.b_hat if embedded else orig.b


def residual(tab, w, tree) -> Fraction:
    k = RosenbrockSeries(tab)(tree)
    return sum((wi * ki for wi, ki in zip(w, k)), Fraction(0)) - Fraction(1, tree_density(tree))


def order_of(tab, w, max_order=7) -> tuple:
    """(largest p with all conditions up to p satisfied, worst residual at order p+1)."""
    series = RosenbrockSeries(tab)
    for n in range(1, max_order + 1):
        res = [abs(float(sum((wi * ki for wi, ki in zip(w, series(t))), Fraction(0))
                         - Fraction(1, tree_density(t)))) for t in trees(n)]
        if max(res) > FLOAT_TOL:
            return n - 1, max(res)
    return max_order, 0.0


# ---------------------------------------------------------------------------- construction


@by_name
def test_construction_consistent(tab):
    s = tab.stages
    assert len(tab.a) == len(tab.C) == len(tab.c) == len(tab.d) == len(tab.b) == s
    assert all(len(r) == i for i, r in enumerate(tab.a))
    assert tab.c[0] == 0 and tab.reference and tab.adaptive
    assert float(tab.d[0]) == pytest.approx(float(tab.gamma), rel=1e-15)
    assert dataclasses.replace(tab) == tab
    assert all(len(r) == s for r in tab.dense)
    gamma, a, C, c, d, b, b_error, dense = tab.floats()
    assert len(a) == len(C) == s and all(len(r) == s for r in a)


def test_stiffly_accurate_structure():
    for tab in RODAS:
        s = tab.stages
        assert tab.stiffly_accurate and not tab.fsal
        # The error estimate is the last increment: ŷ1 = Y_s.
        assert tab.b_error == (0,) * (s - 1) + (1,)
        # The last rows of a step along the previous increments (Y_s = Y_{s-1} + U_{s-1}).
        assert tab.a[-1][:-1] == tab.a[-2] and tab.a[-1][-1] == 1
        assert tab.b[:-1] == tab.a[-1] and tab.b[-1] == 1
    assert ROSENBROCK23.fsal and not ROSENBROCK23.stiffly_accurate


def _set_row(rows, i, row):
    rows = list(rows)
    rows[i] = tuple(row)
    return tuple(rows)


def _bump(v, i, by):
    v = list(v)
    v[i] = v[i] + by
    return tuple(v)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: dict(a=_set_row(t.a, 3, t.a[3][:-1])), r"row 3 of a has 2 entries, expected 3"),
        (lambda t: dict(C=_set_row(t.C, 2, t.C[2] + (0,))), r"row 2 of C has 3 entries, expected 2"),
        (lambda t: dict(C=t.C[:-1]), r"C has 5 rows, expected len\(c\)=6"),
        (lambda t: dict(d=t.d[:-1]), r"d has 5 entries"),
        (lambda t: dict(b=t.b + (0,)), r"b has 7 entries"),
        (lambda t: dict(c=_bump(t.c, 2, 1e-6)), r"c\[2\]=.*derived α row 2 sums to"),
        (lambda t: dict(a=_set_row(t.a, 2, _bump(t.a[2], 0, 1e-6))), r"c\[2\]=.*derived α row 2"),
        (lambda t: dict(d=_bump(t.d, 3, 1e-6)), r"d\[3\]=.*derived Γ row 3 sums to"),
        (lambda t: dict(C=_set_row(t.C, 4, _bump(t.C[4], 1, 1e-5))), r"d\[4\]=.*derived Γ row 4"),
        (lambda t: dict(gamma=0.3), r"d\[0\]="),
        (lambda t: dict(gamma=-0.25), r"gamma=-0.25 must be positive"),
        (lambda t: dict(b=_bump(t.b, 4, 1e-3)), r"stiffly_accurate=True needs"),
        (lambda t: dict(b=_bump(t.b, 1, 1e-3), stiffly_accurate=False), r"weights b give Σ_i b_i d_i"),
        (lambda t: dict(b_error=(0, 1e-3, 0, 0, 0, 1)), r"embedded weights b - b_error give"),
        (lambda t: dict(b_error=(0, 0, 1)), r"b_error has 3 entries"),
        (lambda t: dict(b_error=None), r"b_error and embedded_order go together"),
        (lambda t: dict(embedded_order=4), r"embedded_order=4 equals order"),
        (lambda t: dict(dense=None), r"dense and dense_order go together"),
        (lambda t: dict(dense=(t.dense[0][:-1],)), r"dense row 0 has 5 entries"),
        (lambda t: dict(dense=(_bump(t.dense[0], 0, 1e-3), t.dense[1])),
         r"dense row 0 has Σ_i dense\[0\]\[i\] d_i"),
        (lambda t: dict(fsal=True), r"fsal=True needs"),
        (lambda t: dict(w_order=5), r"w_order=5 exceeds order=4"),
    ],
)
def test_broken_tableau_rejected(change, message):
    with pytest.raises(ValueError, match=r"'Rodas4'.*" + message):
        dataclasses.replace(RODAS4, **change(RODAS4))


def test_broken_rosenbrock23_rejected():
    with pytest.raises(ValueError, match="fsal=True needs"):
        dataclasses.replace(ROSENBROCK23, a=_set_row(ROSENBROCK23.a, 2, (ROSENBROCK23.a[2][0], 1.0)))
    with pytest.raises(ValueError, match=r"c\[0\]=0.5, must be 0"):
        dataclasses.replace(ROSENBROCK23, c=(0.5, 0.5, 1))


# ---------------------------------------------------------------------------- original form


@by_name
def test_transformation_round_trip(tab):
    orig = tab.original_form(exact=True)
    s = tab.stages
    for i in range(s):
        assert all(orig.alpha[i][j] == 0 for j in range(i, s))
        assert all(orig.gamma[i][j] == 0 for j in range(i + 1, s))
        assert float(orig.gamma[i][i]) == pytest.approx(float(tab.gamma), rel=1e-14)
    back = RosenbrockTableau.from_original(
        tab.name, tab.gamma,
        [orig.alpha[i][:i] for i in range(s)], [orig.gamma[i][:i] for i in range(s)],
        orig.b, orig.b_hat, as_float=True, order=tab.order, embedded_order=tab.embedded_order,
        dense=tab.dense, dense_order=tab.dense_order, w_order=tab.w_order,
        stiffly_accurate=tab.stiffly_accurate, fsal=tab.fsal, reference=tab.reference)
    for x, y in [(back.b, tab.b), (back.b_error, tab.b_error), (back.c, tab.c), (back.d, tab.d),
                 *zip(back.a, tab.a), *zip(back.C, tab.C)]:
        assert np.allclose(np.array(x, float), np.array(y, float), rtol=1e-12, atol=1e-12)


def test_rosenbrock23_original_form():
    # Derived by hand from Shampine-Reichelt's stage equations (see the tableau's docstring).
    r2, d = math.sqrt(2), ROSENBROCK23_D
    orig = ROSENBROCK23.original_form()
    assert np.allclose(orig.alpha, [[0, 0, 0], [0.5, 0, 0], [0, 1, 0]], atol=1e-15)
    assert np.allclose(orig.gamma, [[d, 0, 0], [-d, d, 0], [3 - r2, -(5 - 2 * r2), d]], atol=1e-15)
    assert np.allclose(orig.b, [0, 1, 0], atol=1e-15)
    assert np.allclose(orig.b_hat, [1 / 6, 2 / 3, 1 / 6], atol=1e-15)
    assert d == pytest.approx(1 - r2 / 2, rel=1e-15)
    assert (ROSENBROCK23_E32 - 2) * d == pytest.approx(3 - r2, rel=1e-15)
    assert ROSENBROCK23_E32 * d == pytest.approx(5 - 2 * r2, rel=1e-15)


@pytest.mark.parametrize("tab, alpha", [
    (RODAS4, [0.386, 0.21, 0.63, 1, 1]),
    (RODAS5P, [0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1, 1, 1]),
], ids=["Rodas4", "Rodas5P"])
def test_rodas_original_stiffly_accurate(tab, alpha):
    # Stiff accuracy in the original form: b_i = β_si = α_si + γ_si, and b̂_i = α_si (the last stage).
    orig = tab.original_form()
    s = tab.stages
    beta_last = np.array(orig.alpha[-1]) + np.array(orig.gamma[-1])
    assert np.allclose(orig.b, beta_last, atol=1e-13)
    assert np.allclose(orig.b_hat, orig.alpha[-1], atol=1e-13)
    assert np.allclose(np.sum(orig.alpha, axis=1)[1:], alpha, atol=1e-13)
    assert len(orig.b) == s


# ---------------------------------------------------------------------------- order conditions


def table_7_1(tab, w):
    """Residuals of Hairer-Wanner II, Table IV.7.1 (orders 1-4) in β_ij = α_ij + γ_ij (j < i)."""
    orig = tab.original_form(exact=True)
    s, g = tab.stages, Fraction(tab.gamma)
    al = [[orig.alpha[i][j] for j in range(s)] for i in range(s)]
    be = [[orig.alpha[i][j] + orig.gamma[i][j] if j < i else Fraction(0) for j in range(s)] for i in range(s)]
    one = [Fraction(1)] * s

    def mv(m, v):
        return [sum((m[i][j] * v[j] for j in range(s)), Fraction(0)) for i in range(s)]

    def dot(u, v):
        return sum((x * y for x, y in zip(u, v)), Fraction(0))

    a_i = mv(al, one)
    b_i = mv(be, one)
    sq = [x * x for x in a_i]
    return {
        1: [dot(w, one) - 1],
        2: [dot(w, b_i) - (Fraction(1, 2) - g)],
        3: [dot(w, sq) - Fraction(1, 3), dot(w, mv(be, b_i)) - (Fraction(1, 6) - g + g * g)],
        4: [dot(w, [x ** 3 for x in a_i]) - Fraction(1, 4),
            dot(w, [x * y for x, y in zip(a_i, mv(al, b_i))]) - (Fraction(1, 8) - g / 3),
            dot(w, mv(be, sq)) - (Fraction(1, 12) - g / 3),
            dot(w, mv(be, mv(be, b_i))) - (Fraction(1, 24) - g / 2 + Fraction(3, 2) * g * g - g ** 3)],
    }


@by_name
def test_table_7_1(tab):
    for embedded, p in ((False, tab.order), (True, tab.embedded_order)):
        res = table_7_1(tab, weights(tab, embedded))
        for n in range(1, min(p, 4) + 1):
            assert max(abs(float(r)) for r in res[n]) < FLOAT_TOL, (tab.name, embedded, n)
        if p < 4:
            assert max(abs(float(r)) for r in res[p + 1]) > VIOLATED, (tab.name, embedded, p)


def test_trees_agree_with_table_7_1():
    # Table 7.1 states each condition assuming the lower-order ones; on weights of order exactly 3
    # (Rodas4's embedded method) the order-4 residuals of the table and of the trees coincide.
    w = weights(RODAS4, embedded=True)
    res = table_7_1(RODAS4, w)
    by_tree = sorted(residual(RODAS4, w, t) for t in trees(4))
    assert max(abs(float(x - y)) for x, y in zip(sorted(res[4]), by_tree)) < FLOAT_TOL
    assert max(abs(float(x)) for x in by_tree) > VIOLATED


@by_name
def test_order(tab):
    p, worst = order_of(tab, weights(tab))
    assert p == tab.order, (p, worst)


@by_name
def test_embedded_order(tab):
    p, worst = order_of(tab, weights(tab, embedded=True))
    assert p == tab.embedded_order, (p, worst)


@by_name
def test_w_order(tab):
    series = RosenbrockSeries(tab)
    w = weights(tab)
    expected = W_ORDER[tab.name]
    assert tab.w_order in (None, expected) and (tab.w_order is not None) == (expected > 1)
    for n in range(1, expected + 2):
        worst = max(abs(float(sum((wi * ki for wi, ki in zip(w, series(t))), Fraction(0)) - w_exact(t)))
                    for t in w_trees(n))
        if n <= expected:
            assert worst < FLOAT_TOL, (tab.name, n)
        else:
            assert worst > VIOLATED, (tab.name, n)


def test_w_tree_counts():
    # Every marking of every tree; with J identified with f' they collapse onto the plain trees.
    assert [len(w_trees(n)) for n in range(1, 5)] == [1, 2, 5, 13]
    assert all(w_rho(t) == n for n in range(1, 5) for t in w_trees(n))


THETAS = [Fraction(1, 10), Fraction(1, 3), Fraction(1, 2), Fraction(5, 7), Fraction(19, 20)]


@by_name
def test_dense_order_conditions(tab):
    # y(θ) = (1-θ) y0 + θ y1 + θ(1-θ) Σ_m θ^{m-1} H_m: for every tree with ρ ≤ q the coefficient
    # must be θ^ρ/γ(t) (y0 contributes to no tree).
    series = RosenbrockSeries(tab)
    w = weights(tab)
    H = [[Fraction(x) for x in row] for row in tab.dense]
    q = tab.dense_order

    def res(theta, t):
        u = series.increments(t)
        y1 = sum((wi * ki for wi, ki in zip(w, series(t))), Fraction(0))
        hs = sum((theta ** m * sum((hm * ui for hm, ui in zip(row, u)), Fraction(0))
                  for m, row in enumerate(H)), Fraction(0))
        return theta * y1 + theta * (1 - theta) * hs - theta ** rho(t) / tree_density(t)

    for theta in THETAS:
        for n in range(1, q + 1):
            assert max(abs(float(res(theta, t))) for t in trees(n)) < FLOAT_TOL, (theta, n)
    worst = max(abs(float(res(theta, t))) for theta in THETAS for t in trees(q + 1))
    assert worst > VIOLATED


# ---------------------------------------------------------------------------- reference step


class Arith:
    """Scalar arithmetic for the reference step: float64 NumPy, or mpmath for deep step ladders.

    The step itself is NumPy code either way (object arrays of ``mpf`` in the second case); only
    the elementary functions, the array constructor and the 2x2 solve differ.
    """

    def __init__(self, name, sin, cos, exp, num, solve):
        self.name, self.sin, self.cos, self.exp, self.num, self._solve = name, sin, cos, exp, num, solve

    def arr(self, xs):
        return np.array([self.num(x) for x in xs], dtype=float if self.name == "f64" else object)

    def mat(self, rows):
        return np.array([[self.num(x) for x in r] for r in rows],
                        dtype=float if self.name == "f64" else object)

    def solve(self, m, r):
        return self._solve(m, r)


def _gauss(m, r):
    """Gaussian elimination without pivoting (the W matrices here are diagonally dominant)."""
    n = len(r)
    m = [list(row) for row in m]
    r = list(r)
    for k in range(n):
        for i in range(k + 1, n):
            q = m[i][k] / m[k][k]
            for j in range(k, n):
                m[i][j] -= q * m[k][j]
            r[i] -= q * r[k]
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (r[i] - sum((m[i][j] * x[j] for j in range(i + 1, n)), 0)) / m[i][i]
    return np.array(x, dtype=object)


F64 = Arith("f64", np.sin, np.cos, np.exp, float, np.linalg.solve)
MP = Arith("mp", mpmath.sin, mpmath.cos, mpmath.exp, mpmath.mpf, _gauss)
MP_DPS = 60


def ros_step(tab, prob, t, y, h, J=None, T=None, ar=F64):
    """One step of the stored (transformed) form; returns (y1, ŷ1, dense(θ))."""
    gamma, a, C, c, d, b, b_error, H = tab.floats()
    s, n = tab.stages, len(y)
    h = ar.num(h)
    J = prob.jac(t, y, ar) if J is None else J
    T = prob.dfdt(t, y, ar) if T is None else T
    W = ar.mat(np.eye(n)) / (h * gamma) - J
    U = []
    for i in range(s):
        Yi = y + sum(a[i][j] * U[j] for j in range(i))
        rhs = prob.f(t + c[i] * h, Yi, ar) + sum(C[i][j] / h * U[j] for j in range(i)) + h * d[i] * T
        U.append(ar.solve(W, rhs))
    y1 = y + sum(bi * Ui for bi, Ui in zip(b, U))
    err = sum(ei * Ui for ei, Ui in zip(b_error, U))
    Hk = [sum(hk[i] * U[i] for i in range(s)) for hk in H]

    def dense(theta):
        tail = sum(theta ** m * Hm for m, Hm in enumerate(Hk))
        return (1 - theta) * y + theta * (y1 + (1 - theta) * tail)

    return y1, y1 - err, dense


def ros_step_original(tab, prob, t, y, h, J=None, T=None):
    """One step of Hairer-Wanner's original form, from ``original_form()``; returns (y1, ŷ1)."""
    orig = tab.original_form()
    s, n, g = tab.stages, len(y), float(tab.gamma)
    J = prob.jac(t, y, F64) if J is None else J
    T = prob.dfdt(t, y, F64) if T is None else T
    M = np.eye(n) - h * g * J
    k = []
    for i in range(s):
        alpha_i, gamma_i = sum(orig.alpha[i]), sum(orig.gamma[i])
        g_i = y + sum(orig.alpha[i][j] * k[j] for j in range(i))
        jac_term = J @ sum((orig.gamma[i][j] * k[j] for j in range(i)), np.zeros(n))
        rhs = h * prob.f(t + alpha_i * h, g_i, F64) + h * jac_term + h * h * gamma_i * T
        k.append(np.linalg.solve(M, rhs))
    y1 = y + sum(bi * ki for bi, ki in zip(orig.b, k))
    yhat = y + sum(bi * ki for bi, ki in zip(orig.b_hat, k))
    return y1, yhat


def shampine_step(prob, t, y, h, J=None, T=None):
    """Rosenbrock23 as published (OrdinaryDiffEq's perform_step!); returns (y1, ŷ1, dense(θ))."""
    d, e32 = ROSENBROCK23_D, ROSENBROCK23_E32
    n = len(y)
    J = prob.jac(t, y, F64) if J is None else J
    T = prob.dfdt(t, y, F64) if T is None else T
    f = lambda t, y: prob.f(t, y, F64)  # noqa: E731
    Ws = np.eye(n) - h * d * J
    F0 = f(t, y)
    k1 = np.linalg.solve(Ws, F0 + h * d * T)
    F1 = f(t + h / 2, y + h / 2 * k1)
    k2 = np.linalg.solve(Ws, F1 - k1) + k1
    y1 = y + h * k2
    F2 = f(t + h, y1)
    k3 = np.linalg.solve(Ws, F2 - e32 * (k2 - F1) - 2 * (k1 - F0) + h * d * T)
    utilde = h / 6 * (k1 - 2 * k2 + k3)

    def dense(theta):
        return y + h * (theta * (1 - theta) * k1 + theta * (theta - 2 * d) * k2) / (1 - 2 * d)

    return y1, y1 + utilde, dense


class Problem:
    """An ODE with known solution ``phi``; ``f``, ``jac``, ``dfdt`` (∂f/∂t) take an ``Arith``."""

    def __init__(self, name, t0, f, jac, dfdt, phi):
        self.name, self.t0 = name, t0
        self.f, self.jac, self.dfdt, self.phi = f, jac, dfdt, phi


def _linear():
    lam = -5.0
    return Problem(
        "linear", 0.2,
        f=lambda t, y, ar: lam * y,
        jac=lambda t, y, ar: ar.mat([[lam]]),
        dfdt=lambda t, y, ar: ar.arr([0]),
        phi=lambda t, ar: ar.arr([ar.exp(lam * (t - ar.num(0.2)))]),
    )


def _riccati():
    # y' = -2 t y², y = 1/(1 + t²): nonlinear and non-autonomous.
    return Problem(
        "scalar", 1.3,
        f=lambda t, y, ar: -2 * t * y ** 2,
        jac=lambda t, y, ar: ar.mat([[-4 * t * y[0]]]),
        dfdt=lambda t, y, ar: -2 * y ** 2,
        phi=lambda t, ar: ar.arr([1 / (1 + t * t)]),
    )


def _manufactured():
    # f(t, y) = g(y) - g(φ(t)) + φ'(t) has the solution φ; g nonlinear and coupled.
    def g(y, ar):
        return ar.arr([-2 * y[0] + y[0] * y[1], -y[1] ** 2 - 3 * y[1] + y[0]])

    def gp(y, ar):
        return ar.mat([[-2 + y[1], y[0]], [1, -2 * y[1] - 3]])

    def phi(t, ar):
        return ar.arr([1 + ar.sin(2 * t) / 2, ar.cos(t)])

    def dphi(t, ar):
        return ar.arr([ar.cos(2 * t), -ar.sin(t)])

    def ddphi(t, ar):
        return ar.arr([-2 * ar.sin(2 * t), -ar.cos(t)])

    return Problem(
        "2d", 0.4,
        f=lambda t, y, ar: g(y, ar) - g(phi(t, ar), ar) + dphi(t, ar),
        jac=lambda t, y, ar: gp(y, ar),
        dfdt=lambda t, y, ar: -gp(phi(t, ar), ar) @ dphi(t, ar) + ddphi(t, ar),
        phi=phi,
    )


PROBLEMS = [_linear(), _riccati(), _manufactured()]
by_problem = pytest.mark.parametrize("prob", PROBLEMS, ids=lambda p: p.name)


# Step ladder for the local error: h = 0.1 / 2^k. The stored decimals satisfy the order conditions
# only to ~1e-14 (Rodas5P's order-1 residual is 6e-15, its interpolant's 2e-14), which puts a floor
# of ~1e-14 h under every local error; rungs closer than RUNG_FLOOR h to it are dropped. The
# ladders run in mpmath so that the floor is that one and not float64 round-off.
LADDER = [Fraction(1, 10) / 2 ** k for k in range(10)]
RUNG_FLOOR = 3e-13


def ladder(prob, tab, which, theta=None, ar=MP, hs=LADDER, J_extra=None, T_extra=None):
    """Local errors |y_method - y_exact| of one step from the exact solution, over step sizes ``hs``."""
    errs = []
    with mpmath.workdps(MP_DPS):
        t0 = ar.num(prob.t0)
        y0 = prob.phi(t0, ar)
        for h in hs:
            h = ar.num(h.numerator) / h.denominator if isinstance(h, Fraction) else ar.num(h)
            J = prob.jac(t0, y0, ar) + (0 if J_extra is None else ar.mat(J_extra))
            T = prob.dfdt(t0, y0, ar) + (0 if T_extra is None else ar.arr(T_extra))
            y1, yhat, dense = ros_step(tab, prob, t0, y0, h, J=J, T=T, ar=ar)
            if which == "main":
                got, want = y1, prob.phi(t0 + h, ar)
            elif which == "embedded":
                got, want = yhat, prob.phi(t0 + h, ar)
            else:
                th = ar.num(theta.numerator) / theta.denominator
                got, want = dense(th), prob.phi(t0 + th * h, ar)
            errs.append(float(max(abs(x) for x in got - want)))
    return errs


def slopes(errs):
    return [math.log2(x / y) for x, y in zip(errs, errs[1:])]


def observed_orders(errs, hs=LADDER, floor=lambda h: RUNG_FLOOR * h):
    """log2(e(h)/e(h/2)) over the rungs above the floor."""
    kept = [e for e, h in zip(errs, hs) if e > floor(float(h))]
    return slopes(kept)


def floor_of(prob):
    """The coefficient floor scales with |f(t0, y0)| (the order-1 residual multiplies h f)."""
    y0 = prob.phi(prob.t0, F64)
    scale = max(1.0, float(np.max(np.abs(prob.f(prob.t0, y0, F64)))))
    return lambda h: RUNG_FLOOR * scale * h


def assert_slope(errs, expected, at_least=False, tol=0.3, **kw):
    """The last two observed local orders are ``expected`` (or at least it)."""
    orders = observed_orders(errs, **kw)
    assert len(orders) >= 2, (errs, orders)
    tail = orders[-2:]
    if at_least:
        assert min(tail) > expected - tol, (orders, expected)
    else:
        assert all(abs(x - expected) < tol for x in tail), (orders, expected)


@by_name
@by_problem
def test_local_order_main(tab, prob):
    # Local error ~ h^(p+1). On the linear equation only R(z) - e^z counts, which may be smaller.
    assert_slope(ladder(prob, tab, "main"), tab.order + 1,
                 floor=floor_of(prob), at_least=prob.name == "linear")


@by_name
@by_problem
def test_local_order_embedded(tab, prob):
    assert_slope(ladder(prob, tab, "embedded"), tab.embedded_order + 1,
                 floor=floor_of(prob), at_least=prob.name == "linear")


@by_name
@by_problem
@pytest.mark.parametrize("theta", [Fraction(1, 5), Fraction(1, 2), Fraction(4, 5)], ids=str)
def test_local_order_dense(tab, prob, theta):
    assert_slope(ladder(prob, tab, "dense", theta), tab.dense_order + 1,
                 floor=floor_of(prob), at_least=prob.name == "linear")


@pytest.mark.parametrize("tab", [ROSENBROCK23, RODAS4], ids=lambda t: t.name)
def test_local_order_float64(tab):
    # The same ladder in plain float64, from coarser steps down to round-off (Rodas5P's 6th-order
    # local errors reach round-off before they are asymptotic, hence the mpmath ladders above).
    prob = _manufactured()
    hs = [0.4 / 2 ** k for k in range(7)]
    kw = dict(hs=hs, floor=lambda h: 1e-12)
    assert_slope(ladder(prob, tab, "main", ar=F64, hs=hs), tab.order + 1, **kw)
    assert_slope(ladder(prob, tab, "embedded", ar=F64, hs=hs), tab.embedded_order + 1, **kw)


# A fixed wrong Jacobian and time derivative, as a W-method may use.
J_WRONG = [[0.7, -0.3], [0.2, 0.5]]
T_WRONG = [0.4, -0.25]


@by_name
def test_w_method_order(tab):
    # With a wrong J (and T) the local error is h^(w+1), w the W-order: 2 for Rosenbrock23 (a W-method
    # by design) and for Rodas5P, 1 for Rodas4.
    errs = ladder(_manufactured(), tab, "main", J_extra=J_WRONG, T_extra=T_WRONG)
    assert_slope(errs, W_ORDER[tab.name] + 1)


@by_name
@by_problem
def test_mp_and_float64_steps_agree(tab, prob):
    with mpmath.workdps(MP_DPS):
        y0 = prob.phi(mpmath.mpf(prob.t0), MP)
        y1, yhat, dense = ros_step(tab, prob, mpmath.mpf(prob.t0), y0, mpmath.mpf("0.1"), ar=MP)
        mp_vals = [np.array(v, dtype=float) for v in (y1, yhat, dense(mpmath.mpf("0.3")))]
    y0 = prob.phi(prob.t0, F64)
    z1, zhat, zdense = ros_step(tab, prob, prob.t0, y0, 0.1)
    for x, y in zip(mp_vals, (z1, zhat, zdense(0.3))):
        assert np.allclose(x, y, rtol=1e-13, atol=1e-14)


@by_name
@by_problem
def test_transformed_equals_original(tab, prob):
    t0 = prob.t0
    y0 = prob.phi(t0, F64)
    for h in (0.3, 0.01):
        y1, yhat, _ = ros_step(tab, prob, t0, y0, h)
        z1, zhat = ros_step_original(tab, prob, t0, y0, h)
        assert np.allclose(y1, z1, rtol=1e-12, atol=1e-13)
        assert np.allclose(yhat, zhat, rtol=1e-12, atol=1e-13)


@by_problem
@pytest.mark.parametrize("wrong", [False, True], ids=["exact-J", "wrong-J"])
def test_rosenbrock23_matches_published_form(prob, wrong):
    t0 = prob.t0
    y0 = prob.phi(t0, F64)
    n = len(y0)
    for h in (0.5, 0.05):
        J = prob.jac(t0, y0, F64) + (np.array(J_WRONG)[:n, :n] if wrong else 0)
        T = prob.dfdt(t0, y0, F64) + (np.array(T_WRONG)[:n] if wrong else 0)
        y1, yhat, dense = ros_step(ROSENBROCK23, prob, t0, y0, h, J=J, T=T)
        z1, zhat, zdense = shampine_step(prob, t0, y0, h, J=J, T=T)
        assert np.allclose(y1, z1, rtol=1e-13, atol=1e-14)
        assert np.allclose(yhat, zhat, rtol=1e-13, atol=1e-14)
        for theta in (0.1, 0.5, 0.9):
            assert np.allclose(dense(theta), zdense(theta), rtol=1e-13, atol=1e-14)


@by_name
def test_dense_interpolates_the_step(tab):
    prob = _manufactured()
    y0 = prob.phi(prob.t0, F64)
    y1, _, dense = ros_step(tab, prob, prob.t0, y0, 0.2)
    assert np.array_equal(dense(0.0), y0)
    assert np.allclose(dense(1.0), y1, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------- stability


def stability(tab, z, weights_kind="main"):
    """R(z) of the stored form on y' = λy (exact J), z = hλ, vectorised over z."""
    gamma, a, C, c, d, b, b_error, H = tab.floats()
    if weights_kind == "embedded":
        b = [x - e for x, e in zip(b, b_error)]
    z = np.asarray(z, dtype=complex)
    U = []
    for i in range(tab.stages):
        # (1/γ - z) U_i = z (1 + Σ a_ij U_j) + Σ C_ij U_j, with y0 = 1 and U scaled by 1/h's.
        rhs = z * (1 + sum(a[i][j] * U[j] for j in range(i))) + sum(C[i][j] * U[j] for j in range(i))
        U.append(rhs / (1 / gamma - z))
    return 1 + sum(bi * Ui for bi, Ui in zip(b, U))


def r_infinity(tab, embedded=False) -> float:
    """R(∞) = 1 - b_orig B⁻¹ 1 with B = α + Γ, exactly on the stored values."""
    orig = tab.original_form(exact=True)
    s = tab.stages
    w = orig.b_hat if embedded else orig.b
    B = [[orig.alpha[i][j] + orig.gamma[i][j] for j in range(s)] for i in range(s)]
    x = []
    for i in range(s):  # forward substitution B x = 1
        x.append((1 - sum((B[i][j] * x[j] for j in range(i)), Fraction(0))) / B[i][i])
    return float(1 - sum((wi * xi for wi, xi in zip(w, x)), Fraction(0)))


@by_name
def test_l_stable(tab):
    assert abs(r_infinity(tab)) < 1e-12
    assert abs(stability(tab, -1e12)) < 1e-9
    assert abs(stability(tab, 1e12j)) < 1e-9


def test_embedded_r_infinity():
    # The Rodas embedded solutions (the last stage value Y_s) are stiffly accurate too: R̂(∞) = 0.
    # Rosenbrock23's third-order estimator is not even A-stable at infinity (|R̂(∞)| ≈ 1.61), which
    # is harmless for an error estimate but rules out local extrapolation (OrdinaryDiffEq's
    # Rosenbrock32 steps with it).
    for tab in RODAS:
        assert abs(r_infinity(tab, embedded=True)) < 1e-12
    assert r_infinity(ROSENBROCK23, embedded=True) == pytest.approx(1.6094757082487, rel=1e-10)
    assert abs(stability(ROSENBROCK23, -1e12, "embedded")) > 1.6


@by_name
def test_a_stable(tab):
    mags = np.concatenate([[0.0], np.logspace(-3, 6, 200)])
    angles = np.linspace(np.pi / 2, 3 * np.pi / 2, 181)
    z = (mags[:, None] * np.exp(1j * angles[None, :])).ravel()
    assert np.max(np.abs(stability(tab, z))) <= 1 + 1e-12


@by_name
def test_stability_matches_step(tab):
    # The closed-form R(z) agrees with the reference step on y' = λy.
    for lam in (-0.7, -50.0, -3.0e4):
        prob = Problem("lin", 0.0, f=lambda t, y, ar: lam * y, jac=lambda t, y, ar: ar.mat([[lam]]),
                       dfdt=lambda t, y, ar: ar.arr([0]), phi=None)
        y1, _, _ = ros_step(tab, prob, 0.0, np.array([1.0]), 0.1)
        assert y1[0] == pytest.approx(stability(tab, 0.1 * lam).real, rel=1e-12, abs=1e-14)
