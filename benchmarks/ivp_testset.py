#!/usr/bin/env python
"""Work-precision on the IVP test set's stiff problems at their published intervals.

Usage::

    python benchmarks/ivp_testset.py [--problems rober,hires,pollu,orego,vdpol,vdpolm,e5]
                                     [--rtols 1e-4,1e-6,1e-8,1e-10] [--algs Rodas5P,FBDF,...]
                                     [--threads 1] [--repeats N] [--compile] [--out FILE]

Every pyode stiff algorithm (analytic Jacobians, default settings: no dt, dtmin or maxiters) and
scipy's ``solve_ivp`` Radau, BDF and LSODA (NumPy right-hand side and Jacobian) solve each problem of
``pyode.problems.ivp_test_set`` on its published interval with the test set's tolerance conventions
(atol = rtol, except ROBER 1e-4 rtol and E5 1.7e-24), in one run. Each row: return code, significant
correct digits at the end point against the published reference (the test set's scd; see
``IVPTestProblem.digits``), wall time (best of ``--repeats``), f-evaluations and steps.

With ``--compile`` the Rosenbrock methods also run with ``compile=True`` (a warm-up solve compiles
first; its time is kept as ``compile_s``). When rtol 1e-6 is among the tolerances, a summary gives
the speed target: per problem, the fastest pyode row with at least scipy Radau's digits at 1e-6,
over scipy BDF's time at 1e-6, on the default path and compiled, and the geometric means. scipy
here calls pyode's torch right-hand side and Jacobian through NumPy conversions (what a user with a
torch model would hand it): about 3x slower per call than the hand-written NumPy functions of
``stiff.py``.

Tolerances do not mean the same thing everywhere: pyode's RadauIIA5 (as RADAU5 and
OrdinaryDiffEq.jl) tests its order-3 error estimate against ``0.1 rtol^(2/3)``, scipy's Radau against
``rtol`` itself, so at equal ``rtol`` scipy's Radau computes more digits for more work. Compare rows
on digits against time, not at equal ``rtol``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

ALG_NAMES = ("Rosenbrock23", "Rodas4", "Rodas5P", "KenCarp4", "Kvaerno5", "RadauIIA5", "FBDF", "QNDF",
             "AutoTsit5(Rodas5P)")
SCIPY = ("Radau", "BDF", "LSODA")


def _algorithm(pyode, name):
    if name == "AutoTsit5(Rodas5P)":
        return pyode.AutoTsit5(pyode.Rodas5P())
    return getattr(pyode, name)()


def _numpy_rhs(prob, torch):
    p = prob.p

    def f(t, y):
        with torch.no_grad():
            return prob.f(torch.from_numpy(y), p, torch.tensor(t, dtype=torch.float64)).numpy()

    def jac(t, y):
        with torch.no_grad():
            return prob.jac(torch.from_numpy(y), p, torch.tensor(t, dtype=torch.float64)).numpy()
    return f, jac


#: methods that ``compile=True`` runs on the fused path
COMPILABLE = ("Rosenbrock23", "Rodas4", "Rodas5P")
#: the tolerance of the speed target: scipy's Radau accuracy and BDF's time are taken there
TARGET_RTOL = 1e-6


def summary(rows, problems) -> None:
    """Per problem, the fastest pyode row (any rtol that ran) with at least scipy Radau's digits at
    1e-6, against scipy BDF's time at 1e-6 (and LSODA's), for the default path and for compile=True;
    then the geometric means over the problems."""
    def at(problem, method):
        return next((r for r in rows if r["problem"] == problem and r["method"] == method
                     and r["rtol"] == TARGET_RTOL), None)

    print(f"\nTarget: each problem's fastest pyode row with at least scipy Radau's digits at rtol {TARGET_RTOL:g}, "
          f"its time over scipy BDF's at {TARGET_RTOL:g} (geometric mean <= 1 default, <= 1/3 compiled)")
    print(f"{'problem':8s} {'Radau dg':>8s} {'BDF s':>8s} {'LSODA s':>8s}  {'default: method':28s} {'dg':>5s} "
          f"{'s':>8s} {'/BDF':>6s}  {'compiled: method':30s} {'dg':>5s} {'s':>8s} {'/BDF':>6s} {'/LSODA':>7s}")
    ratios = {"default": [], "compiled": []}
    for p in problems:
        radau, bdf, lsoda = at(p, "scipy Radau"), at(p, "scipy BDF"), at(p, "scipy LSODA")
        if radau is None or bdf is None or radau["digits"] is None:
            continue
        cells = []
        for kind in ("default", "compiled"):
            ok = [r for r in rows if r["problem"] == p and not r["method"].startswith("scipy")
                  and r["method"].endswith("/compile") == (kind == "compiled")
                  and r["digits"] is not None and r["digits"] >= radau["digits"]]
            if not ok:
                cells.append(f"{'(none reaches Radau)':28s} {'':>5s} {'':>8s} {'':>6s}")
                continue
            best = min(ok, key=lambda r: r["seconds"])
            ratios[kind].append(best["seconds"] / bdf["seconds"])
            cell = (f"{best['method'] + ' @' + format(best['rtol'], 'g'):28s} {best['digits']:5.2f} "
                    f"{best['seconds']:8.3f} {best['seconds'] / bdf['seconds']:6.2f}")
            if kind == "compiled" and lsoda is not None and lsoda["retcode"] == "Success":
                cell += f" {best['seconds'] / lsoda['seconds']:7.2f}"
            cells.append(cell)
        lsoda_s = f"{lsoda['seconds']:8.3f}" if lsoda is not None and lsoda["retcode"] == "Success" else "    fail"
        print(f"{p:8s} {radau['digits']:8.2f} {bdf['seconds']:8.3f} {lsoda_s}  {cells[0]}  {cells[1]}")
    for kind, rs in ratios.items():
        if rs:
            gm = math.exp(sum(math.log(r) for r in rs) / len(rs))
            print(f"geometric mean of time / BDF, {kind}: {gm:.2f} over {len(rs)} problems")


def _best_time(run, repeats):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="rober,hires,pollu,orego,vdpol,vdpolm,e5")
    ap.add_argument("--rtols", default="1e-4,1e-6,1e-8,1e-10")
    ap.add_argument("--algs", default=",".join(ALG_NAMES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file for every row")
    ap.add_argument("--compile", action="store_true",
                    help=f"also run {', '.join(COMPILABLE)} with compile=True (a warm-up solve compiles first)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch
    from scipy.integrate import solve_ivp
    import pyode
    from pyode.problems import ivp_test_set

    torch.set_num_threads(args.threads)
    rtols = [float(r) for r in args.rtols.split(",")]
    algs = [a for a in args.algs.split(",") if a]
    unknown = [a for a in algs if a not in ALG_NAMES]
    if unknown:
        ap.error(f"--algs: unknown {unknown}; choose from {', '.join(ALG_NAMES)}")
    rows = []
    header = f"{'problem':7s} {'rtol':>6s} {'method':20s} {'retcode':14s} {'digits':>6s} {'time s':>8s} {'nf':>7s} {'steps':>6s}"
    print(header)
    print("-" * len(header))
    for name in args.problems.split(","):
        tp = ivp_test_set(name)
        prob = tp.prob
        f, jac = _numpy_rhs(prob, torch)
        y0 = prob.u0.numpy()
        for rtol in rtols:
            atol = tp.abstol(rtol)
            for method in SCIPY:
                sec, s = _best_time(lambda: solve_ivp(f, prob.tspan, y0, method=method, jac=jac, rtol=rtol,
                                                      atol=atol), args.repeats)
                code = "Success" if s.status == 0 else f"status {s.status}"
                rows.append(dict(problem=name, rtol=rtol, method="scipy " + method, retcode=code,
                                 digits=tp.digits(s.y[:, -1]) if s.status == 0 else None, seconds=sec,
                                 nf=int(s.nfev), steps=len(s.t) - 1))
            variants = [(a, None) for a in algs]
            if args.compile:
                variants += [(a, True) for a in algs if a in COMPILABLE]
            for a, compiled in variants:
                alg = _algorithm(pyode, a)
                kwargs = {} if compiled is None else dict(compile=True)
                run = lambda: pyode.solve(prob, alg, reltol=rtol, abstol=atol,  # noqa: E731
                                          saveat=[prob.tspan[1]], throw=False, **kwargs)
                compile_s = None
                if compiled:
                    t0 = time.perf_counter()
                    run()                         # compiles (once per problem and method)
                    compile_s = time.perf_counter() - t0
                sec, sol = _best_time(run, args.repeats)
                ok = sol.retcode == pyode.ReturnCode.Success
                rows.append(dict(problem=name, rtol=rtol, method=a + ("/compile" if compiled else ""),
                                 retcode=sol.retcode.name, digits=tp.digits(sol.u[-1]) if ok else None, seconds=sec,
                                 nf=int(sol.stats.nf), steps=int(sol.stats.naccept + sol.stats.nreject),
                                 compile_s=compile_s))
            for r in rows[-(len(SCIPY) + len(variants)):]:
                dg = f"{r['digits']:6.2f}" if r["digits"] is not None else "     -"
                print(f"{name:7s} {rtol:6.0e} {r['method']:20s} {r['retcode']:14s} {dg} {r['seconds']:8.3f} "
                      f"{r['nf']:7d} {r['steps']:6d}", flush=True)
    if TARGET_RTOL in rtols:
        summary(rows, args.problems.split(","))
    failed = [r for r in rows if r["retcode"] != "Success" and not r["method"].startswith("scipy")]
    print(f"\npyode rows: {sum(not r['method'].startswith('scipy') for r in rows)}, "
          f"not Success: {len(failed)}")
    for r in failed:
        print(f"  {r['problem']} rtol={r['rtol']:g} {r['method']}: {r['retcode']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(rows=rows, threads=args.threads, torch=torch.__version__, numpy=np.__version__),
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
