"""Tsitouras 5(4) pair with its free fourth-order continuous extension.

Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
assumption", Computers & Mathematics with Applications 62 (2011) 770-775. Seven stages, first same
as last. The coefficients are not rational; the values are those of OrdinaryDiffEq.jl
(``tsit_tableaus.jl``: ``Tsit5ConstantCacheActual`` and the expanded interpolation polynomials
``Tsit5Interp``, ``r11 .. r74``), rounded to double precision.
"""
from fractions import Fraction as F

from ..tableau import ButcherTableau

__all__ = ["TSIT5"]

_B = (
    0.09646076681806523,
    F(1, 100),
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0,
)

TSIT5 = ButcherTableau(
    name="Tsit5",
    c=(0, F(161, 1000), F(327, 1000), F(9, 10), 0.9800255409045097, 1, 1),
    a=(
        (),
        (F(161, 1000),),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        _B[:6],
    ),
    b=_B,
    # OrdinaryDiffEq.jl's btilde is b_hat - b; b_error here is b - b_hat, hence the flipped signs.
    b_error=(
        0.0017800110522257714,
        0.0008164344596567469,
        -0.007880878010261995,
        0.1447110071732629,
        -0.5823571654525552,
        0.45808210592918697,
        F(-1, 66),
    ),
    order=5,
    embedded_order=4,
    fsal=True,
    dense=(
        (1, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0, 0.13169999999999998, -0.2234, 0.1017),
        (0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
        (0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
        (0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
        (0, F(3, 2), -4, F(5, 2)),
        # k7 already is f(t + h, y1).
        (0, 0, 0, 0),
    ),
    dense_order=4,
    reference=(
        "Ch. Tsitouras, Runge-Kutta pairs of order 5(4) satisfying only the first column "
        "simplifying assumption, Comput. Math. Appl. 62 (2011) 770-775; numbers from "
        "OrdinaryDiffEq.jl tsit_tableaus.jl"
    ),
)
