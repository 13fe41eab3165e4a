"""``method`` strings: torchdiffeq's names, pyode's own names, or a pyode algorithm object.

Strings are resolved here, at the edge (pyode's own API takes algorithm objects only). Each method
belongs to one of three families, integrated by its own module:

* adaptive: a pyode algorithm solved by :func:`pyode.solve` (torchdiffeq's Runge-Kutta pairs and
  every pyode method, stiff ones included);
* fixed grid: torchdiffeq's fixed-grid solvers (:mod:`._fixed_grid`), stepping over ``t`` or a grid;
* scipy: torchdiffeq's ``scipy_solver`` wrapper of :func:`scipy.integrate.solve_ivp` (no gradients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ... import algorithms as _alg
from ._fixed_grid import FIXED_GRID_METHODS
from ._tableaus import AdaptiveHeun, Fehlberg2

__all__ = ["Method", "resolve_method", "METHOD_NAMES"]

# torchdiffeq's adaptive methods and the solver class names its warnings use.
_TORCHDIFFEQ_ADAPTIVE = {
    "dopri8": (_alg.DP8(), "Dopri8Solver"),
    "dopri5": (_alg.DP5(), "Dopri5Solver"),
    "bosh3": (_alg.BS3(), "Bosh3Solver"),
    "fehlberg2": (Fehlberg2(), "Fehlberg2"),
    "adaptive_heun": (AdaptiveHeun(), "AdaptiveHeunSolver"),
}

# pyode's methods under their lower-cased DifferentialEquations.jl names. Euler, Midpoint and RK4
# are absent: those names are torchdiffeq's fixed-grid solvers here.
_PYODE = {cls.__name__.lower(): cls for cls in (
    _alg.Tsit5, _alg.DP5, _alg.BS3, _alg.Vern7, _alg.DP8, _alg.Rosenbrock23, _alg.Rodas4, _alg.Rodas5P,
    _alg.KenCarp4, _alg.Kvaerno5, _alg.RadauIIA5, _alg.FBDF, _alg.QNDF)}

METHOD_NAMES = tuple(_TORCHDIFFEQ_ADAPTIVE) + tuple(FIXED_GRID_METHODS) + ("scipy_solver",) + tuple(
    name for name in _PYODE if name not in _TORCHDIFFEQ_ADAPTIVE)


@dataclass(frozen=True)
class Method:
    """A resolved ``method``: its family, the pyode algorithm (adaptive family) and the name its
    warnings give (torchdiffeq's solver class name for torchdiffeq's methods)."""

    family: str                         # "adaptive", "fixed_grid" or "scipy"
    name: str                           # the torchdiffeq name, or the algorithm's class name
    solver_name: str
    alg: Optional[_alg.AbstractAlgorithm] = None
    torchdiffeq_defaults: bool = False  # torchdiffeq's I-controller unless the options say otherwise

    @property
    def callbacks(self) -> tuple:
        """The solver callbacks on ``func`` this family calls, as torchdiffeq's solvers do: the
        adaptive ones before every trial step and after accepting or rejecting it, the fixed-grid
        ones before every grid step, ``scipy_solver`` none."""
        return {"adaptive": ("callback_step", "callback_accept_step", "callback_reject_step"),
                "fixed_grid": ("callback_step",)}.get(self.family, ())


def resolve_method(method) -> Method:
    """``None`` (dopri5), a method name, or a pyode algorithm object."""
    if method is None:
        method = "dopri5"
    if isinstance(method, _alg.AbstractAlgorithm):
        name = type(method).__name__
        return Method("adaptive", name, name, method)
    if isinstance(method, type) and issubclass(method, _alg.AbstractAlgorithm):
        raise TypeError(f"method must be a name or an algorithm instance; got the class {method.__name__}: "
                        f"pass {method.__name__}()")
    if not isinstance(method, str):
        raise TypeError(f"method must be a string such as 'dopri5' or a pyode algorithm such as pyode.Rodas5P(); "
                        f"got {type(method).__name__}")
    if method in _TORCHDIFFEQ_ADAPTIVE:
        alg, solver = _TORCHDIFFEQ_ADAPTIVE[method]
        return Method("adaptive", method, solver, alg, torchdiffeq_defaults=True)
    if method in FIXED_GRID_METHODS:
        return Method("fixed_grid", method, FIXED_GRID_METHODS[method])
    if method == "scipy_solver":
        return Method("scipy", method, "ScipyWrapperODESolver")
    cls = _PYODE.get(method.lower())
    if cls is not None:
        alg = cls()
        return Method("adaptive", cls.__name__, cls.__name__, alg)
    # torchdiffeq's own wording, with pyode's names added to the list.
    raise ValueError('Invalid method "{}". Must be one of {}'.format(
        method, '{"' + '", "'.join(METHOD_NAMES) + '"}.'))
