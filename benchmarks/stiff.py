#!/usr/bin/env python
"""pyode's Rosenbrock methods against scipy's stiff solvers on the classic stiff test problems.

Usage::

    python benchmarks/stiff.py [--quick] [--threads 1] [--out FILE] [--problems rober,hires,pollu,orego,vdpol]
                               [--no-batch] [--profile]

Part 1, work-precision: ROBER (t in 0..1e5), HIRES, POLLU, OREGO and VDPOL (Hairer's scaled van der
Pol, eps = 1e-6, u0 = (2, 0), t in 0..2: the IVP test set's problem) at reltol 1e-4, 1e-6, 1e-8 with
pyode Rosenbrock23 / Rodas4 / Rodas5P (analytic Jacobian), Rodas5P with a forward-mode AD Jacobian
(the problem remade with jac=None), and scipy solve_ivp Radau / BDF / LSODA (NumPy right-hand side
and analytic NumPy Jacobian): wall time, work counters, error at the final time against a scipy
Radau reference at rtol = 1e-12 (itself compared with the test set's published values).
Part 2, summary at reltol 1e-6: pyode's best method against scipy Radau's error and BDF's time.
Part 3, batched ROBER: 1024 rate-constant sets (+-20 %, seeded) as one pyode Rodas5P batch against
scipy solving them one by one (a subset, extrapolated).
--profile: where the time of one Rodas5P ROBER solve goes (cProfile + an aten-op count).

See benchmarks/README.md ("Stiff problems") for the definitions of every column.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import math
import os
import platform
import pstats
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

def measure(fn, repeats: int, budget: float):
    """Time ``fn`` (already warmed up): ``repeats`` runs, fewer once their total passes ``budget``
    seconds (at least one). Returns (output of the last run, list of seconds)."""
    times, out = [], None
    while len(times) < repeats:
        t = time.perf_counter()
        out = fn()
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
)
SCIPY_METHODS = (("Radau", 5), ("BDF", 3), ("LSODA", 3))


def pyode_runner(prob, make_alg, rtol, atol):
    t1 = prob.tspan[1]

    def run():
        sol = pyode.solve(prob, make_alg(), reltol=rtol, abstol=atol, saveat=[t1], maxiters=10 ** 6)
        s = sol.stats
        return dict(u=sol.u[-1].numpy(), nf=s.nf, njac=s.njac, nlu=s.nlu, nsolve=s.nsolve,
                    naccept=int(s.naccept), nreject=int(s.nreject))
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
    for key_, (mk, _) in runners.items():
        try:
            mk(1e-3, spec["atol"](1e-3))()
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
                row["skipped"] = "failed or skipped at a looser tolerance"
            if "skipped" not in row:
                try:
                    out, times = measure(mk(rtol, atol), args.repeats, args.budget)
                    rel, mixed = errors(out.pop("u"), ref_u)
                    row.update(out, times_s=times, median_s=statistics.median(times), rel_err=rel, mixed_err=mixed)
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
    head = f"{r['library']:<6}{r['method']:<13}{r['reltol']:>7.0e}"
    if "skipped" in r:
        return f"{head}  skipped: {r['skipped']}"
    if "failed" in r:
        return f"{head}  FAILED: {r['failed']}"
    b = bdf_row(rows)
    ratio = f"{r['median_s'] / b['median_s']:.2f}" if b else "-"
    rej = "-" if r["nreject"] is None else str(r["nreject"])
    return (f"{head}{r['median_s'] * 1e3:10.1f}{len(r['times_s']):>3}{ratio:>8}{r['nf']:>7}{r['njac']:>6}"
            f"{r['nlu']:>6}{r['naccept']:>7}/{rej:<5}{r['rel_err']:>9.1e}{r['mixed_err']:>9.1e}")


TABLE_HEADER = (f"{'lib':<6}{'method':<13}{'reltol':>7}{'time ms':>10}{'n':>3}{'t/BDF':>8}{'nf':>7}{'njac':>6}"
                f"{'nlu':>6}{'  acc/rej':<13}{'rel err':>9}{'mix err':>9}")


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

def summarize(res, rtol=1e-6):
    tab = next((t for t in res["tables"] if t["reltol"] == rtol), None)
    if tab is None:
        return None
    ok = [r for r in tab["rows"] if r.get("median_s") is not None]
    radau = next((r for r in ok if r["library"] == "scipy" and r["method"] == "Radau"), None)
    bdf = bdf_row(ok)
    ours = [r for r in ok if r["library"] == "pyode" and r["method"] != "Rodas5P-AD"]
    if not (radau and bdf and ours):
        return dict(name=res["name"], missing=True)
    accurate = [r for r in ours if r["rel_err"] <= radau["rel_err"]]
    best = min(accurate or ours, key=lambda r: r["median_s"])
    ratio = best["median_s"] / bdf["median_s"]
    return dict(name=res["name"], best=best["method"], best_s=best["median_s"], best_rel_err=best["rel_err"],
                best_mixed_err=best["mixed_err"], radau_rel_err=radau["rel_err"], radau_mixed_err=radau["mixed_err"],
                radau_s=radau["median_s"], bdf_s=bdf["median_s"], bdf_rel_err=bdf["rel_err"],
                time_ratio_vs_bdf=ratio, accuracy_ok=best["rel_err"] <= radau["rel_err"],
                time_ok=ratio <= 1 / 3, target_met=best["rel_err"] <= radau["rel_err"] and ratio <= 1 / 3)


def print_summary(summaries):
    print("\nSummary at reltol 1e-6: pyode's best stiff method (analytic Jacobian; the fastest one whose rel err "
          "is <= scipy Radau's, else the fastest) vs scipy Radau's accuracy and scipy BDF's time. "
          "Target: err <= Radau's err AND time <= 1/3 of BDF's.")
    hdr = (f"  {'problem':<8}{'pyode best':<14}{'time ms':>9}{'rel err':>9}{'Radau err':>10}{'Radau ms':>9}"
           f"{'BDF ms':>8}{'pyode/BDF':>10}  {'err<=Radau':<11}{'t<=BDF/3':<9}{'target':<7}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for s in summaries:
        if s is None:
            continue
        if s.get("missing"):
            print(f"  {s['name']:<8}(a row is missing: skipped or failed)")
            continue
        yn = lambda b: "yes" if b else "NO"  # noqa: E731
        print(f"  {s['name']:<8}{s['best']:<14}{s['best_s'] * 1e3:9.1f}{s['best_rel_err']:9.1e}"
              f"{s['radau_rel_err']:10.1e}{s['radau_s'] * 1e3:9.1f}{s['bdf_s'] * 1e3:8.1f}"
              f"{s['time_ratio_vs_bdf']:10.2f}  {yn(s['accuracy_ok']):<11}{yn(s['time_ok']):<9}"
              f"{yn(s['target_met']):<7}")


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

    def run_pyode():
        sol = pyode.solve(prob, pyode.Rodas5P(), reltol=rtol, abstol=atol, saveat=[tspan[1]], maxiters=10 ** 6)
        assert sol.success
        return sol
    run_pyode()                                                    # warm-up
    sol, times = measure(run_pyode, args.repeats, args.budget)
    u_batch = sol.u[-1].numpy()
    py_s = statistics.median(times)
    na = sol.stats.naccept.double()
    pyrow = dict(library="pyode", method="Rodas5P (one batch)", total_s=py_s, per_problem_s=py_s / B, times_s=times,
                 nf=sol.stats.nf, njac=sol.stats.njac, nlu=sol.stats.nlu, naccept_mean=float(na.mean()),
                 naccept_max=int(na.max()), nreject_max=int(sol.stats.nreject.max()), n_solved=B)
    print(f"  pyode Rodas5P batch of {B}: {py_s:.3f} s ({len(times)} runs), {py_s / B * 1e3:.3f} ms/problem; "
          f"{sol.stats.nf} batched f calls, accepted steps per member mean {pyrow['naccept_mean']:.0f} "
          f"max {pyrow['naccept_max']}", flush=True)

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
    pyrow["rel_err_vs_ref"] = max(errors(u_batch[i], r)[0] for i, r in zip(subset, refs))
    pyrow["mixed_err_vs_ref"] = max(errors(u_batch[i], r)[1] for i, r in zip(subset, refs))

    rows = [pyrow]
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
                   mixed_err_vs_ref=max(errors(o, r)[1] for o, r in zip(outs, refs)),
                   pyode_vs_this_rel=max(errors(u_batch[i], o)[0] for i, o in zip(subset, outs)),
                   pyode_vs_this_mixed=max(errors(u_batch[i], o)[1] for i, o in zip(subset, outs)),
                   speedup_pyode=per / pyrow["per_problem_s"])
        rows.append(row)
        print(f"  scipy {method:<6} {m} problems one by one: {elapsed:.2f} s, {per * 1e3:.2f} ms/problem, "
              f"pyode is {row['speedup_pyode']:.1f}x faster per problem", flush=True)
    return dict(title=title, batch=B, reltol=rtol, abstol=atol, seed=args.seed, subset=m, rows=rows,
                reference=ref_how)


def print_batch(res, single_s=None):
    B = res["batch"]
    print(f"\n{res['title']}")
    print(f"  errors over the {res['subset']} problems scipy solved; reference: {res['reference']}")
    print("  rel err / mix err: against the reference; pyode-this: pyode's batch result against this row's "
          "one-by-one results")
    hdr = (f"  {'library':<7}{'method':<22}{'total s':>9}{'ms/problem':>11}{'pyode x':>9}{'>=50x':>6}{'rel err':>9}"
           f"{'mix err':>9}{'pyode-this rel':>15}{'mixed':>9}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for r in res["rows"]:
        tot = f"{r['total_s']:.2f}" + ("*" if r.get("extrapolated") else "")
        sp = f"{r['speedup_pyode']:.1f}" if "speedup_pyode" in r else "-"
        ok = ("yes" if r["speedup_pyode"] >= 50 else "NO") if "speedup_pyode" in r else "-"
        pv = (f"{r['pyode_vs_this_rel']:15.1e}{r['pyode_vs_this_mixed']:9.1e}" if "pyode_vs_this_rel" in r
              else f"{'-':>15}{'-':>9}")
        print(f"  {r['library']:<7}{r['method']:<22}{tot:>9}{r['per_problem_s'] * 1e3:11.3f}{sp:>9}"
              f"{r['rel_err_vs_ref']:9.1e}{r['mixed_err_vs_ref']:9.1e}{pv}")
    py = res["rows"][0]
    best = min(res["rows"][1:], key=lambda r: r["per_problem_s"])
    print(f"  (* = extrapolated from {res['subset']} problems to {B}.) 'pyode x' = scipy time per problem / pyode "
          f"time per problem; target >= 50x. Against the fastest scipy method ({best['method'].split()[0]}): "
          f"{best['speedup_pyode']:.1f}x -> target {'met' if best['speedup_pyode'] >= 50 else 'NOT met'}. "
          f"pyode batch: accepted steps per member mean {py['naccept_mean']:.0f}, max {py['naccept_max']}; "
          f"{py['nf']} batched f calls, {py['njac']} batched Jacobians and {py['nlu']} batched LUs.")
    if single_s:
        print(f"  One pyode Rodas5P ROBER solve at the same tolerances (part 1, k unperturbed) takes "
              f"{single_s * 1e3:.0f} ms: "
              f"the batch of {B} costs {py['total_s'] / single_s:.1f} single solves.")


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
        single = next((r.get("median_s") for res in results if res["name"] == "rober" for tab in res["tables"]
                       if tab["reltol"] == 1e-6 for r in tab["rows"] if r["library"] == "pyode"
                       and r["method"] == "Rodas5P"), None)
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
    "pyode nf counts calls of f for the stages and the initial-step probe; the forward-mode AD call that pyode uses "
    "for df/dt (and, for Rodas5P-AD, the vmapped jvp that forms J) is not counted. scipy nfev likewise counts f calls "
    "(Newton iterations for Radau/BDF); scipy reports no rejected steps; LSODA's nlu equals its njev.",
    "pyode rows take the problem's analytic Jacobian (pyode.problems), except Rodas5P-AD: the same problem remade "
    "with jac=None, so J comes from torch.func forward-mode AD. scipy gets hand-written NumPy f and Jacobians, "
    "checked against pyode's torch versions at start-up.",
    "Warm-up: each solver first solves the problem once at reltol 1e-3 (pyode's first calls of torch ops and "
    "torch.func are slow); the batched case warms up with one full solve.",
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
