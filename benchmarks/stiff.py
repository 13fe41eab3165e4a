#!/usr/bin/env python
"""pyode's stiff algorithms against scipy's stiff solvers on the classic stiff test problems.

Usage::

    python benchmarks/stiff.py [--quick] [--threads 1] [--out FILE] [--problems rober,hires,pollu,orego,vdpol]
                               [--no-batch] [--profile]

Part 1, work-precision: ROBER (t in 0..1e5), HIRES, POLLU, OREGO and VDPOL (Hairer's scaled van der
Pol, eps = 1e-6, u0 = (2, 0), t in 0..2: the IVP test set's problem) at reltol 1e-4, 1e-6, 1e-8 with
every pyode stiff algorithm (Rosenbrock23, Rodas4, Rodas5P, KenCarp4, Kvaerno5, FBDF, QNDF, RadauIIA5,
AutoTsit5(Rosenbrock23), AutoTsit5(Rodas5P); analytic Jacobian), Rodas5P with a forward-mode AD
Jacobian (the problem remade with jac=None), and scipy solve_ivp Radau / BDF / LSODA (NumPy right-hand
side and analytic NumPy Jacobian): wall time, time per step, work counters, error at the final time
against a scipy Radau reference at rtol = 1e-12 (itself compared with the test set's published values).
A row that would take longer than --max-case-seconds is skipped (predicted from the looser
tolerance) or stopped (capped) and printed as such.
Part 2, the project's target at reltol 1e-6, per problem: the fastest pyode (method, reltol) whose
error is <= scipy Radau's error at 1e-6, against scipy BDF's time at 1e-6 (target <= 1/3).
Part 3, batched ROBER: 1024 rate-constant sets (+-20 %, seeded) as one pyode batch (Rodas5P, FBDF,
RadauIIA5) against scipy Radau, BDF and LSODA solving them one by one (a subset, extrapolated).
--profile: where the time of one Rodas5P ROBER solve goes (cProfile + an aten-op count).

See benchmarks/README.md ("Stiff problems") for the definitions of every column.
"""
from __future__ import annotations

import argparse
import cProfile
import contextlib
import datetime
import json
import math
import os
import platform
import pstats
import signal
import statistics
import sys
import time
import traceback

# numpy, torch, scipy, pyode are imported in main() once the thread count is set (BLAS reads its
# thread count from the environment at import).
np = torch = pyode = P = solve_ivp = None

NOTES = []
RELTOLS = (1e-4, 1e-6, 1e-8)
REF_RTOL = 1e-12
ERR_FLOOR = 1e-12       # components with |ref| below this are left out of the relative error


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# timing and error
# ----------------------------------------------------------------------------------------------

class CaseCapped(Exception):
    """A run passed the per-case time cap (--max-case-seconds) and was stopped."""


def _alarm(signum, frame):
    # Raise only outside torch's own Python code (and contextlib): an exception between entering and
    # exiting a torch context (a forward-AD dual level, a torch.func transform) would leave it entered
    # for every later solve. Inside such code, try again 2 ms later.
    unsafe = (os.path.dirname(torch.__file__) + os.sep, contextlib.__file__)
    while frame is not None:
        if frame.f_code.co_filename.startswith(unsafe):
            signal.setitimer(signal.ITIMER_REAL, 0.002)
            return
        frame = frame.f_back
    raise CaseCapped()


def capped(fn, cap: float):
    """Run ``fn()``, stopping it with :class:`CaseCapped` once it has run ``cap`` seconds (SIGALRM:
    the solvers' step loops are Python, so the signal is handled within a step)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, cap)
    try:
        return fn()
    except CaseCapped:
        check_torch_state()
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_torch_state():
    """After a stopped run: no forward-AD level or torch.func transform may be left entered."""
    fwad = torch.autograd.forward_ad
    if fwad._current_level != -1 or torch._C._functorch.maybe_current_level() is not None:
        raise RuntimeError("a run stopped at the time cap left torch's forward-AD / torch.func state entered; "
                           "later timings would be wrong (rerun with a larger --max-case-seconds)")


def measure(fn, repeats: int, budget: float, cap: float = math.inf):
    """Time ``fn`` (already warmed up): ``repeats`` runs, fewer once their total passes ``budget``
    seconds (at least one); a run longer than ``cap`` seconds is stopped (:class:`CaseCapped`).
    Returns (output of the last run, list of seconds)."""
    times, out = [], None
    while len(times) < repeats:
        t = time.perf_counter()
        out = capped(fn, cap) if math.isfinite(cap) else fn()
        times.append(time.perf_counter() - t)
        if sum(times) >= budget:
            break
    return out, times


def errors(u, ref):
    """(rel, mixed): max_i |u_i - r_i| / |r_i| over components with |r_i| >= ERR_FLOOR, and
    max_i |u_i - r_i| / (1 + |r_i|) over all components."""
    u, ref = np.asarray(u, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    d = np.abs(u - ref)
    big = np.abs(ref) >= ERR_FLOOR
    rel = float(np.max(d[big] / np.abs(ref[big]))) if big.any() else float("nan")
    mixed = float(np.max(d / (1.0 + np.abs(ref))))
    if not np.all(np.isfinite(u)):
        rel = mixed = float("inf")
    return rel, mixed


# ----------------------------------------------------------------------------------------------
# NumPy right-hand sides and Jacobians for scipy (checked against pyode's torch versions at start)
# ----------------------------------------------------------------------------------------------

def rober_np(k):
    k1, k2, k3 = k

    def f(t, y):
        y1, y2, y3 = y
        return np.array([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2 * y2 - k3 * y2 * y3, k2 * y2 * y2])

    def jac(t, y):
        _, y2, y3 = y
        return np.array([[-k1, k3 * y3, k3 * y2],
                         [k1, -2.0 * k2 * y2 - k3 * y3, -k3 * y2],
                         [0.0, 2.0 * k2 * y2, 0.0]])

    return f, jac


def hires_np(p):
    a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12 = p

    def f(t, y):
        y1, y2, y3, y4, y5, y6, y7, y8 = y
        r = a10 * y6 * y8
        f7 = r - a12 * y7
        return np.array([-a1 * y1 + a2 * y2 + a3 * y3 + a4, a1 * y1 - a5 * y2, -a6 * y3 + a2 * y4 + a7 * y5,
                         a3 * y2 + a1 * y3 - a8 * y4, -a9 * y5 + a2 * y6 + a2 * y7,
                         -r + a11 * y4 + a1 * y5 - a2 * y6 + a11 * y7, f7, -f7])

    J0 = np.zeros((8, 8))
    for (i, j), v in {(0, 0): -a1, (0, 1): a2, (0, 2): a3, (1, 0): a1, (1, 1): -a5, (2, 2): -a6, (2, 3): a2,
                      (2, 4): a7, (3, 1): a3, (3, 2): a1, (3, 3): -a8, (4, 4): -a9, (4, 5): a2, (4, 6): a2,
                      (5, 3): a11, (5, 4): a1, (5, 6): a11, (6, 6): -a12, (7, 6): a12}.items():
        J0[i, j] = v

    def jac(t, y):
        y6, y8 = y[5], y[7]
        J = J0.copy()
        J[5, 5], J[5, 7] = -a10 * y8 - a2, -a10 * y6
        J[6, 5], J[6, 7] = a10 * y8, a10 * y6
        J[7, 5], J[7, 7] = -a10 * y8, -a10 * y6
        return J

    return f, jac


def orego_np(p):
    s, q, w = p

    def f(t, y):
        y1, y2, y3 = y
        return np.array([s * (y2 + y1 * (1.0 - q * y1 - y2)), (y3 - (1.0 + y1) * y2) / s, w * (y1 - y3)])

    def jac(t, y):
        y1, y2, _ = y
        return np.array([[s * (1.0 - 2.0 * q * y1 - y2), s * (1.0 - y1), 0.0],
                         [-y2 / s, -(1.0 + y1) / s, 1.0 / s],
                         [w, 0.0, -w]])

    return f, jac


# POLLU reactants of r1..r25 (0-based species), as in pyode.problems._pollu_rates; the stoichiometry
# matrix S (f = S r) is read off pyode's own rhs: with y = 1 and k = e_j every rate is 0 but r_j = 1.
POLLU_REACTANTS = ((0,), (1, 3), (4, 1), (6,), (6,), (6, 5), (8,), (8, 5), (10, 1), (10, 0), (12,), (9, 1),
                   (13,), (0, 5), (2,), (3,), (3,), (15,), (15,), (16, 5), (18,), (18,), (0, 3), (18, 0), (19,))


def pollu_np(p):
    k = np.asarray(p, dtype=np.float64)
    eye = torch.eye(25, dtype=torch.float64)
    S = P._pollu_rhs(torch.ones(25, 20, dtype=torch.float64), eye, None).T.numpy().copy()   # (20, 25)
    a = np.array([r[0] for r in POLLU_REACTANTS])
    b = np.array([r[1] if len(r) == 2 else -1 for r in POLLU_REACTANTS])
    two = b >= 0
    rows = np.arange(25)

    def f(t, y):
        r = k * y[a]
        r[two] *= y[b[two]]
        return S @ r

    def jac(t, y):
        D = np.zeros((25, 20))                   # D[j, i] = d r_j / d y_i
        D[rows[~two], a[~two]] = k[~two]
        D[rows[two], a[two]] += k[two] * y[b[two]]
        D[rows[two], b[two]] += k[two] * y[a[two]]
        return S @ D

    return f, jac


def vdpol_np(eps):
    def f(t, y):
        y1, y2 = y
        return np.array([y2, ((1.0 - y1 * y1) * y2 - y1) / eps])

    def jac(t, y):
        y1, y2 = y
        return np.array([[0.0, 1.0], [(-2.0 * y1 * y2 - 1.0) / eps, (1.0 - y1 * y1) / eps]])

    return f, jac


def problem_specs():
    """name -> spec. ``atol(rtol)`` is the absolute tolerance used at relative tolerance ``rtol``."""
    return {
        "rober": dict(title="ROBER (n=3), t in (0, 1e5)", make=lambda: P.robertson(), np=rober_np,
                      atol=lambda r: 1e-4 * r, atol_doc="1e-4 * reltol", ref_atol=1e-20,
                      test_set=("robertson", (0.0, 1e11), 1e-16)),
        "hires": dict(title="HIRES (n=8), t in (0, 321.8122)", make=lambda: P.hires(), np=hires_np,
                      atol=lambda r: 1e-4 * r, atol_doc="1e-4 * reltol", ref_atol=1e-18,
                      test_set=("hires", None, None)),
        "pollu": dict(title="POLLU (n=20), t in (0, 60)", make=lambda: P.pollu(), np=pollu_np,
                      atol=lambda r: 1e-4 * r, atol_doc="1e-4 * reltol", ref_atol=1e-22,
                      test_set=("pollu", None, None)),
        "orego": dict(title="OREGO (n=3), t in (0, 360)", make=lambda: P.orego(), np=orego_np,
                      atol=lambda r: 1e-4 * r, atol_doc="1e-4 * reltol", ref_atol=1e-16,
                      test_set=("orego", None, None)),
        "vdpol": dict(title="VDPOL (scaled van der Pol, eps=1e-6, u0=(2, 0), n=2), t in (0, 2)",
                      make=lambda: P.van_der_pol_scaled(eps=1e-6, u0=(2.0, 0.0), tspan=(0.0, 2.0)), np=vdpol_np,
                      atol=lambda r: r, atol_doc="reltol", ref_atol=1e-14,
                      test_set=("van_der_pol_scaled", None, None)),
    }


def check_numpy_versions(name, prob, f_np, jac_np):
    """The NumPy rhs/Jacobian must agree with pyode's torch ones (at u0 and at a perturbed state)."""
    rng = np.random.default_rng(0)
    u0 = prob.u0.numpy()
    for y in (u0, np.abs(u0) * (1 + 0.3 * rng.random(u0.shape)) + 1e-3 * rng.random(u0.shape)):
        yt = torch.from_numpy(y)
        t0 = torch.tensor(0.0, dtype=torch.float64)
        ft, Jt = prob.f(yt, prob.p, t0).numpy(), prob.jac(yt, prob.p, t0).numpy()
        fn, Jn = f_np(0.0, y), jac_np(0.0, y)
        ef = np.max(np.abs(fn - ft)) / max(np.max(np.abs(ft)), 1e-300)
        eJ = np.max(np.abs(Jn - Jt)) / max(np.max(np.abs(Jt)), 1e-300)
        if not (ef < 1e-12 and eJ < 1e-12):
            raise AssertionError(f"{name}: NumPy rhs/Jacobian disagree with pyode's (rel diff {ef:.1e}, {eJ:.1e})")


# ----------------------------------------------------------------------------------------------
# the solvers
# ----------------------------------------------------------------------------------------------

PYODE_METHODS = (  # label, algorithm factory, analytic jac?, order (for the slow-case prediction)
    ("Rosenbrock23", lambda: pyode.Rosenbrock23(), True, 2),
    ("Rodas4", lambda: pyode.Rodas4(), True, 4),
    ("Rodas5P", lambda: pyode.Rodas5P(), True, 5),
    ("Rodas5P-AD", lambda: pyode.Rodas5P(), False, 5),
    ("KenCarp4", lambda: pyode.KenCarp4(), True, 4),
    ("Kvaerno5", lambda: pyode.Kvaerno5(), True, 5),
    ("FBDF", lambda: pyode.FBDF(), True, 3),         # variable order 1-5: predicted like scipy BDF
    ("QNDF", lambda: pyode.QNDF(), True, 3),
    ("RadauIIA5", lambda: pyode.RadauIIA5(), True, 5),
    ("AutoTsit5-R23", lambda: pyode.AutoTsit5(pyode.Rosenbrock23()), True, 2),
    ("AutoTsit5-Rodas5P", lambda: pyode.AutoTsit5(pyode.Rodas5P()), True, 5),
)
METHOD_DOC = {"AutoTsit5-R23": "AutoTsit5(Rosenbrock23())", "AutoTsit5-Rodas5P": "AutoTsit5(Rodas5P())",
              "Rodas5P-AD": "Rodas5P() on prob.remake(jac=None)"}
SCIPY_METHODS = (("Radau", 5), ("BDF", 3), ("LSODA", 3))
BATCH_METHODS = (("Rodas5P", lambda: pyode.Rodas5P()), ("FBDF", lambda: pyode.FBDF()),
                 ("RadauIIA5", lambda: pyode.RadauIIA5()))


def pyode_runner(prob, make_alg, rtol, atol):
    t1 = prob.tspan[1]

    def run():
        sol = pyode.solve(prob, make_alg(), reltol=rtol, abstol=atol, saveat=[t1], dense=False, maxiters=10 ** 6)
        s = sol.stats
        return dict(u=sol.u[-1].numpy(), nf=s.nf, njac=s.njac, nlu=s.nlu, nsolve=s.nsolve,
                    naccept=int(s.naccept), nreject=int(s.nreject), nswitch=int(s.nswitch))
    return run


def scipy_runner(f, jac, y0, tspan, method, rtol, atol):
    def run():
        sol = solve_ivp(f, tspan, y0, method=method, rtol=rtol, atol=atol, jac=jac)
        if not sol.success:
            raise RuntimeError(sol.message)
        return dict(u=sol.y[:, -1].copy(), nf=int(sol.nfev), njac=int(sol.njev), nlu=int(sol.nlu), nsolve=None,
                    naccept=len(sol.t) - 1, nreject=None)
    return run


def reference(f, jac, y0, tspan, atol):
    t = time.perf_counter()
    sol = solve_ivp(f, tspan, y0, method="Radau", rtol=REF_RTOL, atol=atol, jac=jac)
    if not sol.success:
        raise RuntimeError(f"reference failed: {sol.message}")
    return sol.y[:, -1].copy(), dict(nfev=int(sol.nfev), steps=len(sol.t) - 1, seconds=time.perf_counter() - t)


# ----------------------------------------------------------------------------------------------
# part 1: work-precision tables
# ----------------------------------------------------------------------------------------------

def run_problem(name, spec, args):
    prob = spec["make"]()
    f_np, jac_np = spec["np"](prob.p.tolist() if isinstance(prob.p, torch.Tensor) else prob.p)
    check_numpy_versions(name, prob, f_np, jac_np)
    y0, tspan = prob.u0.numpy().copy(), prob.tspan
    print(f"\n{spec['title']}: abstol = {spec['atol_doc']}", flush=True)

    ref_u, ref_info = reference(f_np, jac_np, y0, tspan, spec["ref_atol"])
    ref_info["how"] = f"scipy Radau rtol={REF_RTOL:g} atol={spec['ref_atol']:g}, analytic Jacobian"
    key, ts_span, ts_atol = spec["test_set"]
    pub_t, pub_u = P.STIFF_REFERENCE[key]
    if ts_span is None:
        cmp_u, where = ref_u, f"t={tspan[1]:g}"
    else:   # the test set's value is at another time: a second reference run there
        cmp_u, info2 = reference(f_np, jac_np, y0, ts_span, ts_atol)
        where = f"t={ts_span[1]:g} (a second Radau run, atol={ts_atol:g}, {info2['seconds']:.1f} s)"
    assert abs(pub_t - (ts_span or tspan)[1]) < 1e-9 * pub_t
    d_rel, d_mixed = errors(cmp_u, pub_u)
    ref_info.update(vs_test_set_rel=d_rel, vs_test_set_mixed=d_mixed, vs_test_set_where=where)
    print(f"  reference: {ref_info['how']}: {ref_info['steps']} steps, {ref_info['seconds']:.1f} s; "
          f"vs the IVP test set's published solution at {where}: rel err {d_rel:.1e}, mixed err {d_mixed:.1e}",
          flush=True)

    # Warm-up: one loose solve per solver (first calls of torch ops and functorch are slow).
    runners = {}
    for label, make_alg, analytic, order in PYODE_METHODS:
        p = prob if analytic else prob.remake(jac=None)
        runners[("pyode", label)] = (lambda r, a, p=p, m=make_alg: pyode_runner(p, m, r, a), order)
    for method, order in SCIPY_METHODS:
        runners[("scipy", method)] = (lambda r, a, m=method: scipy_runner(f_np, jac_np, y0, tspan, m, r, a), order)
    for (lib, label), (mk, _) in runners.items():
        try:
            capped(mk(1e-3, spec["atol"](1e-3)), args.max_case_seconds)
        except CaseCapped:
            note(f"{name}: the warm-up solve of {lib} {label} at reltol 1e-3 passed the cap of "
                 f"{args.max_case_seconds:g} s and was stopped")
        except Exception:
            pass    # reported when it fails again below

    tables, last, before_last = [], {}, {}
    for rtol in args.reltols:
        atol = spec["atol"](rtol)
        rows = []
        for (lib, label), (mk, order) in runners.items():
            prev = last.get((lib, label))
            prev2 = before_last.get((lib, label))
            row = dict(library=lib, method=label, reltol=rtol, abstol=atol)
            if prev is not None and prev.get("median_s") is not None:
                # growth per tolerance decade: the order's 10^(1/(p+1)), or the one just observed if larger
                growth = 10.0 ** (1.0 / (order + 1))
                if prev2 is not None and prev2.get("median_s"):
                    decades = math.log10(prev2["reltol"] / prev["reltol"])
                    seen = (prev["median_s"] / prev2["median_s"]) ** (1.0 / decades)
                    growth = max(growth, seen)
                predicted = prev["median_s"] * growth ** math.log10(prev["reltol"] / rtol)
                if predicted > args.max_case_seconds:
                    row["skipped"] = (f"predicted {predicted:.0f} s (> --max-case-seconds {args.max_case_seconds:g}) "
                                      f"from {prev['median_s']:.1f} s at reltol {prev['reltol']:g}")
            elif prev is not None:
                why = "capped" if "capped" in prev else "failed" if "failed" in prev else "skipped"
                row["skipped"] = f"{why} at reltol {prev['reltol']:g}"
            if "skipped" not in row:
                try:
                    out, times = measure(mk(rtol, atol), args.repeats, args.budget, args.max_case_seconds)
                    rel, mixed = errors(out.pop("u"), ref_u)
                    med = statistics.median(times)
                    # pyode: per step attempt; scipy reports accepted steps only (its rejections are unknown)
                    steps = out["naccept"] + (out["nreject"] or 0)
                    row.update(out, times_s=times, median_s=med, rel_err=rel, mixed_err=mixed,
                               steps=steps, ms_per_step=med / steps * 1e3 if steps else float("nan"))
                except CaseCapped:
                    row["capped"] = f"a run passed the cap of {args.max_case_seconds:g} s (--max-case-seconds) and was stopped"
                except Exception as e:
                    row["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                    if args.verbose:
                        traceback.print_exc()
            rows.append(row)
            before_last[(lib, label)] = last.get((lib, label))
            last[(lib, label)] = row
            print("  " + format_row(row, rows), flush=True)
        tables.append(dict(reltol=rtol, abstol=atol, rows=rows))
    return dict(name=name, title=spec["title"], abstol_rule=spec["atol_doc"], reference=ref_info,
                reference_u=ref_u.tolist(), tables=tables)


def bdf_row(rows):
    return next((r for r in rows if r["library"] == "scipy" and r["method"] == "BDF" and r.get("median_s")), None)


def format_row(r, rows):
    head = f"{r['library']:<6}{r['method']:<18}{r['reltol']:>7.0e}"
    for kind in ("skipped", "capped"):
        if kind in r:
            return f"{head}  {kind}: {r[kind]}"
    if "failed" in r:
        return f"{head}  FAILED: {r['failed']}"
    b = bdf_row(rows)
    ratio = f"{r['median_s'] / b['median_s']:.2f}" if b else "-"
    rej = "-" if r["nreject"] is None else str(r["nreject"])
    sw = f"  switches {r['nswitch']}" if r.get("nswitch") else ""
    return (f"{head}{r['median_s'] * 1e3:10.1f}{len(r['times_s']):>3}{ratio:>7}{r['ms_per_step']:>8.3f}"
            f"{r['naccept']:>7}/{rej:<5}{r['nf']:>7}{r['njac']:>6}{r['nlu']:>6}"
            f"{r['rel_err']:>9.1e}{r['mixed_err']:>9.1e}{sw}")


TABLE_HEADER = (f"{'lib':<6}{'method':<18}{'reltol':>7}{'time ms':>10}{'n':>3}{'t/BDF':>7}{'ms/step':>8}"
                f"{'acc':>7}/{'rej':<5}{'nf':>7}{'njac':>6}{'nlu':>6}{'rel err':>9}{'mix err':>9}")


def print_problem(res):
    print(f"\n{res['title']}  (abstol = {res['abstol_rule']})")
    ref = res["reference"]
    print(f"  reference {ref['how']} ({ref['steps']} steps, {ref['seconds']:.1f} s); vs test set at "
          f"{ref['vs_test_set_where']}: rel {ref['vs_test_set_rel']:.1e}, mixed {ref['vs_test_set_mixed']:.1e}")
    print("  " + TABLE_HEADER)
    print("  " + "-" * len(TABLE_HEADER))
    for tab in res["tables"]:
        for r in tab["rows"]:
            print("  " + format_row(r, tab["rows"]))
        print()


# ----------------------------------------------------------------------------------------------
# part 2: summary at reltol 1e-6
# ----------------------------------------------------------------------------------------------

TARGET_RATIO = 1 / 3
SELECTION_RULE = ("pyode best = the fastest (method, reltol) over every pyode row of part 1 (all methods, "
                  "Rodas5P-AD included, every reltol run) whose rel err <= scipy Radau's rel err at reltol 1e-6; "
                  "its time is compared with scipy BDF's time at reltol 1e-6. Target: pyode best / BDF <= 1/3.")


def summarize(res, rtol=1e-6):
    """The project's target for one problem (see SELECTION_RULE)."""
    tab = next((t for t in res["tables"] if t["reltol"] == rtol), None)
    if tab is None:
        return None
    ok = [r for r in tab["rows"] if r.get("median_s") is not None]
    scipy_row = lambda m: next((r for r in ok if r["library"] == "scipy" and r["method"] == m), None)  # noqa: E731
    radau, bdf, lsoda = scipy_row("Radau"), scipy_row("BDF"), scipy_row("LSODA")
    if not (radau and bdf):
        return dict(name=res["name"], missing="scipy Radau or BDF at reltol 1e-6 did not run")
    ours = [r for t in res["tables"] for r in t["rows"] if r["library"] == "pyode" and r.get("median_s") is not None]
    accurate = [r for r in ours if r["rel_err"] <= radau["rel_err"]]
    out = dict(name=res["name"], rule=SELECTION_RULE, radau_rel_err=radau["rel_err"],
               radau_mixed_err=radau["mixed_err"], radau_s=radau["median_s"], bdf_s=bdf["median_s"],
               bdf_rel_err=bdf["rel_err"], lsoda_s=lsoda["median_s"] if lsoda else None,
               lsoda_rel_err=lsoda["rel_err"] if lsoda else None,
               n_pyode_rows=len(ours), n_accurate=len(accurate))
    if not accurate:
        out.update(best=None, target_met=False)
        return out
    best = min(accurate, key=lambda r: r["median_s"])
    # for context: the fastest accurate pyode row at reltol 1e-6 itself
    at_rtol = [r for r in accurate if r["reltol"] == rtol]
    same = min(at_rtol, key=lambda r: r["median_s"]) if at_rtol else None
    ratio = best["median_s"] / bdf["median_s"]
    out.update(best=best["method"], best_reltol=best["reltol"], best_s=best["median_s"],
               best_rel_err=best["rel_err"], best_mixed_err=best["mixed_err"], best_ms_per_step=best["ms_per_step"],
               best_steps=best["steps"], time_ratio_vs_bdf=ratio, time_ratio_vs_lsoda=
               best["median_s"] / lsoda["median_s"] if lsoda else None,
               target_met=ratio <= TARGET_RATIO,
               best_at_1e6=same and dict(method=same["method"], s=same["median_s"], rel_err=same["rel_err"],
                                         ratio_vs_bdf=same["median_s"] / bdf["median_s"]))
    return out


def print_summary(summaries):
    print("\nPart 2, the target at reltol 1e-6: pyode's best stiff method reaches at least scipy Radau's accuracy "
          "(at reltol 1e-6) at <= 1/3 of scipy BDF's wall time (at reltol 1e-6).")
    print("  " + SELECTION_RULE)
    print("  Last column: the fastest pyode row at reltol 1e-6 itself with err <= Radau's (method, time / BDF).")
    hdr = (f"  {'problem':<8}{'Radau err':>10}{'Radau ms':>9}{'BDF ms':>8}{'LSODA ms':>9}  {'pyode best':<18}"
           f"{'reltol':>7}{'ms':>8}{'rel err':>9}{'/BDF':>6}{'/LSODA':>7}  {'<=1/3':<6}{'at 1e-6 only':<24}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for s in summaries:
        if s is None:
            continue
        if s.get("missing"):
            print(f"  {s['name']:<8}({s['missing']})")
            continue
        head = (f"  {s['name']:<8}{s['radau_rel_err']:10.1e}{s['radau_s'] * 1e3:9.1f}{s['bdf_s'] * 1e3:8.1f}"
                + (f"{s['lsoda_s'] * 1e3:9.1f}" if s["lsoda_s"] else f"{'-':>9}"))
        if s["best"] is None:
            print(f"{head}  no pyode row (of {s['n_pyode_rows']}) reaches Radau's error -> target NOT met")
            continue
        same = s["best_at_1e6"]
        same_txt = f"{same['method']} {same['ratio_vs_bdf']:.2f}" if same else "none"
        lso = f"{s['time_ratio_vs_lsoda']:7.2f}" if s["time_ratio_vs_lsoda"] else f"{'-':>7}"
        print(f"{head}  {s['best']:<18}{s['best_reltol']:7.0e}{s['best_s'] * 1e3:8.1f}{s['best_rel_err']:9.1e}"
              f"{s['time_ratio_vs_bdf']:6.2f}{lso}  {'yes' if s['target_met'] else 'NO':<6}{same_txt:<24}")
    met = [s for s in summaries if s and not s.get("missing")]
    print(f"  Target met on {sum(bool(s.get('target_met')) for s in met)} of {len(met)} problems.")


# ----------------------------------------------------------------------------------------------
# part 3: batched ROBER
# ----------------------------------------------------------------------------------------------

def case_batch(args):
    B, rtol, tspan = args.batch, 1e-6, (0.0, 1e5)
    atol = 1e-4 * rtol
    k0 = np.array([0.04, 3e7, 1e4])
    rng = np.random.default_rng(args.seed)
    k = k0 * (1.0 + 0.2 * (2.0 * rng.random((B, 3)) - 1.0))       # uniform in k0 * [0.8, 1.2]
    u0 = np.tile([1.0, 0.0, 0.0], (B, 1))
    prob = P.robertson(k=torch.from_numpy(k), u0=torch.from_numpy(u0), tspan=tspan)
    title = (f"Batched ROBER: {B} rate-constant sets k = (0.04, 3e7, 1e4) * U(0.8, 1.2) (numpy seed {args.seed}), "
             f"t in (0, 1e5), reltol={rtol:g}, abstol={atol:g}")
    print(f"\n{title}", flush=True)

    pyrows, u_batches = [], {}
    for label, make_alg in BATCH_METHODS:
        def run_pyode(make_alg=make_alg):
            return pyode.solve(prob, make_alg(), reltol=rtol, abstol=atol, saveat=[tspan[1]], dense=False,
                               maxiters=10 ** 6, throw=False)
        run_pyode()                                                    # warm-up
        sol, times = measure(run_pyode, args.repeats, args.budget)
        py_s = statistics.median(times)
        n_ok = int((sol.retcode == pyode.ReturnCode.Success).sum())
        u_batches[label] = sol.u[-1].numpy()
        na = sol.stats.naccept.double()
        steps = (sol.stats.naccept + sol.stats.nreject).double()
        pyrows.append(dict(library="pyode", method=f"{label} (one batch)", alg=label, total_s=py_s,
                           per_problem_s=py_s / B, times_s=times, nf=sol.stats.nf, njac=sol.stats.njac,
                           nlu=sol.stats.nlu, naccept_mean=float(na.mean()), naccept_max=int(na.max()),
                           nreject_max=int(sol.stats.nreject.max()), batched_steps=int(steps.max()),
                           ms_per_batched_step=py_s / float(steps.max()) * 1e3, n_solved=B, n_success=n_ok))
        print(f"  pyode {label} batch of {B}: {py_s:.3f} s ({len(times)} runs), {py_s / B * 1e3:.3f} ms/problem; "
              f"{sol.stats.nf} batched f calls, accepted steps per member mean {float(na.mean()):.0f} "
              f"max {int(na.max())}; {n_ok}/{B} succeeded", flush=True)

    m = min(args.scipy_subset, B)
    subset = np.linspace(0, B - 1, m).round().astype(int)
    if m < B:
        note(f"batched ROBER: scipy solves a subset of {m} of the {B} problems (evenly spaced indices) one by one; "
             f"its total for {B} is that time x {B}/{m}")
    # Reference per problem of the subset: LSODA at rtol 1e-13 (Radau at rtol 1e-12 costs ~1 s per
    # problem here, LSODA ~0.05 s); checked against Radau on the first problem of the subset.
    refs = []
    t = time.perf_counter()
    for i in subset:
        f, jac = rober_np(k[i])
        sol_ref = solve_ivp(f, tspan, u0[i], method="LSODA", rtol=1e-13, atol=1e-20, jac=jac)
        assert sol_ref.success, sol_ref.message
        refs.append(sol_ref.y[:, -1].copy())
    refs = np.array(refs)
    ref_s = time.perf_counter() - t
    f, jac = rober_np(k[subset[0]])
    radau_u = reference(f, jac, u0[subset[0]], tspan, 1e-20)[0]
    ref_check = errors(refs[0], radau_u)
    ref_how = (f"scipy LSODA rtol=1e-13 atol=1e-20 per problem of the subset ({ref_s:.1f} s); on the first one it "
               f"differs from scipy Radau rtol={REF_RTOL:g} atol=1e-20 by rel {ref_check[0]:.1e}, "
               f"mixed {ref_check[1]:.1e}")
    print(f"  reference: {ref_how}", flush=True)
    for pyrow in pyrows:
        u_batch = u_batches[pyrow["alg"]]
        pyrow["rel_err_vs_ref"] = max(errors(u_batch[i], r)[0] for i, r in zip(subset, refs))
        pyrow["mixed_err_vs_ref"] = max(errors(u_batch[i], r)[1] for i, r in zip(subset, refs))

    rows = list(pyrows)
    for method, _ in SCIPY_METHODS:
        f, jac = rober_np(k[subset[0]])
        scipy_runner(f, jac, u0[0], tspan, method, rtol, atol)()     # warm-up
        t = time.perf_counter()
        outs = []
        for i in subset:
            f, jac = rober_np(k[i])
            outs.append(scipy_runner(f, jac, u0[i], tspan, method, rtol, atol)()["u"])
        elapsed = time.perf_counter() - t
        outs = np.array(outs)
        per = elapsed / m
        row = dict(library="scipy", method=f"{method} (one by one)", subset_s=elapsed, n_solved=m, per_problem_s=per,
                   total_s=per * B, extrapolated=m < B,
                   rel_err_vs_ref=max(errors(o, r)[0] for o, r in zip(outs, refs)),
                   mixed_err_vs_ref=max(errors(o, r)[1] for o, r in zip(outs, refs)))
        rows.append(row)
        for pyrow in pyrows:
            u_batch = u_batches[pyrow["alg"]]
            pyrow.setdefault("speedup", {})[method] = per / pyrow["per_problem_s"]
            pyrow.setdefault("vs_scipy_rel", {})[method] = max(errors(u_batch[i], o)[0] for i, o in zip(subset, outs))
        print(f"  scipy {method:<6} {m} problems one by one: {elapsed:.2f} s, {per * 1e3:.2f} ms/problem; pyode "
              + ", ".join(f"{p['alg']} {p['speedup'][method]:.1f}x" for p in pyrows) + " faster per problem",
              flush=True)
    return dict(title=title, batch=B, reltol=rtol, abstol=atol, seed=args.seed, subset=m, rows=rows,
                reference=ref_how, target_speedup=50)


def print_batch(res, single=None):
    """``single``: method -> seconds of one pyode ROBER solve at the same tolerances (part 1)."""
    B, single = res["batch"], single or {}
    print(f"\n{res['title']}")
    print(f"  errors over the {res['subset']} problems scipy solved; reference: {res['reference']}")
    pys = [r for r in res["rows"] if r["library"] == "pyode"]
    scs = [r for r in res["rows"] if r["library"] == "scipy"]
    names = [r["method"].split()[0] for r in scs]
    hdr = (f"  {'library':<8}{'method':<23}{'total s':>9}{'ms/problem':>11}{'rel err':>9}{'mix err':>9}"
           + "".join(f"{'x' + n:>9}" for n in names) + f"{'steps':>7}{'ms/step':>9}{'=singles':>9}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for r in pys:
        sp = "".join(f"{r['speedup'][n]:8.1f}{'' if r['speedup'][n] >= res['target_speedup'] else '!'}"
                     for n in names)
        one = single.get(r["alg"])
        print(f"  {r['library']:<8}{r['method']:<23}{r['total_s']:9.2f}{r['per_problem_s'] * 1e3:11.3f}"
              f"{r['rel_err_vs_ref']:9.1e}{r['mixed_err_vs_ref']:9.1e}{sp}{r['batched_steps']:7d}"
              f"{r['ms_per_batched_step']:9.2f}" + (f"{r['total_s'] / one:9.1f}" if one else f"{'-':>9}"))
    for r in scs:
        tot = f"{r['total_s']:.2f}" + ("*" if r.get("extrapolated") else "")
        print(f"  {r['library']:<8}{r['method']:<23}{tot:>9}{r['per_problem_s'] * 1e3:11.3f}"
              f"{r['rel_err_vs_ref']:9.1e}{r['mixed_err_vs_ref']:9.1e}")
    print(f"  (* = extrapolated from {res['subset']} problems to {B}.) 'xRadau' etc. = that scipy method's time per "
          f"problem (one by one) / the pyode batch's time per problem; target >= {res['target_speedup']}x against "
          f"each ('!' = below). steps = batched step attempts (the slowest member's); '=singles' = the batch's "
          f"time in single pyode ROBER solves of the same method (part 1, k unperturbed, reltol 1e-6).")
    for r in pys:
        met = all(v >= res["target_speedup"] for v in r["speedup"].values())
        print(f"  {r['alg']}: >= {res['target_speedup']}x against every scipy method: {'yes' if met else 'NO'} "
              f"(min {min(r['speedup'].values()):.1f}x); {r['n_success']}/{B} members succeeded; accepted steps "
              f"per member mean {r['naccept_mean']:.0f}, max {r['naccept_max']}; {r['nf']} batched f calls, "
              f"{r['njac']} Jacobians, {r['nlu']} LUs; pyode batch vs scipy one by one, max rel diff: "
              + ", ".join(f"{n} {v:.1e}" for n, v in r["vs_scipy_rel"].items()))


# ----------------------------------------------------------------------------------------------
# --profile: one Rodas5P ROBER solve
# ----------------------------------------------------------------------------------------------

def profile_rober(args):
    from torch.utils._python_dispatch import TorchDispatchMode

    prob = P.robertson()
    rtol, atol = 1e-6, 1e-10

    def run():
        return pyode.solve(prob, pyode.Rodas5P(), reltol=rtol, abstol=atol, saveat=[1e5])
    run()
    sol, times = measure(run, max(args.repeats, 5), 3.0)
    wall = statistics.median(times)
    steps = sol.stats.naccept + sol.stats.nreject

    class Ops(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args_=(), kwargs=None):
            Ops.n += 1
            return func(*args_, **(kwargs or {}))
    with Ops():
        run()
    n_ops = Ops.n
    y, t0 = prob.u0[None], torch.zeros(1, dtype=torch.float64)
    Ops.n = 0
    with Ops():
        prob.f(y, prob.p, t0)
    f_ops, Ops.n = Ops.n, 0
    with Ops():
        prob.jac(y, prob.p, t0)
    jac_ops = Ops.n

    a, b = torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    t = time.perf_counter()
    for _ in range(20000):
        torch.add(a, b)
    op_us = (time.perf_counter() - t) / 20000 * 1e6

    # View 1: each component timed alone (no profiler), times its count in the solve; the rest is glue.
    def us(fn, n=2000):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1e6
    y, t0, p = prob.u0[None].clone(), torch.zeros(1, dtype=torch.float64), prob.p
    J = prob.jac(y, p, t0)
    W = torch.eye(3, dtype=torch.float64) / (1e2 * 0.2) - J
    LU, piv, _ = torch.linalg.lu_factor_ex(W)
    rhs = prob.f(y, p, t0)[..., None]
    try:    # pyode's own df/dt code path (internal API: fall back to torch.func.jvp if it moved)
        from pyode.native._integrate import _CountingRHS
        from pyode.native._jacobian import JacobianEvaluator
        evaluator = JacobianEvaluator(_CountingRHS(prob.f, p, torch.Size([1]), 3), None, True)
        evaluator._dfdt_forward(y[0:1], t0)
        dfdt_fn = lambda: evaluator._dfdt_forward(y, t0)  # noqa: E731
    except Exception:
        dfdt_fn = lambda: torch.func.jvp(lambda tt: prob.f(y, p, tt), (t0,), (torch.ones_like(t0),))  # noqa: E731
    comp = [
        ("f (the user's rhs, one (1, 3) call)", us(lambda: prob.f(y, p, t0)), sol.stats.nf),
        ("analytic jac (one call)", us(lambda: prob.jac(y, p, t0)), sol.stats.njac),
        ("df/dt (pyode's forward-mode AD in t)", us(dfdt_fn), sol.stats.njac),
        ("torch.linalg.lu_factor_ex (1, 3, 3)", us(lambda: torch.linalg.lu_factor_ex(W)), sol.stats.nlu),
        ("torch.linalg.lu_solve (1, 3, 3) x (1, 3, 1)", us(lambda: torch.linalg.lu_solve(LU, piv, rhs)),
         sol.stats.nsolve),
    ]
    comp_total = sum(c * n for _, c, n in comp) / 1e6
    lines_c = [f"  Components timed alone x their count in the solve (no profiler):"]
    for label, c, n in comp:
        lines_c.append(f"    {label:<48}{c:7.1f} us x {n:5d} = {c * n / 1e3:7.1f} ms {100 * c * n / 1e6 / wall:5.1f} %")
    lines_c.append(f"    {'everything else (pyode glue: W, stage sums, masks, controller, saving)':<66}"
                   f"{(wall - comp_total) * 1e3:9.1f} ms {100 * (wall - comp_total) / wall:5.1f} %  "
                   f"{(wall - comp_total) / steps * 1e6:.0f} us/step")

    pr = cProfile.Profile()
    pr.enable()
    run()
    pr.disable()
    st = pstats.Stats(pr).stats       # (file, line, func) -> (cc, nc, tottime, cumtime, callers)

    def cum(func, file_part=""):
        return sum(v[3] for k, v in st.items() if k[2] == func and file_part in k[0])

    def builtin(name):   # cProfile names C functions '<built-in method torch._C._linalg.linalg_lu_solve>'
        return sum(v[2] for k, v in st.items() if k[0] == "~" and k[2].endswith(f".{name}>"))
    total = cum("solve", "_solve.py")
    step = cum("step", "_rosenbrock.py")
    jac = cum("__call__", "_jacobian.py")
    user_jac = cum("flat_jac", "_integrate.py")
    f_counted = cum("__call__", "_integrate.py")
    lu = builtin("linalg_lu_factor_ex")
    lus = builtin("linalg_lu_solve")
    lin = cum("lincomb", "_explicit_rk.py")
    user_f = cum("_robertson_rhs")
    parts = [
        ("Jacobian (analytic jac + dfdt by forward-mode AD of f in t)", jac),
        ("   of which the analytic jac (incl. reshape/checks)", user_jac),
        ("   of which dfdt (AD through f, although f ignores t)", jac - user_jac),
        ("LU factorisation (lu_factor_ex)", lu),
        ("triangular solves (lu_solve)", lus),
        ("f evaluations (counted stages, incl. pyode's wrapper)", f_counted),
        ("   (the user's f itself, all calls incl. the df/dt AD call: {} ms)", None),
        ("stage linear combinations (lincomb)", lin),
        ("rest of the Rosenbrock step (W, where, eye, ...)", step - jac - lu - lus - f_counted - lin),
        ("integration loop outside the step (controller, saving, sync)", total - step),
    ]
    lines = [f"Profile: pyode Rodas5P on ROBER (0..1e5), reltol={rtol:g}, abstol={atol:g}, 1 thread",
             f"  wall time {wall * 1e3:.1f} ms (median of {len(times)}) for {steps} steps "
             f"({sol.stats.naccept} accepted): {wall / steps * 1e6:.0f} us/step; nf={sol.stats.nf} "
             f"({sol.stats.nf / steps:.1f}/step), njac={sol.stats.njac}, nlu={sol.stats.nlu}, "
             f"nsolve={sol.stats.nsolve}",
             f"  aten ops dispatched in one solve: {n_ops} ({n_ops / steps:.0f} per step); one tiny torch.add costs "
             f"{op_us:.1f} us here, so dispatch alone is ~{n_ops * op_us / 1e3:.0f} ms of the {wall * 1e3:.0f} ms; "
             f"ROBER's f is {f_ops} aten ops, its jac {jac_ops}",
             *lines_c,
             f"  cProfile (total {total * 1e3:.0f} ms: the profiler inflates Python-heavy parts), shares of the solve:"]
    parts = [(lab.format(f"{user_f * 1e3:.1f}"), s) for lab, s in parts]
    for label, s in parts:
        if s is None:
            lines.append(f"    {label}")
            continue
        lines.append(f"    {label:<66}{s * 1e3:8.1f} ms {100 * s / total:5.1f} %  {s / steps * 1e6:6.0f} us/step")
    print("\n" + "\n".join(lines), flush=True)
    return dict(lines=lines, wall_s=wall, steps=int(steps), n_ops=n_ops, op_us=op_us, f_ops=f_ops, jac_ops=jac_ops,
                components_us={label: c for label, c, _ in comp},
                parts={label.strip(): s for label, s in parts}, profiled_total_s=total)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller time caps and scipy subset")
    ap.add_argument("--threads", type=int, default=1, help="torch (and BLAS) threads (default 1)")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/stiff-<name>.json)")
    ap.add_argument("--name", default=None, help="<name> of the default JSON file (default: full or quick)")
    ap.add_argument("--problems", default="rober,hires,pollu,orego,vdpol", help="comma list (default: all five)")
    ap.add_argument("--reltols", default=None, help="comma list (default 1e-4,1e-6,1e-8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5, --quick 3)")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop repeating a measurement once its runs total this many seconds "
                         "(default 1.5, --quick 0.4)")
    ap.add_argument("--max-case-seconds", type=float, default=None,
                    help="skip a row whose predicted time (from the looser tolerance) exceeds this "
                         "(default 10, --quick 1.5)")
    ap.add_argument("--batch", type=int, default=1024, help="batched ROBER size (default 1024)")
    ap.add_argument("--scipy-subset", type=int, default=None,
                    help="problems of the batch scipy solves one by one (default 64, --quick 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-batch", action="store_true", help="skip part 3")
    ap.add_argument("--profile", action="store_true", help="also profile one Rodas5P ROBER solve")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.budget = args.budget if args.budget is not None else (0.4 if args.quick else 1.5)
    if args.max_case_seconds is None:
        args.max_case_seconds = 1.5 if args.quick else 10.0
    args.scipy_subset = args.scipy_subset or (16 if args.quick else 64)
    args.reltols = tuple(float(x) for x in args.reltols.split(",")) if args.reltols else RELTOLS
    args.problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    known = ("rober", "hires", "pollu", "orego", "vdpol")
    bad = [p for p in args.problems if p not in known]
    if bad:
        ap.error(f"--problems: unknown {bad}; choose from {','.join(known)}")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    global np, torch, pyode, P, solve_ivp
    import numpy as np
    import scipy
    import torch
    import pyode
    import pyode.problems as P
    from scipy.integrate import solve_ivp

    torch.set_num_threads(args.threads)
    versions = {"python": platform.python_version(), "pyode": pyode.__version__, "torch": torch.__version__,
                "numpy": np.__version__, "scipy": scipy.__version__}
    print(f"pyode stiff benchmarks, torch threads={torch.get_num_threads()}, {'quick' if args.quick else 'full'} run "
          f"(up to {args.repeats} timed runs after a warm-up, fewer once they total {args.budget:g} s; median)")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    t_start = time.perf_counter()
    specs = problem_specs()
    part_s = {}
    results = []
    for name in args.problems:
        t = time.perf_counter()
        results.append(run_problem(name, specs[name], args))
        part_s[name] = time.perf_counter() - t
    summaries = [summarize(r) for r in results]
    batch = prof = None
    if not args.no_batch:
        t = time.perf_counter()
        batch = case_batch(args)
        part_s["batch"] = time.perf_counter() - t
    if args.profile:
        t = time.perf_counter()
        prof = profile_rober(args)
        part_s["profile"] = time.perf_counter() - t
    wall = time.perf_counter() - t_start

    print("\n" + "=" * 110)
    print(f"Results (torch threads={torch.get_num_threads()}; time = median of up to {args.repeats} runs after a "
          f"warm-up; n = runs timed; t/BDF = time / scipy BDF's time at the same tolerances)")
    print(f"  rel err = max_i |u_i - ref_i| / |ref_i| over components with |ref_i| >= {ERR_FLOOR:g}; "
          f"mix err = max_i |u_i - ref_i| / (1 + |ref_i|); both at the final time, ref = scipy Radau at "
          f"rtol={REF_RTOL:g}")
    print("=" * 110)
    for r in results:
        print_problem(r)
    print_summary(summaries)
    if batch:
        single = {r["method"]: r["median_s"] for res in results if res["name"] == "rober" for tab in res["tables"]
                  if tab["reltol"] == 1e-6 for r in tab["rows"] if r["library"] == "pyode" and r.get("median_s")}
        print_batch(batch, single)
    if prof:
        print("\n" + "\n".join(prof["lines"]))
    print("\nNotes:")
    for line in NOTES_FIXED + NOTES:
        print(f"  - {line}")
    print(f"\nTotal benchmark time {wall:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in part_s.items()) + ")")

    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), argv=sys.argv[1:],
                versions=versions, torch_threads=torch.get_num_threads(), blas_threads_env=args.threads,
                platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                quick=args.quick, repeats=args.repeats, budget_s=args.budget,
                max_case_seconds=args.max_case_seconds, total_seconds=wall, part_seconds=part_s,
                error_definition=dict(rel=f"max |u-ref|/|ref| over |ref| >= {ERR_FLOOR:g}",
                                      mixed="max |u-ref|/(1+|ref|)"))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"stiff-{args.name or ('quick' if args.quick else 'full')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(dict(meta=meta, notes=NOTES_FIXED + NOTES, problems=results, summary=summaries, batch=batch,
                       profile=prof), fh, indent=1, default=_json_default)
    print(f"Results written to {out}")
    return 0


NOTES_FIXED = [
    "pyode nf counts calls of f for the stages, Newton iterations and the initial-step probe; the forward-mode AD "
    "call that pyode uses for df/dt (and, for Rodas5P-AD, the vmapped jvp that forms J) is not counted. scipy nfev "
    "likewise counts f calls (Newton iterations for Radau/BDF); scipy reports no rejected steps; LSODA's nlu equals "
    "its njev.",
    "ms/step = time / steps: pyode counts accepted + rejected step attempts, scipy only accepted steps (it does not "
    "report rejections), so scipy's ms/step is slightly high.",
    "pyode rows take the problem's analytic Jacobian (pyode.problems), except Rodas5P-AD: the same problem remade "
    "with jac=None, so J comes from torch.func forward-mode AD. AutoTsit5-R23 / AutoTsit5-Rodas5P are "
    "AutoTsit5(Rosenbrock23()) / AutoTsit5(Rodas5P()); 'switches' = their stiff/non-stiff switches. pyode solves "
    "save only t1 with dense=False. scipy gets hand-written NumPy f and Jacobians, checked against pyode's torch "
    "versions at start-up.",
    "Time cap (--max-case-seconds): a row whose time predicted from the looser tolerance exceeds the cap is "
    "skipped, a run that passes the cap is stopped and the row reported 'capped'; tighter tolerances of that "
    "method are then skipped.",
    "Warm-up: each solver first solves the problem once at reltol 1e-3 (pyode's first calls of torch ops and "
    "torch.func are slow); each batched method warms up with one full solve.",
]


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    sys.exit(main())
