"""The eager fused loop of one problem, its control in Python floats (``_fused_scalar``), against the
same loop as tensor code and against the reference loop: the same steps, return codes, values,
gradients and evaluation counts."""
import math

import pytest
import torch

import pyode
import pyode.native._fused as fused
from pyode.problems import lotka_volterra, robertson

F64 = torch.float64


@pytest.fixture
def eager(monkeypatch):
    """Run a case on the eager fused path with the scalar control (``"scalar"``), with the tensor
    control (``"tensor"``) or on the reference loop (``"reference"``)."""
    taken = []
    real = fused.scalar_forward

    def spy(fl):
        taken.append(fl.B)
        return real(fl)

    def run(make, how):
        monkeypatch.setenv("PYODE_COMPILE", "0" if how == "reference" else "eager")
        monkeypatch.setattr(fused, "scalar_forward", spy)
        monkeypatch.setattr(fused, "scalar_control_applies",
                            fused.scalar_control_applies if how == "scalar" else (lambda fl: False))
        taken.clear()
        out = make()
        assert bool(taken) == (how == "scalar"), how
        return out
    return run


def _lv(tspan=(0.0, 5.0), **kwargs):
    base = lotka_volterra()
    p = base.p.clone().requires_grad_()
    return pyode.ODEProblem(base.f, base.u0, tspan, p), p


def _solve_lv(alg, tspan=(0.0, 5.0), **kwargs):
    def make():
        prob, p = _lv(tspan)
        ts = torch.linspace(tspan[0], tspan[1], 11, dtype=F64)
        sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-6, abstol=1e-9, **kwargs)
        (sol.u ** 2).sum().backward()
        return sol, p.grad
    return make


def _solve_robertson(alg, **kwargs):
    def make():
        rob = robertson()
        k = rob.p.clone().requires_grad_()
        prob = pyode.ODEProblem(rob.f, rob.u0, (0.0, 1e4), k, jac=rob.jac)
        sol = pyode.solve(prob, alg, saveat=torch.logspace(-4, 4, 9, dtype=F64), reltol=1e-6, abstol=1e-10,
                          **kwargs)
        (sol.u[:, 1] * 1e4 + sol.u[:, 0]).sum().backward()
        return sol, k.grad
    return make


CASES = {
    "Tsit5": _solve_lv(pyode.Tsit5()),
    "DP8 (second error estimator)": _solve_lv(pyode.DP8()),
    "Vern7 (not FSAL)": _solve_lv(pyode.Vern7()),
    "Tsit5 backwards in time": _solve_lv(pyode.Tsit5(), tspan=(5.0, 0.0)),
    "Tsit5 IController": _solve_lv(pyode.Tsit5(), controller=pyode.IController(qmax=5.0)),
    "Tsit5 PI gains": _solve_lv(pyode.Tsit5(), controller=pyode.PIController(beta1=0.1, beta2=0.05)),
    "Tsit5 fixed steps": _solve_lv(pyode.Tsit5(), adaptive=False, dt=0.05),
    "Rodas5P": _solve_robertson(pyode.Rodas5P()),
    "Rosenbrock23": _solve_robertson(pyode.Rosenbrock23()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scalar_control_takes_the_tensor_loops_steps(eager, case):
    sol, g = eager(CASES[case], "scalar")
    tensor, g_tensor = eager(CASES[case], "tensor")
    reference, g_reference = eager(CASES[case], "reference")
    assert sol.retcode == pyode.ReturnCode.Success
    for other in (tensor, reference):
        assert int(sol.stats.naccept) == int(other.stats.naccept)
        assert int(sol.stats.nreject) == int(other.stats.nreject)
        torch.testing.assert_close(sol.u, other.u, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g, g_tensor, rtol=1e-10, atol=0)
    torch.testing.assert_close(g, g_reference, rtol=1e-9, atol=0)
    # Evaluations: the tensor loop also evaluates f at the old state after a rejected step of a
    # method whose step does not compute f(y1) itself; the scalar loop does not.
    assert int(tensor.stats.nf) - int(sol.stats.nf) in (0, int(sol.stats.nreject))
    assert float(sol.t_final) == float(tensor.t_final)


def _failing(kind):
    base = lotka_volterra()

    def f(u, p, t):
        du = base.f(u, p, t)
        if kind == "nan":                    # f breaks down past t = 2
            return torch.where(t[..., None] > 2.0, torch.full_like(du, math.nan), du)
        return du

    def make():
        prob = pyode.ODEProblem(f, base.u0, (0.0, 5.0), base.p.clone().requires_grad_())
        kwargs = dict(maxiters=15) if kind == "maxiters" else {}
        return pyode.solve(prob, pyode.Tsit5(), saveat=[5.0], throw=False, **kwargs), None
    return make


@pytest.mark.parametrize("kind", ["maxiters", "nan"])
def test_failures_end_as_in_the_tensor_loop(eager, kind):
    sol, _ = eager(_failing(kind), "scalar")
    tensor, _ = eager(_failing(kind), "tensor")
    expected = {"maxiters": pyode.ReturnCode.MaxIters, "nan": (pyode.ReturnCode.Unstable,
                                                                pyode.ReturnCode.DtLessThanMin)}[kind]
    assert sol.retcode in (expected if isinstance(expected, tuple) else (expected,))
    assert sol.retcode == tensor.retcode
    assert int(sol.stats.naccept) == int(tensor.stats.naccept)
    assert int(sol.stats.nreject) == int(tensor.stats.nreject)
    assert float(sol.t_final) == float(tensor.t_final)
    if kind == "nan":
        assert 1.9 < float(sol.t_final) <= 2.0


def test_only_one_problem_on_the_cpu_with_pi_control(eager):
    from pyode.native._fused_scalar import scalar_control_applies

    class Loop:
        def __init__(self, B, dev):
            self.compiled, self.B, self.ctrl = False, B, pyode.PIController().resolve(5, 4)
            self.loop = type("L", (), {"dev": torch.device(dev)})()

    assert scalar_control_applies(Loop(1, "cpu"))
    assert not scalar_control_applies(Loop(2, "cpu"))
    assert not scalar_control_applies(Loop(1, "meta"))
    compiled = Loop(1, "cpu")
    compiled.compiled = True
    assert not scalar_control_applies(compiled)
    predictive = Loop(1, "cpu")
    predictive.ctrl = pyode.PredictiveController().resolve(5, 4, 10)
    assert not scalar_control_applies(predictive)
