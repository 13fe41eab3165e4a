"""Mass-matrix problems: Robertson as an index-1 DAE against its ODE form solved tightly by scipy
(and the IVP Test Set's published values at t = 1e11), gradients through DAE solves against central
differences and against the ODE form's, a non-diagonal mass matrix, and bad input."""
import functools

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode.problems import STIFF_REFERENCE

F64 = torch.float64
LOGK = torch.log(torch.tensor([0.04, 3e7, 1e4], dtype=F64))
M_ROBER = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=F64))
U0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)


def rober_ode(u, p, t):
    k = torch.exp(p)
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3, k[1] * y2 ** 2], -1)


def rober_dae(u, p, t):
    """The third equation replaced by the conservation law: 0 = y1 + y2 + y3 - 1."""
    k = torch.exp(p)
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3,
                        y1 + y2 + y3 - 1], -1)


@functools.lru_cache(maxsize=None)
def scipy_reference(T: float):
    """The ODE form by scipy's Radau at rtol 1e-10, atol 1e-18 (analytic Jacobian)."""
    k1, k2, k3 = 0.04, 3e7, 1e4

    def f(t, y):
        return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2], k2 * y[1] ** 2]

    def jac(t, y):
        return [[-k1, k3 * y[2], k3 * y[1]], [k1, -2 * k2 * y[1] - k3 * y[2], -k3 * y[1]], [0, 2 * k2 * y[1], 0]]

    ts = np.logspace(-5, np.log10(T), 23)
    sol = solve_ivp(f, (0.0, T), [1.0, 0.0, 0.0], method="Radau", t_eval=ts, rtol=1e-10, atol=1e-18, jac=jac)
    assert sol.status == 0
    return torch.tensor(ts, dtype=F64), torch.tensor(sol.y.T, dtype=F64)


def test_the_scipy_reference_agrees_with_the_ivp_test_sets_published_values():
    _, ref = scipy_reference(1e11)
    T, values = STIFF_REFERENCE["robertson"]
    assert T == 1e11
    published = torch.tensor(values, dtype=F64)
    assert float(((ref[-1] - published).abs() / published.abs()).max()) < 1e-7


@pytest.mark.parametrize("T", [1e5, 1e11])
@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.RadauIIA5(), pyode.FBDF()], ids=lambda a: type(a).__name__)
def test_robertson_dae_matches_the_ode_form(alg, T):
    ts, ref = scipy_reference(T)
    prob = pyode.ODEProblem(rober_dae, U0, (0.0, T), LOGK, mass_matrix=M_ROBER)
    sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-8, abstol=1e-14)
    scale = ref.abs().amax(0)                     # each species' maximum (y2: 3.6e-5)
    err = ((sol.u - ref).abs() / scale).amax(0)
    assert float(err.max()) <= 1e-6, err
    # the algebraic equation holds at every saved time, to round-off
    assert float((sol.u.sum(-1) - 1).abs().max()) < 1e-14


@pytest.mark.parametrize("alg", [pyode.Rodas4(), pyode.Rosenbrock23(), pyode.QNDF()], ids=lambda a: type(a).__name__)
def test_the_other_mass_matrix_methods_solve_robertson_dae(alg):
    ts, ref = scipy_reference(1e5)
    prob = pyode.ODEProblem(rober_dae, U0, (0.0, 1e5), LOGK, mass_matrix=M_ROBER)
    sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-6, abstol=1e-10)
    err = ((sol.u - ref).abs() / ref.abs().amax(0)).amax(0)
    assert float(err.max()) <= 1e-4, err


def _loss(u):
    # every species on its own scale, at every saved time
    return (u / torch.tensor([1.0, 3.6e-5, 1.0], dtype=F64)).sum()


GRAD_TS = torch.tensor([1e-3, 1.0, 40.0], dtype=F64)


def _dae_loss(logk, alg, reltol, f=rober_dae, mass=M_ROBER):
    prob = pyode.ODEProblem(f, U0, (0.0, 40.0), logk, mass_matrix=mass)
    return _loss(pyode.solve(prob, alg, saveat=GRAD_TS, reltol=reltol, abstol=reltol * 1e-6).u)


@functools.lru_cache(maxsize=1)
def _central_differences():
    """Central differences (step 1e-5 in log k) of the DAE solved by RadauIIA5 at reltol 1e-10.
    (Differences of a BDF solve are noisier than the tolerance: its order and step sequence change
    with the parameters, so FBDF's gradient is checked against these too.)"""
    fd = torch.empty(3, dtype=F64)
    with torch.no_grad():
        for i in range(3):
            step = torch.zeros(3, dtype=F64)
            step[i] = 1e-5
            fd[i] = (_dae_loss(LOGK + step, pyode.RadauIIA5(), 1e-10)
                     - _dae_loss(LOGK - step, pyode.RadauIIA5(), 1e-10)) / 2e-5
    return fd


@pytest.mark.parametrize("alg", [pyode.Rodas5P(), pyode.RadauIIA5(), pyode.FBDF()], ids=lambda a: type(a).__name__)
def test_gradients_through_the_dae_against_central_differences_and_the_ode_form(alg):
    logk = LOGK.clone().requires_grad_(True)
    grad = torch.autograd.grad(_dae_loss(logk, alg, 1e-9), logk)[0]
    fd = _central_differences()
    assert float((grad - fd).abs().max()) <= 1e-5 * float(fd.abs().max()), (grad, fd)
    logk_ode = LOGK.clone().requires_grad_(True)
    ode = torch.autograd.grad(_dae_loss(logk_ode, pyode.Rodas5P(), 1e-9, rober_ode, None), logk_ode)[0]
    assert float((grad - ode).abs().max()) <= 1e-6 * float(ode.abs().max()), (grad, ode)


def test_a_non_diagonal_mass_matrix_equals_the_diagonal_form():
    # Mix the equations by an invertible Q: Q M du/dt = Q f(u) has the same solution.
    Q = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 1.0]], dtype=F64)

    def mixed(u, p, t):
        return rober_dae(u, p, t) @ Q.T

    ts, ref = scipy_reference(1e5)
    sol = pyode.solve(pyode.ODEProblem(mixed, U0, (0.0, 1e5), LOGK, mass_matrix=Q @ M_ROBER), pyode.Rodas5P(),
                      saveat=ts, reltol=1e-8, abstol=1e-14)
    err = ((sol.u - ref).abs() / ref.abs().amax(0)).amax(0)
    assert float(err.max()) <= 1e-6


def test_a_batch_of_daes_matches_single_solves():
    u0 = torch.stack([U0, torch.tensor([0.5, 0.0, 0.5], dtype=F64)])
    ts = torch.tensor([1.0, 100.0], dtype=F64)
    batch = pyode.solve(pyode.ODEProblem(rober_dae, u0, (0.0, 100.0), LOGK, mass_matrix=M_ROBER), pyode.Rodas5P(),
                        saveat=ts, reltol=1e-8, abstol=1e-14)
    for b in range(2):
        one = pyode.solve(pyode.ODEProblem(rober_dae, u0[b], (0.0, 100.0), LOGK, mass_matrix=M_ROBER),
                          pyode.Rodas5P(), saveat=ts, reltol=1e-8, abstol=1e-14)
        torch.testing.assert_close(batch.u[:, b], one.u, rtol=1e-12, atol=1e-18)


# ---- bad input -----------------------------------------------------------------------------------
def test_an_inconsistent_u0_is_refused_naming_the_algebraic_rows():
    prob = pyode.ODEProblem(rober_dae, torch.tensor([1.0, 0.0, 0.1], dtype=F64), (0.0, 1.0), LOGK,
                            mass_matrix=M_ROBER)
    with pytest.raises(ValueError, match=r"u0 is inconsistent.*rows of M that are zero: \[2\].*0\.1"):
        pyode.solve(prob, pyode.Rodas5P())


def test_a_mass_matrix_of_the_wrong_size_or_kind_is_named():
    with pytest.raises(ValueError, match=r"mass_matrix has shape \(2, 2\), but the state has n = 3"):
        pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix=torch.eye(2))
    with pytest.raises(ValueError, match="mass_matrix contains NaN"):
        pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix=torch.full((3, 3), float("nan")))
    with pytest.raises(TypeError, match="mass_matrix must be an \\(n, n\\) tensor"):
        pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix="diag")
    with pytest.raises(ValueError, match="mass_matrix requires grad"):
        pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix=torch.eye(3, requires_grad=True))


def test_methods_and_sensealgs_without_mass_matrix_support_are_refused():
    prob = pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix=M_ROBER)
    for alg in (pyode.Tsit5(), pyode.KenCarp4(), pyode.AutoTsit5(pyode.Rosenbrock23())):
        with pytest.raises(ValueError, match="cannot solve a problem with a mass_matrix; use Rosenbrock23"):
            pyode.solve(prob, alg)
    with pytest.raises(ValueError, match="InterpolatingAdjoint.*does not support mass_matrix"):
        pyode.solve(prob, pyode.Rodas5P(), sensealg=pyode.InterpolatingAdjoint())
    with pytest.raises(ValueError, match="mass_matrix is not yet supported by backend='julia'"):
        pyode.solve(prob, pyode.Rodas5P(), backend="julia")
    with pytest.raises(ValueError, match="compile=True does not support mass_matrix"):
        pyode.solve(prob, pyode.Rodas5P(), compile=True)


def test_brown_full_basic_init_solves_the_algebraic_variable_and_differentiates_it():
    # y3 = 1 - y1 - y2 is found from an inconsistent guess; its derivative with respect to y1(0)
    # is -1 through the initialisation
    y1 = torch.tensor(0.9, dtype=F64, requires_grad=True)
    u0 = torch.stack([y1, torch.tensor(0.0, dtype=F64), torch.tensor(0.7, dtype=F64)])
    prob = pyode.ODEProblem(rober_dae, u0, (0.0, 10.0), LOGK, mass_matrix=M_ROBER)
    sol = pyode.solve(prob, pyode.Rodas5P(), initializealg=pyode.BrownFullBasicInit(), reltol=1e-8, abstol=1e-12)
    torch.testing.assert_close(sol.u[0], torch.tensor([0.9, 0.0, 0.1], dtype=F64), rtol=0, atol=1e-15)
    (d,) = torch.autograd.grad(sol.u[0, 2], y1, retain_graph=True)
    assert abs(float(d) + 1.0) < 1e-12
    # the whole solve equals the one started from the consistent state
    ref = pyode.solve(pyode.ODEProblem(rober_dae, torch.tensor([0.9, 0.0, 0.1], dtype=F64), (0.0, 10.0), LOGK,
                                       mass_matrix=M_ROBER), pyode.Rodas5P(), reltol=1e-8, abstol=1e-12)
    torch.testing.assert_close(sol.u[-1], ref.u[-1], rtol=1e-12, atol=1e-18)
    # and y1(0)'s gradient of the end state matches central differences through the initialisation
    (g,) = torch.autograd.grad(sol.u[-1, 0], y1)
    with torch.no_grad():
        def end(v):
            u = torch.tensor([v, 0.0, 0.7], dtype=F64)
            p = pyode.ODEProblem(rober_dae, u, (0.0, 10.0), LOGK, mass_matrix=M_ROBER)
            return float(pyode.solve(p, pyode.Rodas5P(), initializealg=pyode.BrownFullBasicInit(),
                                     reltol=1e-10, abstol=1e-14).u[-1, 0])
        fd = (end(0.9 + 1e-6) - end(0.9 - 1e-6)) / 2e-6
    assert abs(float(g) - fd) <= 1e-6 * abs(fd)


def test_brown_full_basic_init_with_a_non_diagonal_mass_matrix_and_a_batch():
    Q = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 1.0]], dtype=F64)

    def mixed(u, p, t):
        return rober_dae(u, p, t) @ Q.T

    u0 = torch.tensor([[1.0, 0.0, 0.3], [0.5, 1e-5, 0.0]], dtype=F64)
    prob = pyode.ODEProblem(mixed, u0, (0.0, 1.0), LOGK, mass_matrix=Q @ M_ROBER)
    sol = pyode.solve(prob, pyode.Rodas5P(), initializealg=pyode.BrownFullBasicInit(), reltol=1e-8, abstol=1e-12)
    # consistent: the conservation law holds from the first saved state on
    assert float((sol.u.sum(-1) - 1).abs().max()) < 1e-12


def test_initializealg_bad_input():
    prob = pyode.ODEProblem(rober_dae, U0, (0.0, 1.0), LOGK, mass_matrix=M_ROBER)
    with pytest.raises(TypeError, match="initializealg must be pyode.CheckInit"):
        pyode.solve(prob, pyode.Rodas5P(), initializealg="brown")
    with pytest.raises(ValueError, match="initializealg applies to problems with a mass_matrix"):
        pyode.solve(pyode.ODEProblem(rober_ode, U0, (0.0, 1.0), LOGK), pyode.Rodas5P(),
                    initializealg=pyode.BrownFullBasicInit())
    with pytest.raises(ValueError, match="abstol must be a positive number"):
        pyode.BrownFullBasicInit(abstol=-1.0)

    def no_root(u, p, t):       # 0 = y3^2 + 1 has no real solution
        return torch.stack([-u[..., 0], u[..., 0] - u[..., 1], u[..., 2] ** 2 + 1], -1)

    start = torch.tensor([1.0, 0.0, 0.5], dtype=F64)
    bad = pyode.ODEProblem(no_root, start, (0.0, 1.0), None, mass_matrix=M_ROBER)
    with pytest.raises(ValueError, match="BrownFullBasicInit: the algebraic equations did not converge"):
        pyode.solve(bad, pyode.Rodas5P(), initializealg=pyode.BrownFullBasicInit(maxiters=10))
    singular = pyode.ODEProblem(no_root, U0, (0.0, 1.0), None, mass_matrix=M_ROBER)
    with pytest.raises(ValueError, match="Jacobian with respect to the algebraic variables is singular"):
        pyode.solve(singular, pyode.Rodas5P(), initializealg=pyode.BrownFullBasicInit())
