"""Classical fixed-step explicit Runge-Kutta methods: forward Euler, explicit midpoint and RK4.

References:
    L. Euler, Institutionum calculi integralis (1768).
    C. Runge, "Über die numerische Auflösung von Differentialgleichungen", Math. Ann. 46 (1895)
    167-178 (the explicit midpoint rule).
    W. Kutta, "Beitrag zur näherungsweisen Integration totaler Differentialgleichungen",
    Z. Math. Phys. 46 (1901) 435-453 (the classic fourth-order method).
    Tableaus as in E. Hairer, S. P. Nørsett, G. Wanner, Solving Ordinary Differential Equations I,
    2nd ed., Springer (1993), Sec. II.1.
"""
from fractions import Fraction as F

from ..tableau import ButcherTableau

__all__ = ["EULER", "MIDPOINT", "RK4"]

EULER = ButcherTableau(
    name="Euler",
    c=(0,),
    a=((),),
    b=(1,),
    order=1,
    reference="L. Euler, Institutionum calculi integralis (1768); Hairer-Nørsett-Wanner I, Sec. II.1",
)

MIDPOINT = ButcherTableau(
    name="Midpoint",
    c=(0, F(1, 2)),
    a=(
        (),
        (F(1, 2),),
    ),
    b=(0, 1),
    order=2,
    reference="C. Runge, Math. Ann. 46 (1895) 167-178; Hairer-Nørsett-Wanner I, Sec. II.1",
)

RK4 = ButcherTableau(
    name="RK4",
    c=(0, F(1, 2), F(1, 2), 1),
    a=(
        (),
        (F(1, 2),),
        (0, F(1, 2)),
        (0, 0, 1),
    ),
    b=(F(1, 6), F(1, 3), F(1, 3), F(1, 6)),
    order=4,
    reference="W. Kutta, Z. Math. Phys. 46 (1901) 435-453; Hairer-Nørsett-Wanner I, Sec. II.1",
)
