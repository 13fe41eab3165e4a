#!/usr/bin/env python
"""Events side by side with scipy's ``solve_ivp(events=...)`` and torchdiffeq's ``odeint_event``, in one
process; and a Robertson DAE against its ODE form.

Usage::

    python benchmarks/events.py [--threads 1] [--repeats 7]

Cases (float64, CPU, the default path of each library):

1. Robertson to the time y3 reaches 0.5 (a terminating event, t* = 268.33), rtol 1e-8 / atol 1e-12:
   pyode Rodas5P with ``ContinuousCallback(terminate=True)`` forward, and with ``dt*/d log k``
   (DirectAdjoint, ForwardSensitivity, GaussAdjoint); scipy Radau, BDF and LSODA with a terminal
   event (analytic Jacobian). Error: |t* - t*_ref| / t*_ref, reference scipy Radau at rtol 1e-12.
2. The bouncing ball (g = 9.81, e = 0.8, h0 = 10) through 5 bounces, rtol 1e-10 / atol 1e-12: pyode
   Tsit5 with one ``ContinuousCallback``; scipy DOP853 restarted at each bounce (its events
   terminate, the usual idiom); torchdiffeq ``odeint_event`` (dopri5) restarted at each bounce, the
   ball lifted by 1e-7 each time as in torchdiffeq's example (else the event fires again at once).
   Error: the 5th bounce time against the closed form.
3. Robertson as an index-1 DAE (``mass_matrix``) against its ODE form, to 1e5, rtol 1e-8 /
   atol 1e-14, Rodas5P, RadauIIA5 and FBDF (scipy has no DAE solver).

Each row: the median of ``--repeats`` timed calls after one warm-up call, and the ratio to the first
pyode row of the case.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time


def _time(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch
    from scipy.integrate import solve_ivp

    import pyode

    torch.set_num_threads(args.threads)
    F64 = torch.float64
    rows = []

    def report(case, name, seconds, error):
        rows.append((case, name, seconds, error))
        base = next(r[2] for r in rows if r[0] == case)
        err = "" if error is None else f"{error:9.1e}"
        print(f"  {name:<46s} {seconds * 1e3:9.2f} ms  {seconds / base:6.2f}x  {err}")

    # ---- case 1 ------------------------------------------------------------------------------------
    print("case 1: Robertson until y3 = 0.5 (terminating event), rtol 1e-8, atol 1e-12")
    k1, k2, k3 = 0.04, 3e7, 1e4

    def rober(u, p, t):
        k = torch.exp(p)
        y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3,
                            k[1] * y2 ** 2], -1)

    def rober_np(t, y):
        return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2], k2 * y[1] ** 2]

    def rober_jac(t, y):
        return [[-k1, k3 * y[2], k3 * y[1]], [k1, -2 * k2 * y[1] - k3 * y[2], -k3 * y[1]], [0, 2 * k2 * y[1], 0]]

    def threshold(t, y):
        return y[2] - 0.5
    threshold.terminal = True

    ref = solve_ivp(rober_np, (0, 1e5), [1, 0, 0], method="Radau", jac=rober_jac, events=threshold,
                    rtol=1e-12, atol=1e-20).t_events[0][0]
    logk = torch.log(torch.tensor([k1, k2, k3], dtype=F64))
    cb = pyode.ContinuousCallback(lambda u, p, t: u[..., 2] - 0.5, terminate=True)
    u0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)

    def pyode_event(sensealg=None):
        def run():
            lk = logk.clone().requires_grad_(sensealg is not None)
            kw = {} if sensealg is None else {"sensealg": sensealg, "saveat": [1.0]}
            sol = pyode.solve(pyode.ODEProblem(rober, u0, (0.0, 1e5), lk), pyode.Rodas5P(), callback=cb,
                              reltol=1e-8, abstol=1e-12, **kw)
            if sensealg is not None:
                sol.t_events[0].backward()
            return float(sol.t_events[0].detach())
        return run

    t_star = pyode_event()()
    report(1, "pyode Rodas5P, forward", _time(pyode_event(), args.repeats), abs(t_star - ref) / ref)
    for sa in (pyode.DirectAdjoint(), pyode.ForwardSensitivity(), pyode.GaussAdjoint()):
        report(1, f"pyode Rodas5P + dt*/dlog k, {type(sa).__name__}", _time(pyode_event(sa), args.repeats), None)
    for method in ("Radau", "BDF", "LSODA"):
        def run(method=method):
            return solve_ivp(rober_np, (0, 1e5), [1, 0, 0], method=method, jac=rober_jac, events=threshold,
                             rtol=1e-8, atol=1e-12).t_events[0][0]
        report(1, f"scipy {method}, forward", _time(run, args.repeats), abs(run() - ref) / ref)

    # ---- case 2 ------------------------------------------------------------------------------------
    print("case 2: bouncing ball through 5 bounces, rtol 1e-10, atol 1e-12")
    g, e, h0 = 9.81, 0.8, 10.0
    v, t = math.sqrt(2 * g * h0), math.sqrt(2 * h0 / g)
    bounces = [t]
    for _ in range(4):
        v *= e
        t += 2 * v / g
        bounces.append(t)
    T = bounces[-1] + 0.5

    def ball(u, p, t):
        return torch.stack([u[..., 1], -p[0] * torch.ones_like(u[..., 0])], -1)

    bounce = pyode.ContinuousCallback(lambda u, p, t: u[..., 0],
                                      lambda u, p, t: torch.stack([u[..., 0], -p[1] * u[..., 1]], -1), direction=-1)
    p = torch.tensor([g, e], dtype=F64)

    def pyode_ball():
        sol = pyode.solve(pyode.ODEProblem(ball, torch.tensor([h0, 0.0], dtype=F64), (0.0, T), p), pyode.Tsit5(),
                          callback=bounce, saveat=[T], reltol=1e-10, abstol=1e-12)
        return float(sol.t_events[4])

    def floor(t, y):
        return y[0]
    floor.terminal, floor.direction = True, -1

    def scipy_ball():
        t0, y, times = 0.0, [h0, 0.0], []
        while len(times) < 5:
            s = solve_ivp(lambda t, y: [y[1], -g], (t0, T), y, method="DOP853", events=floor,
                          rtol=1e-10, atol=1e-12)
            t0 = s.t_events[0][0]
            y = [0.0, -e * s.y_events[0][0][1]]
            times.append(t0)
        return times[-1]

    report(2, "pyode Tsit5, one callback", _time(pyode_ball, args.repeats), abs(pyode_ball() - bounces[-1]))
    report(2, "scipy DOP853, restarted per bounce", _time(scipy_ball, args.repeats), abs(scipy_ball() - bounces[-1]))
    try:
        from torchdiffeq import odeint_event
    except ImportError:
        print("  torchdiffeq not installed: skipped")
    else:
        def tde_ball():
            t0 = torch.tensor(0.0, dtype=F64)
            y = torch.tensor([h0, 0.0], dtype=F64)
            for _ in range(5):
                t0, ys = odeint_event(lambda t, y: torch.stack([y[1], torch.tensor(-g, dtype=F64)]), y, t0,
                                      event_fn=lambda t, y: y[0], method="dopri5", rtol=1e-10, atol=1e-12)
                # torchdiffeq's own bouncing-ball example lifts the ball by 1e-7 after each bounce, so
                # that the event function does not fire again at once
                y = torch.stack([torch.tensor(1e-7, dtype=F64), -e * ys[-1][1]])
            return float(t0)
        report(2, "torchdiffeq odeint_event dopri5, restarted", _time(tde_ball, args.repeats),
               abs(tde_ball() - bounces[-1]))

    # ---- case 3 ------------------------------------------------------------------------------------
    print("case 3: Robertson as an index-1 DAE against its ODE form, to 1e5, rtol 1e-8, atol 1e-14")
    ts = torch.logspace(-5, 5, 23, dtype=F64)
    s = solve_ivp(rober_np, (0, 1e5), [1, 0, 0], method="Radau", jac=rober_jac, t_eval=ts.numpy(),
                  rtol=1e-10, atol=1e-18)
    want = torch.tensor(s.y.T, dtype=F64)
    scale = want.abs().amax(0)

    def rober_dae(u, p, t):
        k = torch.exp(p)
        y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[1] * y2 ** 2 - k[2] * y2 * y3,
                            y1 + y2 + y3 - 1], -1)

    M = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    for alg in (pyode.Rodas5P(), pyode.RadauIIA5(), pyode.FBDF()):
        for name, f, mass in (("DAE", rober_dae, M), ("ODE", rober, None)):
            def run(alg=alg, f=f, mass=mass):
                return pyode.solve(pyode.ODEProblem(f, u0, (0.0, 1e5), logk, mass_matrix=mass), alg, saveat=ts,
                                   reltol=1e-8, abstol=1e-14)
            err = float(((run().u - want).abs() / scale).max())
            report(3, f"pyode {type(alg).__name__}, {name}", _time(run, args.repeats), err)
    print(f"(torch {torch.__version__}, {args.threads} thread(s); error columns as described in the docstring; "
          f"numpy {np.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
