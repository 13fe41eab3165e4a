"""The default path (``compile`` not given, ``PYODE_COMPILE`` unset): the fused loop without
``torch.compile`` for small differentiated solves, the reference loop otherwise."""
import pytest
import torch

import pyode
import pyode.native._fused as fused
from pyode.problems import lotka_volterra, robertson


@pytest.fixture
def paths(monkeypatch):
    monkeypatch.delenv("PYODE_COMPILE", raising=False)
    taken = []
    real = fused.fused_integrate

    def spy(*args, **kwargs):
        taken.append("compiled" if kwargs.get("compiled") else "fused")
        return real(*args, **kwargs)

    monkeypatch.setattr(fused, "fused_integrate", spy)
    return taken


def _lv(u0=None, p=None):
    base = lotka_volterra()
    return pyode.ODEProblem(base.f, base.u0 if u0 is None else u0, (0.0, 5.0), base.p if p is None else p)


class _Counting:
    """A callable wrapper, as benchmarks and users write them."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, u, p, t):
        self.n += 1
        return self.f(u, p, t)


def test_choice(paths):
    base = lotka_volterra()
    ts = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    net = torch.nn.Linear(2, 2).double()
    closure = lambda u, p, t: base.f(u, p, t) + 1e-3 * net(u)          # noqa: E731
    rob = robertson()
    cases = [
        # one problem with an explicit method: fused for its control in Python floats, gradient or not
        ("no gradient, one problem, explicit", _lv(), "fused"),
        ("no gradient, a batch", _lv(u0=base.u0.expand(3, 2).clone()), None),
        ("u0 requires grad", _lv(u0=base.u0.clone().requires_grad_()), "fused"),
        ("p requires grad", _lv(p=base.p.clone().requires_grad_()), "fused"),
        ("a module in the closure", pyode.ODEProblem(closure, base.u0, (0.0, 5.0), base.p), "fused"),
        ("a wrapper object around it", pyode.ODEProblem(_Counting(closure), base.u0, (0.0, 5.0), base.p), "fused"),
        ("a large batch", _lv(u0=base.u0.expand(40, 2).clone().requires_grad_()), None),
    ]
    for what, prob, expected in cases:
        paths.clear()
        pyode.solve(prob, pyode.Tsit5(), saveat=ts)
        assert paths == ([expected] if expected else []), what
    paths.clear()
    with torch.no_grad():
        pyode.solve(_lv(p=base.p.clone().requires_grad_(), u0=base.u0.expand(2, 2).clone()), pyode.Tsit5(), saveat=ts)
    assert paths == []
    # no gradient, one problem, a Rosenbrock method: fused too (Python-float control)
    pyode.solve(pyode.ODEProblem(rob.f, rob.u0, (0.0, 1.0), rob.p, jac=rob.jac), pyode.Rodas5P(), saveat=[1.0])
    assert paths == ["fused"]
    paths.clear()
    # Not for the fused path's exclusions (dense output, another sensealg, an implicit method).
    for kwargs in ({}, {"saveat": ts, "sensealg": pyode.GaussAdjoint()}):
        pyode.solve(_lv(p=base.p.clone().requires_grad_()), pyode.Tsit5(), **kwargs)
    pyode.solve(_lv(p=base.p.clone().requires_grad_()), pyode.KenCarp4(), saveat=ts)
    assert paths == []
    pyode.solve(_lv(p=base.p.clone().requires_grad_()), pyode.Tsit5(), saveat=ts, compile=False)
    assert paths == []


def _lv_case():
    p = lotka_volterra().p.clone().requires_grad_()
    return _lv(p=p), p, pyode.Tsit5(), torch.linspace(0.0, 5.0, 11, dtype=torch.float64)


def _robertson_case():
    rob = robertson()
    k = rob.p.clone().requires_grad_()
    prob = pyode.ODEProblem(rob.f, rob.u0, (0.0, 1e3), k, jac=rob.jac)
    return prob, k, pyode.Rodas5P(), torch.logspace(-3, 3, 7, dtype=torch.float64)


@pytest.mark.parametrize("case", [_lv_case, _robertson_case], ids=["Tsit5", "Rodas5P"])
def test_same_steps_values_and_gradients_as_the_reference_loop(paths, case):
    def run(**kwargs):
        prob, p, alg, ts = case()
        sol = pyode.solve(prob, alg, saveat=ts, reltol=1e-6, abstol=1e-10, **kwargs)
        (sol.u[:, 1] * 1e4 + sol.u[:, 0]).sum().backward()
        return sol, p.grad

    default, g_default = run()
    assert paths == ["fused"]
    reference, g_reference = run(compile=False)
    assert int(default.stats.naccept) == int(reference.stats.naccept)
    assert torch.allclose(default.u, reference.u, rtol=1e-12, atol=1e-15)
    assert torch.allclose(g_default, g_reference, rtol=1e-9, atol=0)


def test_environment_chooses_the_reference_loop(paths, monkeypatch):
    monkeypatch.setenv("PYODE_COMPILE", "0")
    pyode.solve(_lv(p=lotka_volterra().p.clone().requires_grad_()), pyode.Tsit5(),
                saveat=torch.linspace(0, 5, 6, dtype=torch.float64))
    assert paths == []


@pytest.mark.parametrize("name", ["rober", "e5"])
def test_forward_rosenbrock_solve_is_the_reference_loops(paths, name):
    """One stiff problem without a gradient: the default's fused loop takes the reference loop's
    steps and values, and counts the same work (E5's refined stage solves included)."""
    from pyode.problems import ivp_test_set

    tp = ivp_test_set(name)
    kw = dict(reltol=1e-5, abstol=tp.abstol(1e-5), saveat=[tp.prob.tspan[1]], dense=False)
    default = pyode.solve(tp.prob, pyode.Rodas5P(), **kw)
    assert paths == ["fused"]
    reference = pyode.solve(tp.prob, pyode.Rodas5P(), compile=False, **kw)
    assert (int(default.stats.naccept), int(default.stats.nreject)) == (int(reference.stats.naccept),
                                                                          int(reference.stats.nreject))
    assert (default.stats.nf, default.stats.nsolve) == (reference.stats.nf, reference.stats.nsolve)
    torch.testing.assert_close(default.u, reference.u, rtol=1e-12, atol=1e-300)
