"""The two adaptive pairs torchdiffeq has and pyode's algorithm set does not, as pyode algorithms.

Both are low-order pairs with an Euler-like embedded method, used in torchdiffeq for cheap, loose
solves. They run on pyode's generic explicit Runge-Kutta stepper like any other tableau; neither is
FSAL, so ``f(t + h, y1)`` is evaluated anew for the next step (and serves the cubic Hermite
interpolant).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F
from typing import ClassVar

from ...algorithms import AbstractExplicitRK
from ...native.tableau import ButcherTableau

__all__ = ["Fehlberg2", "AdaptiveHeun", "FEHLBERG2", "ADAPTIVE_HEUN"]

FEHLBERG2 = ButcherTableau(
    name="Fehlberg2",
    c=(0, F(1, 2), 1),
    a=(
        (),
        (F(1, 2),),
        (F(1, 256), F(255, 256)),
    ),
    b=(F(1, 512), F(255, 256), F(1, 512)),
    # b - b_hat, with the first-order b_hat = (1/256, 255/256, 0) (the third stage's row).
    b_error=(F(-1, 512), 0, F(1, 512)),
    order=2,
    embedded_order=1,
    reference="E. Fehlberg, Low-order classical Runge-Kutta formulas with stepsize control and their "
              "application to some heat transfer problems, NASA TR R-315 (1969), the RKF 2(1) pair",
)

ADAPTIVE_HEUN = ButcherTableau(
    name="AdaptiveHeun",
    c=(0, 1),
    a=(
        (),
        (1,),
    ),
    b=(F(1, 2), F(1, 2)),
    # b - b_hat with forward Euler as the embedded method, b_hat = (1, 0).
    b_error=(F(-1, 2), F(1, 2)),
    order=2,
    embedded_order=1,
    reference="Heun's method (explicit trapezoidal rule) with forward Euler as the error estimator",
)


@dataclass(frozen=True, repr=False)
class Fehlberg2(AbstractExplicitRK):
    """Fehlberg's RKF 2(1) pair (torchdiffeq's ``fehlberg2``).

    Order 2, embedded order 1, 3 stages, not FSAL, cubic Hermite interpolant. Not for stiff problems.
    """

    tableau: ClassVar[ButcherTableau] = FEHLBERG2


@dataclass(frozen=True, repr=False)
class AdaptiveHeun(AbstractExplicitRK):
    """Heun's method with an Euler error estimate (torchdiffeq's ``adaptive_heun``).

    Order 2, embedded order 1, 2 stages, not FSAL, cubic Hermite interpolant. Not for stiff problems.
    """

    tableau: ClassVar[ButcherTableau] = ADAPTIVE_HEUN
