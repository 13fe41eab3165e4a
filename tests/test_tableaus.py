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

ALL = [EULER, MIDPOINT, RK4, BS3, DP5, TSIT5, VERN7, DP8]
ADAPTIVE = [t for t in ALL if t.adaptive]
MAX_ORDER = 9  # enough to show DP8 is not of order 9

# Float tableaus carry ~1e-16 representation error per coefficient; exact tableaus must be exact.
FLOAT_TOL = 1e-12
# A condition counts as violated when it is off by far more than the float tolerance.
VIOLATED = 1e-9

by_name = pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
by_name_adaptive = pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)


def is_exact(tab: ButcherTableau) -> bool:
    fields = [tab.c, tab.b, tab.b_error or (), *tab.a, *(tab.dense or ())]
    return all(isinstance(x, (int, Fraction)) for row in fields for x in row)


def augmented(tab: ButcherTableau):
    """Stage weights of the tableau extended by stage s+1 = f(t + h, y1): c = 1, a-row = b."""
    return StageWeights(tab.a + (tab.b,))


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
    rows = tab.dense_coefficients()
    assert len(rows) == s + 1
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
