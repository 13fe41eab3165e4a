#!/usr/bin/env python
"""pyode's sensitivity algorithms (``solve(..., sensealg=...)``): memory against the number of steps,
and time per gradient side by side with torchdiffeq and torchode, in one run.

Usage::

    python benchmarks/sensitivity.py [--quick] [--threads 1] [--parts 1,2,3] [--out FILE]

Part 1, memory vs steps: a 2-64-64-2 tanh MLP neural ODE (float64, batch 64, Tsit5) over t in
(0, 2) with N = 50, 100, 200, 400 equal steps, loss = sum of squares of the final state. Each
(sensealg, N) runs in a fresh subprocess and reports the bytes of tensors saved for backward
(``torch.autograd.graph.saved_tensors_hooks``), the bytes of every tensor still alive after the
forward solve (saved by autograd or held by Python objects such as an adjoint's dense output), and
the process's resident memory: retained after the forward solve, and its peak over forward +
backward, both above the level just before the solve.
Part 2, time per gradient: the same MLP fitted to spiral data (Chen et al.'s cubic spiral, 256
starts, 10 save times on (0, 5), rtol 1e-6 / atol 1e-8, float64): forward + backward time, NFE of
both passes and the gradient's distance to pyode DirectAdjoint at rtol 1e-10, for every pyode
sensealg, torchdiffeq ``odeint`` / ``odeint_adjoint`` (dopri5) and torchode (Tsit5, AutoDiffAdjoint).
Part 3, a stiff gradient: Robertson's kinetics with log rate constants as the parameters, Rodas5P
with the analytic Jacobian, 10 log-spaced save times in (1e-4, 1e4), rtol 1e-6 / atol 1e-10, loss =
sum of 1e4 y2 + y1 over the save times; forward + backward time of every sensealg that fits a stiff
problem, beside DirectAdjoint, and each gradient's distance to DirectAdjoint's at rtol 1e-10.

See benchmarks/README.md ("Sensitivity") for what every column means.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback

np = torch = pyode = None
NOTES = []

P1_SPAN = 2.0
P1_BATCH = 64
P1_RTOL, P1_ATOL = 1e-6, 1e-8
P2_SPAN = 5.0
P2_BATCH = 256
P2_T = 10
P2_RTOL, P2_ATOL = 1e-6, 1e-8
REF_RTOL, REF_ATOL = 1e-10, 1e-12


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


def sensealgs(small_only: bool = False):
    """name -> sensealg object, in table order."""
    S = pyode
    algs = {
        "DirectAdjoint()": S.DirectAdjoint(),
        "DirectAdjoint(checkpoints=8)": S.DirectAdjoint(checkpoints=8),
        "InterpolatingAdjoint()": S.InterpolatingAdjoint(),
        "InterpolatingAdjoint(checkpointing=True)": S.InterpolatingAdjoint(checkpointing=True),
        "InterpolatingAdjoint(seminorm=True)": S.InterpolatingAdjoint(seminorm=True),
        "GaussAdjoint()": S.GaussAdjoint(),
        "GaussAdjoint(checkpointing=True)": S.GaussAdjoint(checkpointing=True),
        "BacksolveAdjoint()": S.BacksolveAdjoint(),
        "ForwardSensitivity()": S.ForwardSensitivity(),
    }
    return algs


def make_mlp(width: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                               torch.nn.Tanh(), torch.nn.Linear(width, 2)).double()


class Count:
    """Wraps ``f(u, p, t)`` and counts its calls (a vmapped call counts once)."""

    def __init__(self):
        self.n = 0

    def __call__(self, u, p, t):
        self.n += 1
        return p(u)


def flat_grad(net):
    return torch.cat([q.grad.reshape(-1) for q in net.parameters()])


# ----------------------------------------------------------------------------------------------
# part 1: memory vs steps (one subprocess per measurement)
# ----------------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _live_tensor_storages() -> dict:
    """data_ptr -> nbytes of every tensor storage a Python object refers to."""
    out = {}
    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor) and o.device.type == "cpu" and not o.is_meta:
                s = o.untyped_storage()
                if s.nbytes():
                    out[s.data_ptr()] = max(out.get(s.data_ptr(), 0), s.nbytes())
        except Exception:  # tensors without storage (functorch wrappers, sparse): not ours to count
            pass
    return out


def child_memory(cfg: dict) -> dict:
    """One (sensealg, N) measurement, in a process of its own."""
    torch.set_num_threads(1)
    net = make_mlp(cfg["width"])
    u0 = torch.randn(P1_BATCH, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alg = sensealgs()[cfg["sensealg"]]
    ts = torch.tensor([P1_SPAN], dtype=torch.float64)

    def run(N, hooks=None):
        h = P1_SPAN / N
        f = Count()
        for q in net.parameters():
            q.grad = None
        t0 = time.perf_counter()
        # Equal steps: adaptive with dtmax = dt = h and tolerances every step of this size passes
        # (checked below), not adaptive=False: with adaptive=False the continuous adjoints solve
        # their backward problem with a fixed step equal to the initial-step heuristic's guess.
        sol = pyode.solve(pyode.ODEProblem(f, u0, (0.0, P1_SPAN), net), pyode.Tsit5(), saveat=ts, dt=h, dtmax=h,
                          reltol=P1_RTOL, abstol=P1_ATOL, sensealg=alg)
        loss = sol.u[-1].square().sum()
        t1 = time.perf_counter()
        return sol, loss, f, t1 - t0

    sol, loss, f, _ = run(4)                # warm-up: first calls of torch.func, vmap, ...
    loss.backward()
    del sol, loss, f
    gc.collect()

    N = cfg["N"]
    before = _live_tensor_storages()
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        saved[s.data_ptr()] = max(saved.get(s.data_ptr(), 0), s.nbytes())
        return t

    rss0 = _rss_bytes()
    hwm_reset = _reset_hwm()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sol, loss, f, t_fwd = run(N)
    gc.collect()
    live = _live_tensor_storages()
    held = {k: v for k, v in {**live, **saved}.items() if k not in before}
    rss_fwd = _rss_bytes()
    nfe_fwd = f.n
    t0 = time.perf_counter()
    loss.backward()
    t_bwd = time.perf_counter() - t0
    peak = _hwm_bytes() if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    saved_new = {k: v for k, v in saved.items() if k not in before}
    return dict(sensealg=cfg["sensealg"], N=N, width=cfg["width"],
                naccept=int(sol.stats.naccept.max()), nreject=int(sol.stats.nreject.max()),
                saved_bytes=sum(saved_new.values()), saved_tensors=len(saved_new),
                held_bytes=sum(held.values()), rss_retained=rss_fwd - rss0, rss_peak=peak - rss0,
                hwm_reset=hwm_reset, t_fwd=t_fwd, t_bwd=t_bwd, nfe_fwd=nfe_fwd, nfe_bwd=f.n - nfe_fwd,
                grad=flat_grad(net).tolist())


def part_memory(args):
    steps = [int(s) for s in args.steps.split(",")]
    names = list(sensealgs())
    fs_steps = [int(s) for s in args.fs_steps.split(",")]
    configs = [(name, 64, N) for name in names if name != "ForwardSensitivity()" for N in steps]
    # ForwardSensitivity carries n (1 + n + P) values per member: P = 4482 on the 64-wide MLP makes one
    # step take ~35 s here, so it runs on an 8-wide MLP (P = 114), next to DirectAdjoint on the same.
    configs += [(name, 8, N) for name in ("DirectAdjoint()", "ForwardSensitivity()") for N in fs_steps]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    print(f"\nPart 1: memory vs steps ({len(configs)} subprocesses)", flush=True)
    rows = []
    for name, width, N in configs:
        cfg = json.dumps(dict(sensealg=name, width=width, N=N))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", cfg], env=env,
                              capture_output=True, text=True, timeout=args.child_timeout)
        if proc.returncode != 0:
            note(f"part 1 {name} width {width} N={N} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["wall_s"] = time.perf_counter() - t0
        if r["naccept"] != N or r["nreject"]:
            note(f"part 1 {name} N={N}: {r['naccept']} accepted / {r['nreject']} rejected steps, not {N} equal steps")
        rows.append(r)
        print(f"    {name:<42} w={width:<3} N={N:<4} saved {r['saved_bytes'] / 1e6:8.2f} MB  held "
              f"{r['held_bytes'] / 1e6:8.2f} MB  RSS kept {r['rss_retained'] / 1e6:8.1f} MB  peak "
              f"{r['rss_peak'] / 1e6:8.1f} MB  fwd {r['t_fwd']:.2f}s bwd {r['t_bwd']:.2f}s", flush=True)
    # gradient against DirectAdjoint at the same width and N
    for r in rows:
        ref = next((q for q in rows if q["sensealg"] == "DirectAdjoint()" and q["width"] == r["width"]
                    and q["N"] == r["N"]), None)
        if ref is not None:
            g, g0 = torch.tensor(r["grad"]), torch.tensor(ref["grad"])
            r["grad_vs_direct"] = float((g - g0).norm() / g0.norm())
    for r in rows:
        del r["grad"]
    return dict(steps=steps, fs_steps=fs_steps, rows=rows)


def table_memory(res) -> str:
    rows, steps = res["rows"], res["steps"]
    out = [f"Part 1: memory vs number of steps. 2-64-64-2 tanh MLP, float64, batch {P1_BATCH}, Tsit5, "
           f"t in (0, {P1_SPAN:g}) in N equal steps (rtol {P1_RTOL:g}, atol {P1_ATOL:g} for the adjoints), "
           "loss = sum(u(T)^2). MB = 1e6 bytes."]
    measures = (("saved_bytes", "saved for backward (saved_tensors_hooks), MB"),
                ("held_bytes", "tensors alive after the forward solve (autograd-saved + Python-held), MB"),
                ("rss_retained", "RSS kept after the forward solve, MB"),
                ("rss_peak", "peak RSS over forward + backward, MB"))
    groups = [(64, steps), (8, res["fs_steps"])]
    for key, title in measures:
        out += ["", f"  {title}"]
        for width, Ns in groups:
            sub = [r for r in rows if r["width"] == width]
            if not sub:
                continue
            if width != 64:
                out.append(f"  -- on an 8-wide MLP (P = 114), where ForwardSensitivity is affordable --")
            hdr = f"  {'sensealg':<42}" + "".join(f"{'N=' + str(N):>10}" for N in Ns) + f"{'growth':>9}"
            out += [hdr, "  " + "-" * (len(hdr) - 2)]
            for name in dict.fromkeys(r["sensealg"] for r in sub):
                by = {r["N"]: r for r in sub if r["sensealg"] == name}
                cells = "".join(f"{by[N][key] / 1e6:10.2f}" if N in by else f"{'-':>10}" for N in Ns)
                lo, hi = by.get(Ns[0]), by.get(Ns[-1])
                gr = f"{hi[key] / lo[key]:.1f}x" if lo and hi and lo[key] > 0 else "-"
                out.append(f"  {name:<42}{cells}{gr:>9}")
    out += ["", "  time (s, forward / backward), backward NFE and gradient vs DirectAdjoint at the same N"]
    hdr = f"  {'sensealg':<42}{'w':>3}" + "".join(f"{'N=' + str(N):>26}" for N in sorted({r['N'] for r in rows}))
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    allN = sorted({r["N"] for r in rows})
    for width in (64, 8):
        for name in dict.fromkeys(r["sensealg"] for r in rows if r["width"] == width):
            by = {r["N"]: r for r in rows if r["sensealg"] == name and r["width"] == width}
            cells = "".join(
                f" {by[N]['t_fwd']:6.2f}/{by[N]['t_bwd']:5.2f} {by[N]['nfe_bwd']:>5} {by[N].get('grad_vs_direct', 0):6.0e}"
                if N in by else f"{'-':>26}" for N in allN)
            out.append(f"  {name:<42}{width:>3}{cells}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# part 2: time per gradient
# ----------------------------------------------------------------------------------------------

def spiral_data():
    """Chen et al.'s cubic spiral u' = (u^3) A: 256 starts on its trajectory from (2, 0), and the true
    states at 10 times on (0, 5) from each (pyode DP8 at rtol 1e-12)."""
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    true_f = lambda u, p, t: (u ** 3) @ A  # noqa: E731
    t_traj = torch.linspace(0.0, 20.0, 1000, dtype=torch.float64)
    traj = pyode.solve(pyode.ODEProblem(true_f, torch.tensor([2.0, 0.0], dtype=torch.float64), (0.0, 20.0)),
                       pyode.DP8(), saveat=t_traj, reltol=1e-12, abstol=1e-12).u
    idx = torch.randint(0, 1000, (P2_BATCH,), generator=torch.Generator().manual_seed(2))
    u0 = traj[idx]
    ts = torch.linspace(0.0, P2_SPAN, P2_T, dtype=torch.float64)
    target = pyode.solve(pyode.ODEProblem(true_f, u0, (0.0, P2_SPAN)), pyode.DP8(), saveat=ts,
                         reltol=1e-12, abstol=1e-12).u                    # (T, B, 2)
    return u0, ts, target


def part_time(args):
    libs = {}
    for name in ("torchdiffeq", "torchode"):
        try:
            libs[name] = __import__(name)
        except ImportError as e:
            note(f"{name} is not installed ({e}); its rows are skipped")
    u0, ts, target = spiral_data()
    net = make_mlp(64)

    def loss_of(u):                 # u: (T, B, 2)
        return (u - target).square().mean()

    def pyode_fn(alg, rtol=P2_RTOL, atol=P2_ATOL, u0_=None, ts_=None, tgt=None):
        u0_ = u0 if u0_ is None else u0_
        ts_ = ts if ts_ is None else ts_
        tgt = target if tgt is None else tgt

        def fn():
            f = Count()
            sol = pyode.solve(pyode.ODEProblem(f, u0_, (0.0, float(ts_[-1])), net), pyode.Tsit5(), saveat=ts_,
                              reltol=rtol, abstol=atol, sensealg=alg)
            nfe = f.n
            (sol.u - tgt).square().mean().backward()
            return nfe, f.n - nfe
        return fn

    print(f"\nPart 2: time per gradient", flush=True)
    t0 = time.perf_counter()
    for q in net.parameters():
        q.grad = None
    nref = pyode_fn(pyode.DirectAdjoint(checkpoints=32), REF_RTOL, REF_ATOL)()
    g_ref = flat_grad(net).clone()
    ref_info = (f"pyode Tsit5 DirectAdjoint(checkpoints=32) (the DirectAdjoint gradient, recomputed in segments "
                f"to bound memory) at rtol {REF_RTOL:g}, atol {REF_ATOL:g}: NFE {nref[0]} forward, "
                f"{time.perf_counter() - t0:.1f} s")
    print(f"  reference gradient: {ref_info}", flush=True)

    rows = []

    def add(library, method, vs, fn, warm):
        row = dict(library=library, method=method, vs=vs)
        try:
            warm()                                     # first calls of torch.func, vmap, ... on a tiny problem
            times = []
            while not times or (len(times) < args.repeats and sum(times) < args.budget):
                for q in net.parameters():
                    q.grad = None
                t = time.perf_counter()
                nfe_f, nfe_b = fn()
                times.append(time.perf_counter() - t)
            g = flat_grad(net)
            row.update(times_s=times, median_s=statistics.median(times), nfe_fwd=nfe_f, nfe_bwd=nfe_b,
                       grad_err=float((g - g_ref).norm() / g_ref.norm()))
        except Exception as e:
            note(f"{library} {method} failed: {type(e).__name__}: {e}")
            if args.verbose:
                traceback.print_exc()
            return
        rows.append(row)
        print(f"    {library:<12}{method:<42}{row['median_s'] * 1e3:10.1f} ms (n={len(times)})  NFE "
              f"{nfe_f}/{nfe_b}  grad err {row['grad_err']:.1e}", flush=True)

    small = dict(u0_=u0[:4], ts_=ts[:3], tgt=target[:3, :4])
    for name, alg in sensealgs().items():
        if name == "ForwardSensitivity()":
            continue
        add("pyode", name, "DirectAdjoint()", pyode_fn(alg), pyode_fn(alg, **small))
    note("ForwardSensitivity() is left out of part 2: with P = 4482 parameters its augmented state is "
         "n (1 + n + P) = 8970 values per member and one Tsit5 step of the batch takes tens of seconds")

    if "torchdiffeq" in libs:
        tde = libs["torchdiffeq"]
        for method_name, odeint, vs in (("odeint dopri5", tde.odeint, "DirectAdjoint()"),
                                        ("odeint_adjoint dopri5", tde.odeint_adjoint, "BacksolveAdjoint()")):
            def make(odeint=odeint, u0_=u0, ts_=ts, tgt=target):
                def fn():
                    c = [0]

                    class F(torch.nn.Module):      # odeint_adjoint wants an nn.Module (or adjoint_params)
                        def __init__(self):
                            super().__init__()
                            self.net = net

                        def forward(self, t, y):
                            c[0] += 1
                            return self.net(y)

                    u = odeint(F(), u0_, ts_, method="dopri5", rtol=P2_RTOL, atol=P2_ATOL)
                    nfe = c[0]
                    (u - tgt).square().mean().backward()
                    return nfe, c[0] - nfe
                return fn
            add("torchdiffeq", method_name, vs, make(), make(u0_=u0[:4], ts_=ts[:3], tgt=target[:3, :4]))

    if "torchode" in libs:
        to = libs["torchode"]

        def make(u0_=u0, ts_=ts, tgt=target):
            def fn():
                c = [0]

                def f(t, y):
                    c[0] += 1
                    return net(y)

                term = to.ODETerm(f)
                solver = to.AutoDiffAdjoint(to.Tsit5(term=term),
                                            to.IntegralController(atol=P2_ATOL, rtol=P2_RTOL, term=term))
                sol = solver.solve(to.InitialValueProblem(y0=u0_, t_eval=ts_[None].expand(u0_.shape[0], -1)))
                nfe = c[0]
                (sol.ys.transpose(0, 1) - tgt).square().mean().backward()
                return nfe, c[0] - nfe
            return fn
        add("torchode", "Tsit5 AutoDiffAdjoint", "DirectAdjoint()", make(),
            make(u0_=u0[:4], ts_=ts[:3], tgt=target[:3, :4]))
    return dict(reference=ref_info, rows=rows)


P3_RTOL, P3_ATOL = 1e-6, 1e-10


def part_stiff(args):
    from pyode.problems import robertson

    base = robertson()
    ts = torch.logspace(-4, 4, 10, dtype=torch.float64)

    def rhs(u, logk, t):
        return base.f(u, torch.exp(logk), t)

    def jac(u, logk, t):
        return base.jac(u, torch.exp(logk), t)

    def gradient(sensealg, rtol=P3_RTOL, atol=P3_ATOL):
        logk = torch.log(torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64)).requires_grad_()
        prob = pyode.ODEProblem(rhs, base.u0, (0.0, float(ts[-1])), logk, jac=jac)
        sol = pyode.solve(prob, pyode.Rodas5P(), reltol=rtol, abstol=atol, saveat=ts, sensealg=sensealg)
        (sol.u[:, 1] * 1e4 + sol.u[:, 0]).sum().backward()
        return logk.grad

    print("\nPart 3: a stiff gradient (Robertson, log rate constants, Rodas5P)", flush=True)
    g_ref = gradient(pyode.DirectAdjoint(), 1e-10, 1e-14)
    rows = []
    for name, alg in (("DirectAdjoint()", pyode.DirectAdjoint()), ("ForwardSensitivity()", pyode.ForwardSensitivity()),
                      ("GaussAdjoint()", pyode.GaussAdjoint()), ("InterpolatingAdjoint()", pyode.InterpolatingAdjoint()),
                      ("QuadratureAdjoint()", pyode.QuadratureAdjoint())):
        try:
            g = gradient(alg)                       # warm-up
            times = []
            while len(times) < args.repeats and sum(times) < args.budget:
                t0 = time.perf_counter()
                gradient(alg)
                times.append(time.perf_counter() - t0)
        except Exception as e:                     # a failing row is reported, the others still run
            note(f"part 3 {name} failed: {type(e).__name__}: {e}")
            continue
        err = float((g - g_ref).norm() / g_ref.norm())
        rows.append(dict(method=name, times_s=times, median_s=statistics.median(times), grad_err=err))
        print(f"  {name:<24}{statistics.median(times) * 1e3:9.0f} ms  grad err {err:.1e}", flush=True)
    return dict(rows=rows)


def table_stiff(res) -> str:
    rows = res["rows"]
    direct = next((r for r in rows if r["method"] == "DirectAdjoint()"), None)
    out = [f"Part 3: a stiff gradient. Robertson (log rate constants), Rodas5P with the analytic Jacobian, "
           f"10 log-spaced save times to 1e4, rtol {P3_RTOL:g}, atol {P3_ATOL:g}; grad err against "
           "DirectAdjoint at rtol 1e-10"]
    hdr = f"  {'sensealg':<26}{'fwd+bwd ms':>11}{'n':>3}{'t/Direct':>10}{'grad err':>10}"
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        ratio = f"{r['median_s'] / direct['median_s']:.2f}" if direct else "-"
        out.append(f"  {r['method']:<26}{r['median_s'] * 1e3:11.0f}{len(r['times_s']):>3}{ratio:>10}"
                   f"{r['grad_err']:>10.1e}")
    return "\n".join(out)


def table_time(res) -> str:
    rows = res["rows"]
    by = {r["method"]: r for r in rows if r["library"] == "pyode"}
    out = [f"Part 2: time per gradient. 2-64-64-2 tanh MLP, float64, cubic-spiral data, batch {P2_BATCH}, "
           f"{P2_T} save times on (0, {P2_SPAN:g}), rtol {P2_RTOL:g}, atol {P2_ATOL:g}; "
           "loss = mean squared error over all save times; pyode Tsit5 (PI control), torchdiffeq dopri5, "
           "torchode Tsit5 (IntegralController)",
           f"  reference gradient: {res['reference']}"]
    hdr = (f"  {'library':<12}{'method':<42}{'fwd+bwd ms':>11}{'n':>3}{'t/pyode':>9}  {'vs':<20}"
           f"{'NFE fwd':>8}{'NFE bwd':>8}{'grad err':>10}")
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        b = by.get(r["vs"])
        ratio = f"{r['median_s'] / b['median_s']:.2f}" if b else "-"
        out.append(f"  {r['library']:<12}{r['method']:<42}{r['median_s'] * 1e3:11.1f}{len(r['times_s']):>3}"
                   f"{ratio:>9}  {r['vs']:<20}{r['nfe_fwd']:>8}{r['nfe_bwd']:>8}{r['grad_err']:>10.1e}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="part 1 at N = 50, 200 only; one timed run in part 2")
    ap.add_argument("--threads", type=int, default=1, help="torch (and BLAS) threads (default 1)")
    ap.add_argument("--parts", default="1,2,3", help="comma list of parts to run (default 1,2,3)")
    ap.add_argument("--steps", default=None, help="part 1 step counts (default 50,100,200,400)")
    ap.add_argument("--fs-steps", default=None, help="part 1 step counts of the 8-wide ForwardSensitivity "
                                                     "comparison (default 50,400)")
    ap.add_argument("--repeats", type=int, default=None, help="part 2: at most this many timed runs (default 5)")
    ap.add_argument("--budget", type=float, default=None,
                    help="part 2: no further timed run once a row's runs total this many seconds (default 6)")
    ap.add_argument("--child-timeout", type=float, default=300, help="seconds one part 1 subprocess may take")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/sensitivity-<full|quick>.json)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing rows")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.steps = args.steps or ("50,200" if args.quick else "50,100,200,400")
    args.fs_steps = args.fs_steps or ("50,200" if args.quick else "50,400")
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.budget = args.budget if args.budget is not None else 6.0
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.parts <= {"1", "2", "3"}:
        ap.error(f"--parts: unknown part(s) {sorted(args.parts - {'1', '2', '3'})}; parts are 1, 2 and 3")
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
    if args.child is not None:
        print(json.dumps(child_memory(json.loads(args.child))))
        return 0

    versions = {"python": platform.python_version(), "pyode": pyode.__version__, "torch": torch.__version__}
    for name in ("torchdiffeq", "torchode"):
        try:
            versions[name] = getattr(__import__(name), "__version__", "?")
        except ImportError:
            pass
    print(f"pyode sensitivity benchmarks, torch threads={torch.get_num_threads()}, "
          f"{'quick' if args.quick else 'full'} run; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
          flush=True)
    t_start = time.perf_counter()
    results = {}
    if "1" in args.parts:
        results["memory"] = part_memory(args)
    if "2" in args.parts:
        results["time"] = part_time(args)
    if "3" in args.parts:
        results["stiff"] = part_stiff(args)
    wall = time.perf_counter() - t_start

    print("\n" + "=" * 100)
    if "memory" in results:
        print(table_memory(results["memory"]))
        print("  The continuous adjoints without checkpointing keep the forward solve's dense output (every "
              "step's stages) until the backward pass, so their memory grows with the steps; with "
              "checkpointing=True and BacksolveAdjoint only the saved states are kept. DirectAdjoint(checkpoints=K) keeps "
              "K snapshots between the passes and recomputes the steps recursively in the backward pass, holding "
              "the graph of at most K steps at a time, so its backward peak stays flat too.")
        print()
    if "time" in results:
        print(table_time(results["time"]))
        print("  t/pyode = this row's time / the time of the pyode row named under 'vs' (>1: slower).")
    if "stiff" in results:
        print()
        print(table_stiff(results["stiff"]))
    print("\nNotes:")
    for line in NOTES:
        print(f"  - {line}")
    print(f"\nTotal benchmark time {wall:.0f} s")

    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), argv=sys.argv[1:],
                versions=versions, torch_threads=torch.get_num_threads(), platform=platform.platform(),
                cpu_count=os.cpu_count(), quick=args.quick, total_seconds=wall)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"sensitivity-{'quick' if args.quick else 'full'}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(dict(meta=meta, notes=NOTES, **results), fh, indent=1)
    print(f"Results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
