"""The julia engine: DifferentialEquations.jl and SciMLSensitivity.jl behind pyode's API.

``solve(prob, alg, ..., backend="julia")`` runs the same problem with the same algorithm and
sensitivity names in Julia (through juliacall) and returns the same :class:`~pyode.ODESolution`,
gradients included. Importing this module needs no Julia; the first solve starts it (see
:func:`available` and the README's section for Julia users).

Right-hand sides reach Julia three ways, fastest first:

- :func:`ode_function`: Julia source written by the user, optionally calling PyTorch networks
  that are translated to Julia (hybrid models);
- a :class:`pyode.nn.NeuralODE` over an ``nn.Sequential`` of ``Linear`` layers and standard
  activations: translated automatically (:func:`translate` shows the Julia code);
- any Python ``f(u, p, t)``: called back from Julia, derivatives from torch (slow; the adjoint
  sensealgs only).
"""
from __future__ import annotations

from ._functions import JuliaFunction, ode_function
from ._runtime import JuliaImportOrderError, JuliaNotAvailableError, bridge_source, julia_executable
from ._tables import ALGORITHMS, RETCODES, SENSEALGS, UnsupportedOnJulia
from ._translate import NetworkTranslation, translate

__all__ = ["ode_function", "JuliaFunction", "translate", "NetworkTranslation", "available", "julia_executable",
           "bridge_source", "JuliaNotAvailableError", "JuliaImportOrderError", "UnsupportedOnJulia", "ALGORITHMS",
           "SENSEALGS", "RETCODES"]


def available() -> bool:
    """Whether ``backend="julia"`` can start without downloading anything: juliacall is installed
    and a Julia executable is known (see :func:`julia_executable`). Starts nothing."""
    import importlib.util

    return importlib.util.find_spec("juliacall") is not None and julia_executable() is not None
