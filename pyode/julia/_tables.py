"""The julia engine's two tables: pyode objects → Julia constructors, Julia return codes → pyode's.

Everything here is plain Python (no Julia needed): the tables are tested for coverage against
every algorithm and sensitivity algorithm pyode defines, and every source string they produce is
parsed as Julia in the tests. The constructors follow OrdinaryDiffEq v7 (solvers from their
sublibraries, ``autodiff`` as an ADTypes object, controllers as objects carrying their options) and
SciMLSensitivity v7.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .. import algorithms as A
from .. import sensealg as S
from ..controllers import AbstractController, IController, PIController, PredictiveController
from .._retcode import ReturnCode

__all__ = ["ALGORITHMS", "SENSEALGS", "RETCODES", "julia_algorithm", "julia_sensealg", "julia_controller",
           "retcode_from_julia", "UnsupportedOnJulia"]


class UnsupportedOnJulia(ValueError):
    """A combination the julia engine cannot run (the message says what to use instead)."""


def _num(x: float) -> str:
    """A Julia Float64 literal equal to the Python float."""
    r = repr(float(x))
    return r if any(c in r for c in ".en") else r + ".0"


# --- algorithms --------------------------------------------------------------------------------

@dataclass(frozen=True)
class JuliaAlgorithm:
    """Where a pyode algorithm lives in Julia and how to construct it."""

    name: str           # the Julia constructor
    package: str        # the OrdinaryDiffEq sublibrary defining it
    stiff: bool = False # takes ``autodiff`` (and, for BDF, ``max_order``)


ALGORITHMS: Dict[type, JuliaAlgorithm] = {
    A.Tsit5: JuliaAlgorithm("Tsit5", "OrdinaryDiffEqTsit5"),
    A.DP5: JuliaAlgorithm("DP5", "OrdinaryDiffEqLowOrderRK"),
    A.BS3: JuliaAlgorithm("BS3", "OrdinaryDiffEqLowOrderRK"),
    A.Vern7: JuliaAlgorithm("Vern7", "OrdinaryDiffEqVerner"),
    A.DP8: JuliaAlgorithm("DP8", "OrdinaryDiffEqHighOrderRK"),
    A.Euler: JuliaAlgorithm("Euler", "OrdinaryDiffEqLowOrderRK"),
    A.Midpoint: JuliaAlgorithm("Midpoint", "OrdinaryDiffEqLowOrderRK"),
    A.RK4: JuliaAlgorithm("RK4", "OrdinaryDiffEqLowOrderRK"),
    A.Rosenbrock23: JuliaAlgorithm("Rosenbrock23", "OrdinaryDiffEqRosenbrock", stiff=True),
    A.Rodas4: JuliaAlgorithm("Rodas4", "OrdinaryDiffEqRosenbrock", stiff=True),
    A.Rodas5P: JuliaAlgorithm("Rodas5P", "OrdinaryDiffEqRosenbrock", stiff=True),
    A.KenCarp4: JuliaAlgorithm("KenCarp4", "OrdinaryDiffEqSDIRK", stiff=True),
    A.Kvaerno5: JuliaAlgorithm("Kvaerno5", "OrdinaryDiffEqSDIRK", stiff=True),
    A.RadauIIA5: JuliaAlgorithm("RadauIIA5", "OrdinaryDiffEqFIRK", stiff=True),
    A.FBDF: JuliaAlgorithm("FBDF", "OrdinaryDiffEqBDF", stiff=True),
    A.QNDF: JuliaAlgorithm("QNDF", "OrdinaryDiffEqBDF", stiff=True),
    # AutoTsit5/AutoDP5/AutoVern7 build AutoSwitch objects in pyode; Julia's AutoSwitch is only the
    # switching rule, the solver is OrdinaryDiffEqCore.AutoAlgSwitch(nonstiff, stiff; ...).
    A.AutoSwitch: JuliaAlgorithm("AutoAlgSwitch", "OrdinaryDiffEqCore"),
}


def julia_algorithm(alg: A.AbstractAlgorithm, *, finite_differences: bool = False) -> str:
    """Julia source constructing the counterpart of ``alg``.

    ``finite_differences`` forces ``autodiff = AutoFiniteDiff()`` on stiff methods: a right-hand
    side in Python cannot take ForwardDiff's dual numbers (it supplies its Jacobian, so this only
    covers what the solver would otherwise differentiate itself).
    """
    entry = ALGORITHMS.get(type(alg))
    if entry is None:
        raise UnsupportedOnJulia(f"{alg!r} has no Julia counterpart in pyode's table")
    if isinstance(alg, A.AutoSwitch):
        kw = [f"{k} = {_julia_value(getattr(alg, k))}" for k in
              ("maxstiffstep", "maxnonstiffstep", "nonstifftol", "stifftol", "dtfac", "stiffalgfirst")]
        inner = [julia_algorithm(a, finite_differences=finite_differences) for a in (alg.nonstiffalg, alg.stiffalg)]
        return f"OrdinaryDiffEqCore.AutoAlgSwitch({inner[0]}, {inner[1]}; {', '.join(kw)})"
    if not entry.stiff:
        return f"{entry.name}()"
    kw = []
    if isinstance(alg, A.AbstractBDF) and alg.max_order != 5:
        kw.append(f"max_order = Val{{{alg.max_order}}}()")
    kw.append("autodiff = AutoFiniteDiff()" if finite_differences or not alg.autodiff else
              "autodiff = AutoForwardDiff()")
    return f"{entry.name}({'; ' if kw else ''}{', '.join(kw)})"


def _julia_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return _num(v)


def julia_controller(controller: Optional[AbstractController], alg: A.AbstractAlgorithm) -> Optional[str]:
    """Julia source of the ``controller`` solve keyword, or None for Julia's default.

    OrdinaryDiffEq v7 carries ``gamma``/``qmin``/``qmax`` on the controller object, and does not scale
    ``beta1``/``beta2`` by the method's order: pyode's order-based defaults are computed here.
    """
    if controller is None:
        return None
    if isinstance(alg, A.AutoSwitch):
        raise UnsupportedOnJulia("controller= with an AutoSwitch algorithm is not available on the julia engine "
                                 "(each method of a Julia composite keeps its own default controller); "
                                 "leave controller out")
    if isinstance(alg, A.AbstractBDF):
        raise UnsupportedOnJulia(f"controller= does not apply to {alg!r}; leave it out")
    common = f"gamma = {_num(controller.gamma)}, qmin = {_num(controller.qmin)}, qmax = {_num(controller.qmax)}"
    if isinstance(controller, PIController):
        pi = controller.resolve(alg.order, alg.order)
        return (f"OrdinaryDiffEqCore.PIController({_num(pi.beta1)}, {_num(pi.beta2)}; "
                f"qoldinit = {_num(controller.qoldinit)}, {common})")
    if isinstance(controller, IController):
        return f"OrdinaryDiffEqCore.IController(; {common})"
    if isinstance(controller, PredictiveController):
        return (f"OrdinaryDiffEqCore.PredictiveController(; {common}, qsteady_min = {_num(controller.qsteady_min)}, "
                f"qsteady_max = {_num(controller.qsteady_max)})")
    raise UnsupportedOnJulia(f"controller {controller!r} has no Julia counterpart")


# --- sensitivity algorithms ------------------------------------------------------------------

@dataclass(frozen=True)
class JuliaSensealg:
    """How a pyode sensitivity algorithm runs in SciMLSensitivity."""

    build: Callable[[S.AbstractSensitivityAlgorithm], str]
    python_rhs: bool    # usable with a right-hand side in Python (vector-Jacobian products from torch)
    note: str           # what differs from the native engine


_VJP = "autojacvec = ZygoteVJP()"


def _bool(b: bool) -> str:
    return "true" if b else "false"


SENSEALGS: Dict[type, JuliaSensealg] = {
    S.DirectAdjoint: JuliaSensealg(
        lambda s: "ReverseDiffAdjoint()", python_rhs=False,
        note="reverse-mode AD through the solver's operations (the discrete gradient, as native); "
             "SciMLSensitivity has no checkpointed variant: checkpoints= does not bound Julia's memory"),
    S.ForwardSensitivity: JuliaSensealg(
        lambda s: "ForwardDiffSensitivity()", python_rhs=False,
        note="forward-mode AD through the solver: Julia's ForwardSensitivity needs an in-place f and gives "
             "no u0 gradient, so the forward-mode sensitivity that differentiates both is used"),
    S.InterpolatingAdjoint: JuliaSensealg(
        lambda s: f"InterpolatingAdjoint(; {_VJP}, checkpointing = {_bool(s.checkpointing)})", python_rhs=True,
        note="same method; seminorm=True becomes an internalnorm over the adjoint state λ only"),
    S.BacksolveAdjoint: JuliaSensealg(
        lambda s: f"BacksolveAdjoint(; {_VJP}, checkpointing = {_bool(s.checkpointing)})", python_rhs=True,
        note="same method; seminorm=True becomes an internalnorm over λ only (native keeps u in it too)"),
    S.GaussAdjoint: JuliaSensealg(
        lambda s: f"GaussAdjoint(; {_VJP}, checkpointing = {_bool(s.checkpointing)})", python_rhs=True,
        note="same method"),
    S.QuadratureAdjoint: JuliaSensealg(
        lambda s: f"QuadratureAdjoint(; {_VJP}, abstol = {_num(s.abstol)}, reltol = {_num(s.reltol)})",
        python_rhs=True,
        note="same method; checkpointing= has no Julia counterpart (memory only, not the gradient)"),
}


def julia_sensealg(sensealg: S.AbstractSensitivityAlgorithm, *, python_rhs: bool) -> Tuple[str, bool]:
    """Julia source of the sensitivity algorithm and whether to restrict the adjoint's error norm
    to λ (pyode's ``seminorm=True``)."""
    entry = SENSEALGS.get(type(sensealg))
    if entry is None:
        raise UnsupportedOnJulia(f"{sensealg!r} has no Julia counterpart in pyode's table")
    if python_rhs and not entry.python_rhs:
        raise UnsupportedOnJulia(
            f"sensealg={sensealg!r} differentiates through the solver with Julia's AD, which cannot enter a "
            "right-hand side written in Python. With a Python f on the julia engine use GaussAdjoint(), "
            "InterpolatingAdjoint(), QuadratureAdjoint() or BacksolveAdjoint() (their vector-Jacobian products "
            f"come from torch), write f in Julia (pyode.julia.ode_function), or use backend='native' for {sensealg!r}")
    return entry.build(sensealg), bool(getattr(sensealg, "seminorm", False))


# --- return codes ------------------------------------------------------------------------------

#: SciMLBase.ReturnCode member → pyode.ReturnCode (every member of SciMLBase v3).
RETCODES: Dict[str, ReturnCode] = {
    "Default": ReturnCode.Failure,          # never set by a finished solve
    "Success": ReturnCode.Success,
    "Terminated": ReturnCode.Terminated,
    "DtNaN": ReturnCode.Unstable,
    "MaxIters": ReturnCode.MaxIters,
    "MaxNumSub": ReturnCode.MaxIters,
    "MaxTime": ReturnCode.Failure,
    "DtLessThanMin": ReturnCode.DtLessThanMin,
    "Unstable": ReturnCode.Unstable,
    "InitialFailure": ReturnCode.InitialFailure,
    "ConvergenceFailure": ReturnCode.ConvergenceFailure,
    "Failure": ReturnCode.Failure,
    "Infeasible": ReturnCode.Failure,
    "ExactSolutionLeft": ReturnCode.Success,
    "ExactSolutionRight": ReturnCode.Success,
    "FloatingPointLimit": ReturnCode.Success,
    "InternalLineSearchFailed": ReturnCode.ConvergenceFailure,
    "InternalLinearSolveFailed": ReturnCode.ConvergenceFailure,
    "APosterioriSafetyFailure": ReturnCode.Failure,
    "ShrinkThresholdExceeded": ReturnCode.ConvergenceFailure,
    "Stalled": ReturnCode.ConvergenceFailure,
    "StalledSuccess": ReturnCode.Success,
}


def retcode_from_julia(name: str) -> ReturnCode:
    """pyode's code for a Julia return code name (a name added to SciMLBase later: ``Failure``)."""
    return RETCODES.get(name, ReturnCode.Failure)
