"""Dormand-Prince 5(4) pair (DOPRI5) with its free fourth-order continuous extension.

J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae", Journal of Computational
and Applied Mathematics 6 (1980) 19-26. Seven stages, first same as last.

The dense output is the continuous extension of E. Hairer, S. P. Nørsett, G. Wanner, Solving
Ordinary Differential Equations I, 2nd ed. (1993), Sec. II.6, as coded in ``dopri5.f`` (``CONTD5``):
cubic Hermite interpolation plus ``θ²(1-θ)² h Σ d_i k_i``, with Shampine's ``d`` coefficients
(L. F. Shampine, "Some practical Runge-Kutta formulas", Math. Comp. 46 (1986) 135-150). Expanded
into powers of θ below; the θ⁴ column is ``d``.
"""
from fractions import Fraction as F

from ..tableau import ButcherTableau

__all__ = ["DP5"]

DP5 = ButcherTableau(
    name="DP5",
    c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        (),
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)),
    ),
    b=(F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0),
    # b - b_hat with b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40).
    b_error=(F(71, 57600), 0, F(-71, 16695), F(71, 1920), F(-17253, 339200), F(22, 525), F(-1, 40)),
    order=5,
    embedded_order=4,
    fsal=True,
    dense=(
        (1, F(-8048581381, 2820520608), F(8663915743, 2820520608), F(-12715105075, 11282082432)),
        (0, 0, 0, 0),
        (0, F(131558114200, 32700410799), F(-68118460800, 10900136933), F(87487479700, 32700410799)),
        (0, F(-1754552775, 470086768), F(14199869525, 1410260304), F(-10690763975, 1880347072)),
        (0, F(127303824393, 49829197408), F(-318862633887, 49829197408), F(701980252875, 199316789632)),
        (0, F(-282668133, 205662961), F(2019193451, 616988883), F(-1453857185, 822651844)),
        (0, F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423)),
        # k7 already is f(t + h, y1).
        (0, 0, 0, 0),
    ),
    dense_order=4,
    reference=(
        "J. R. Dormand, P. J. Prince, A family of embedded Runge-Kutta formulae, "
        "J. Comput. Appl. Math. 6 (1980) 19-26; dense output: Hairer-Nørsett-Wanner I, Sec. II.6 "
        "(dopri5.f) with L. F. Shampine, Math. Comp. 46 (1986) 135-150"
    ),
)
