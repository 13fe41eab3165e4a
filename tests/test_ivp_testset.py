"""The IVP test set's stiff problems at their published intervals (Mazzia et al., Bari).

Every stiff algorithm must solve ROBER to 1e11, HIRES, POLLU, OREGO, VDPOL, VDPOLM and E5 to 1e13 with
default settings (no dt, dtmin or maxiters) and the test set's tolerance conventions, with correct
digits at the end point (against the published reference) that rise as the tolerance tightens.
``benchmarks/ivp_testset.py`` prints the whole work-precision table beside scipy's Radau, BDF and LSODA.
"""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode.problems import IVP_TEST_SET, STIFF_REFERENCE, ivp_test_set

ALGORITHMS = {
    "Rosenbrock23": pyode.Rosenbrock23(), "Rodas4": pyode.Rodas4(), "Rodas5P": pyode.Rodas5P(),
    "KenCarp4": pyode.KenCarp4(), "Kvaerno5": pyode.Kvaerno5(), "RadauIIA5": pyode.RadauIIA5(),
    "FBDF": pyode.FBDF(), "QNDF": pyode.QNDF(), "AutoTsit5(Rodas5P)": pyode.AutoTsit5(pyode.Rodas5P()),
}
LOOSE, TIGHT = 1e-4, 1e-7
# Rosenbrock23 is a loose-tolerance method (order 2): its tight rung is 1e-6 (1e-7 on VDPOL would be
# 2e4 steps, ~10 s).
TIGHT_FOR = {"Rosenbrock23": 1e-6}
# Known: Rodas4 keeps no E5 digit. Its Jacobian, stored in floats, breaks l^T J = 0 for the invariant
# l = (0, 1, -1, -1) by an ulp of J's (3, 1) entry (a - b y3 is rounded), and Rodas4's stages carry
# that into y2 - y3 - y4 (~4e-23 per step) where Rodas5P's largely cancel it (README, Known
# limitations). It must still reach 1e13 with Success; its E5 digits stay below 1 (this fails once
# that is fixed: then move it out of here and into the ordinary checks).
E5_NO_DIGITS = {"Rodas4"}


def _end_digits(tp, alg, rtol):
    sol = pyode.solve(tp.prob, alg, reltol=rtol, abstol=tp.abstol(rtol), saveat=[tp.prob.tspan[1]], throw=False)
    assert sol.retcode == pyode.ReturnCode.Success, (tp.name, alg, rtol, sol.retcode, sol.t_final)
    assert float(sol.t[-1]) == tp.prob.tspan[1]
    return tp.digits(sol.u[-1])


def _numpy(prob):
    def f(t, y):
        return prob.f(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=torch.float64)).numpy()

    def jac(t, y):
        return prob.jac(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=torch.float64)).numpy()
    return f, jac


@pytest.mark.slow
@pytest.mark.parametrize("name", IVP_TEST_SET)
@pytest.mark.parametrize("alg", list(ALGORITHMS), ids=list(ALGORITHMS))
def test_published_interval_with_default_settings(name, alg):
    tp = ivp_test_set(name)
    tight_rtol = TIGHT_FOR.get(alg, TIGHT)
    loose = _end_digits(tp, ALGORITHMS[alg], LOOSE)
    tight = _end_digits(tp, ALGORITHMS[alg], tight_rtol)
    if name == "e5":
        # E5's fixed atol (1.7e-24, 2 % of y2's end value) caps everyone's digits near 3 (scipy's
        # Radau: 2.3 at 1e-4, 3.5 at 1e-8, 3.2 at 1e-10): no rise to ask for, a floor instead.
        if alg in E5_NO_DIGITS:
            assert max(loose, tight) < 1.0, (loose, tight)
        else:
            assert tight >= 1.5 and loose >= 0.5, (loose, tight)
        return
    # Several decades tighter: no material loss and at least 3 digits (2 for Rosenbrock23 at 1e-6);
    # the rise itself is checked on the 1e-10 rung. A loose solve can land luckily close: KenCarp4
    # on ROBER scores 3.9 at 1e-4 and 3.3 at 1e-7 (y1 = 2e-8 at t1 lies below atol at both).
    assert tight >= loose - 0.75, (loose, tight)
    assert tight >= (2.0 if alg == "Rosenbrock23" else 3.0), tight


@pytest.mark.slow
@pytest.mark.parametrize("name, alg", [(n, a) for n in ("rober", "hires", "pollu", "vdpolm", "e5")
                                       for a in ("Rodas5P", "RadauIIA5", "FBDF", "KenCarp4")
                                       if not (n == "e5" and a in E5_NO_DIGITS)])
def test_tight_tolerance_1e10_and_digits_rise(name, alg):
    tp = ivp_test_set(name)
    loose = _end_digits(tp, ALGORITHMS[alg], LOOSE)
    tight = _end_digits(tp, ALGORITHMS[alg], 1e-10)
    if name == "e5":
        assert tight >= 1.5, tight
        return
    # scipy's Radau at 1e-10 reaches 7.7 (ROBER) to 10.6 (VDPOLM) digits, scipy's BDF 6.3 to 8.5.
    assert tight >= 5.0, tight
    assert tight >= loose + 1.5, (loose, tight)


def test_e5_reaches_1e13_with_the_default_dtmin():
    # The default dtmin used to scale with the span (16 ulps of 1e13 = 0.03): E5's first steps are
    # far smaller, and every method stopped at t = 0 with DtLessThanMin.
    tp = ivp_test_set("e5")
    sol = pyode.solve(tp.prob, pyode.RadauIIA5(), reltol=1e-4, abstol=tp.abstol(1e-4), saveat=[1e13])
    assert sol.retcode == pyode.ReturnCode.Success
    assert tp.digits(sol.u[-1]) >= 0.5


@pytest.mark.parametrize("name", ["vdpolm", "e5"])
def test_transcribed_references_agree_with_scipy_radau(name):
    # The references added beside the ones already checked elsewhere: VDPOLM (vdpolm.f) and E5 (e5.f).
    tp = ivp_test_set(name)
    f, jac = _numpy(tp.prob)
    atol = 1e-30 if name == "e5" else 1e-12
    s = solve_ivp(f, tp.prob.tspan, tp.prob.u0.numpy(), method="Radau", jac=jac, rtol=1e-11, atol=atol)
    assert s.status == 0
    assert tp.digits(s.y[:, -1]) >= (2.5 if name == "e5" else 8.0)


def test_e5_reference_mean_and_invariant():
    published = STIFF_REFERENCE["e5"][1]
    tp = ivp_test_set("e5")
    assert tp.reference[1] == tp.reference[2] == pytest.approx(0.5 * (published[1] + published[2]), rel=1e-15)
    # The published pair disagrees with y2 = y3 + y4 (y4 = 0) by 1.5e-3: why the mean is scored.
    assert abs(published[1] - published[2] - published[3]) / published[1] == pytest.approx(1.45e-3, rel=0.01)
    u = torch.tensor([1e-300, 1.0, 2.0, 0.5], dtype=torch.float64)
    du = tp.prob.f(u, tp.prob.p, torch.tensor(0.0, dtype=torch.float64))
    assert float(du[1] - du[2] - du[3]) == pytest.approx(0.0, abs=1e-6 * float(du.abs().max()))


def test_e5_jacobian_matches_autograd():
    tp = ivp_test_set("e5")
    u = torch.tensor([1.3e-3, 2e-10, 1.5e-10, 5e-11], dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    J = tp.prob.jac(u, tp.prob.p, t)
    J_ad = torch.autograd.functional.jacobian(lambda v: tp.prob.f(v, tp.prob.p, t), u)
    torch.testing.assert_close(J, J_ad, rtol=1e-12, atol=0)


def test_digits_scores_as_the_test_set():
    tp = ivp_test_set("hires")
    ref = tp.reference
    assert tp.digits(ref) == math.inf
    assert tp.digits(ref * (1 + 1e-6)) == pytest.approx(6.0, abs=1e-9)
    assert tp.digits(torch.full_like(ref, float("nan"))) == -math.inf
    e5 = ivp_test_set("e5")
    # E5's zero / 1e-291 entries are scored absolutely against the test set's atol 1.7e-24.
    u = e5.reference.clone()
    u[3] = 1.7e-27
    assert e5.digits(u) == pytest.approx(3.0, abs=1e-9)
    assert e5.abstol(1e-6) == 1.7e-24 and ivp_test_set("rober").abstol(1e-6) == pytest.approx(1e-10)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"name='rober1'.*choose one of e5, hires"):
        ivp_test_set("rober1")
