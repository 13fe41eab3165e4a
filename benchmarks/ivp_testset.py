#!/usr/bin/env python
"""Work-precision on the IVP test set's stiff problems at their published intervals.

Usage::

    python benchmarks/ivp_testset.py [--problems rober,hires,pollu,orego,vdpol,vdpolm,e5]
                                     [--rtols 1e-4,1e-6,1e-8,1e-10] [--algs Rodas5P,FBDF,...]
                                     [--threads 1] [--out FILE]

Every pyode stiff algorithm (analytic Jacobians, default settings: no dt, dtmin or maxiters) and
scipy's ``solve_ivp`` Radau, BDF and LSODA (NumPy right-hand side and Jacobian) solve each problem of
``pyode.problems.ivp_test_set`` on its published interval with the test set's tolerance conventions
(atol = rtol, except ROBER 1e-4 rtol and E5 1.7e-24), in one run. Each row: return code, significant
correct digits at the end point against the published reference (the test set's scd; see
``IVPTestProblem.digits``), wall time (best of ``--repeats``), f-evaluations and steps.

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
            for a in algs:
                alg = _algorithm(pyode, a)
                sec, sol = _best_time(lambda: pyode.solve(prob, alg, reltol=rtol, abstol=atol,
                                                          saveat=[prob.tspan[1]], throw=False), args.repeats)
                ok = sol.retcode == pyode.ReturnCode.Success
                rows.append(dict(problem=name, rtol=rtol, method=a, retcode=sol.retcode.name,
                                 digits=tp.digits(sol.u[-1]) if ok else None, seconds=sec, nf=int(sol.stats.nf),
                                 steps=int(sol.stats.naccept + sol.stats.nreject)))
            for r in rows[-(len(SCIPY) + len(algs)):]:
                dg = f"{r['digits']:6.2f}" if r["digits"] is not None else "     -"
                print(f"{name:7s} {rtol:6.0e} {r['method']:20s} {r['retcode']:14s} {dg} {r['seconds']:8.3f} "
                      f"{r['nf']:7d} {r['steps']:6d}", flush=True)
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
