"""ESDIRK tableaus: construction checks, order conditions, stability, and a reference step.

The order conditions of a general (implicit) Runge-Kutta method are those of ``_trees``, applied to
the full lower triangular ``A`` including its diagonal: ``StageWeights`` sums ``a_ij Φ_j`` over
every entry of row ``i``, which is exactly ``Φ_i(τ) = Π_k Σ_j a_ij Φ_j(τ_k)`` for any ``A``. The
reference step is a NumPy transcription of the stage loop documented in
``pyode.native.esdirk_tableau`` (z-formulation, Newton on each stage).
"""
import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from _trees import StageWeights, residual, trees
from pyode.native.esdirk_tableau import EsdirkTableau
from pyode.native.tableaus.kencarp4 import KENCARP4
from pyode.native.tableaus.kvaerno5 import KVAERNO5

ALL = [KENCARP4, KVAERNO5]
by_name = pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)

# Residual of an order condition evaluated exactly on ~17-digit float coefficients.
FLOAT_TOL = 1e-12
# A condition counts as violated when it is off by far more than that.
VIOLATED = 1e-9


def is_exact(tab: EsdirkTableau) -> bool:
    fields = [tab.c, tab.b, tab.b_error, *tab.A]
    return all(isinstance(x, (int, Fraction)) for row in fields for x in row)


def satisfied(r: Fraction, exact: bool) -> bool:
    return r == 0 if exact else abs(float(r)) < FLOAT_TOL


def assert_order(tab, weights, order):
    """``weights`` satisfy every condition up to ``order`` and violate one at ``order + 1``."""
    phi = StageWeights(tab.A)
    exact = is_exact(tab)
    for n in range(1, order + 1):
        bad = [(t, float(r)) for t in trees(n) if not satisfied(r := residual(weights, phi(t), t), exact)]
        assert not bad, f"{tab.name}: order-{n} conditions fail: {bad[:3]}"
    worst = max(abs(float(residual(weights, phi(t), t))) for t in trees(order + 1))
    assert worst > VIOLATED, f"{tab.name}: satisfies all order-{order + 1} conditions too"


# ---------------------------------------------------------------------------- construction


@by_name
def test_construction_consistent(tab):
    s = tab.stages
    assert len(tab.A) == len(tab.b) == len(tab.b_error) == s
    assert [len(r) for r in tab.A] == list(range(1, s + 1))
    assert tab.c[0] == 0 and tab.A[0] == (0,)
    assert all(tab.A[i][i] == tab.gamma for i in range(1, s))
    assert tab.stiffly_accurate and tab.b == tab.A[-1] and tab.c[-1] == 1
    assert tab.embedded_order < tab.order
    assert tab.reference
    assert dataclasses.replace(tab) == tab        # rebuilding reruns __post_init__
    sq = tab.A_square()
    assert len(sq) == s and all(len(r) == s for r in sq)
    assert all(sq[i][j] == 0 for i in range(s) for j in range(i + 1, s))
    c, A, b, e, g = tab.floats()
    np.testing.assert_allclose(np.array(A).sum(axis=1), c, atol=1e-12)
    assert sum(b) == pytest.approx(1, abs=1e-14) and sum(e) == pytest.approx(0, abs=1e-14)
    assert g == float(tab.gamma)


def test_kencarp4_known_values():
    assert is_exact(KENCARP4)
    assert (KENCARP4.stages, KENCARP4.order, KENCARP4.embedded_order) == (6, 4, 3)
    assert KENCARP4.gamma == Fraction(1, 4)
    assert KENCARP4.c == (0, Fraction(1, 2), Fraction(83, 250), Fraction(31, 50), Fraction(17, 20), 1)
    # Kennedy & Carpenter's published embedded weights b_hat (Table 6) are b - b_error exactly.
    assert KENCARP4.b_hat == (Fraction(4586570599, 29645900160), 0, Fraction(178811875, 945068544),
                              Fraction(814220225, 1159782912), Fraction(-3700637, 11593932),
                              Fraction(61727, 225920))


def test_kvaerno5_known_values():
    assert (KVAERNO5.stages, KVAERNO5.order, KVAERNO5.embedded_order) == (7, 5, 4)
    assert KVAERNO5.gamma == 0.26 and KVAERNO5.c[1] == 0.52
    # The embedded method is stiffly accurate at stage 6: b_hat = (A[5], 0).
    np.testing.assert_allclose([float(x) for x in KVAERNO5.b_hat], [float(x) for x in KVAERNO5.A[5]] + [0.0],
                               rtol=0, atol=1e-16)


_A3 = ((0,), (Fraction(1, 4), Fraction(1, 4)), (Fraction(1, 3), Fraction(5, 12), Fraction(1, 4)))
_OK3 = dict(name="Toy", c=(0, Fraction(1, 2), 1), A=_A3, b=_A3[-1], order=2,
            b_error=(Fraction(1, 3), Fraction(-1, 3), 0), embedded_order=1, stiffly_accurate=True,
            reference="test")


def test_toy_tableau_builds():
    tab = EsdirkTableau(**_OK3)
    assert tab.gamma == Fraction(1, 4) and tab.stages == 3


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(c=(0, Fraction(1, 2), Fraction(9, 10))), r"row 2 of A sums to .* but c\[2\]"),
        (dict(A=((0,), (Fraction(1, 2),), _A3[2])), "row 1 of A has 1 entries, expected 2"),
        (dict(A=((0, 0), *_A3[1:])), "row 0 of A has 2 entries, expected 1"),
        (dict(A=(_A3[0], _A3[1], (Fraction(1, 3), Fraction(1, 3), Fraction(1, 3))),
              b=(Fraction(1, 3),) * 3), r"diagonal A\[2\]\[2\]=.* differs from gamma"),
        (dict(A=((Fraction(1, 4),), *_A3[1:]), c=(Fraction(1, 4), Fraction(1, 2), 1)),
         "first stage must be explicit"),
        (dict(A=((Fraction(1, 4),), *_A3[1:]), c=(Fraction(1, 4), Fraction(1, 2), 1)), r"c\[0\]"),
        (dict(b=(Fraction(1, 3), Fraction(5, 12), Fraction(1, 3))), "weights b sum to"),
        (dict(b_error=(1, 0, 0)), "b_error sums to"),
        (dict(b_error=(0, 0)), "len.b_error.=2"),
        (dict(b=(Fraction(1, 2), Fraction(1, 4), Fraction(1, 4))),
         "stiffly_accurate=True but b differs from the last row of A"),
        (dict(stiffly_accurate=False), "stiffly_accurate=False but b equals the last row of A"),
        (dict(order=1), "embedded_order"),
        (dict(c=(0,), A=((0,),), b=(1,), b_error=(0,)), "at least 2 stages"),
    ],
    ids=["row-sum", "row-short", "row-long", "diagonal", "explicit-A", "explicit-c", "b-sum",
         "b_error-sum", "b_error-len", "sa-false", "sa-true", "orders", "one-stage"],
)
def test_broken_tableau_rejected(change, message):
    with pytest.raises(ValueError, match=r"'Toy'.*" + message):
        EsdirkTableau(**{**_OK3, **change})


def test_broken_published_row_names_the_row():
    A = list(KENCARP4.A)
    A[3] = A[3][:2] + (A[3][2] + Fraction(1, 10 ** 6),) + A[3][3:]
    with pytest.raises(ValueError, match=r"'KenCarp4'.*row 3 of A sums to"):
        dataclasses.replace(KENCARP4, A=tuple(A))


# ---------------------------------------------------------------------------- order conditions


def test_stage_weights_use_the_diagonal():
    # Φ_i([•]) = Σ_{j≤i} a_ij = c_i, including the diagonal entry.
    phi = StageWeights(KENCARP4.A)
    assert phi(((),)) == [Fraction(x) for x in KENCARP4.c]


@by_name
def test_order(tab):
    assert_order(tab, tab.b, tab.order)


@by_name
def test_embedded_order(tab):
    assert_order(tab, tab.b_hat, tab.embedded_order)


@by_name
def test_stage_order_two(tab):
    # Stage order 2 (Σ_j a_ij c_j = c_i²/2 for every stage; a_21 = γ makes it hold for stage 2),
    # the property of both designs that limits order reduction on stiff problems.
    A = [[Fraction(x) for x in r] for r in tab.A]
    c = [Fraction(x) for x in tab.c]
    exact = is_exact(tab)
    for i in range(tab.stages):
        r = sum((a * c[j] for j, a in enumerate(A[i])), Fraction(0)) - c[i] ** 2 / 2
        assert satisfied(r, exact), (tab.name, i, float(r))


# ---------------------------------------------------------------------------- stability


def stability(tab, z, weights=None):
    """R(z) = 1 + z wᵀ (I - zA)⁻¹ 1 for an array of complex z."""
    c, A, b, _, _ = tab.floats()
    A = np.array(A)
    w = np.array([float(x) for x in weights]) if weights is not None else np.array(b)
    s = len(w)
    z = np.atleast_1d(np.asarray(z, dtype=complex))
    M = np.eye(s)[None] - z[:, None, None] * A[None]
    x = np.linalg.solve(M, np.ones((len(z), s, 1), dtype=complex))[..., 0]
    return 1 + z * (x @ w)


@by_name
def test_l_stable(tab):
    # |R(z)| ~ C/|z| here; further out float64 cancellation in 1 + z bᵀx dominates, so the limit
    # itself is checked exactly below.
    assert abs(stability(tab, -1e8)[0]) < 1e-6
    assert abs(stability(tab, -1e6)[0]) < 1e-5
    # R(∞) exactly, on the stored numbers. For y' = λy, z = hλ → -∞ the stage values tend to
    # Y_1 = 1, Y_i = -(Σ_{j<i} a_ij Y_j) / γ, and R(∞) = Y_s since the method is stiffly accurate.
    A = [[Fraction(x) for x in r] for r in tab.A]
    g = Fraction(tab.gamma)
    Y = [Fraction(1)]
    for i in range(1, tab.stages):
        Y.append(-sum((A[i][j] * Y[j] for j in range(i)), Fraction(0)) / g)
    r_inf = Y[-1]
    if is_exact(tab):
        assert r_inf == 0
    else:
        assert abs(float(r_inf)) < 1e-13, float(r_inf)
    # And the numerical R approaches it like 1/z.
    assert abs(stability(tab, -1e4)[0] - float(r_inf)) * 1e4 < 20


@by_name
def test_a_stable(tab):
    y = np.concatenate([-np.logspace(-4, 8, 2000), [0.0], np.logspace(-4, 8, 2000)])
    assert np.max(np.abs(stability(tab, 1j * y))) <= 1 + 1e-12
    r = np.concatenate([np.logspace(-4, 6, 200)])
    th = np.linspace(np.pi / 2, 3 * np.pi / 2, 181)
    z = (r[:, None] * np.exp(1j * th[None, :])).ravel()
    assert np.max(np.abs(stability(tab, z))) <= 1 + 1e-12
    # Poles 1/γ lie in the right half plane.
    assert float(tab.gamma) > 0


# ---------------------------------------------------------------------------- reference step


def esdirk_step(tab, f, jac, t, y, h):
    """One step of the stage loop documented in ``pyode.native.esdirk_tableau`` (full Newton)."""
    c, A, b, e, g = tab.floats()
    s = len(c)
    z = np.zeros((s, len(y)))
    z[0] = h * f(t, y)
    for i in range(1, s):
        psi = y + sum(A[i][j] * z[j] for j in range(i))
        zi = z[i - 1].copy()
        for _ in range(50):
            Y = psi + g * zi
            G = zi - h * f(t + c[i] * h, Y)
            W = np.eye(len(y)) - h * g * jac(t + c[i] * h, Y)
            d = np.linalg.solve(W, -G)
            zi += d
            if np.max(np.abs(d)) < 1e-15 * (1 + np.max(np.abs(zi))):
                break
        z[i] = zi
        if i == s - 1:
            Ys = psi + g * zi
    y1 = y + np.array(b) @ z
    err = np.array(e) @ z
    return y1, err, Ys


def _f(t, y):
    return np.array([-2 * t * y[0] ** 2, y[0] * y[1]])       # y0 = 1/(1+t²), y1 = exp(atan t)


def _jac(t, y):
    return np.array([[-4 * t * y[0], 0.0], [y[1], y[0]]])


def _exact(t):
    return np.array([1 / (1 + t * t), np.exp(np.arctan(t))])


@by_name
def test_reference_step_convergence(tab):
    """Global error ~ h^order and local error estimate ~ h^(embedded_order + 1) on a nonlinear,
    non-autonomous problem, so c and the ``z``-form of the loop are exercised too."""
    T = 1.0
    errs = []
    for n in (8, 16, 32):
        h, y = T / n, _exact(0.0)
        for k in range(n):
            y, _, Ys = esdirk_step(tab, _f, _jac, k * h, y, h)
            np.testing.assert_allclose(Ys, y, rtol=0, atol=1e-14)    # stiffly accurate: y1 = Y_s
        errs.append(np.max(np.abs(y - _exact(T))))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > tab.order - 0.4), (errs, rates)
    ests = [np.max(np.abs(esdirk_step(tab, _f, _jac, 0.3, _exact(0.3), h)[1]))
            for h in (0.1, 0.05, 0.025)]
    erates = np.log2(np.array(ests[:-1]) / np.array(ests[1:]))
    assert np.all(erates > tab.embedded_order + 1 - 0.4), (ests, erates)


@by_name
def test_reference_step_on_linear_problem_is_R(tab):
    lam, h = -50.0, 0.1
    y1, _, _ = esdirk_step(tab, lambda t, y: lam * y, lambda t, y: np.array([[lam]]), 0.0, np.array([1.0]), h)
    assert y1[0] == pytest.approx(stability(tab, lam * h)[0].real, rel=1e-12)
