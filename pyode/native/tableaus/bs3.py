"""Bogacki-Shampine 3(2) pair.

P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas", Applied Mathematics Letters 2
(1989) 321-325. Four stages, first same as last; the embedded second-order weights use the FSAL
stage ``f(t + h, y1)``. Dense output is the cubic Hermite interpolant through ``(y0, f0)`` and
``(y1, f1)`` (``dense=None``), third order here, at no extra function evaluation thanks to FSAL.
"""
from fractions import Fraction as F

from ..tableau import ButcherTableau

__all__ = ["BS3"]

BS3 = ButcherTableau(
    name="BS3",
    c=(0, F(1, 2), F(3, 4), 1),
    a=(
        (),
        (F(1, 2),),
        (0, F(3, 4)),
        (F(2, 9), F(1, 3), F(4, 9)),
    ),
    b=(F(2, 9), F(1, 3), F(4, 9), 0),
    # b - b_hat with b_hat = (7/24, 1/4, 1/3, 1/8).
    b_error=(F(-5, 72), F(1, 12), F(1, 9), F(-1, 8)),
    order=3,
    embedded_order=2,
    fsal=True,
    reference=(
        "P. Bogacki, L. F. Shampine, A 3(2) pair of Runge-Kutta formulas, "
        "Appl. Math. Lett. 2 (1989) 321-325"
    ),
)
