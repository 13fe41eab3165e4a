#!/usr/bin/env python
"""pyode against torchdiffeq, torchode and scipy, side by side in one process.

Usage::

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--threads 1] [--out benchmarks/results/NAME.json]

Case 1: one small problem (Lotka-Volterra, float64) at two tolerance pairs: forward time, RHS
evaluations, max error against a scipy DOP853 reference at rtol = atol = 1e-13.
Case 2: a batch of 4096 initial states through a seeded 2-64-64-2 tanh MLP (float32, and float64
unless --quick): forward time (no grad), forward + backward time (sum of saved states, direct
autograd through the solver), RHS evaluations, max error against a float64 scipy DOP853 reference
and the relative error of the parameter gradient against a float64 torchdiffeq dopri8 reference.

See benchmarks/README.md for what every column means.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

# numpy, torch, scipy, ... are imported in main() once the thread count is known (BLAS reads
# its thread count from the environment at import).
np = torch = pyode = None

LIBS = {}          # name -> module (only the importable ones)
NOTES = []         # printed at the end and stored in the JSON


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------

class Timer:
    def __init__(self, device: str, repeats: int, min_time: float, max_repeats: int):
        self.device, self.repeats, self.min_time, self.max_repeats = device, repeats, min_time, max_repeats

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn):
        """Warm up once, then time ``repeats`` runs (more, up to ``max_repeats``, while the total is
        below ``min_time`` seconds). Returns (output of the last run, list of seconds)."""
        out = fn()                          # warm-up
        times = []
        while len(times) < self.repeats or (sum(times) < self.min_time and len(times) < self.max_repeats):
            self.sync()
            t = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return out, times


class Count:
    """Wraps a right-hand side and counts its calls (one call = one evaluation of the whole batch)."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *args):
        self.n += 1
        return self.fn(*args)


def to_np(x):
    return x.detach().to("cpu", torch.float64).numpy()


def scipy_reference(f, y0, ts, tol):
    """DOP853 integrated piecewise from one saved time to the next, so that no saved value comes from
    the dense-output interpolant (whose error is not controlled by the tolerance when steps are long)."""
    from scipy.integrate import solve_ivp

    ys, y, nfev = [np.asarray(y0, dtype=np.float64)], np.asarray(y0, dtype=np.float64), 0
    for a, b in zip(ts[:-1], ts[1:]):
        sol = solve_ivp(f, (a, b), y, method="DOP853", rtol=tol, atol=tol)
        assert sol.success, sol.message
        y = sol.y[:, -1]
        ys.append(y)
        nfev += sol.nfev
    return np.stack(ys), nfev


# ----------------------------------------------------------------------------------------------
# case 1: Lotka-Volterra
# ----------------------------------------------------------------------------------------------

LV_P = (1.5, 1.0, 1.0, 3.0)
LV_U0 = (1.0, 1.0)


def lv_numpy(t, u):
    a, b, d, g = LV_P
    x, y = u
    return np.array([a * x - b * x * y, d * x * y - g * y])


def case_lotka_volterra(args, timer):
    import pyode.problems  # noqa: F401  (pyode/__init__ does not import the submodule)
    from scipy.integrate import solve_ivp

    dev = args.device
    T = 100
    tspan = (0.0, 10.0)
    ts_np = np.linspace(*tspan, T)
    ts = torch.as_tensor(ts_np, dtype=torch.float64, device=dev)
    prob = pyode.problems.lotka_volterra(u0=LV_U0, p=LV_P, tspan=tspan, device=dev)
    rhs, p, u0 = prob.f, prob.p, prob.u0

    t_ref = time.perf_counter()
    ref_u, nfev = scipy_reference(lv_numpy, LV_U0, ts_np, 1e-13)      # (T, 2)
    ref_info = {"how": "scipy solve_ivp DOP853, rtol=atol=1e-13, numpy RHS, integrated piecewise between "
                       "saved times", "nfev": nfev, "seconds": time.perf_counter() - t_ref}

    results = []
    for rtol, atol in ((1e-6, 1e-8), (1e-9, 1e-11)):
        title = (f"Case 1: Lotka-Volterra (n=2, float64, {dev}), tspan {tspan}, {T} saved times, "
                 f"rtol={rtol:g} atol={atol:g}")
        print(f"\n{title}", flush=True)
        rows = []

        def add(library, method, family, fn):
            try:
                out, times = timer(fn)
            except Exception as e:  # a peer failing must not stop the run
                note(f"{library} {method} failed: {type(e).__name__}: {e}")
                if args.verbose:
                    traceback.print_exc()
                return
            u, nfe, extra = out
            err = float(np.max(np.abs(u - ref_u)))
            rows.append(dict(library=library, method=method, family=family, times_s=times,
                             median_s=statistics.median(times), min_s=min(times), nfe=nfe,
                             max_err=err, **extra))
            print(f"    {library:<11} {method:<8} {statistics.median(times) * 1e3:10.2f} ms  nfe={nfe:<6} "
                  f"err={err:.2e}", flush=True)

        for name, family in (("Tsit5", "Tsit5"), ("DP5", "DP5"), ("DP8", "DP8")):
            alg = getattr(pyode, name)()

            def run(alg=alg):
                f = Count(rhs)
                sol = pyode.solve(pyode.ODEProblem(f, u0, tspan, p), alg, saveat=ts, reltol=rtol, abstol=atol)
                assert sol.stats.nf == f.n, (sol.stats.nf, f.n)
                return to_np(sol.u), f.n, dict(naccept=sol.stats.naccept, nreject=sol.stats.nreject)

            add("pyode", name, family, run)

        if "torchdiffeq" in LIBS:
            odeint = LIBS["torchdiffeq"].odeint

            def run():
                f = Count(lambda t, y: rhs(y, p, t))
                u = odeint(f, u0, ts, method="dopri5", rtol=rtol, atol=atol)
                return to_np(u), f.n, {}

            add("torchdiffeq", "dopri5", "DP5", run)

        if "torchode" in LIBS:
            to = LIBS["torchode"]
            for name, family in (("Tsit5", "Tsit5"), ("Dopri5", "DP5")):
                def run(name=name):
                    f = Count(lambda t, y: rhs(y, p, t))
                    term = to.ODETerm(f)
                    solver = to.AutoDiffAdjoint(getattr(to, name)(term=term),
                                                to.IntegralController(atol=atol, rtol=rtol, term=term))
                    sol = solver.solve(to.InitialValueProblem(y0=u0[None], t_eval=ts[None]))
                    acc = int(sol.stats["n_accepted"][0])
                    return to_np(sol.ys[0]), f.n, dict(naccept=acc, nreject=int(sol.stats["n_steps"][0]) - acc)

                add("torchode", name, family, run)

        if "scipy" in LIBS:
            for method, family in (("RK45", "DP5"), ("DOP853", "DP8")):
                def run(method=method):
                    sol = solve_ivp(lv_numpy, tspan, np.array(LV_U0), method=method, t_eval=ts_np,
                                    rtol=rtol, atol=atol)
                    assert sol.success, sol.message
                    return sol.y.T, int(sol.nfev), {}

                add("scipy", method, family, run)

        results.append(dict(name="lotka_volterra", title=title, rtol=rtol, atol=atol, dtype="float64",
                            n_saved=T, tspan=tspan, reference=ref_info, rows=rows))
    return results


# ----------------------------------------------------------------------------------------------
# case 2: batched neural ODE
# ----------------------------------------------------------------------------------------------

def make_mlp(seed: int):
    g = torch.manual_seed(seed)  # noqa: F841  (seeds the default generator used by nn.Linear)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 2))
    return net.double()


def mlp_numpy(net64):
    W = [(m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()) for m in net64
         if isinstance(m, torch.nn.Linear)]

    def f(t, y):
        h = y.reshape(-1, 2)
        h = np.tanh(h @ W[0][0].T + W[0][1])
        h = np.tanh(h @ W[1][0].T + W[1][1])
        return (h @ W[2][0].T + W[2][1]).ravel()

    return f


def flat_grad(net):
    return torch.cat([q.grad.reshape(-1).to(torch.float64) for q in net.parameters()]).cpu()


def case_neural_batch(args, timer):
    from scipy.integrate import solve_ivp

    dev = args.device
    B, T = args.batch, 10
    tspan = (0.0, 1.0)
    rtol, atol = args.batch_rtol, args.batch_atol
    net64_cpu = make_mlp(seed=0)
    gen = torch.Generator().manual_seed(1)
    u0_64_cpu = torch.randn(B, 2, generator=gen, dtype=torch.float64)
    ts_np = np.linspace(*tspan, T)
    f_np = mlp_numpy(net64_cpu)

    # Reference states: scipy DOP853 on the flattened float64 system.
    t_ref = time.perf_counter()
    ref_u, nfev = scipy_reference(f_np, u0_64_cpu.numpy().ravel(), ts_np, args.ref_tol_batch)
    ref_u = ref_u.reshape(T, B, 2)
    ref_info = {"how": f"scipy solve_ivp DOP853 on the flattened float64 system (shared steps), "
                       f"rtol=atol={args.ref_tol_batch:g}, piecewise between saved times, numpy MLP with "
                       f"the same weights", "nfev": nfev, "seconds": time.perf_counter() - t_ref}
    print(f"\n  batch reference states: {ref_info['how']}: {nfev} RHS evaluations, "
          f"{ref_info['seconds']:.1f} s", flush=True)

    # Reference gradient of sum(u(saveat)) w.r.t. the MLP parameters: torchdiffeq dopri8, float64.
    grad_ref = None
    if "torchdiffeq" in LIBS:
        t_ref = time.perf_counter()
        net = copy.deepcopy(net64_cpu)
        ts64 = torch.as_tensor(ts_np)
        # step_t: step onto the saved times (torchdiffeq's dopri8 interpolant is only 4th order).
        u = LIBS["torchdiffeq"].odeint(lambda t, y: net(y), u0_64_cpu, ts64, method="dopri8",
                                       rtol=args.ref_tol_grad, atol=args.ref_tol_grad, options=dict(step_t=ts64))
        u.sum().backward()
        grad_ref = flat_grad(net)
        gstate_err = float(np.max(np.abs(to_np(u) - ref_u)))
        ref_info["grad"] = (f"torchdiffeq odeint dopri8 stepping onto the saved times, float64, "
                            f"rtol=atol={args.ref_tol_grad:g}, plain autograd (its states differ from the "
                            f"scipy reference by {gstate_err:.1e})")
        ref_info["grad_seconds"] = time.perf_counter() - t_ref
        print(f"  batch reference gradient: {ref_info['grad']}, {ref_info['grad_seconds']:.1f} s", flush=True)
    else:
        note("torchdiffeq is missing: no reference gradient, the grad err column stays empty")

    scipy_rows = None  # scipy runs in float64 whatever the torch dtype: time it once, show it in every table
    results = []
    for dtype_name in args.batch_dtypes:
        dtype = getattr(torch, dtype_name)
        net = copy.deepcopy(net64_cpu).to(device=dev, dtype=dtype)
        u0 = u0_64_cpu.to(device=dev, dtype=dtype)
        ts = torch.as_tensor(ts_np, dtype=torch.float64, device=dev)
        title = (f"Case 2: neural ODE, batch {B} x 2 through a 2-64-64-2 tanh MLP ({dtype_name}, {dev}), "
                 f"tspan {tspan}, {T} saved times, rtol={rtol:g} atol={atol:g}")
        print(f"\n{title}", flush=True)
        rows = []

        def add(library, method, family, solve_fn, per_member_steps, backward=True):
            """solve_fn() -> (u (T, B, 2) tensor, nfe, extra dict)."""
            row = dict(library=library, method=method, family=family, per_member_steps=per_member_steps)
            try:
                def fwd():
                    with torch.no_grad():
                        return solve_fn()

                (u, nfe, extra), times = timer(fwd)
                row.update(fwd_times_s=times, fwd_median_s=statistics.median(times), fwd_min_s=min(times),
                           nfe=nfe, max_err=float(np.max(np.abs(to_np(u) - ref_u))), **extra)
                if backward:
                    def fwd_bwd():
                        for q in net.parameters():
                            q.grad = None
                        u, _, _ = solve_fn()
                        u.sum().backward()
                        return flat_grad(net)

                    g, times = timer(fwd_bwd)
                    row.update(fwdbwd_times_s=times, fwdbwd_median_s=statistics.median(times),
                               fwdbwd_min_s=min(times))
                    if grad_ref is not None:
                        row["grad_rel_err"] = float((g - grad_ref).norm() / grad_ref.norm())
            except Exception as e:
                note(f"{library} {method} ({dtype_name}) failed: {type(e).__name__}: {e}")
                if args.verbose:
                    traceback.print_exc()
                return None
            rows.append(row)
            bwd = f"  fwd+bwd {row['fwdbwd_median_s'] * 1e3:9.1f} ms" if "fwdbwd_median_s" in row else ""
            print(f"    {library:<11} {method:<8} fwd {row['fwd_median_s'] * 1e3:9.1f} ms{bwd}  nfe={row['nfe']:<5} "
                  f"err={row['max_err']:.2e}", flush=True)
            return row

        rhs = lambda u, p, t: p(u)  # noqa: E731
        # "Tsit5/I": integral step-size control (torchdiffeq's and torchode's kind) instead of
        # DifferentialEquations.jl's PI default.
        for name, family, controller in (("Tsit5", "Tsit5", None), ("DP5", "DP5", None),
                                         ("Tsit5/I", "Tsit5/I", pyode.IController())):
            alg = getattr(pyode, name.split("/")[0])()

            def solve_fn(alg=alg, controller=controller):
                f = Count(rhs)
                sol = pyode.solve(pyode.ODEProblem(f, u0, tspan, net), alg, saveat=ts, reltol=rtol, abstol=atol,
                                  controller=controller)
                na, nr = sol.stats.naccept.double(), sol.stats.nreject.double()
                return sol.u, f.n, dict(naccept=float(na.mean()), nreject=float(nr.mean()),
                                        naccept_max=int(na.max()), nreject_max=int(nr.max()))

            add("pyode", name, family, solve_fn, True)

        if "torchdiffeq" in LIBS:
            odeint = LIBS["torchdiffeq"].odeint
            def solve_fn():
                f = Count(lambda t, y: net(y))
                u = odeint(f, u0, ts, method="dopri5", rtol=rtol, atol=atol)
                return u, f.n, {}

            add("torchdiffeq", "dopri5", "DP5", solve_fn, False)

        if "torchode" in LIBS:
            to = LIBS["torchode"]
            t_eval = ts[None].expand(B, T)      # float64 times, as pyode uses
            for name, family in (("Tsit5", "Tsit5"), ("Dopri5", "DP5")):
                def solve_fn(name=name):
                    f = Count(lambda t, y: net(y))
                    term = to.ODETerm(f)
                    solver = to.AutoDiffAdjoint(getattr(to, name)(term=term),
                                                to.IntegralController(atol=atol, rtol=rtol, term=term))
                    sol = solver.solve(to.InitialValueProblem(y0=u0, t_eval=t_eval))
                    acc = sol.stats["n_accepted"].double()
                    rej = sol.stats["n_steps"].double() - acc
                    return sol.ys.transpose(0, 1), f.n, dict(naccept=float(acc.mean()), nreject=float(rej.mean()),
                                                             naccept_max=int(acc.max()), nreject_max=int(rej.max()))

                add("torchode", name, family, solve_fn, True)

        if "scipy" in LIBS and not args.no_scipy_batch:
            if scipy_rows is None:
                scipy_rows = []
                y0 = u0_64_cpu.numpy().ravel()
                for method, family in (("RK45", "DP5"), ("DOP853", "DP8")):
                    def solve_fn(method=method):
                        sol = solve_ivp(f_np, tspan, y0, method=method, t_eval=ts_np, rtol=rtol, atol=atol)
                        assert sol.success, sol.message
                        return torch.from_numpy(sol.y.T.reshape(T, B, 2)), int(sol.nfev), {}

                    row = add("scipy", method, family, solve_fn, False, backward=False)
                    if row is not None:
                        row["note"] = "float64 numpy, one flattened system (shared steps), forward only"
                        scipy_rows.append(row)
            else:
                rows.extend(copy.deepcopy(scipy_rows))
                print("    scipy: same float64 runs as above (scipy integrates in float64 whatever the torch dtype)")

        results.append(dict(name="neural_batch", title=title, rtol=rtol, atol=atol, dtype=dtype_name, batch=B,
                            n_saved=T, tspan=tspan, reference=ref_info, rows=rows))
    return results


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------

def baseline_for(row, rows):
    """The pyode row a peer is compared with: same method family, else pyode Tsit5."""
    pyode_rows = {r["family"]: r for r in rows if r["library"] == "pyode"}
    return pyode_rows.get(row["family"]) or pyode_rows.get("Tsit5")


def fmt_steps(r):
    if "naccept" not in r:
        return "-"
    if isinstance(r["naccept"], float):
        return f"{r['naccept']:.1f}/{r['nreject']:.1f} (max {r['naccept_max']})"
    return f"{r['naccept']}/{r['nreject']}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(case) -> str:
    rows = case["rows"]
    out = [case["title"], f"  reference: {case['reference']['how']}"]
    if "grad" in case["reference"]:
        out.append(f"  reference gradient: {case['reference']['grad']}")
    if case["name"] == "lotka_volterra":
        hdr = f"  {'library':<12}{'method':<8}{'time ms':>10}{'t/pyode':>9}  {'vs':<6}{'NFE':>7}{'NFE/pyode':>10}" \
              f"{'us/NFE':>8}  {'steps acc/rej':<15}{'max err':>9}{'err/pyode':>10}"
        out += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in rows:
            b = baseline_for(r, rows)
            out.append(f"  {r['library']:<12}{r['method']:<8}{r['median_s'] * 1e3:10.2f}"
                       f"{ratio(r['median_s'], b and b['median_s']):>9}  {b['method'] if b else '-':<6}"
                       f"{r['nfe']:>7}{ratio(r['nfe'], b and b['nfe']):>10}{r['median_s'] / r['nfe'] * 1e6:8.0f}"
                       f"  {fmt_steps(r):<15}"
                       f"{r['max_err']:>9.1e}{ratio(r['max_err'], b and b['max_err']):>10}")
    else:
        hdr = f"  {'library':<12}{'method':<8}{'fwd ms':>9}{'t/pyode':>9}{'fwd+bwd ms':>12}{'t/pyode':>9}  " \
              f"{'vs':<6}{'NFE':>5}{'NFE/pyode':>10}  {'steps/member acc/rej':<22}{'max err':>9}{'grad err':>10}"
        out += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in rows:
            b = baseline_for(r, rows)
            fb = r.get("fwdbwd_median_s")
            out.append(f"  {r['library']:<12}{r['method']:<8}{r['fwd_median_s'] * 1e3:9.1f}"
                       f"{ratio(r['fwd_median_s'], b and b['fwd_median_s']):>9}"
                       f"{'-' if fb is None else f'{fb * 1e3:.1f}':>12}"
                       f"{ratio(fb, b and b.get('fwdbwd_median_s')):>9}  {b['method'] if b else '-':<6}"
                       f"{r['nfe']:>5}{ratio(r['nfe'], b and b['nfe']):>10}  {fmt_steps(r):<22}"
                       f"{r['max_err']:>9.1e}{'-' if 'grad_rel_err' not in r else format(r['grad_rel_err'], '.1e'):>10}")
            if r.get("note"):
                out.append(f"  {'':<20}({r['note']})")
    return "\n".join(out)


TOLERANCE_NOTE = (
    "Tolerances are passed unchanged to every library; the error tests are alike but not identical. "
    "pyode, torchode and scipy RK45 accept a step when the RMS norm over the state of "
    "err / (atol + rtol * max(|y0|, |y1|)) is <= 1, per member for a batch (pyode, torchode); "
    "torchdiffeq takes that RMS norm over the whole tensor, so a batch shares one step size; scipy "
    "DOP853 (and pyode DP8) use Hairer's combined 3rd/5th-order estimate. Step-size controllers differ: "
    "pyode PI (DifferentialEquations.jl defaults), torchode IntegralController, torchdiffeq and scipy "
    "integral control with their own safety factors. Saved values are interpolated with each method's "
    "dense output. Equal tolerances therefore do not mean "
    "equal accuracy: read time together with the error column.")


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, float32 only in case 2")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1, help="torch (and BLAS) threads (default 1)")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/latest-<device>.json)")
    ap.add_argument("--cases", default="1,2", help="comma list of cases to run (default 1,2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 7, --quick 3)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="keep repeating a fast measurement until this many seconds (default 0.5, --quick 0.2)")
    ap.add_argument("--batch", type=int, default=4096, help="batch size of case 2 (default 4096)")
    ap.add_argument("--batch-dtypes", default=None, help="case 2 dtypes (default float32,float64; --quick float32)")
    ap.add_argument("--batch-rtol", type=float, default=1e-5)
    ap.add_argument("--batch-atol", type=float, default=1e-7)
    ap.add_argument("--ref-tol-batch", type=float, default=1e-12, help="tolerance of the case 2 state reference")
    ap.add_argument("--ref-tol-grad", type=float, default=1e-10, help="tolerance of the case 2 gradient reference")
    ap.add_argument("--no-scipy-batch", action="store_true", help="skip scipy in case 2")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing peers")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 0.5)
    dtypes = args.batch_dtypes or ("float32" if args.quick else "float32,float64")
    args.batch_dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    for d in args.batch_dtypes:
        if d not in ("float32", "float64"):
            ap.error(f"--batch-dtypes: {d!r} is not float32 or float64")
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if not args.cases <= {"1", "2"}:
        ap.error(f"--cases: unknown case(s) {sorted(args.cases - {'1', '2'})}; cases are 1 and 2")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    global np, torch, pyode
    import numpy as np
    import torch
    import pyode

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")

    versions = {"python": platform.python_version(), "pyode": pyode.__version__, "torch": torch.__version__,
                "numpy": np.__version__}
    print(f"pyode benchmarks, device={args.device}, torch threads={torch.get_num_threads()}, "
          f"{'quick' if args.quick else 'full'} run ({args.repeats} timed repeats after a warm-up, median)")
    for name in ("torchdiffeq", "torchode", "scipy"):
        try:
            mod = __import__(name)
            if name == "scipy":
                import scipy.integrate  # noqa: F401
            LIBS[name] = mod
            versions[name] = getattr(mod, "__version__", "?")
        except ImportError as e:
            note(f"{name} is not installed ({e}); its rows are skipped")
    if "scipy" not in LIBS:
        note("scipy is needed for the reference solutions; nothing to compare against, stopping")
        return 1
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    if args.device == "cuda":
        versions["cuda_device"] = torch.cuda.get_device_name()
        note("scipy runs on the CPU (numpy) whatever --device says")

    timer = Timer(args.device, args.repeats, args.min_time, max_repeats=50)
    t_start = time.perf_counter()
    cases = []
    if "1" in args.cases:
        cases += case_lotka_volterra(args, timer)
    if "2" in args.cases:
        cases += case_neural_batch(args, timer)
    wall = time.perf_counter() - t_start

    print("\n" + "=" * 100)
    print(f"Results (device={args.device}, torch threads={torch.get_num_threads()}, median of "
          f"{args.repeats}+ timed runs after a warm-up; t/pyode, NFE/pyode, err/pyode = peer / the pyode "
          f"row named under 'vs')")
    print("=" * 100)
    for case in cases:
        print()
        print(table(case))
    print()
    print("Notes:")
    for line in [TOLERANCE_NOTE] + NOTES:
        print(f"  - {line}")
    print(f"\nTotal benchmark time {wall:.0f} s")

    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), argv=sys.argv[1:],
                versions=versions, device=args.device, torch_threads=torch.get_num_threads(),
                blas_threads_env=args.threads, platform=platform.platform(), processor=platform.processor(),
                cpu_count=os.cpu_count(), quick=args.quick, repeats=args.repeats, min_time_s=args.min_time,
                total_seconds=wall)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"latest-{args.device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(dict(meta=meta, tolerance_note=TOLERANCE_NOTE, notes=NOTES, cases=cases), fh, indent=1,
                  default=_json_default)
    print(f"Results written to {out}")
    return 0


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    sys.exit(main())
