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
    """Whether ``backend="julia"`` can start without downloading or installing anything.

    True when juliacall is installed and either ``PYTHON_JULIACALL_EXE`` and
    ``PYTHON_JULIACALL_PROJECT`` name an existing Julia and project (juliacall then uses them as
    they are), or juliapkg has already resolved this environment's package lists with the Julia it
    recorded (its ``can_skip_resolve``). Otherwise the first start runs juliapkg's resolve, which
    may install Julia and runs ``Pkg.add`` on the packages of ``pyode/juliapkg.json`` (network
    needed, minutes): this returns False then, even where a ``julia`` is on ``PATH`` (see
    :func:`julia_executable` for that question). Runs at most ``julia --version`` (juliapkg's check
    of the recorded Julia); starts no Julia session and imports no juliacall.
    """
    import importlib.util
    import os
    from pathlib import Path

    if importlib.util.find_spec("juliacall") is None:
        return False
    exe, project = os.environ.get("PYTHON_JULIACALL_EXE"), os.environ.get("PYTHON_JULIACALL_PROJECT")
    if exe or project:
        return bool(exe and project and Path(exe).is_file() and Path(project).is_dir())
    return _juliapkg_resolved()


def _juliapkg_resolved() -> bool:
    """juliapkg's own test for 'nothing to install' (pyjuliapkg ``deps.can_skip_resolve``)."""
    import importlib.util

    if importlib.util.find_spec("juliapkg") is None:
        return False
    try:
        from juliapkg.deps import can_skip_resolve
        return bool(can_skip_resolve())
    except Exception:               # an older juliapkg or an unreadable state file: a start may install
        return False
