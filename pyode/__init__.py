"""pyode: neural and hybrid ODE models in PyTorch, with SciML-grade numerics.

``pyode.solve(pyode.ODEProblem(f, u0, tspan, p), pyode.Tsit5(), saveat=ts)`` integrates
``du/dt = f(u, p, t)`` and returns an :class:`ODESolution` whose states are differentiable torch tensors.
"""
from ._problem import ODEProblem
from ._retcode import ReturnCode, SolveError
from ._solution import ODESolution, SolverStats
from ._solve import solve
from . import problems
from . import data, losses, nn, plot, train     # models, losses, the fit loop (import torch only)
from . import chem                               # mechanisms as torch modules (Cantera only to read them)
from . import julia                              # the julia engine's Python side; starts no Julia
from .algorithms import (BS3, DP5, DP8, FBDF, QNDF, RK4, AbstractAlgorithm, AutoDP5, AutoSwitch, AutoTsit5, AutoVern7,
                         Euler, KenCarp4, Kvaerno5, Midpoint, RadauIIA5, Rodas4, Rodas5P, Rosenbrock23, Tsit5, Vern7)
from .callbacks import (CallbackSet, ContinuousCallback, DiscreteCallback, PresetTimeCallback,
                        VectorContinuousCallback)
from .initialization import BrownFullBasicInit, CheckInit
from .controllers import IController, PIController, PredictiveController
from .sensealg import (BacksolveAdjoint, DirectAdjoint, ForwardSensitivity, GaussAdjoint, InterpolatingAdjoint,
                       QuadratureAdjoint)

__version__ = "0.1.0"

__all__ = ["ODEProblem", "solve", "ODESolution", "SolverStats", "ReturnCode", "SolveError",
           "AbstractAlgorithm", "PIController", "IController", "PredictiveController", "problems", "Tsit5", "DP5", "BS3", "Vern7", "DP8", "Euler", "Midpoint", "RK4",
           "Rosenbrock23", "Rodas4", "Rodas5P", "KenCarp4", "Kvaerno5", "RadauIIA5", "FBDF", "QNDF",
           "AutoSwitch", "AutoTsit5", "AutoDP5", "AutoVern7", "DirectAdjoint", "ForwardSensitivity",
           "GaussAdjoint", "InterpolatingAdjoint", "BacksolveAdjoint",
           "QuadratureAdjoint", "julia", "ContinuousCallback", "VectorContinuousCallback", "DiscreteCallback",
           "PresetTimeCallback", "CallbackSet", "CheckInit", "BrownFullBasicInit", "chem"]
