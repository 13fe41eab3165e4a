"""The julia engine's Python side against a recording stand-in for the Julia side.

Every test here named ``test_python_side_...`` checks only what ``pyode.julia._engine`` sends to
``PyodeBridge`` (julia/PyodeBridge.jl) and what it does with what comes back. The stand-in below
is NOT Julia and computes nothing of DifferentialEquations.jl: it records the calls and answers
with arrays of the documented layouts (a fake decay ``u(t) = u0·exp(-(t - t0))``, so that the
gradients Python assembles can be checked exactly). Nothing here shows that the julia engine
solves or differentiates correctly; tests/test_engine_conformance.py does that where Julia is
installed. The ``test_bridge_source_...`` tests read the Julia source text itself (parsed with
tree-sitter-julia), without running it.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import pyode
from pyode.julia import UnsupportedOnJulia, ode_function
from pyode.julia import _engine, _runtime

from _julia_syntax import parse_julia

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "julia" / "PyodeBridge.jl"


class RecordingBridge:
    """Stand-in for the loaded ``PyodeBridge`` module: records calls, answers with fake arrays."""

    def __init__(self):
        self.solves = []            # keyword view of every solve_batch call
        self.backwards = []
        self.interpolations = []
        self.failed = {}            # member -> (retcode, t where it stopped)
        self.rows = None            # override: function(saveat, t0, t1) -> times of the rows returned
        self.nswitch = 0

    # -- what _engine calls -----------------------------------------------------------------
    def evaluate(self, source):
        return ("evaluated", source)

    def options(self, **kw):
        return dict(kw)

    def Seminorm(self, n):
        return ("Seminorm", n)

    def julia_function(self, g):
        return ("julia_function", g)

    def python_function(self, f, vjp, jac, tgrad):
        self.python_callbacks = SimpleNamespace(f=f, vjp=vjp, jac=jac, tgrad=tgrad)
        return ("python_function",)

    def solve_batch(self, fun, u0s, theta, t0, t1, alg, opts, sensealg, differentiate, saveat, keep_dense,
                    count_switches):
        call = dict(u0s=np.array(u0s), theta=np.array(theta), t0=t0, t1=t1, alg=alg, opts=opts, sensealg=sensealg,
                    differentiate=differentiate, saveat=None if saveat is None else np.array(saveat),
                    keep_dense=keep_dense, count_switches=count_switches)
        self.solves.append(call)
        n, B = u0s.shape
        if self.rows is not None:
            times = np.asarray(self.rows(saveat, t0, t1), dtype=np.float64)
        elif saveat is None:
            times = np.array([t0, (t0 + t1) / 2, t1])
        else:
            times = np.asarray(saveat, dtype=np.float64)
        T = len(times)
        t = np.repeat(times[:, None], B, axis=1)
        u = np.empty((n, T, B))
        for b in range(B):
            u[:, :, b] = np.asarray(u0s)[:, b][:, None] * np.exp(-(times - t0))[None, :]
        retcode = ["Success"] * B
        t_final = np.full(B, float(t1))
        for b, (code, stop) in self.failed.items():
            retcode[b] = code
            t_final[b] = stop
            gone = (times - t0) * (stop - times) < 0
            t[gone, b] = np.nan
            u[:, gone, b] = np.nan
        stats = np.zeros((7, B), dtype=np.int64)
        stats[6] = self.nswitch
        return SimpleNamespace(t=t, u=u, retcode=retcode, t_final=t_final, dt_final=np.full(B, 0.01), stats=stats,
                               times=times, t0=t0, theta_len=len(theta))

    def backward(self, result, ubar):
        ubar = np.asarray(ubar)                                  # n × T × B
        self.backwards.append(ubar.copy())
        decay = np.exp(-(result.times - result.t0))
        du0 = np.einsum("ntb,t->nb", ubar, decay)               # exact for the fake decay
        return du0, np.full(result.theta_len, 7.0)

    def interpolate(self, result, tq):
        tq = np.asarray(tq, dtype=np.float64)
        self.interpolations.append(tq.copy())
        n, _, B = np.asarray(result.u).shape
        return np.zeros((n, len(tq), B))


@pytest.fixture
def bridge(monkeypatch):
    fake = RecordingBridge()
    monkeypatch.setattr(_runtime, "bridge", lambda: fake)
    monkeypatch.setattr(_engine, "_EVALUATED", {})          # constructors "evaluated" by the stand-in stay here
    return fake


def _prob(u0=None, p=None, tspan=(0.0, 1.0), source="(u, p, t) -> -u"):
    u0 = torch.tensor([1.0, 2.0], dtype=torch.float64) if u0 is None else u0
    return pyode.ODEProblem(ode_function(source), u0, tspan, p)


def _grad_u0(batch=False):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]] if batch else [1.0, 2.0], dtype=torch.float64)
    return x.requires_grad_(True)


SENSEALGS = [pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.InterpolatingAdjoint(),
             pyode.InterpolatingAdjoint(checkpointing=True), pyode.BacksolveAdjoint(), pyode.GaussAdjoint(),
             pyode.QuadratureAdjoint()]


# ---- (a) dense never reaches Julia; saveat travels apart from the solver keywords -----------------

@pytest.mark.parametrize("sensealg", SENSEALGS, ids=repr)
@pytest.mark.parametrize("dense", [None, True, False])
@pytest.mark.parametrize("with_grad", [False, True])
def test_python_side_no_dense_or_saveat_in_solver_options(bridge, sensealg, dense, with_grad):
    u0 = _grad_u0() if with_grad else torch.tensor([1.0, 2.0], dtype=torch.float64)
    ts = [0.0, 0.25, 0.5, 1.0]
    sol = pyode.solve(_prob(u0), pyode.Tsit5(), saveat=ts, dense=dense, sensealg=sensealg, backend="julia")
    (call,) = bridge.solves
    assert "dense" not in call["opts"] and "saveat" not in call["opts"], call["opts"]
    np.testing.assert_array_equal(call["saveat"], ts)
    assert call["differentiate"] is with_grad
    # dense output is kept on the Julia side only for an undifferentiated solve that asked for it
    assert call["keep_dense"] is (bool(dense) and not with_grad)
    assert sol.has_dense is bool(dense)
    torch.testing.assert_close(sol.t, torch.tensor(ts, dtype=torch.float64))


# ---- (b) the batch default (saveat = [t0, t1], dense) and dense=True with saveat ----------------

def test_python_side_batch_default_sends_saveat_apart_and_keeps_dense(bridge):
    u0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    sol = pyode.solve(_prob(u0), pyode.Tsit5(), backend="julia")
    (call,) = bridge.solves
    np.testing.assert_array_equal(call["saveat"], [0.0, 1.0])
    assert "dense" not in call["opts"] and call["keep_dense"] is True and call["differentiate"] is False
    sol(torch.tensor([0.3, 0.7], dtype=torch.float64))
    np.testing.assert_array_equal(bridge.interpolations[-1], [0.3, 0.7])
    assert len(bridge.solves) == 1           # an undifferentiated solve interpolates what Julia kept


def test_python_side_single_without_saveat_sends_nothing_and_labels_rows_with_julia_times(bridge):
    sol = pyode.solve(_prob(), pyode.Tsit5(), backend="julia")
    (call,) = bridge.solves
    assert call["saveat"] is None and call["keep_dense"] is True
    torch.testing.assert_close(sol.t, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


# ---- (c, h) sol(t) after a differentiated solve: solved again at t, differentiable ------------------

def test_python_side_dense_after_differentiated_solve_solves_again_at_the_times(bridge):
    u0 = _grad_u0()
    sol = pyode.solve(_prob(u0), pyode.Tsit5(), sensealg=pyode.GaussAdjoint(), backend="julia")
    assert bridge.solves[0]["differentiate"] is True and bridge.solves[0]["keep_dense"] is False
    tq = torch.tensor([0.7, 0.2, 0.7, 1.0], dtype=torch.float64)
    out = sol(tq)
    assert not bridge.interpolations, "a differentiated solve's solutions refuse interpolation"
    again = bridge.solves[1]
    np.testing.assert_array_equal(again["saveat"], [0.2, 0.7, 1.0])        # unique, in the direction of time
    assert again["differentiate"] is True and again["sensealg"] == bridge.solves[0]["sensealg"]
    expected = u0.detach()[None, :] * torch.exp(-tq)[:, None]
    torch.testing.assert_close(out.detach(), expected)                      # gathered back in tq's order
    assert out.requires_grad


def test_python_side_dense_output_gradient_flows_to_u0(bridge):
    u0 = _grad_u0()
    sol = pyode.solve(_prob(u0), pyode.Tsit5(), sensealg=pyode.InterpolatingAdjoint(), backend="julia")
    tq = torch.tensor([0.2, 0.9, 0.2], dtype=torch.float64)
    sol(tq).sum().backward()
    (ubar,) = bridge.backwards                                             # n × T × B of the second solve
    np.testing.assert_array_equal(ubar[:, :, 0], [[2.0, 1.0], [2.0, 1.0]])  # 0.2 asked twice
    torch.testing.assert_close(u0.grad, torch.full((2,), 2 * np.exp(-0.2) + np.exp(-0.9), dtype=torch.float64))


def test_python_side_dense_output_without_gradients_solves_undifferentiated(bridge):
    sol = pyode.solve(_prob(_grad_u0()), pyode.Tsit5(), sensealg=pyode.GaussAdjoint(), backend="julia")
    with torch.no_grad():
        out = sol(0.5)
    assert bridge.solves[1]["differentiate"] is False and not out.requires_grad


def test_python_side_dense_output_backwards_in_time(bridge):
    sol = pyode.solve(_prob(_grad_u0(), tspan=(1.0, 0.0)), pyode.Tsit5(), sensealg=pyode.GaussAdjoint(),
                      backend="julia")
    out = sol(torch.tensor([0.2, 0.8], dtype=torch.float64))
    np.testing.assert_array_equal(bridge.solves[1]["saveat"], [0.8, 0.2])   # decreasing, as saveat must be
    torch.testing.assert_close(out.detach()[:, 0], torch.exp(-(torch.tensor([0.2, 0.8], dtype=torch.float64) - 1.0)))


# ---- (d) rows are the requested times, checked against what Julia says it returned -----------------

def test_python_side_rows_not_at_saveat_are_an_error(bridge):
    ts = [1.0, 0.6, 0.2]                                     # tspan runs backwards
    bridge.rows = lambda saveat, t0, t1: sorted(saveat)     # what SciMLSensitivity's sort(saveat) would give
    with pytest.raises(RuntimeError, match=r"row 0 at t=0\.2, not at the requested t=1\.0"):
        pyode.solve(_prob(_grad_u0(), tspan=(1.0, 0.0)), pyode.Tsit5(), saveat=ts,
                    sensealg=pyode.GaussAdjoint(), backend="julia")
    bridge.rows = lambda saveat, t0, t1: [t0, *saveat, t1]  # BacksolveAdjoint's forced save_start/save_end
    with pytest.raises(RuntimeError, match="5 saved rows for 3 requested times"):
        pyode.solve(_prob(_grad_u0(), tspan=(1.0, 0.0)), pyode.Tsit5(), saveat=[0.9, 0.6, 0.2],
                    sensealg=pyode.BacksolveAdjoint(), backend="julia")


def test_python_side_rows_in_requested_order_are_labelled_with_saveat(bridge):
    ts = [1.0, 0.6, 0.2]
    sol = pyode.solve(_prob(_grad_u0(), tspan=(1.0, 0.0)), pyode.Tsit5(), saveat=ts,
                      sensealg=pyode.BacksolveAdjoint(), backend="julia")
    torch.testing.assert_close(sol.t, torch.tensor(ts, dtype=torch.float64))
    torch.testing.assert_close(sol.u.detach()[:, 1], 2.0 * torch.exp(-(torch.tensor(ts, dtype=torch.float64) - 1.0)))


# ---- (e) per-component tolerances with InterpolatingAdjoint / BacksolveAdjoint -------------------------

@pytest.mark.parametrize("sensealg", [pyode.InterpolatingAdjoint(), pyode.InterpolatingAdjoint(checkpointing=True),
                                      pyode.BacksolveAdjoint()], ids=repr)
def test_python_side_vector_tolerances_refused_with_interpolating_and_backsolve(monkeypatch, sensealg):
    monkeypatch.setattr(_runtime, "bridge", lambda: pytest.fail("Julia was started for a refused combination"))
    with pytest.raises(UnsupportedOnJulia, match=r"abstol with one entry per component \(2 entries\).*GaussAdjoint"):
        pyode.solve(_prob(_grad_u0()), pyode.Tsit5(), abstol=torch.tensor([1e-8, 1e-6]), sensealg=sensealg,
                    backend="julia")
    with pytest.raises(UnsupportedOnJulia, match="reltol with one entry per component"):
        pyode.solve(_prob(_grad_u0()), pyode.Tsit5(), reltol=[1e-6, 1e-5], sensealg=sensealg, backend="julia")


def test_python_side_vector_tolerances_pass_where_the_adjoint_state_has_n_entries(bridge):
    tol = torch.tensor([1e-8, 1e-6], dtype=torch.float64)
    for sensealg in (pyode.GaussAdjoint(), pyode.QuadratureAdjoint(), pyode.ForwardSensitivity()):
        pyode.solve(_prob(_grad_u0()), pyode.Tsit5(), abstol=tol, sensealg=sensealg, backend="julia")
    # and any sensealg when nothing is differentiated
    pyode.solve(_prob(), pyode.Tsit5(), abstol=tol, sensealg=pyode.BacksolveAdjoint(), backend="julia")
    for call in bridge.solves:
        np.testing.assert_array_equal(call["opts"]["abstol"], tol.numpy())


# ---- (f) a right-hand side without parameters -------------------------------------------------------

def test_python_side_empty_theta_sends_one_placeholder_when_differentiating(bridge):
    u0 = _grad_u0()
    sol = pyode.solve(_prob(u0), pyode.Tsit5(), saveat=[0.5, 1.0], sensealg=pyode.ForwardSensitivity(),
                      backend="julia")
    call = bridge.solves[0]
    np.testing.assert_array_equal(call["theta"], [0.0])                   # never an empty θ under AD
    sol.u.sum().backward()                                                 # the stand-in returns dθ = [7.0]
    torch.testing.assert_close(u0.grad, torch.full((2,), np.exp(-0.5) + np.exp(-1.0), dtype=torch.float64))
    pyode.solve(_prob(), pyode.Tsit5(), saveat=[0.5, 1.0], backend="julia")
    assert bridge.solves[-1]["theta"].shape == (0,)                       # nothing differentiated: θ as it is


def test_python_side_python_rhs_vjp_matches_the_placeholder(bridge):
    prob = pyode.ODEProblem(lambda u, p, t: -u, _grad_u0(), (0.0, 1.0))
    pyode.solve(prob, pyode.Tsit5(), saveat=[1.0], backend="julia")
    assert bridge.solves[0]["theta"].shape == (1,)
    gu, gtheta = bridge.python_callbacks.vjp(np.array([1.0, 2.0]), 0.0, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(gu, [-1.0, -1.0])
    assert gtheta.shape == (1,) and gtheta[0] == 0.0


def test_bridge_source_wraps_julia_functions_so_gradients_are_never_nothing():
    """Julia source text, read (not run): user and network right-hand sides go through
    GradientSafe, whose reverse rule turns Zygote's `nothing` into zeros."""
    src = BRIDGE.read_text()
    assert not parse_julia(src).root_node.has_error
    assert "julia_function(g) = ODEFunction{false}(GradientSafe(g))" in src
    rule = src.split("function ChainRulesCore.rrule(s::GradientSafe, u, θ, t)")[1].split("\nend\n")[0]
    assert "zero_if_nothing(gu, u), zero_if_nothing(gθ, θ)" in rule
    assert "zero_if_nothing(g, x) = g === nothing ? zero(x) : g" in src


# ---- (g) a failed member: values, retcode and t_final as Julia reports them --------------------------

def test_python_side_failed_member_keeps_nan_rows_and_julia_t_final(bridge):
    bridge.failed = {1: ("DtLessThanMin", 0.4)}
    u0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    ts = [0.0, 0.25, 0.5, 1.0]
    sol = pyode.solve(_prob(u0), pyode.Rodas5P(), saveat=ts, sensealg=pyode.GaussAdjoint(), throw=False,
                      backend="julia")
    assert sol.retcode.tolist() == [pyode.ReturnCode.Success, pyode.ReturnCode.DtLessThanMin]
    assert sol.t_final.tolist() == [1.0, 0.4]
    assert torch.isnan(sol.u[2:, 1]).all() and not torch.isnan(sol.u[:2, 1]).any()
    with pytest.raises(RuntimeError, match=r"batch member\(s\) \[1\] failed \(DtLessThanMin\)"):
        sol.u[:2].sum().backward()
    assert not bridge.backwards
    with pytest.raises(pyode.SolveError):
        pyode.solve(_prob(u0.detach()), pyode.Rodas5P(), saveat=ts, backend="julia")


# ---- (i) switch counts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sensealg, recount", [
    (pyode.BacksolveAdjoint(), True), (pyode.DirectAdjoint(), True), (pyode.ForwardSensitivity(), True),
    (pyode.InterpolatingAdjoint(checkpointing=True), True), (pyode.GaussAdjoint(checkpointing=True), True),
    (pyode.InterpolatingAdjoint(), False), (pyode.GaussAdjoint(), False), (pyode.QuadratureAdjoint(), False),
], ids=repr)
def test_python_side_switches_are_recounted_where_the_forward_solve_keeps_only_saveat(bridge, sensealg, recount):
    alg = pyode.AutoTsit5(pyode.Rodas5P())
    bridge.nswitch = 3
    sol = pyode.solve(_prob(_grad_u0()), alg, saveat=[0.5, 1.0], sensealg=sensealg, backend="julia")
    assert bridge.solves[-1]["count_switches"] is recount
    assert sol.stats.nswitch == 3                                         # what Julia counted reaches stats
    pyode.solve(_prob(_grad_u0()), pyode.Tsit5(), saveat=[0.5, 1.0], sensealg=sensealg, backend="julia")
    assert bridge.solves[-1]["count_switches"] is False                   # not a composite algorithm
    pyode.solve(_prob(), alg, saveat=[0.5, 1.0], sensealg=sensealg, backend="julia")
    assert bridge.solves[-1]["count_switches"] is False                   # undifferentiated: every step kept


# ---- (j) available() only when nothing would be downloaded ---------------------------------------------

def test_python_side_available_needs_an_installed_environment(monkeypatch, tmp_path):
    import importlib.util

    import juliapkg.deps

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "juliacall" else real(name, *a))
    monkeypatch.delenv("PYTHON_JULIACALL_EXE", raising=False)
    monkeypatch.delenv("PYTHON_JULIACALL_PROJECT", raising=False)
    monkeypatch.setattr(juliapkg.deps, "can_skip_resolve", lambda: False)     # juliapkg would resolve: Pkg.add
    assert pyode.julia.available() is False
    monkeypatch.setattr(juliapkg.deps, "can_skip_resolve", lambda: {"executable": "/x/julia", "version": "1.10.0"})
    assert pyode.julia.available() is True
    monkeypatch.setattr(juliapkg.deps, "can_skip_resolve", lambda: False)
    exe = tmp_path / "julia"
    exe.write_text("")
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(exe))
    assert pyode.julia.available() is False                                    # juliacall needs both variables
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", str(tmp_path))
    assert pyode.julia.available() is True                                     # juliacall bypasses juliapkg
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "juliacall" else real(name, *a))
    assert pyode.julia.available() is False
    assert "without downloading or installing anything" in pyode.julia.available.__doc__
    assert "Pkg.add" in pyode.julia.available.__doc__


def test_bridge_source_never_passes_dense_and_keeps_saveat_out_of_plain_solves():
    """Julia source text, read (not run): no `dense` keyword anywhere in the bridge's solves, and
    `saveat` reaches `solve` only in the differentiated member (plain solves keep every step)."""
    import re

    src = BRIDGE.read_text()
    code = "\n".join(line.split("#")[0] for line in src.splitlines() if not line.lstrip().startswith("#"))
    body = code.split('"""')[::2]                       # outside docstrings
    calls = re.findall(r"\bsolve\((.*)\)", "\n".join(body))
    assert calls and not any("dense" in c for c in calls), calls
    assert [c for c in calls if "saving..." in c] == [
        "remake(prob; u0 = u0_, p = p_), alg; sensealg = sensealg, saving..., opts..."]
    assert "saving = wanted === nothing ? NamedTuple() : (; saveat = wanted)" in src
