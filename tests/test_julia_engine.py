"""The julia engine's Python side, tested without Julia: tables, generated Julia, packaging, errors.

What needs Julia itself (solutions and gradients from DifferentialEquations.jl) is in
test_engine_conformance.py, which runs it wherever Julia is installed.
"""
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pyode
from pyode import algorithms as A
from pyode import sensealg as S
from pyode.julia import ALGORITHMS, RETCODES, SENSEALGS, JuliaNotAvailableError, UnsupportedOnJulia, ode_function
from pyode.julia._tables import julia_algorithm, julia_controller, julia_sensealg, retcode_from_julia

from _julia_interpreter import evaluate
from _julia_syntax import assert_parses

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "julia" / "PyodeBridge.jl"
HAS_JULIA = pyode.julia.julia_executable() is not None


def _concrete(base, module):
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, base) and not inspect.isabstract(c) and not c.__name__.startswith("Abstract")
            and c.__module__ == module.__name__]


ALL_ALGORITHMS = _concrete(A.AbstractAlgorithm, A)
ALL_SENSEALGS = _concrete(S.AbstractSensitivityAlgorithm, S)


def _instances():
    """One or more instances of every algorithm, with their keyword variants."""
    out = []
    for cls in ALL_ALGORITHMS:
        if cls is A.AutoSwitch:
            out += [A.AutoTsit5(A.Rosenbrock23()), A.AutoVern7(A.Rodas5P()), A.AutoDP5(A.KenCarp4()),
                    A.AutoSwitch(A.Tsit5(), A.RadauIIA5(), maxstiffstep=4, nonstifftol=0.5, dtfac=1.5,
                                 stiffalgfirst=True)]
        else:
            out.append(cls())
            if issubclass(cls, A.AbstractStiffAlgorithm):
                out.append(cls(autodiff=False))
            if issubclass(cls, A.AbstractBDF):
                out.append(cls(max_order=3))
    return out


# ---- the tables cover everything pyode defines --------------------------------------------------

def test_algorithm_table_covers_every_algorithm():
    assert len(ALL_ALGORITHMS) >= 17
    missing = [c.__name__ for c in ALL_ALGORITHMS if c not in ALGORITHMS]
    assert not missing, f"no Julia counterpart for {missing}"
    assert set(ALGORITHMS) == set(ALL_ALGORITHMS)


def test_sensealg_table_covers_every_sensealg():
    assert {c.__name__ for c in ALL_SENSEALGS} == {"DirectAdjoint", "ForwardSensitivity", "BacksolveAdjoint",
                                                   "InterpolatingAdjoint", "GaussAdjoint", "QuadratureAdjoint"}
    assert set(SENSEALGS) == set(ALL_SENSEALGS)


# Every member of SciMLBase.ReturnCode (SciMLBase v3, docs/src/interfaces/Solutions.md).
SCIML_RETCODES = ["Default", "Success", "Terminated", "DtNaN", "MaxIters", "MaxNumSub", "MaxTime", "DtLessThanMin",
                  "Unstable", "InitialFailure", "ConvergenceFailure", "Failure", "Infeasible", "ExactSolutionLeft",
                  "ExactSolutionRight", "FloatingPointLimit", "InternalLineSearchFailed", "InternalLinearSolveFailed",
                  "APosterioriSafetyFailure", "ShrinkThresholdExceeded", "Stalled", "StalledSuccess"]
# SciMLBase.successful_retcode is true exactly for these.
SCIML_SUCCESSFUL = {"Success", "Terminated", "ExactSolutionLeft", "ExactSolutionRight", "FloatingPointLimit",
                    "StalledSuccess"}


def test_retcode_table_covers_scimlbase_and_keeps_success():
    assert set(RETCODES) == set(SCIML_RETCODES)
    for name in SCIML_RETCODES:
        assert RETCODES[name].successful == (name in SCIML_SUCCESSFUL), name
    # every pyode code is reachable, and same-named codes map to themselves
    assert set(RETCODES.values()) == set(pyode.ReturnCode)
    for code in pyode.ReturnCode:
        assert RETCODES[code.name] is code
    assert retcode_from_julia("SomeCodeAddedLater") is pyode.ReturnCode.Failure


# ---- every generated constructor is valid Julia, with the right names and keywords ---------------

@pytest.mark.parametrize("alg", _instances(), ids=repr)
def test_algorithm_constructor_parses(alg):
    for fd in (False, True):
        src = julia_algorithm(alg, finite_differences=fd)
        assert_parses(src, f"constructor of {alg!r}")
        names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\(", src)
        assert type(alg).__name__ in names or "AutoAlgSwitch" in names


def test_algorithm_constructor_keywords():
    assert julia_algorithm(A.Tsit5()) == "Tsit5()"
    assert julia_algorithm(A.Rodas5P()) == "Rodas5P(; autodiff = AutoForwardDiff())"
    assert julia_algorithm(A.Rodas5P(autodiff=False)) == "Rodas5P(; autodiff = AutoFiniteDiff())"
    assert julia_algorithm(A.Rodas5P(), finite_differences=True) == "Rodas5P(; autodiff = AutoFiniteDiff())"
    assert julia_algorithm(A.FBDF(max_order=3)) == "FBDF(; max_order = Val{3}(), autodiff = AutoForwardDiff())"
    src = julia_algorithm(A.AutoSwitch(A.Vern7(), A.Rodas5P(), maxstiffstep=4, stifftol=0.5, stiffalgfirst=True))
    assert src == ("OrdinaryDiffEqCore.AutoAlgSwitch(Vern7(), Rodas5P(; autodiff = AutoForwardDiff()); "
                   "maxstiffstep = 4, maxnonstiffstep = 3, nonstifftol = 0.9, stifftol = 0.5, dtfac = 2.0, "
                   "stiffalgfirst = true)")


@pytest.mark.parametrize("sensealg", [S.DirectAdjoint(), S.DirectAdjoint(checkpoints=4), S.ForwardSensitivity(),
                                      S.InterpolatingAdjoint(), S.InterpolatingAdjoint(checkpointing=True, seminorm=True),
                                      S.BacksolveAdjoint(), S.BacksolveAdjoint(checkpointing=False),
                                      S.GaussAdjoint(), S.GaussAdjoint(checkpointing=True), S.QuadratureAdjoint(),
                                      S.QuadratureAdjoint(abstol=1e-9, reltol=1e-7)], ids=repr)
def test_sensealg_constructor_parses(sensealg):
    src, seminorm = julia_sensealg(sensealg, python_rhs=False)
    assert_parses(src, f"constructor of {sensealg!r}")
    assert seminorm == getattr(sensealg, "seminorm", False)
    if hasattr(sensealg, "checkpointing") and not isinstance(sensealg, S.QuadratureAdjoint):
        assert f"checkpointing = {'true' if sensealg.checkpointing else 'false'}" in src
    if isinstance(sensealg, S.QuadratureAdjoint):
        assert f"abstol = {sensealg.abstol!r}" in src and f"reltol = {sensealg.reltol!r}" in src


def test_python_rhs_refuses_sensealgs_that_trace_through_f():
    for s in (S.DirectAdjoint(), S.ForwardSensitivity()):
        with pytest.raises(UnsupportedOnJulia, match="GaussAdjoint"):
            julia_sensealg(s, python_rhs=True)
    for s in (S.GaussAdjoint(), S.InterpolatingAdjoint(), S.QuadratureAdjoint(), S.BacksolveAdjoint()):
        assert "ZygoteVJP()" in julia_sensealg(s, python_rhs=True)[0]


@pytest.mark.parametrize("ctrl", [pyode.PIController(), pyode.PIController(beta1=0.1, beta2=0.05, qmax=5.0),
                                  pyode.IController(gamma=0.8), pyode.PredictiveController(qsteady_max=1.5)], ids=repr)
def test_controller_constructor_parses(ctrl):
    src = julia_controller(ctrl, A.Rodas5P())
    assert_parses(src, f"controller {ctrl!r}")
    assert src.startswith("OrdinaryDiffEqCore.")
    assert f"gamma = {ctrl.gamma!r}" in src


def test_pi_controller_gains_are_scaled_by_the_order():
    # OrdinaryDiffEq v7 takes beta1/beta2 as given; pyode's defaults are 7/(10p), 2/(5p).
    src = julia_controller(pyode.PIController(), A.Tsit5())
    assert src.startswith(f"OrdinaryDiffEqCore.PIController({7 / 50!r}, {2 / 25!r};")
    assert julia_controller(None, A.Tsit5()) is None
    with pytest.raises(UnsupportedOnJulia, match="AutoSwitch"):
        julia_controller(pyode.PIController(), A.AutoTsit5(A.Rodas5P()))


# ---- the Julia side and the package lists agree ---------------------------------------------------

def test_bridge_parses_and_imports_every_constructor_the_tables_name():
    src = BRIDGE.read_text()
    assert_parses(src, str(BRIDGE))
    imported = {}
    for pkg, names in re.findall(r"^using (\w+): ([\w, ]+)$", src, re.M):
        for name in names.split(","):
            imported[name.strip()] = pkg
    for cls, entry in ALGORITHMS.items():
        if entry.name == "AutoAlgSwitch":
            assert re.search(r"^import OrdinaryDiffEqCore\b", src, re.M)    # the tables qualify its names
            continue
        assert imported.get(entry.name) == entry.package, f"{entry.name} is not imported from {entry.package}"
    for name in ("AutoForwardDiff", "AutoFiniteDiff", "IController", "PIController", "PredictiveController"):
        assert name in imported
    # and every function the engine calls exists on the Julia side
    engine = (ROOT / "pyode" / "julia" / "_engine.py").read_text()
    for fn in set(re.findall(r"bridge\.(\w+)\(", engine)):
        assert re.search(rf"^(function )?{fn}\b|^struct {fn}\b", src, re.M), f"bridge.{fn} is not defined in Julia"


def _project_toml():
    text = (ROOT / "Project.toml").read_text()
    deps = dict(re.findall(r'^(\w+) = "([0-9a-f-]{36})"$', text.split("[deps]")[1].split("[compat]")[0], re.M))
    compat = dict(re.findall(r'^(\w+) = "([^"]+)"$', text.split("[compat]")[1], re.M))
    return deps, compat


def test_project_toml_and_juliapkg_json_agree():
    deps, compat = _project_toml()
    pkg = json.loads((ROOT / "pyode" / "juliapkg.json").read_text())
    assert pkg["julia"] == compat["julia"]
    listed = pkg["packages"]
    assert set(listed) == set(deps) - {"LinearAlgebra"}          # a standard library needs no install
    for name, entry in listed.items():
        assert entry["uuid"] == deps[name], name
        assert entry["version"] == compat[name], name
    assert set(compat) == set(deps) | {"julia"}
    # every package the bridge loads is listed
    used = set(re.findall(r"^(?:using|import) (\w+)", BRIDGE.read_text(), re.M))
    assert used <= set(deps), f"not in Project.toml: {used - set(deps)}"
    assert {"SciMLSensitivity", "Zygote", "PythonCall", "ChainRulesCore"} <= used


# ---- user Julia source: composition with translated networks -------------------------------------

def _net(n_in=2, n_out=2, width=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, n_out)).double()


@pytest.mark.parametrize("source", [
    "(u, p, t) -> [p[1] * u[1], -p[2] * u[2]] .+ nn(u)",
    "function lotka(u, p, t)\n    return [p[1] * u[1] - u[1] * u[2], -p[2] * u[2]] .+ nn(u) .+ other(u)\nend",
    "decay(u, k) = -k .* u\n(u, p, t) -> decay(u, p[1]) .+ nn(u)",
])
def test_composed_source_parses(source):
    nets = {"nn": _net()}
    if "other" in source:
        nets["other"] = _net(seed=1)
    f = ode_function(source, **nets)
    for n_user in (0, 2, 7):
        assert_parses(f.julia_source(n_user), "composed right-hand side")


def test_composed_slices_read_the_networks_back_from_theta():
    """The ranges the composed source hands each network, applied to θ as torch builds it, give
    that network's parameters, and the network's Julia code on that slice computes its forward."""
    a, b = _net(seed=0), _net(n_in=2, n_out=2, width=3, seed=1)
    p = (torch.tensor([1.5, 2.0], dtype=torch.float64), {"k": torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)})
    f = ode_function("(u, p, t) -> a(u) .+ b(u) .* p[1]", a=a, b=b)
    theta = f.theta(p)
    assert theta.shape == (2 + 4 + f.networks["a"].n_params + f.networks["b"].n_params,)
    src = f.julia_source(6)
    assert re.search(r"p = _pyode_θ\[1:6\]", src)
    assert torch.equal(theta[:6], torch.tensor([1.5, 2.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    x = torch.randn(2, dtype=torch.float64)
    for name, net in (("a", a), ("b", b)):
        lo, hi = map(int, re.search(rf"{name} = x -> _pyode_net_{name}\(x, _pyode_θ\[(\d+):(\d+)\]\)", src).groups())
        chunk = theta[lo - 1:hi]
        assert torch.equal(chunk, f.networks[name].flatten().detach())
        out = evaluate(f.networks[name].source, x.numpy(), chunk.detach().numpy())
        torch.testing.assert_close(torch.as_tensor(out), net(x).detach(), rtol=1e-12, atol=1e-14)


def test_theta_gradient_reaches_parameters_and_networks():
    net = _net()
    k = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    f = ode_function("(u, p, t) -> nn(u) .* p", nn=net)
    theta = f.theta(k)
    w = torch.randn_like(theta)
    (theta * w).sum().backward()
    assert torch.equal(k.grad, w[:2])
    offset = 2
    for param in net.parameters():
        assert torch.equal(param.grad, w[offset:offset + param.numel()].reshape(param.shape))
        offset += param.numel()
    assert list(f.parameters()) == list(net.parameters())


def test_ode_function_errors():
    with pytest.raises(TypeError, match="non-empty string"):
        ode_function("   ")
    with pytest.raises(ValueError, match="network name 'p'"):
        ode_function("(u, p, t) -> p(u)", p=_net())
    with pytest.raises(TypeError, match="Dropout"):
        ode_function("(u, p, t) -> nn(u)", nn=nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    with pytest.raises(TypeError, match="not both"):
        ode_function(_net(), nn=_net())


def test_julia_function_refuses_the_native_engine():
    f = ode_function("(u, p, t) -> -u")
    prob = pyode.ODEProblem(f, torch.ones(2, dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(ValueError, match="backend='julia'"):
        pyode.solve(prob, pyode.Tsit5())


# ---- without Julia: a clear error, not a crash --------------------------------------------------

_SOLVE = ("import torch, pyode\n"
          "prob = pyode.ODEProblem(lambda u, p, t: -u, torch.ones(2), (0.0, 1.0))\n"
          "try:\n"
          "    pyode.solve(prob, pyode.Tsit5(), backend='julia')\n"
          "except pyode.julia.JuliaNotAvailableError as err:\n"
          "    print('ERROR:', err)\n")


@pytest.mark.skipif(HAS_JULIA, reason="Julia is installed here: the error for a missing Julia cannot occur")
def test_without_julia_solve_raises_a_clear_error(tmp_path):
    # Offline, juliapkg can neither find nor download a Julia: what a user without network access sees.
    env = dict(os.environ, PYTHON_JULIAPKG_OFFLINE="yes", XDG_CACHE_HOME=str(tmp_path),
               PYTHON_JULIAPKG_PROJECT=str(tmp_path / "julia_env"))
    out = subprocess.run([sys.executable, "-c", _SOLVE], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR: " in out.stdout
    message = out.stdout.split("ERROR: ", 1)[1]
    assert "could not start Julia" in message or "needs juliacall" in message
    assert "pip install 'pyode[julia]'" in message and "backend=\"native\"" in message
    assert "PYTHON_JULIACALL_EXE" in message


def test_without_juliacall_solve_names_the_install_command(monkeypatch):
    from pyode.julia import _runtime

    real = _runtime.importlib.util.find_spec
    monkeypatch.setattr(_runtime, "_BRIDGE", None)
    monkeypatch.setattr(_runtime.importlib.util, "find_spec", lambda name, *a: None if name == "juliacall" else real(name, *a))
    monkeypatch.delitem(sys.modules, "juliacall", raising=False)
    prob = pyode.ODEProblem(lambda u, p, t: -u, torch.ones(2), (0.0, 1.0))
    with pytest.raises(JuliaNotAvailableError, match=r"(?s)needs juliacall, which is not installed.*pip install 'pyode\[julia\]'"):
        pyode.solve(prob, pyode.Tsit5(), backend="julia")
    assert pyode.julia.available() is False


def test_import_pyode_does_not_import_juliacall():
    code = "import sys, pyode, pyode.julia; print('juliacall' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_julia_options_are_validated_before_julia_starts(monkeypatch):
    """Bad arguments raise the same errors on both engines, before any attempt to start Julia."""
    from pyode.julia import _runtime

    monkeypatch.setattr(_runtime, "bridge", lambda: pytest.fail("Julia was started for invalid input"))
    prob = pyode.ODEProblem(lambda u, p, t: -u, torch.ones(2), (0.0, 1.0))
    with pytest.raises(ValueError, match="reltol"):
        pyode.solve(prob, pyode.Tsit5(), reltol=-1.0, backend="julia")
    with pytest.raises(TypeError, match="sensealg must be an instance"):
        pyode.solve(prob, pyode.Tsit5(), sensealg=pyode.GaussAdjoint, backend="julia")


def test_unsupported_combinations_are_refused_before_julia_starts(monkeypatch):
    """A Python f with a sensealg that traces through f, or a controller on AutoSwitch: the error
    comes at once, not after Julia's first start (minutes)."""
    from pyode.julia import _runtime

    monkeypatch.setattr(_runtime, "bridge", lambda: pytest.fail("Julia was started for a refused combination"))
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    prob = pyode.ODEProblem(lambda u, p, t: -p * u, torch.ones(2, dtype=torch.float64), (0.0, 1.0), p)
    for sensealg in (pyode.DirectAdjoint(), pyode.ForwardSensitivity()):
        with pytest.raises(UnsupportedOnJulia, match="GaussAdjoint"):
            pyode.solve(prob, pyode.Tsit5(), sensealg=sensealg, backend="julia")
    with pytest.raises(UnsupportedOnJulia, match="AutoSwitch"):
        pyode.solve(prob, pyode.AutoTsit5(pyode.Rodas5P()), controller=pyode.PIController(), backend="julia")
