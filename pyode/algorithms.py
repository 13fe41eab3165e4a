"""Algorithm objects: small immutable configurations named as in DifferentialEquations.jl.

An algorithm holds no per-solve state; the same object may serve many solves at once. Each engine
maps these objects to its own implementation (the native engine reads the tableau).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from .native.esdirk_tableau import EsdirkTableau
from .native.rosenbrock_tableau import RosenbrockTableau
from .native.tableaus.kencarp4 import KENCARP4 as _KENCARP4
from .native.tableaus.kvaerno5 import KVAERNO5 as _KVAERNO5
from .native.tableau import ButcherTableau
from .native.tableaus.rodas4 import RODAS4 as _RODAS4
from .native.tableaus.rodas5p import RODAS5P as _RODAS5P
from .native.tableaus.rosenbrock23 import ROSENBROCK23 as _ROSENBROCK23
from .native.tableaus.bs3 import BS3 as _BS3
from .native.tableaus.classic import EULER as _EULER, MIDPOINT as _MIDPOINT, RK4 as _RK4
from .native.tableaus.dp5 import DP5 as _DP5
from .native.tableaus.dp8 import DP8 as _DP8
from .native.tableaus.tsit5 import TSIT5 as _TSIT5
from .native.tableaus.vern7 import VERN7 as _VERN7

__all__ = ["AbstractAlgorithm", "AbstractExplicitRK", "AbstractRosenbrock", "Tsit5", "DP5", "BS3", "Vern7",
           "DP8", "Euler", "Midpoint", "RK4", "Rosenbrock23", "Rodas4", "Rodas5P", "AbstractESDIRK", "KenCarp4",
           "Kvaerno5", "AbstractStiffAlgorithm", "RadauIIA5", "AbstractBDF", "FBDF", "QNDF", "AutoSwitch", "AutoTsit5",
           "AutoDP5", "AutoVern7"]


class AbstractAlgorithm(abc.ABC):
    """Interface of every ODE algorithm."""

    #: True for methods meant for stiff problems (implicit / Rosenbrock); decides failure hints.
    stiff: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def adaptive(self) -> bool:
        """Whether the method has an error estimate for adaptive step-size control."""

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """Order of the method."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AbstractTableauAlgorithm(AbstractAlgorithm):
    """A method defined by a coefficient tableau (the tableau states order and adaptivity)."""

    tableau: ClassVar

    @property
    def adaptive(self) -> bool:
        return self.tableau.adaptive

    @property
    def order(self) -> int:
        return self.tableau.order


class AbstractExplicitRK(AbstractTableauAlgorithm):
    """An explicit Runge-Kutta method given by its Butcher tableau."""

    tableau: ClassVar[ButcherTableau]


@dataclass(frozen=True, repr=False)
class Tsit5(AbstractExplicitRK):
    """Tsitouras 5(4): the default non-stiff method.

    Order 5, embedded order 4, 7 stages (6 new evaluations per step: FSAL), free 4th-order
    interpolant. Not for stiff problems.
    Ch. Tsitouras, Comput. Math. Appl. 62 (2011) 770-775.
    """

    tableau: ClassVar[ButcherTableau] = _TSIT5


@dataclass(frozen=True, repr=False)
class DP5(AbstractExplicitRK):
    """Dormand-Prince 5(4) (torchdiffeq's ``dopri5``, MATLAB's ``ode45``).

    Order 5, embedded order 4, 7 stages with FSAL, free 4th-order interpolant. Not for stiff problems.
    J. R. Dormand, P. J. Prince, J. Comput. Appl. Math. 6 (1980) 19-26.
    """

    tableau: ClassVar[ButcherTableau] = _DP5


@dataclass(frozen=True, repr=False)
class BS3(AbstractExplicitRK):
    """Bogacki-Shampine 3(2), for loose tolerances.

    Order 3, embedded order 2, 4 stages with FSAL, cubic Hermite interpolant. Not for stiff problems.
    P. Bogacki, L. F. Shampine, Appl. Math. Lett. 2 (1989) 321-325.
    """

    tableau: ClassVar[ButcherTableau] = _BS3


@dataclass(frozen=True, repr=False)
class Vern7(AbstractExplicitRK):
    """Verner's "most efficient" 7(6) pair, for tight tolerances.

    Order 7, embedded order 6, 10 stages (no FSAL). Verner's continuous extension of degree 7 (order 6
    by the order conditions, behaving as order 7 in practice) with 5 extra evaluations per
    interpolated step, for ``saveat`` and ``sol(t)``.
    J. H. Verner, Numer. Algorithms 53 (2010) 383-396.
    """

    tableau: ClassVar[ButcherTableau] = _VERN7


@dataclass(frozen=True, repr=False)
class DP8(AbstractExplicitRK):
    """Dormand-Prince 8(5,3) as in Hairer's DOP853, for very tight tolerances.

    Order 8, 12 stages, error from the combined 5th- and 3rd-order estimators. Hairer's 7th-order
    dense output with 3 extra evaluations per interpolated step, for ``saveat`` and ``sol(t)``.
    E. Hairer, S. P. Nørsett, G. Wanner, Solving ODEs I, 2nd ed., Springer 1993, Sec. II.10.
    """

    tableau: ClassVar[ButcherTableau] = _DP8


@dataclass(frozen=True, repr=False)
class Euler(AbstractExplicitRK):
    """Forward Euler: order 1, one stage, fixed step (pass ``dt``)."""

    tableau: ClassVar[ButcherTableau] = _EULER


@dataclass(frozen=True, repr=False)
class Midpoint(AbstractExplicitRK):
    """Explicit midpoint rule: order 2, two stages, fixed step (pass ``dt``)."""

    tableau: ClassVar[ButcherTableau] = _MIDPOINT


@dataclass(frozen=True, repr=False)
class RK4(AbstractExplicitRK):
    """The classic Runge-Kutta method: order 4, four stages, fixed step (pass ``dt``).

    (DifferentialEquations.jl's ``RK4`` is adaptive; pyode's is the fixed-step textbook method.)
    """

    tableau: ClassVar[ButcherTableau] = _RK4


class AbstractStiffAlgorithm(AbstractAlgorithm):
    """A method for stiff problems that needs the Jacobian of ``f``.

    The Jacobian is the problem's ``jac`` when given, else forward-mode automatic differentiation
    of ``f`` (``autodiff=True``) or finite differences (``autodiff=False``).
    """

    stiff: ClassVar[bool] = True
    autodiff: bool

    def __repr__(self) -> str:
        return f"{type(self).__name__}()" if self.autodiff else f"{type(self).__name__}(autodiff=False)"


class AbstractStiffTableauAlgorithm(AbstractStiffAlgorithm, AbstractTableauAlgorithm):
    """A stiff method defined by a coefficient tableau."""


class AbstractRosenbrock(AbstractStiffTableauAlgorithm):
    """A Rosenbrock (linearly implicit) method for stiff problems, given by its tableau.

    One Jacobian (reused after rejected steps) and one batched LU factorisation of
    ``I/(hγ) - J`` per step, no Newton iterations. The Jacobian is the problem's ``jac`` when given,
    else forward-mode automatic differentiation of ``f`` (``autodiff=True``) or finite differences
    (``autodiff=False``, for an ``f`` that forward-mode AD cannot trace). Use float64 states for
    stiff problems: float32 round-off in ``J`` and the linear solves limits the attainable accuracy.
    """

    tableau: ClassVar[RosenbrockTableau]


@dataclass(frozen=True, repr=False)
class Rosenbrock23(AbstractRosenbrock):
    """Shampine & Reichelt's Rosenbrock23 (MATLAB ``ode23s``): stiff, loose tolerances.

    Order 2 (a W-method: order 2 with any matrix in place of ``J``), 3rd-order error estimate,
    3 stages with FSAL (2 evaluations of ``f`` per step), L-stable, 2nd-order interpolant.
    L. F. Shampine, M. W. Reichelt, SIAM J. Sci. Comput. 18 (1997) 1-22.
    """

    autodiff: bool = True
    tableau: ClassVar[RosenbrockTableau] = _ROSENBROCK23


@dataclass(frozen=True, repr=False)
class Rodas4(AbstractRosenbrock):
    """Hairer & Wanner's RODAS: order 4(3), 6 stages, stiffly accurate, L-stable, 3rd-order interpolant.

    E. Hairer, G. Wanner, Solving ODEs II, 2nd ed., Springer 1996, Sec. VI.7.
    """

    autodiff: bool = True
    tableau: ClassVar[RosenbrockTableau] = _RODAS4


@dataclass(frozen=True, repr=False)
class Rodas5P(AbstractRosenbrock):
    """Steinebach's Rodas5P: the default stiff method. Order 5(4), 8 stages, stiffly accurate,
    L-stable, 4th-order interpolant.

    G. Steinebach, BIT Numer. Math. 63 (2023) 27.
    """

    autodiff: bool = True
    tableau: ClassVar[RosenbrockTableau] = _RODAS5P


class AbstractESDIRK(AbstractStiffTableauAlgorithm):
    """An ESDIRK (explicit-first-stage, singly diagonally implicit RK) method for stiff problems.

    Stages are solved by simplified Newton iterations on ``I - hγJ``; the Jacobian and its batched
    LU are kept across steps per member while Newton converges quickly (a fresh Jacobian after a
    slowly converging step, at ``tstops`` and before a failed step is given up). The Jacobian is
    obtained as for the Rosenbrock methods (``jac``, forward AD, or finite differences with
    ``autodiff=False``). Dense output is cubic Hermite; default step control is predictive.
    """

    tableau: ClassVar[EsdirkTableau]


@dataclass(frozen=True, repr=False)
class KenCarp4(AbstractESDIRK):
    """Kennedy & Carpenter's ESDIRK4(3)6L[2]SA (the implicit part of ARK4(3)6L): order 4(3), 6 stages,
    stiffly accurate, L-stable, γ = 1/4.

    C. A. Kennedy, M. H. Carpenter, Appl. Numer. Math. 44 (2003) 139-181.
    """

    autodiff: bool = True
    tableau: ClassVar[EsdirkTableau] = _KENCARP4


@dataclass(frozen=True, repr=False)
class Kvaerno5(AbstractESDIRK):
    """Kværnø's ESDIRK 5(4): order 5(4), 7 stages, stiffly accurate, L-stable, γ = 0.26.
    ``saveat`` times are stepped onto (its interpolant is cubic Hermite).

    A. Kværnø, BIT Numer. Math. 44 (2004) 489-502.
    """

    autodiff: bool = True
    tableau: ClassVar[EsdirkTableau] = _KVAERNO5


@dataclass(frozen=True, repr=False)
class RadauIIA5(AbstractStiffAlgorithm):
    """The 3-stage Radau IIA collocation method (Hairer & Wanner's RADAU5), for tight tolerances.

    Order 5, stiffly accurate, L-stable. Newton iterations on the transformed stage system: one
    real and one complex LU per step; Hairer's W⁻¹-filtered error estimate; the collocation
    polynomial serves as dense output (order 3), so ``saveat`` times are stepped onto.

    E. Hairer, G. Wanner, Solving ODEs II, 2nd ed., Springer 1996, Sec. IV.8.
    """

    autodiff: bool = True

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def order(self) -> int:
        return 5


class AbstractBDF(AbstractStiffAlgorithm):
    """Variable-order (1 to ``max_order``), variable-step backward differentiation formulas.

    Quasi-constant step size form: the method keeps backward differences of the solution on an
    equally spaced grid and interpolates them onto a new grid when the step size changes
    (Shampine & Reichelt, as scipy's ``BDF``). Order and step are chosen per member from the error
    estimates of the neighbouring orders; the Jacobian is reused across steps until Newton
    iterations stall, and the LU of ``I - h/α J`` until the step or order changes.
    """

    max_order: int
    #: κ of the numerical differentiation formulas, by order (all zero: plain BDF)
    kappa: ClassVar[tuple] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        if isinstance(self.max_order, bool) or not isinstance(self.max_order, int) or not 1 <= self.max_order <= 5:
            raise ValueError(f"max_order must be an integer from 1 to 5; got {self.max_order!r}")

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def order(self) -> int:
        return self.max_order

    def __repr__(self) -> str:
        args = ([] if self.max_order == 5 else [f"max_order={self.max_order}"]) + \
            ([] if self.autodiff else ["autodiff=False"])
        return f"{type(self).__name__}({', '.join(args)})"


@dataclass(frozen=True, repr=False)
class FBDF(AbstractBDF):
    """Variable-order BDF (orders 1-5): the workhorse for larger stiff systems (kinetics with many
    species), where one Jacobian and one LU serve many steps.

    pyode's FBDF is the quasi-constant step size formulation (scipy's ``BDF``, QNDF with κ = 0);
    DifferentialEquations.jl's ``FBDF`` uses fixed leading coefficients. Both are the same BDF
    formulas and agree to the tolerance; their step sequences differ.
    C. W. Gear (1971); L. F. Shampine, M. W. Reichelt, SIAM J. Sci. Comput. 18 (1997) 1-22.
    """

    max_order: int = 5
    autodiff: bool = True


@dataclass(frozen=True, repr=False)
class QNDF(AbstractBDF):
    """Klopfenstein-Shampine numerical differentiation formulas (orders 1-5, MATLAB's ``ode15s``):
    BDF with a modified corrector that lowers the error constant at orders 1-4 for nearly the
    same stability.

    L. F. Shampine, M. W. Reichelt, SIAM J. Sci. Comput. 18 (1997) 1-22.
    """

    max_order: int = 5
    autodiff: bool = True
    kappa: ClassVar[tuple] = (0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0)


@dataclass(frozen=True, repr=False)
class AutoSwitch(AbstractAlgorithm):
    """Automatic stiffness detection and switching between a non-stiff and a stiff method, per
    batch member (DifferentialEquations.jl's ``AutoSwitch`` with its defaults).

    Each step estimates the dominant eigenvalue ``ρ`` of the Jacobian: from the last two stages of
    the explicit method (``‖k_s - k_(s-1)‖ / ‖g_s - g_(s-1)‖``, Hairer & Wanner II, IV.2) or as
    ``‖J‖_∞`` of the stiff method's Jacobian. The step counts as stiff when ``ρ h / x > tol``, with
    ``x`` the explicit method's real stability boundary (3.5068 for Tsit5). After more than
    ``maxstiffstep`` stiff steps in a row a member switches to ``stiffalg`` (its step size times
    ``dtfac``), after more than ``maxnonstiffstep`` non-stiff steps in a row back (step divided by
    ``dtfac``). Each method keeps its own step-size controller memory.

    Arguments:
        nonstiffalg: an adaptive explicit Runge-Kutta method (``Tsit5()``, ``DP5()``, ``Vern7()``, ...).
        stiffalg: an adaptive one-step stiff method (``Rosenbrock23()``, ``Rodas5P()``, ``KenCarp4()``,
            ``RadauIIA5()``, ...). Multistep methods (``FBDF``, ``QNDF``) keep a history the explicit
            steps would have to rebuild and are not accepted.
        maxstiffstep, maxnonstiffstep: consecutive steps of the other kind before switching.
        nonstifftol, stifftol: thresholds of ``ρ h / x`` while on the non-stiff / stiff method.
        dtfac: step size factor at a switch.
        stiffalgfirst: start on the stiff method.

    DifferentialEquations.jl also skips the error test of explicit steps while stiffness is being
    detected (``switch_max``); pyode keeps every error test.
    """

    nonstiffalg: AbstractAlgorithm
    stiffalg: AbstractAlgorithm
    maxstiffstep: int = 10
    maxnonstiffstep: int = 3
    nonstifftol: float = 0.9
    stifftol: float = 0.9
    dtfac: float = 2.0
    stiffalgfirst: bool = False

    stiff: ClassVar[bool] = True

    def __post_init__(self):
        ns, st = self.nonstiffalg, self.stiffalg
        if not (isinstance(ns, AbstractExplicitRK) and ns.adaptive):
            raise ValueError(f"nonstiffalg must be an adaptive explicit Runge-Kutta method such as Tsit5(); got {ns!r}")
        if isinstance(st, AbstractBDF):
            raise ValueError(f"stiffalg={st!r} is a multistep method, whose history the explicit steps would "
                             "interrupt; use a one-step stiff method such as Rosenbrock23() or Rodas5P()")
        if not (isinstance(st, AbstractStiffAlgorithm) and st.adaptive):
            raise ValueError(f"stiffalg must be an adaptive one-step stiff method such as Rosenbrock23() or "
                             f"Rodas5P(); got {st!r}")
        for name in ("maxstiffstep", "maxnonstiffstep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {v!r}")
        for name in ("nonstifftol", "stifftol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive number; got {v!r}")
        if isinstance(self.dtfac, bool) or not isinstance(self.dtfac, (int, float)) or not 1 <= self.dtfac < float("inf"):
            raise ValueError(f"dtfac must be a number >= 1; got {self.dtfac!r}")
        if not isinstance(self.stiffalgfirst, bool):
            raise ValueError(f"stiffalgfirst must be True or False; got {self.stiffalgfirst!r}")

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def order(self) -> int:
        return self.nonstiffalg.order

    def __repr__(self) -> str:
        defaults = AutoSwitch.__dataclass_fields__
        extra = [f"{k}={getattr(self, k)!r}" for k in ("maxstiffstep", "maxnonstiffstep", "nonstifftol", "stifftol",
                                                       "dtfac", "stiffalgfirst")
                 if getattr(self, k) != defaults[k].default]
        return f"AutoSwitch({', '.join([repr(self.nonstiffalg), repr(self.stiffalg)] + extra)})"


def AutoTsit5(stiffalg: AbstractAlgorithm, **kwargs) -> AutoSwitch:
    """``AutoSwitch(Tsit5(), stiffalg, **kwargs)``, e.g. ``AutoTsit5(Rosenbrock23())``: the choice for
    problems of unknown stiffness at default tolerances."""
    return AutoSwitch(Tsit5(), stiffalg, **kwargs)


def AutoDP5(stiffalg: AbstractAlgorithm, **kwargs) -> AutoSwitch:
    """``AutoSwitch(DP5(), stiffalg, **kwargs)``."""
    return AutoSwitch(DP5(), stiffalg, **kwargs)


def AutoVern7(stiffalg: AbstractAlgorithm, **kwargs) -> AutoSwitch:
    """``AutoSwitch(Vern7(), stiffalg, **kwargs)``, e.g. ``AutoVern7(Rodas5P())`` at tight tolerances."""
    return AutoSwitch(Vern7(), stiffalg, **kwargs)
