"""AutoSwitch / AutoTsit5: stability boundaries, stiffness detection, switching per member, accuracy,
dense output, batches, gradients and bad arguments."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode import ODEProblem, ReturnCode, problems, solve
from pyode.native.tableaus.bs3 import BS3
from pyode.native.tableaus.classic import EULER, RK4
from pyode.native.tableaus.dp5 import DP5
from pyode.native.tableaus.tsit5 import TSIT5
from pyode.native.tableaus.vern7 import VERN7
from test_rosenbrock import check_rober_log_rate_gradient

F64 = torch.float64
STIFF_ALGS = [pyode.Rosenbrock23(), pyode.Rodas5P(), pyode.KenCarp4(), pyode.RadauIIA5()]


def reference(prob, ts, rtol=1e-11, atol=1e-13):
    def f(t, y):
        return prob.f(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=F64)).numpy()

    def jac(t, y):
        return prob.jac(torch.from_numpy(y), prob.p, torch.tensor(t, dtype=F64)).numpy()

    ref = solve_ivp(f, prob.tspan, prob.u0.numpy(), method="Radau", t_eval=np.asarray(ts), rtol=rtol, atol=atol,
                    jac=jac if prob.jac is not None else None)
    assert ref.success, ref.message
    return torch.from_numpy(ref.y.T)


# ---- the stability boundary the detector divides by ---------------------------------------------

def test_real_stability_boundaries():
    # DifferentialEquations.jl's alg_stability_size: Tsit5 3.5068, DP5 3.3066, Vern7 4.6400.
    assert abs(TSIT5.stability_boundary() - 3.5068) < 1e-4
    assert abs(DP5.stability_boundary() - 3.3066) < 1e-4
    assert abs(VERN7.stability_boundary() - 4.6400) < 1e-4
    # closed forms: Euler R = 1 + z (boundary 2); a 4-stage method of order 4 has R = Σ_(k≤4) z^k/k!
    assert abs(EULER.stability_boundary() - 2.0) < 1e-9
    assert abs(RK4.stability_boundary() - 2.785293563405282) < 1e-9
    x = BS3.stability_boundary()                     # 3 stages of order 3: R = 1 + z + z²/2 + z³/6
    assert abs(abs(1 - x + x ** 2 / 2 - x ** 3 / 6) - 1) < 1e-9 and 2.5 < x < 2.52


# ---- switching ----------------------------------------------------------------------------------

def test_nonstiff_problem_never_switches_and_equals_tsit5():
    prob = problems.lotka_volterra()
    ref = solve(prob, pyode.Tsit5(), reltol=1e-6, abstol=1e-8)
    for stiffalg in STIFF_ALGS:
        sol = solve(prob, pyode.AutoTsit5(stiffalg), reltol=1e-6, abstol=1e-8)
        assert sol.stats.nswitch == 0 and sol.stats.njac == 0
        assert sol.stats.naccept == ref.stats.naccept and sol.stats.nreject == ref.stats.nreject
        # Tsit5's evaluations plus the stiffness detector's power iteration: one every 4th attempt.
        attempts = ref.stats.naccept + ref.stats.nreject
        assert sol.stats.nf == ref.stats.nf + (attempts + 3) // 4
        assert torch.equal(sol.u, ref.u) and torch.equal(sol.t, ref.t)


@pytest.mark.parametrize("name, rtol", [("e5", 1e-8), ("orego", 1e-10), ("rober", 1e-8)])
def test_stiffness_found_at_tight_tolerances(name, rtol):
    # Tsit5's stage-based estimate alone missed these: its steps, held just inside the stability
    # boundary by the error control, never excite the stiff mode. E5 at 1e-8 then took 1e5 Tsit5 steps
    # by t = 17 of 1e13, OREGO at 1e-10 by t = 29 of 360, ROBER at 1e-8 6986 steps (Rodas5P alone: 697).
    tp = problems.ivp_test_set(name)
    prob = tp.prob if name != "orego" else pyode.ODEProblem(tp.prob.f, tp.prob.u0, (0.0, 30.0), tp.prob.p,
                                                             jac=tp.prob.jac)
    alone = solve(prob, pyode.Rodas5P(), reltol=rtol, abstol=tp.abstol(rtol), saveat=[prob.tspan[1]])
    sol = solve(prob, pyode.AutoTsit5(pyode.Rodas5P()), reltol=rtol, abstol=tp.abstol(rtol), saveat=[prob.tspan[1]])
    assert sol.retcode is ReturnCode.Success and sol.stats.nswitch >= 1
    assert sol.stats.naccept < 2 * alone.stats.naccept, (sol.stats, alone.stats)


@pytest.mark.parametrize("stiffalg", STIFF_ALGS, ids=repr)
def test_robertson_switches_to_the_stiff_method(stiffalg):
    prob = problems.robertson(tspan=(0.0, 1e5))
    ts = [1e-3, 1.0, 1e2, 1e5]
    ref = reference(prob, ts)
    # Tsit5 alone cannot get there: it is held to steps of ~1e-4 by stability.
    with pytest.raises(pyode.SolveError):
        solve(prob, pyode.Tsit5(), reltol=1e-6, abstol=1e-10, maxiters=5000, saveat=ts)
    sol = solve(prob, pyode.AutoTsit5(stiffalg), reltol=1e-6, abstol=1e-10, saveat=ts)
    assert sol.retcode == ReturnCode.Success
    assert sol.stats.nswitch == 1                      # stiff from the initial transient on
    alone = solve(prob, stiffalg, reltol=1e-6, abstol=1e-10, saveat=ts)
    assert sol.stats.naccept < 1.2 * alone.stats.naccept + 20
    scaled = ((sol.u - ref).abs() / (1e-10 + 1e-6 * ref.abs())).max()
    assert scaled < 40, scaled                        # Rosenbrock23 alone: ~30 (see test_stiff_accuracy)
    assert float((sol.u.sum(-1) - 1).abs().max()) < 1e-13


@pytest.mark.parametrize("stiffalg", STIFF_ALGS, ids=repr)
def test_van_der_pol_switches_back_and_forth(stiffalg):
    # μ = 1000: stiff along the slow branches, non-stiff through the fast jumps (period ~1614).
    prob = problems.van_der_pol(mu=1e3, tspan=(0.0, 3000.0))
    ts = [500.0, 1000.0, 2000.0, 3000.0]
    ref = reference(prob, ts)
    sol = solve(prob, pyode.AutoTsit5(stiffalg), reltol=1e-6, abstol=1e-8, saveat=ts)
    st = sol.stats
    assert st.nswitch >= 5, st                        # measured: 7
    assert 0 < st.njac < 0.8 * st.naccept, st          # only the stiff steps need the Jacobian
    alone = solve(prob, stiffalg, reltol=1e-6, abstol=1e-8, saveat=ts)
    assert st.nf < alone.stats.nf, (st, alone.stats)   # the explicit stretches are cheaper
    # measured scaled errors: 2e2 (Rosenbrock23), 60 (Rodas5P); the stiff method alone: 3e2, 30
    err = ((sol.u - ref).abs() / (1e-8 + 1e-6 * ref.abs())).max()
    err_alone = ((alone.u - ref).abs() / (1e-8 + 1e-6 * ref.abs())).max()
    assert err < 3 * err_alone + 10, (err, err_alone)


def test_stiffalgfirst_starts_stiff_and_switches_back_on_a_nonstiff_problem():
    prob = problems.lotka_volterra()
    sol = solve(prob, pyode.AutoTsit5(pyode.Rodas5P(), stiffalgfirst=True), reltol=1e-6, abstol=1e-8)
    assert sol.stats.njac >= 4 and sol.stats.nswitch == 1
    ref = solve(prob, pyode.Tsit5(), reltol=1e-10, abstol=1e-12)
    assert float((sol.u[-1] - ref.u[-1]).abs().max()) < 1e-4


def test_switch_thresholds_are_honoured():
    # A detector that never fires (huge tolerance) keeps the explicit method: MaxIters on ROBER.
    prob = problems.robertson(tspan=(0.0, 1e3))
    never = pyode.AutoTsit5(pyode.Rosenbrock23(), nonstifftol=1e9)
    sol = solve(prob, never, reltol=1e-6, abstol=1e-10, maxiters=3000, throw=False)
    assert sol.retcode == ReturnCode.MaxIters and sol.stats.nswitch == 0
    # Waiting longer before switching costs explicit steps, but the switch still happens.
    eager = solve(prob, pyode.AutoTsit5(pyode.Rosenbrock23(), maxstiffstep=2), reltol=1e-6, abstol=1e-10)
    late = solve(prob, pyode.AutoTsit5(pyode.Rosenbrock23(), maxstiffstep=40), reltol=1e-6, abstol=1e-10)
    assert eager.stats.nswitch == late.stats.nswitch == 1
    assert eager.stats.njac > late.stats.njac


# ---- batches, dense output, gradients ------------------------------------------------------------

def test_batch_of_mixed_stiffness_equals_one_by_one():
    base = problems.van_der_pol(tspan=(0.0, 30.0))
    mus = torch.tensor([1.0, 1e3, 10.0, 300.0], dtype=F64)
    alg = pyode.AutoTsit5(pyode.Rosenbrock23())
    batch = ODEProblem(base.f, base.u0.expand(4, 2).clone(), base.tspan, mus)
    sol = solve(batch, alg, reltol=1e-6, abstol=1e-8, saveat=[10.0, 30.0])
    assert sol.stats.nswitch.tolist() == [0, 1, 0, 1]
    for i in range(4):
        one = solve(ODEProblem(base.f, base.u0, base.tspan, mus[i]), alg, reltol=1e-6, abstol=1e-8,
                    saveat=[10.0, 30.0])
        assert one.stats.naccept == int(sol.stats.naccept[i]) and one.stats.nswitch == int(sol.stats.nswitch[i])
        torch.testing.assert_close(sol.u[:, i], one.u, rtol=1e-13, atol=1e-13)


def test_dense_output_follows_each_members_method():
    prob = problems.van_der_pol(mu=1e3, tspan=(0.0, 1000.0))
    sol = solve(prob, pyode.AutoTsit5(pyode.Rodas5P()), reltol=1e-7, abstol=1e-9)
    assert sol.stats.nswitch >= 2
    mid = 0.5 * (sol.t[1:] + sol.t[:-1])             # one time inside every step

    def scaled_error(u, ts):
        ref = reference(prob, ts.numpy())
        return ((u - ref).abs() / (1e-9 + 1e-7 * ref.abs())).amax(-1)

    # Near the jumps the global (phase) error is large everywhere; an interpolant of the right
    # member's method is about as accurate as the steps around it, a wrong one is off by O(1).
    at_steps = torch.cat([torch.zeros(1, dtype=F64), scaled_error(sol.u[1:], sol.t[1:])])
    bound = 10 * torch.maximum(at_steps[:-1], at_steps[1:]) + 100
    assert bool((scaled_error(sol(mid), mid) <= bound).all())
    saved = solve(prob, pyode.AutoTsit5(pyode.Rodas5P()), reltol=1e-7, abstol=1e-9, saveat=mid)
    torch.testing.assert_close(saved.u, sol(mid), rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences():
    # The switch to Rodas5P happens early on (0, 10); autograd through both methods' steps
    # (Jacobians and LU solves included) against central differences.
    # (At reltol 1e-8 and below Tsit5 resolves the fast transient so finely that the stage-based
    # estimate sees no stiffness until t ≈ 10: the switch then comes late.)
    prob = problems.robertson(tspan=(0.0, 10.0))
    sol = solve(prob, pyode.AutoTsit5(pyode.Rodas5P()), reltol=1e-6, abstol=1e-10)
    assert sol.stats.nswitch == 1 and sol.stats.naccept < 100
    check_rober_log_rate_gradient(pyode.AutoTsit5(pyode.Rodas5P()), 10.0, [1e-3, 0.1, 1.0, 10.0], 1e-6, 1e-10,
                                  rtol=1e-5)


def test_float32_and_backward_time():
    prob = problems.robertson(tspan=(0.0, 100.0), dtype=torch.float32)
    sol = solve(prob, pyode.AutoTsit5(pyode.Rosenbrock23()), reltol=1e-4, abstol=1e-7, saveat=[100.0])
    ref = reference(problems.robertson(tspan=(0.0, 100.0)), [100.0])
    assert sol.u.dtype == torch.float32 and sol.stats.nswitch == 1
    assert float(((sol.u.double() - ref).abs() / (1e-7 + 1e-4 * ref.abs())).max()) < 50
    # Backwards in time through a non-stiff problem: the detector looks at |ρ h|.
    lv = problems.lotka_volterra(tspan=(10.0, 0.0))
    back = solve(lv, pyode.AutoTsit5(pyode.Rodas5P()), reltol=1e-8, abstol=1e-10)
    plain = solve(lv, pyode.Tsit5(), reltol=1e-8, abstol=1e-10)
    assert torch.equal(back.u, plain.u)


# ---- arguments -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(nonstiffalg=pyode.Rosenbrock23(), stiffalg=pyode.Rodas5P()), "nonstiffalg"),
    (dict(nonstiffalg=pyode.RK4(), stiffalg=pyode.Rodas5P()), "nonstiffalg"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.Vern7()), "stiffalg"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.FBDF()), "multistep"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.Rodas5P(), maxstiffstep=-1), "maxstiffstep"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.Rodas5P(), nonstifftol=0.0), "nonstifftol"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.Rodas5P(), dtfac=0.5), "dtfac"),
    (dict(nonstiffalg=pyode.Tsit5(), stiffalg=pyode.Rodas5P(), stiffalgfirst=1), "stiffalgfirst"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pyode.AutoSwitch(**kwargs)


def test_repr_and_names():
    assert repr(pyode.AutoTsit5(pyode.Rosenbrock23())) == "AutoSwitch(Tsit5(), Rosenbrock23())"
    assert repr(pyode.AutoVern7(pyode.Rodas5P(), dtfac=3.0)) == "AutoSwitch(Vern7(), Rodas5P(), dtfac=3.0)"
    assert pyode.AutoDP5(pyode.KenCarp4()).nonstiffalg == pyode.DP5()
