#!/usr/bin/env python
"""pyode.compat.torchdiffeq against torchdiffeq itself: the same user code through both, in one process.

Usage::

    python benchmarks/compat_torchdiffeq.py [--quick] [--threads 1] [--cases A,B,C] [--out FILE]

Case A: Chen et al.'s spiral (an nn.Module func, 2-50-2 tanh MLP applied to y**3, a batch of 16
states, 10 output times on [0, 1]; float32 and float64; torchdiffeq's default rtol 1e-7, atol 1e-9)
through torchdiffeq.odeint and the compat odeint (dopri5 and tsit5): forward and forward + backward
time, NFE, max error against scipy DOP853, gradient error.
Case B: the same func's gradient through torchdiffeq.odeint_adjoint, the compat odeint_adjoint
(default and seminorm) and the compat odeint with method="tsit5" and pyode's GaussAdjoint /
InterpolatingAdjoint: forward + backward time, forward and backward NFE, gradient error.
Case C: Robertson's stiff kinetics (float64, rtol 1e-6, atol 1e-10): torchdiffeq dopri5 under a step
budget and scipy_solver (LSODA, Radau) against the compat odeint with rodas5p, fbdf, kencarp4.

See benchmarks/README.md ("torchdiffeq drop-in") for what every column means.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Timer, ratio  # noqa: E402  (run.py imports torch only in its main())

# numpy, torch, scipy, pyode and torchdiffeq are imported in main() once the thread count is set.
np = torch = nn = pyode = compat = torchdiffeq = solve_ivp = None

NOTES = []
SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
B, T = 16, 10
RTOL, ATOL = 1e-7, 1e-9                       # torchdiffeq's defaults
REF_TOL = 1e-12
K = (0.04, 3e7, 1e4)                           # Robertson's rate constants
ROBER_T = (0.0, 1e-2, 1.0, 1e2, 1e4)
ROBER_RTOL, ROBER_ATOL = 1e-6, 1e-10


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


def counted(func, track_t: bool = False):
    """``func(t, y)`` as an ``nn.Module`` that counts its calls (and holds ``func``'s parameters, so the
    adjoints find them). With ``track_t`` it keeps the last ``t`` it was called at."""

    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.func, self.n, self.t_last = func, 0, None

        def forward(self, t, y):
            self.n += 1
            if track_t:
                self.t_last = float(t)
            return self.func(t, y)

    return Counted()


def flat_grad(module):
    return torch.cat([q.grad.reshape(-1).to(torch.float64) for q in module.parameters()])


def grad_err(g, ref):
    return float((g - ref).norm() / ref.norm())


def median_ms(times):
    return statistics.median(times) * 1e3


def guarded(label, fn, args):
    """Run one measurement; a failing peer becomes a note, not the end of the run."""
    try:
        return fn()
    except Exception as e:
        note(f"{label} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if args.verbose:
            traceback.print_exc()
        return None


# ----------------------------------------------------------------------------------------------
# the spiral (cases A and B)
# ----------------------------------------------------------------------------------------------

def make_spiral_func(dtype):
    """torchdiffeq's ``examples/ode_demo.py`` ODEFunc: ``net(y**3)``, normal(0, 0.1) weights, zero biases."""

    class ODEFunc(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, mean=0, std=0.1)
                    nn.init.constant_(m.bias, val=0)

        def forward(self, t, y):
            return self.net(y ** 3)

    torch.manual_seed(0)
    return ODEFunc().to(dtype)          # float32 weights, cast exactly to float64


def spiral_setup():
    """16 starting states on the true spiral's trajectory from (2, 0) (rounded to float32, so both dtypes
    start alike), the output times, and the float64 references: states from scipy DOP853 (numpy MLP,
    flattened batch, piecewise between output times), gradient of ``mean(out**2)`` from the compat
    ``odeint`` (dopri8) at rtol = atol = 1e-12, cross-checked with torchdiffeq's dopri8."""
    A = np.array(SPIRAL_A)
    traj = solve_ivp(lambda t, y: (y ** 3) @ A, (0.0, 25.0), [2.0, 0.0], method="DOP853", rtol=1e-10, atol=1e-10,
                     t_eval=np.linspace(0.0, 25.0, 1000)).y.T
    idx = np.random.default_rng(0).choice(1000, B, replace=False)
    y0 = torch.as_tensor(traj[idx]).float().double()
    ts = torch.linspace(0.0, 1.0, T, dtype=torch.float64)

    func64 = make_spiral_func(torch.float64)
    (W1, b1), (W2, b2) = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in func64.net
                          if isinstance(m, nn.Linear)]

    def f_np(t, y):
        h = np.tanh((y.reshape(-1, 2) ** 3) @ W1.T + b1)
        return (h @ W2.T + b2).ravel()

    t0 = time.perf_counter()
    ys, y, nfev = [y0.numpy().ravel()], y0.numpy().ravel(), 0
    for a, b in zip(ts[:-1].tolist(), ts[1:].tolist()):
        sol = solve_ivp(f_np, (a, b), y, method="DOP853", rtol=REF_TOL, atol=REF_TOL)
        assert sol.success, sol.message
        y, nfev = sol.y[:, -1], nfev + sol.nfev
        ys.append(y)
    ref_u = np.stack(ys).reshape(T, B, 2)

    grads = {}
    for name, odeint, opts in (("compat", compat.odeint, None), ("torchdiffeq", torchdiffeq.odeint, {"step_t": ts})):
        func64.zero_grad()
        out = odeint(func64, y0, ts, method="dopri8", rtol=REF_TOL, atol=REF_TOL, options=opts)
        out.pow(2).mean().backward()
        grads[name] = (flat_grad(func64), float(np.max(np.abs(out.detach().numpy() - ref_u))))
    ref_g, state_err = grads["compat"]
    how = (f"states: scipy DOP853 rtol=atol={REF_TOL:g} on the flattened float64 batch, piecewise between output "
           f"times ({nfev} RHS calls, {time.perf_counter() - t0:.1f} s); gradient of mean(out**2): compat odeint "
           f"dopri8 float64 rtol=atol={REF_TOL:g}, autograd (states {state_err:.1e} from scipy's; torchdiffeq "
           f"dopri8 with step_t at the same tolerances: gradient {grad_err(grads['torchdiffeq'][0], ref_g):.1e} "
           f"relative from it, states {grads['torchdiffeq'][1]:.1e})")
    print(f"\n  spiral reference: {how}", flush=True)
    return dict(y0=y0, ts=ts, ref_u=ref_u, ref_g=ref_g, how=how)


def case_odeint(args, timer, setup):
    results = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        func = counted(make_spiral_func(dtype))
        y0, ts = setup["y0"].to(dtype), setup["ts"].to(dtype)
        title = (f"Case A: odeint, Chen's spiral (16 x 2, 2-50-2 tanh MLP on y**3, {dtype_name}), t = linspace(0, 1, "
                 f"{T}), rtol={RTOL:g} atol={ATOL:g} (torchdiffeq's defaults)")
        print(f"\n{title}", flush=True)
        rows = []
        for lib, odeint, method in (("torchdiffeq", torchdiffeq.odeint, "dopri5"),
                                    ("compat", compat.odeint, "dopri5"),
                                    ("compat", compat.odeint, "tsit5")):
            row = dict(library=lib, call="odeint", method=method, vs="torchdiffeq dopri5" if lib == "compat" else None)

            def solve(odeint=odeint, method=method):
                func.n = 0
                return odeint(func, y0, ts, rtol=RTOL, atol=ATOL, method=method), func.n

            def fwd():
                with torch.no_grad():
                    return solve()

            def fwd_bwd():
                func.zero_grad()
                out, _ = solve()
                out.pow(2).mean().backward()
                return flat_grad(func)

            def measure(row=row):
                (out, nfe), times = timer(fwd)
                row.update(fwd_times_s=times, fwd_ms=median_ms(times), nfe=nfe,
                           max_err=float(np.max(np.abs(out.double().numpy() - setup["ref_u"]))))
                g, times = timer(fwd_bwd)
                row.update(fwdbwd_times_s=times, fwdbwd_ms=median_ms(times), grad_err=grad_err(g, setup["ref_g"]))
                return row

            if guarded(f"{lib} odeint {method} ({dtype_name})", measure, args) is not None:
                rows.append(row)
                print(f"    {lib:<12}{method:<8} fwd {row['fwd_ms']:8.2f} ms  fwd+bwd {row['fwdbwd_ms']:8.2f} ms  "
                      f"nfe={row['nfe']:<4} err={row['max_err']:.1e}  grad err={row['grad_err']:.1e}", flush=True)
        results.append(dict(name="odeint", title=title, dtype=dtype_name, reference=setup["how"], rows=rows))
    return results


def case_adjoint(args, timer, setup):
    results = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        func = counted(make_spiral_func(dtype))
        y0, ts = setup["y0"].to(dtype), setup["ts"].to(dtype)
        title = (f"Case B: gradients by adjoint, the same spiral ({dtype_name}), loss mean(out**2), "
                 f"rtol={RTOL:g} atol={ATOL:g}")
        print(f"\n{title}", flush=True)
        semi = {"adjoint_options": {"norm": "seminorm"}}
        variants = (
            ("torchdiffeq", "odeint_adjoint", "dopri5", torchdiffeq.odeint_adjoint, {}, None),
            ("torchdiffeq", "odeint_adjoint seminorm", "dopri5", torchdiffeq.odeint_adjoint, semi, None),
            ("compat", "odeint_adjoint", "dopri5", compat.odeint_adjoint, {}, "odeint_adjoint"),
            ("compat", "odeint_adjoint seminorm", "dopri5", compat.odeint_adjoint, semi, "odeint_adjoint seminorm"),
            ("compat", "odeint GaussAdjoint()", "tsit5", compat.odeint, {"sensealg": pyode.GaussAdjoint()},
             "odeint_adjoint"),
            ("compat", "odeint InterpolatingAdjoint()", "tsit5", compat.odeint,
             {"sensealg": pyode.InterpolatingAdjoint()}, "odeint_adjoint"),
        )
        rows = []
        for lib, call, method, odeint, kw, vs in variants:
            row = dict(library=lib, call=call, method=method, vs=vs and f"torchdiffeq {vs}")

            def fwd_bwd(odeint=odeint, method=method, kw=kw):
                func.zero_grad()
                func.n = 0
                out = odeint(func, y0, ts, rtol=RTOL, atol=ATOL, method=method, **kw)
                nfe_fwd = func.n
                out.pow(2).mean().backward()
                return flat_grad(func), nfe_fwd, func.n - nfe_fwd

            def measure(row=row, fwd_bwd=fwd_bwd):
                (g, nfe_fwd, nfe_bwd), times = timer(fwd_bwd)
                row.update(fwdbwd_times_s=times, fwdbwd_ms=median_ms(times), nfe_fwd=nfe_fwd, nfe_bwd=nfe_bwd,
                           grad_err=grad_err(g, setup["ref_g"]))
                return row

            if guarded(f"{lib} {call} ({dtype_name})", measure, args) is not None:
                rows.append(row)
                print(f"    {lib:<12}{call:<30}{method:<7} fwd+bwd {row['fwdbwd_ms']:8.1f} ms  "
                      f"nfe {row['nfe_fwd']}/{row['nfe_bwd']}  grad err={row['grad_err']:.1e}", flush=True)
        results.append(dict(name="adjoint", title=title, dtype=dtype_name, reference=setup["how"], rows=rows))
    return results


# ----------------------------------------------------------------------------------------------
# case C: Robertson
# ----------------------------------------------------------------------------------------------

def rober(t, y):
    y1, y2, y3 = y.unbind(-1)
    k1, k2, k3 = K
    return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2 ** 2 - k3 * y2 * y3, k2 * y2 ** 2], -1)


def rober_np(t, y):
    y1, y2, y3 = y
    k1, k2, k3 = K
    return np.array([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2 ** 2 - k3 * y2 * y3, k2 * y2 ** 2])


def rober_jac_np(t, y):
    y1, y2, y3 = y
    k1, k2, k3 = K
    return np.array([[-k1, k3 * y3, k3 * y2], [k1, -2 * k2 * y2 - k3 * y3, -k3 * y2], [0.0, 2 * k2 * y2, 0.0]])


def case_stiff(args, timer):
    t_ref = time.perf_counter()
    ref = solve_ivp(rober_np, (ROBER_T[0], ROBER_T[-1]), [1.0, 0.0, 0.0], method="Radau", t_eval=ROBER_T,
                    rtol=REF_TOL, atol=1e-20, jac=rober_jac_np)
    assert ref.success, ref.message
    ref_u = ref.y.T
    how = (f"scipy Radau rtol={REF_TOL:g} atol=1e-20, analytic Jacobian, {time.perf_counter() - t_ref:.1f} s; "
           f"error = max |u - ref| / |ref| over t > 0 and components with |ref| >= 1e-12")
    title = (f"Case C: Robertson (k = {K}, y0 = (1, 0, 0), float64), t = {list(ROBER_T)}, "
             f"rtol={ROBER_RTOL:g} atol={ROBER_ATOL:g}, forward only")
    print(f"\n{title}\n  reference: {how}", flush=True)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ts = torch.tensor(ROBER_T, dtype=torch.float64)
    mask = np.abs(ref_u) >= 1e-12

    def rel_err(u):
        return float(np.max(np.abs(u.numpy() - ref_u)[mask] / np.abs(ref_u)[mask]))

    rows = []
    vs = "torchdiffeq scipy_solver LSODA"

    # dopri5 gets a step budget and one attempt: it is not expected to finish.
    budget = args.dopri5_steps
    func = counted(rober, track_t=True)
    row = dict(library="torchdiffeq", method="dopri5", gradients="yes", vs=None)
    t0 = time.perf_counter()
    try:
        u = torchdiffeq.odeint(func, y0, ts, rtol=ROBER_RTOL, atol=ROBER_ATOL, method="dopri5",
                               options={"max_num_steps": budget})
        row.update(times_s=[time.perf_counter() - t0], nfe=func.n, max_err=rel_err(u))
    except Exception as e:          # expected: torchdiffeq's AssertionError "max_num_steps exceeded"
        row.update(times_s=[time.perf_counter() - t0], nfe=func.n,
                   failed=f"{type(e).__name__}: {e}: stopped at t = {func.t_last:.3g} of {ROBER_T[-1]:g} "
                          f"(torchdiffeq counts max_num_steps per output interval)")
    row["ms"] = median_ms(row["times_s"])
    rows.append(row)
    print(f"    torchdiffeq dopri5 (max_num_steps={budget}): {row['ms'] / 1e3:.1f} s, nfe={row['nfe']}"
          f"{', ' + row['failed'] if 'failed' in row else ''}", flush=True)

    for lib, method, kw, grads in (
            ("torchdiffeq", "scipy_solver LSODA", dict(method="scipy_solver", options={"solver": "LSODA"}), "no"),
            ("torchdiffeq", "scipy_solver Radau", dict(method="scipy_solver", options={"solver": "Radau"}), "no"),
            ("compat", "rodas5p", dict(method="rodas5p"), "yes"),
            ("compat", "fbdf", dict(method="fbdf"), "yes"),
            ("compat", "kencarp4", dict(method="kencarp4"), "yes")):
        odeint = torchdiffeq.odeint if lib == "torchdiffeq" else compat.odeint
        func = counted(rober)
        row = dict(library=lib, method=method, gradients=grads, vs=vs if lib == "compat" else None)

        def solve(odeint=odeint, kw=kw, func=func):
            func.n = 0
            with warnings.catch_warnings():
                # torchdiffeq hands solve_ivp a min_step that Radau and LSODA do not take
                warnings.filterwarnings("ignore", message="The following arguments have no effect")
                return odeint(func, y0, ts, rtol=ROBER_RTOL, atol=ROBER_ATOL, **kw), func.n

        def measure(row=row, solve=solve):
            (u, nfe), times = timer(solve)
            row.update(times_s=times, ms=median_ms(times), nfe=nfe, max_err=rel_err(u))
            return row

        if guarded(f"{lib} {method}", measure, args) is not None:
            rows.append(row)
            print(f"    {lib:<12}{method:<20}{row['ms']:9.1f} ms  nfe={row['nfe']:<6} err={row['max_err']:.1e}",
                  flush=True)
    return [dict(name="stiff", title=title, dtype="float64", reference=how, rows=rows, dopri5_budget=budget)]


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------

def _vs_row(row, rows, key):
    """The torchdiffeq row this compat row is compared with."""
    if not row.get("vs"):
        return None
    for r in rows:
        if r["library"] == "torchdiffeq" and f"torchdiffeq {r[key]}" == row["vs"]:
            return r
    return None


def _td_over(row, rows, key, col):
    """torchdiffeq's time / this row's time (>1: the compat row is faster)."""
    b = _vs_row(row, rows, key)
    return "-" if b is None or col not in b or col not in row else ratio(b[col], row[col])


def table(case) -> str:
    rows = case["rows"]
    out = [case["title"], f"  reference: {case['reference']}"]
    if case["name"] == "odeint":
        hdr = (f"  {'library':<13}{'method':<8}{'fwd ms':>9}{'td/this':>9}{'fwd+bwd ms':>12}{'td/this':>9}"
               f"{'NFE':>6}{'max err':>10}{'grad err':>10}")
        out += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in rows:
            out.append(f"  {r['library']:<13}{r['method']:<8}{r['fwd_ms']:9.2f}"
                       f"{_td_over(r, rows, 'method', 'fwd_ms'):>9}{r['fwdbwd_ms']:12.2f}"
                       f"{_td_over(r, rows, 'method', 'fwdbwd_ms'):>9}{r['nfe']:>6}{r['max_err']:>10.1e}"
                       f"{r['grad_err']:>10.1e}")
    elif case["name"] == "adjoint":
        hdr = (f"  {'library':<13}{'call':<31}{'method':<8}{'fwd+bwd ms':>11}{'td/this':>9}  {'vs':<25}"
               f"{'NFE fwd':>8}{'NFE bwd':>8}{'grad err':>10}")
        out += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in rows:
            vs = (r["vs"] or "-").replace("torchdiffeq ", "")
            out.append(f"  {r['library']:<13}{r['call']:<31}{r['method']:<8}{r['fwdbwd_ms']:11.1f}"
                       f"{_td_over(r, rows, 'call', 'fwdbwd_ms'):>9}  {vs:<25}{r['nfe_fwd']:>8}{r['nfe_bwd']:>8}"
                       f"{r['grad_err']:>10.1e}")
    else:
        hdr = (f"  {'library':<13}{'method':<20}{'time ms':>10}{'LSODA/this':>11}{'NFE':>8}{'max rel err':>13}"
               f"  {'gradients':<10}")
        out += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in rows:
            err = "failed" if "failed" in r else f"{r['max_err']:.1e}"
            out.append(f"  {r['library']:<13}{r['method']:<20}{r['ms']:10.1f}"
                       f"{_td_over(r, rows, 'method', 'ms').replace('scipy_solver ', ''):>11}{r['nfe']:>8}"
                       f"{err:>13}  {r['gradients']:<10}")
            if "failed" in r:
                out.append(f"  {'':<13}(max_num_steps={case['dopri5_budget']}: {r['failed']})")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 timed repeats, 0.2 s minimum per measurement, dopri5 budget 2000 steps in case C")
    ap.add_argument("--threads", type=int, default=1, help="torch (and BLAS) threads (default 1)")
    ap.add_argument("--cases", default="A,B,C", help="comma list of cases (default A,B,C)")
    ap.add_argument("--dtypes", default="float32,float64", help="dtypes of cases A and B (default both)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 7, --quick 3)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="keep repeating a fast measurement until this many seconds (default 0.5, --quick 0.2)")
    ap.add_argument("--dopri5-steps", type=int, default=None,
                    help="case C: torchdiffeq dopri5's max_num_steps (default 20000, --quick 2000)")
    ap.add_argument("--out", default=None,
                    help="JSON file (default benchmarks/results/compat_torchdiffeq-<full|quick>.json)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing rows")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 0.5)
    args.dopri5_steps = args.dopri5_steps or (2000 if args.quick else 20000)
    args.cases = {c.strip().upper() for c in args.cases.split(",") if c.strip()}
    if not args.cases <= {"A", "B", "C"}:
        ap.error(f"--cases: unknown case(s) {sorted(args.cases - {'A', 'B', 'C'})}; cases are A, B and C")
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in ("float32", "float64"):
            ap.error(f"--dtypes: {d!r} is not float32 or float64")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    global np, torch, nn, pyode, compat, torchdiffeq, solve_ivp
    import numpy as np
    import torch
    from torch import nn

    import pyode
    import pyode.compat.torchdiffeq as compat
    try:
        import torchdiffeq
        from scipy.integrate import solve_ivp
    except ImportError as e:
        sys.exit(f"this benchmark compares with torchdiffeq and needs scipy for its references: {e} "
                 "(pip install -e '.[bench]')")

    torch.set_num_threads(args.threads)
    import scipy
    versions = {"python": platform.python_version(), "pyode": pyode.__version__, "torch": torch.__version__,
                "torchdiffeq": torchdiffeq.__version__, "scipy": scipy.__version__, "numpy": np.__version__}
    load_before = os.getloadavg()
    print(f"pyode.compat.torchdiffeq vs torchdiffeq, cpu, torch threads={torch.get_num_threads()}, "
          f"{'quick' if args.quick else 'full'} run ({args.repeats} timed repeats after a warm-up, median); "
          + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    print(f"  load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({os.cpu_count()} cores)", flush=True)

    timer = Timer("cpu", args.repeats, args.min_time, max_repeats=50)
    t_start = time.perf_counter()
    cases = []
    if args.cases & {"A", "B"}:
        setup = spiral_setup()
        if "A" in args.cases:
            cases += case_odeint(args, timer, setup)
        if "B" in args.cases:
            cases += case_adjoint(args, timer, setup)
    if "C" in args.cases:
        cases += case_stiff(args, timer)
    wall = time.perf_counter() - t_start
    load_after = os.getloadavg()

    print("\n" + "=" * 100)
    print(f"Results (cpu, torch threads={torch.get_num_threads()}, median of {args.repeats}+ timed runs after a "
          f"warm-up; td/this = time of the torchdiffeq row this row is compared with (case A: dopri5; case B: the "
          f"row under 'vs'; case C: scipy_solver LSODA) / this row's time; >1: faster than torchdiffeq)")
    print("=" * 100)
    for case in cases:
        print()
        print(table(case))
    if any(c["dtype"] == "float32" for c in cases):
        NOTES.append("float32: torchdiffeq's default rtol=1e-7 is below what pyode.solve accepts for float32 "
                     "(4 eps = 4.8e-7); the compat odeint and odeint_adjoint run it as given, as torchdiffeq does, "
                     "by stepping pyode's loop themselves; the rows with a pyode sensealg go through pyode.solve, "
                     "at rtol 4.8e-7.")
    NOTES.append(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
                 f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} cores "
                 f"(this benchmark itself adds about 1)")
    print("\nNotes:")
    for line in NOTES:
        print(f"  - {line}")
    print(f"\nTotal benchmark time {wall:.0f} s")

    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), argv=sys.argv[1:],
                versions=versions, torch_threads=torch.get_num_threads(), blas_threads_env=args.threads,
                platform=platform.platform(), cpu_count=os.cpu_count(), quick=args.quick, repeats=args.repeats,
                min_time_s=args.min_time, total_seconds=wall, load_before=load_before, load_after=load_after)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"compat_torchdiffeq-{'quick' if args.quick else 'full'}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(dict(meta=meta, notes=NOTES, cases=cases), fh, indent=1)
    print(f"Results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
