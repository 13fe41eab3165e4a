"""One contract, two engines: the same tests for backend="native" and backend="julia".

Solutions are checked against scipy at tight tolerance, gradients against central differences,
and (where Julia is installed) the engines against each other, including the routes only the julia
engine has (right-hand sides in Julia source and translated networks). The julia cases run
wherever a Julia installation is found and skip, with the reason, where none is.
"""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode import nn as pnn

JULIA_REASON = ("Julia and pyode's Julia packages are not installed here without a download (pyode.julia.available() "
                "is false: no PYTHON_JULIACALL_EXE/PROJECT pair, and juliapkg would have to install): the julia "
                "engine's conformance cases run where they are")
HAS_JULIA = pyode.julia.available()
JULIA = pytest.param("julia", marks=[pytest.mark.julia, pytest.mark.skipif(not HAS_JULIA, reason=JULIA_REASON)])
BACKENDS = ["native", JULIA]
needs_julia = pytest.mark.skipif(not HAS_JULIA, reason=JULIA_REASON)

P_LV = (1.5, 1.0, 3.0, 1.0)
TS = np.linspace(0.0, 5.0, 11)


def lotka_volterra(u, p, t):
    a, b, c, d = p[0], p[1], p[2], p[3]
    x, y = u[..., 0], u[..., 1]
    return torch.stack([a * x - b * x * y, -c * y + d * x * y], dim=-1)


LV_JULIA = "(u, p, t) -> [p[1] * u[1] - p[2] * u[1] * u[2], -p[3] * u[2] + p[4] * u[1] * u[2]]"


def _scipy(f, u0, ts, p, method="DOP853"):
    def rhs(t, y):
        return f(torch.tensor(y), torch.tensor(p, dtype=torch.float64), torch.tensor(t)).numpy()
    ref = solve_ivp(rhs, (0.0, ts[-1]), u0, method=method, t_eval=ts, rtol=1e-12, atol=1e-14)
    assert ref.success
    return torch.tensor(ref.y.T)


def _lv_problem(u0=(1.0, 1.0), p=P_LV, requires_grad=False):
    p = torch.tensor(p, dtype=torch.float64, requires_grad=requires_grad)
    return pyode.ODEProblem(lotka_volterra, torch.tensor(u0, dtype=torch.float64), (0.0, 5.0), p), p


LV_ALGS = [pyode.Tsit5(), pyode.DP5(), pyode.BS3(), pyode.Vern7(), pyode.DP8(), pyode.Rosenbrock23(), pyode.Rodas4(),
           pyode.Rodas5P(), pyode.KenCarp4(), pyode.Kvaerno5(), pyode.RadauIIA5(), pyode.FBDF(), pyode.QNDF(),
           pyode.AutoTsit5(pyode.Rodas5P())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alg", LV_ALGS, ids=repr)
def test_lotka_volterra_matches_scipy(backend, alg):
    prob, _ = _lv_problem()
    sol = pyode.solve(prob, alg, saveat=TS, reltol=1e-8, abstol=1e-10, backend=backend)
    ref = _scipy(lotka_volterra, [1.0, 1.0], TS, P_LV)
    assert sol.retcode == pyode.ReturnCode.Success
    torch.testing.assert_close(sol.t, torch.tensor(TS))
    low_order = isinstance(alg, (pyode.BS3, pyode.Rosenbrock23))
    tol = 2e-4 if low_order else 2e-5
    torch.testing.assert_close(sol.u, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.FBDF(), pyode.KenCarp4()], ids=repr)
def test_robertson_matches_scipy(backend, alg):
    ts = np.array([0.0, 1e-3, 1e-1, 1.0, 10.0, 100.0])
    prob = pyode.problems.robertson(tspan=(0.0, 100.0))
    sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-8, abstol=1e-12, backend=backend)
    ref = solve_ivp(lambda t, y: prob.f(torch.tensor(y), prob.p, torch.tensor(t)).numpy(), (0.0, 100.0),
                    prob.u0.numpy(), method="Radau", t_eval=ts, rtol=1e-12, atol=1e-16)
    ref = torch.tensor(ref.y.T)
    scale = ref.abs().amax(dim=0)           # species range: B is ~1e-5 of A
    assert float(((sol.u - ref).abs() / scale).max()) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_members_are_independent(backend):
    u0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.3, 1.7]], dtype=torch.float64)
    p = torch.tensor(P_LV, dtype=torch.float64)
    batch = pyode.solve(pyode.ODEProblem(lotka_volterra, u0, (0.0, 5.0), p), pyode.Tsit5(), saveat=TS,
                        reltol=1e-8, abstol=1e-10, backend=backend)
    assert batch.u.shape == (len(TS), 3, 2)
    for i in range(3):
        alone = pyode.solve(pyode.ODEProblem(lotka_volterra, u0[i], (0.0, 5.0), p), pyode.Tsit5(), saveat=TS,
                            reltol=1e-8, abstol=1e-10, backend=backend)
        torch.testing.assert_close(batch.u[:, i], alone.u, rtol=1e-12, atol=1e-12)
    assert batch.retcode.shape == (3,) and bool((batch.retcode == pyode.ReturnCode.Success).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_failure_gives_a_return_code_or_solve_error(backend):
    prob, _ = _lv_problem()
    with pytest.raises(pyode.SolveError, match="MaxIters"):
        pyode.solve(prob, pyode.Tsit5(), maxiters=5, reltol=1e-10, abstol=1e-12, backend=backend)
    sol = pyode.solve(prob, pyode.Tsit5(), maxiters=5, reltol=1e-10, abstol=1e-12, throw=False, backend=backend)
    assert sol.retcode == pyode.ReturnCode.MaxIters
    assert not sol.success


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_output_matches_scipy(backend):
    prob, _ = _lv_problem()
    sol = pyode.solve(prob, pyode.Vern7(), reltol=1e-9, abstol=1e-11, backend=backend)
    tq = np.array([0.37, 1.9, 4.41])
    torch.testing.assert_close(sol(torch.tensor(tq)), _scipy(lotka_volterra, [1.0, 1.0], tq, P_LV), rtol=1e-6, atol=1e-6)
    assert sol.t[0] == 0.0 and sol.t[-1] == 5.0 and len(sol.t) > 5


# --- gradients --------------------------------------------------------------------------------

WEIGHTS = torch.linspace(0.5, 1.5, len(TS) * 2, dtype=torch.float64).reshape(len(TS), 2)


def _loss(backend, alg, sensealg, p_values, u0_values):
    p = torch.tensor(p_values, dtype=torch.float64, requires_grad=True)
    u0 = torch.tensor(u0_values, dtype=torch.float64, requires_grad=True)
    prob = pyode.ODEProblem(lotka_volterra, u0, (0.0, 5.0), p)
    sol = pyode.solve(prob, alg, saveat=TS, reltol=1e-10, abstol=1e-12, sensealg=sensealg, backend=backend)
    return (sol.u * WEIGHTS).sum(), u0, p


def _central_differences(alg, p0, u00, h=1e-6):
    def value(p, u0):
        prob = pyode.ODEProblem(lotka_volterra, torch.tensor(u0, dtype=torch.float64), (0.0, 5.0),
                                torch.tensor(p, dtype=torch.float64))
        return float((pyode.solve(prob, alg, saveat=TS, reltol=1e-12, abstol=1e-14).u * WEIGHTS).sum())
    grads = []
    for base, other, first in ((list(u00), list(p0), True), (list(p0), list(u00), False)):
        g = []
        for i in range(len(base)):
            up, dn = list(base), list(base)
            up[i] += h
            dn[i] -= h
            args_up = (other, up) if first else (up, other)
            args_dn = (other, dn) if first else (dn, other)
            g.append((value(*args_up) - value(*args_dn)) / (2 * h))
        grads.append(torch.tensor(g, dtype=torch.float64))
    return grads      # [d/du0, d/dp]


SENSEALGS = [pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.InterpolatingAdjoint(),
             pyode.GaussAdjoint(), pyode.QuadratureAdjoint(abstol=1e-10, reltol=1e-8), pyode.BacksolveAdjoint()]
PYTHON_RHS_ON_JULIA = (pyode.InterpolatingAdjoint, pyode.GaussAdjoint, pyode.QuadratureAdjoint, pyode.BacksolveAdjoint)


@pytest.fixture(scope="module")
def reference_gradient():
    return _central_differences(pyode.Vern7(), P_LV, (1.0, 1.0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sensealg", SENSEALGS, ids=repr)
def test_gradients_match_finite_differences(backend, sensealg, reference_gradient):
    if backend == "julia" and not isinstance(sensealg, PYTHON_RHS_ON_JULIA):
        with pytest.raises(pyode.julia.UnsupportedOnJulia, match="GaussAdjoint"):
            _loss(backend, pyode.Vern7(), sensealg, P_LV, (1.0, 1.0))
        return
    loss, u0, p = _loss(backend, pyode.Vern7(), sensealg, P_LV, (1.0, 1.0))
    loss.backward()
    torch.testing.assert_close(u0.grad, reference_gradient[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.grad, reference_gradient[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sensealg", [pyode.DirectAdjoint(), pyode.GaussAdjoint()], ids=repr)
def test_stiff_gradients_match_finite_differences(backend, sensealg):
    rober = pyode.problems.robertson(tspan=(0.0, 10.0))
    k = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64)
    ts = np.array([1e-2, 1.0, 10.0])

    def solve(logk, u0, **kw):
        f = rober.f
        prob = pyode.ODEProblem(lambda u, p, t: f(u, p.exp(), t), u0, (0.0, 10.0), logk)
        return pyode.solve(prob, pyode.Rodas5P(), saveat=ts, reltol=1e-9, abstol=1e-12, **kw).u

    w = torch.tensor([[1.0, 1e4, 1.0], [0.5, 2e4, 0.3], [1.0, 1e4, 2.0]], dtype=torch.float64)
    logk = k.log().requires_grad_(True)
    u0 = rober.u0.clone().requires_grad_(True)
    if backend == "julia" and isinstance(sensealg, pyode.DirectAdjoint):
        pytest.skip("DirectAdjoint needs f in Julia on the julia engine: covered by test_julia_source_matches_native")
    (solve(logk, u0, sensealg=sensealg, backend=backend) * w).sum().backward()
    h = 1e-6
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            fd.append(float(((solve(k.log() + e, rober.u0) - solve(k.log() - e, rober.u0)) * w).sum())
                      / (2 * h))
    torch.testing.assert_close(logk.grad, torch.tensor(fd, dtype=torch.float64), rtol=1e-4, atol=1e-8)


# --- julia-only routes, checked against the native engine ------------------------------------

@needs_julia
@pytest.mark.julia
@pytest.mark.parametrize("sensealg", SENSEALGS, ids=repr)
def test_julia_source_matches_native(sensealg):
    """Route 1: f in Julia source; solution and gradients equal the native engine's with f in torch."""
    results = []
    for backend, f in (("native", lotka_volterra), ("julia", pyode.julia.ode_function(LV_JULIA))):
        p = torch.tensor(P_LV, dtype=torch.float64, requires_grad=True)
        u0 = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
        sol = pyode.solve(pyode.ODEProblem(f, u0, (0.0, 5.0), p), pyode.Rodas5P(), saveat=TS, reltol=1e-10,
                          abstol=1e-12, sensealg=sensealg, backend=backend)
        (sol.u * WEIGHTS).sum().backward()
        results.append((sol.u.detach(), u0.grad, p.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@needs_julia
@pytest.mark.julia
@pytest.mark.parametrize("sensealg", [pyode.DirectAdjoint(), pyode.GaussAdjoint(), pyode.InterpolatingAdjoint()],
                         ids=repr)
def test_translated_neural_ode_matches_native(sensealg):
    """Route 2: a NeuralODE over nn.Sequential is translated; gradients land on each torch parameter."""
    torch.manual_seed(0)
    net = pnn.mlp(2, 2, width=16, depth=2, activation="tanh")
    u0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=torch.float64)
    grads, outs = [], []
    for backend in ("native", "julia"):
        net.zero_grad()
        model = pnn.NeuralODE(net, (0.0, 1.0), pyode.Tsit5(), saveat=np.linspace(0, 1, 5), sensealg=sensealg,
                              reltol=1e-9, abstol=1e-11, backend=backend)
        sol = model(u0)
        sol.u.square().sum().backward()
        outs.append(sol.u.detach())
        grads.append([q.grad.clone() for q in net.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-7, atol=1e-9)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


@needs_julia
@pytest.mark.julia
def test_hybrid_julia_source_with_network_matches_native():
    """Route 1 + 2: known physics in Julia plus a translated network; gradients for p and the network."""
    torch.manual_seed(1)
    net = pnn.mlp(2, 2, width=8, depth=1, activation="gelu")
    rhs = pyode.julia.ode_function("(u, p, t) -> [p[1] * u[1], -p[2] * u[2]] .+ nn(u)", nn=net)

    def torch_rhs(u, p, t):
        return torch.stack([p[0] * u[..., 0], -p[1] * u[..., 1]], dim=-1) + net(u)

    out = []
    for backend, f in (("native", torch_rhs), ("julia", rhs)):
        net.zero_grad()
        p = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
        sol = pyode.solve(pyode.ODEProblem(f, torch.tensor([1.0, 0.5], dtype=torch.float64), (0.0, 2.0), p),
                          pyode.Tsit5(), saveat=[0.5, 1.0, 2.0], reltol=1e-10, abstol=1e-12,
                          sensealg=pyode.GaussAdjoint(), backend=backend)
        sol.u.sum().backward()
        out.append([sol.u.detach(), p.grad] + [q.grad.clone() for q in net.parameters()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@needs_julia
@pytest.mark.julia
def test_julia_source_error_is_reported_with_the_source():
    prob = pyode.ODEProblem(pyode.julia.ode_function("(u, p, t) -> [u[1] +"), torch.ones(1, dtype=torch.float64),
                            (0.0, 1.0))
    with pytest.raises(ValueError, match="does not evaluate in Julia"):
        pyode.solve(prob, pyode.Tsit5(), backend="julia")
