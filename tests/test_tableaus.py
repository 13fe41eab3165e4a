"""Butcher tableaus: construction-time checks and order conditions via rooted trees."""
import dataclasses
from fractions import Fraction

import pytest

from _trees import StageWeights, dense_residual, residual, rho, trees
from pyode.native.tableau import ButcherTableau
from pyode.native.tableaus.bs3 import BS3
from pyode.native.tableaus.classic import EULER, MIDPOINT, RK4
from pyode.native.tableaus.dp5 import DP5
from pyode.native.tableaus.dp8 import DP8
from pyode.native.tableaus.tsit5 import TSIT5
from pyode.native.tableaus.vern7 import VERN7
from pyode.compat.torchdiffeq._tableaus import ADAPTIVE_HEUN, FEHLBERG2

ALL = [EULER, MIDPOINT, RK4, BS3, DP5, TSIT5, VERN7, DP8, FEHLBERG2, ADAPTIVE_HEUN]
ADAPTIVE = [t for t in ALL if t.adaptive]
MAX_ORDER = 9  # enough to show DP8 is not of order 9

# Float tableaus carry ~1e-16 representation error per coefficient; exact tableaus must be exact.
FLOAT_TOL = 1e-12
# A condition counts as violated when it is off by far more than the float tolerance.
VIOLATED = 1e-9

by_name = pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
by_name_adaptive = pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)


def is_exact(tab: ButcherTableau) -> bool:
    """The step's coefficients are exact rationals (interpolants are checked in floating point)."""
    fields = [tab.c, tab.b, tab.b_error or (), *tab.a]
    return all(isinstance(x, (int, Fraction)) for row in fields for x in row)


def augmented(tab: ButcherTableau):
    """Stage weights of the tableau extended by stage s+1 = f(t + h, y1) (c = 1, a-row = b) and
    then by the continuous extension's extra stages e_1..e_m (rows over k_1..k_s, f1, e_1..)."""
    return StageWeights(tab.a + (tab.b,) + (tab.dense_extra_a or ()))


def padded(weights, s: int) -> tuple:
    return tuple(weights) + (0,) * (s + 1 - len(weights))


def embedded(tab: ButcherTableau, err) -> tuple:
    """Weights b - err of an embedded method over the s+1 augmented stages."""
    s = tab.stages
    return tuple(bi - ei for bi, ei in zip(padded(tab.b, s), padded(err, s)))


def satisfied(r: Fraction, exact: bool) -> bool:
    return r == 0 if exact else abs(float(r)) < FLOAT_TOL


def assert_order(tab, weights, order):
    """``weights`` over the augmented stages satisfy all conditions up to ``order``, and not beyond."""
    phi = augmented(tab)
    exact = is_exact(tab)
    for n in range(1, order + 1):
        bad = [(t, float(r)) for t in trees(n) if not satisfied(r := residual(weights, phi(t), t), exact)]
        assert not bad, f"{tab.name}: order-{n} conditions fail: {bad[:3]}"
    # order + 1 <= MAX_ORDER for every tableau here, so the declared order is always shown exact.
    assert order + 1 <= MAX_ORDER
    worst = max(abs(float(residual(weights, phi(t), t))) for t in trees(order + 1))
    assert worst > VIOLATED, f"{tab.name}: satisfies all order-{order + 1} conditions too"


def test_tree_counts():
    # OEIS A000081: number of rooted trees with n vertices.
    assert [len(trees(n)) for n in range(1, MAX_ORDER + 1)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    assert all(rho(t) == n for n in range(1, 7) for t in trees(n))


@by_name
def test_construction_consistent(tab):
    s = tab.stages
    assert len(tab.a) == len(tab.b) == s
    assert tab.c[0] == 0
    assert tab.adaptive == (tab.b_error is not None) == (tab.embedded_order is not None)
    if tab.adaptive:
        assert tab.embedded_order < tab.order
    assert tab.reference
    # Rebuilding from the fields runs __post_init__ again.
    assert dataclasses.replace(tab) == tab
    m = tab.extra_stages
    assert len(tab.dense_extra_c or ()) == len(tab.dense_extra_a or ()) == m
    for j, (cj, row) in enumerate(zip(tab.dense_extra_c or (), tab.dense_extra_a or ())):
        assert len(row) == s + 1 + j
        assert float(sum(row)) == pytest.approx(float(cj), abs=1e-12)
    rows = tab.dense_coefficients()
    assert len(rows) == s + 1 + m
    for i, row in enumerate(rows):
        bi = float(tab.b[i]) if i < s else 0.0
        assert sum(row) == pytest.approx(bi, abs=1e-10)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(a=((), (Fraction(1, 2),), (0, Fraction(1, 3)), (0, 0, 1))), "row 2 of a sums to"),
        (dict(a=((), (Fraction(1, 2),), (Fraction(1, 2),), (0, 0, 1))), "row 2 of a has 1 entries"),
        (dict(b=(Fraction(1, 6), Fraction(1, 3), Fraction(1, 3), Fraction(1, 3))), "weights b sum to"),
        (dict(b_error=(1, 0, 0, 0), embedded_order=3), "b_error sums to"),
        (dict(b_error=(0, 0)), "b_error has 2 entries"),
        (dict(b_error=(0, 0, 0, 0)), "b_error and embedded_order go together"),
        (dict(fsal=True), "fsal=True needs"),
        (dict(dense=((1,),) * 5, dense_order=1), "dense row 1 sums to"),
        (dict(dense=((1,),) * 4, dense_order=1), "dense has 4 rows"),
    ],
)
def test_broken_tableau_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(RK4, **change)


def _with_extra(tab, j, row):
    rows = list(tab.dense_extra_a)
    rows[j] = tuple(row)
    return tuple(rows)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: dict(dense_extra_a=None), "dense_extra_c and dense_extra_a go together"),
        (lambda t: dict(dense_extra_c=t.dense_extra_c[:-1]), "dense_extra_a has 3 rows, but dense_extra_c has 2"),
        (lambda t: dict(dense_extra_a=_with_extra(t, 2, t.dense_extra_a[2][:-1])),
         r"row 2 of dense_extra_a has 14 entries, expected s \+ 1 \+ 2 = 15"),
        (lambda t: dict(dense_extra_a=_with_extra(t, 1, t.dense_extra_a[1] + (0,))),
         r"row 1 of dense_extra_a has 15 entries, expected s \+ 1 \+ 1 = 14"),
        (lambda t: dict(dense_extra_a=_with_extra(t, 0, (t.dense_extra_a[0][0] + 1e-3,) + t.dense_extra_a[0][1:])),
         "row 0 of dense_extra_a sums to"),
        (lambda t: dict(dense=t.dense[:-1]), r"dense has 15 rows, expected s \+ 1 \+ m = 16"),
        (lambda t: dict(dense=t.dense[:-1] + ((1,) + t.dense[-1][1:],)), r"dense row 15 sums to .* expected 0"),
        (lambda t: dict(dense=None, dense_order=None), "dense_extra_c/dense_extra_a need dense"),
    ],
    ids=["a-missing", "count", "row-short", "row-long", "row-sum", "dense-rows", "dense-extra-sum", "no-dense"],
)
def test_broken_extra_stages_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DP8, **change(DP8))


def test_extra_stages_need_their_dense_rows():
    # RK4 has no interpolant of its own: extra stages with a 5-row (s + 1) dense are one row short.
    dense = ((1, 0), (0, 0), (0, 0), (0, 0), (0, 0))
    with pytest.raises(ValueError, match=r"dense has 5 rows, expected s \+ 1 \+ m = 6"):
        dataclasses.replace(RK4, dense=dense, dense_order=1, dense_extra_c=(Fraction(1, 2),),
                            dense_extra_a=((Fraction(1, 2), 0, 0, 0, 0),))


def test_broken_row_names_the_row():
    a = list(DP5.a)
    a[3] = (a[3][0], a[3][1], a[3][2] + Fraction(1, 1000))
    with pytest.raises(ValueError, match=r"'DP5'.*row 3 of a"):
        dataclasses.replace(DP5, a=tuple(a))


@by_name
def test_order(tab):
    assert_order(tab, padded(tab.b, tab.stages), tab.order)


@by_name_adaptive
def test_embedded_order(tab):
    assert_order(tab, embedded(tab, tab.b_error), tab.embedded_order)


@pytest.mark.parametrize(
    "tab, last_b_hat",
    [
        (BS3, Fraction(1, 8)),
        (DP5, Fraction(1, 40)),
        (TSIT5, Fraction(1, 66)),
        (VERN7, Fraction(2152106665253777, 106040260335225546)),
    ],
    ids=["BS3", "DP5", "Tsit5", "Vern7"],
)
def test_b_error_is_b_minus_b_hat(tab, last_b_hat):
    # The order conditions cannot tell b - b_hat from b_hat - b (2b - b_hat has the same order), so
    # pin the sign convention on the published last embedded weight (the true b has 0 there).
    assert tab.b[-1] == 0
    assert float(tab.b_error[-1]) == pytest.approx(-float(last_b_hat), rel=1e-15)


def test_dp8_low_order_estimator():
    assert_order(DP8, embedded(DP8, DP8.b_error_low), 3)


THETAS = [Fraction(1, 10), Fraction(1, 3), Fraction(1, 2), Fraction(5, 7), Fraction(19, 20)]


@by_name
def test_dense_output_order(tab):
    # The float rows the solver uses (dense_coefficients() covers the Hermite fallback), so the
    # float tolerance applies even to exact tableaus.
    rows = tab.dense_coefficients()
    phi = augmented(tab)
    q = tab.interpolant_order
    for theta in THETAS:
        for n in range(1, q + 1):
            bad = [(t, float(r)) for t in trees(n)
                   if not satisfied(r := dense_residual(rows, theta, phi(t), t), exact=False)]
            assert not bad, f"{tab.name}: θ={theta}, order-{n} conditions fail: {bad[:3]}"
    worst = max(abs(float(dense_residual(rows, theta, phi(t), t))) for theta in THETAS for t in trees(q + 1))
    assert worst > VIOLATED, f"{tab.name}: interpolant is of order {q + 1} too"


# ---- high-order continuous extensions with extra stages (Vern7, DP8) ----------------------------

def test_vern7_and_dp8_interpolants():
    # Degree 7 each; Vern7 needs 5 extra stages (Verner's stage 11 is f(t + h, y1) itself), DP8 3.
    for tab, m, q in ((VERN7, 5, 6), (DP8, 3, 7)):
        assert tab.extra_stages == m and len(tab.dense) == tab.stages + 1 + m
        assert {len(row) for row in tab.dense} == {7}
        assert tab.interpolant_order == tab.dense_order == q
        # Accurate enough to interpolate saveat instead of stepping onto it.
        assert tab.interpolant_order + 1 >= tab.order
        # Extra stages lie inside the step.
        assert all(0 < float(c) < 1 for c in tab.dense_extra_c)


def test_vern7_interpolant_is_order_6_with_tiny_order_7_defects():
    """Verner's published 40-digit coefficients, checked exactly: every condition up to order 6 holds
    to the precision of the decimals; 12 order-7 conditions are off by at most ~3e-7 (so dense_order
    is 6), which is ~100x less than the order-8 defects: in practice the error is that of order 7."""
    phi = augmented(VERN7)
    for theta in THETAS:
        worst = max(abs(float(dense_residual(VERN7.dense, theta, phi(t), t))) for n in range(1, 7) for t in trees(n))
        assert worst < 1e-30, (theta, worst)
    def defects(order):
        return {t: max(abs(float(dense_residual(VERN7.dense, th, phi(t), t))) for th in THETAS)
                for t in trees(order)}

    d7, d8 = defects(7), defects(8)
    off = [t for t, d in d7.items() if d > 1e-30]
    assert len(off) == 12 and all(len(t) == 1 for t in off), off     # all of the form [τ]
    assert VIOLATED < max(d7.values()) < 3e-7, max(d7.values())
    assert max(d8.values()) > 50 * max(d7.values()), (max(d7.values()), max(d8.values()))
    # At θ = 1 the extension is the step itself, of order 7.
    assert max(abs(float(dense_residual(VERN7.dense, Fraction(1), phi(t), t))) for t in trees(7)) < 1e-30


def test_dp8_interpolant_is_scipys_dop853_dense_output():
    """The extra stages are SciPy's (dop853.f's), and the expanded ``dense`` rows give the same
    polynomial as SciPy's ``Dop853DenseOutput`` for arbitrary stage values."""
    import numpy as np
    from scipy.integrate._ivp import dop853_coefficients as ref
    from scipy.integrate._ivp.rk import Dop853DenseOutput

    s, m = DP8.stages, DP8.extra_stages
    assert (ref.N_STAGES, ref.N_STAGES_EXTENDED) == (s, s + 1 + m)      # K_extended holds f1 too
    np.testing.assert_array_equal(np.array([float(c) for c in DP8.dense_extra_c]), ref.C[s + 1:])
    for j, row in enumerate(DP8.dense_extra_a):
        np.testing.assert_array_equal(np.array([float(x) for x in row]), ref.A[s + 1 + j, :s + 1 + j])
    np.testing.assert_array_equal(np.array([float(x) for x in DP8.b]), ref.B)

    rng = np.random.default_rng(0)
    n, h, t0 = 3, 0.37, 1.5
    K = rng.standard_normal((s + 1 + m, n))
    y0 = rng.standard_normal(n)
    y1 = y0 + h * ref.B @ K[:s]
    F = np.empty((ref.INTERPOLATOR_POWER, n))
    F[0] = y1 - y0
    F[1] = h * K[0] - F[0]
    F[2] = 2 * F[0] - h * (K[s] + K[0])
    F[3:] = h * ref.D @ K
    scipy_dense = Dop853DenseOutput(t0, t0 + h, y0, F)
    rows = np.array(DP8.dense_coefficients())                       # (s + 1 + m, 7)
    for theta in (0.0, 0.1, 1 / 3, 0.5, 0.9, 1.0):
        P = rows @ theta ** np.arange(1, rows.shape[1] + 1)
        ours = y0 + h * P @ K
        np.testing.assert_allclose(ours, scipy_dense(t0 + theta * h), rtol=0, atol=1e-13)
