#!/usr/bin/env python
"""Speed of pyode against torchdiffeq, torchode, scipy and (when installed) diffrax, in one process.

Usage::

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--threads 1] [--cases 1,2,3] [--out FILE]

Case 1: training iterations of Chen et al.'s spiral neural ODE (float64): forward solve, mean
squared error, backward through the solver and an SGD update, repeated over many iterations from
the same seeded start; ms per iteration, RHS evaluations per iteration, time per evaluation.
  1a: the whole trajectory from (2, 0), t in [0, 25], 100 output times (batch of 1);
  1b: torchdiffeq's ode_demo batches: 20 windows of 10 output times from a 1000-point trajectory.
Case 2: one Robertson solve (t in [0, 1e5], reltol 1e-6, abstol 1e-10, float64, forward only):
pyode Rodas5P / FBDF against scipy LSODA / BDF / Radau; time, steps, evaluations, relative error
against a tight scipy Radau reference.
Case 3: a batch of 4096 states through a 2-64-64-2 tanh MLP (float32, rtol 1e-5, atol 1e-7; the
setup of benchmarks/run.py's case 2): forward and forward + gradient time, evaluations, errors.
Case 4: training epochs of Kim et al.'s ROBER network (`pyode demo robertson --model mlp`: 6x5 GELU
in scaled species, Rodas5P, DirectAdjoint, AdamW) at reltol 1e-3 and 1e-6: pyode's default path,
compile=False and compile=True (no peer has a stiff solver in PyTorch); ms per epoch, first call.

See the section "Speed" in benchmarks/README.md for every column.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback

# numpy, torch and jax are imported in main(), after the thread variables are set.
np = torch = pyode = R = None
jax = jnp = diffrax = None

LIBS = {}           # name -> module, only those that import
VERSIONS = {}

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
SPIRAL_Y0 = (2.0, 0.0)


def note(msg: str) -> None:
    R.note(msg)      # benchmarks/run.py's list of notes, printed at the end


def failed(what: str, e: BaseException, args) -> None:
    note(f"{what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if args.verbose:
        traceback.print_exc()


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------------------
# diffrax helpers (jax on the CPU; x64 enabled so that case 1 runs in float64)
# ----------------------------------------------------------------------------------------------

def jax_params(net, dtype):
    """[(W, b), ...] of the nn.Linear layers of ``net`` as jax arrays (y @ W.T + b)."""
    return [(jnp.asarray(m.weight.detach().cpu().double().numpy(), dtype=dtype),
             jnp.asarray(m.bias.detach().cpu().double().numpy(), dtype=dtype))
            for m in net if isinstance(m, torch.nn.Linear)]


def jax_mlp(params, y):
    for i, (W, b) in enumerate(params):
        y = y @ W.T + b
        if i < len(params) - 1:
            y = jnp.tanh(y)
    return y


def diffrax_nfe(num_steps) -> int:
    """Tsit5 in diffrax: 6 evaluations per step attempt (FSAL) + 1 (checked with a counting
    jax.debug.callback: 6 * num_steps + 1 for an adaptive solve with dt0=None)."""
    return 6 * int(num_steps) + 1


def diffrax_solver(rhs, t0, t1, ts, rtol, atol, max_steps):
    """solve(params, y0) -> (ys (T, *y0.shape), num_steps): Tsit5, PIDController (its default gains:
    integral control), RecursiveCheckpointAdjoint (default checkpoints) for reverse mode. Callers
    vmap it over the members so that every member has its own step size (as in pyode and torchode)."""
    term = diffrax.ODETerm(lambda t, y, p: rhs(p, y))
    solver = diffrax.Tsit5()
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=ts)
    adjoint = diffrax.RecursiveCheckpointAdjoint()

    def solve(p, y0):
        sol = diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=p, saveat=saveat, stepsize_controller=ctrl,
                                  adjoint=adjoint, max_steps=max_steps)
        return sol.ys, sol.stats["num_steps"]

    return solve


# ----------------------------------------------------------------------------------------------
# case 1: spiral neural-ODE training iterations
# ----------------------------------------------------------------------------------------------

def spiral_net(seed, dev):
    """ode_demo.py's ODEFunc network: Linear(2,50)-Tanh-Linear(50,2), weights N(0, 0.1), biases 0."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2))
    for m in net:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.1)
            torch.nn.init.constant_(m.bias, 0.0)
    return net.to(device=dev, dtype=torch.float64)


def true_spiral(ts_np):
    """The true spiral y' = y**3 A from (2, 0) at ts_np (scipy DOP853, rtol = atol = 1e-12)."""
    from scipy.integrate import solve_ivp

    A = np.array(SPIRAL_A)
    sol = solve_ivp(lambda t, y: (y ** 3) @ A, (ts_np[0], ts_np[-1]), np.array(SPIRAL_Y0), method="DOP853",
                    t_eval=ts_np, rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return sol.y.T.copy()                                          # (len(ts), 2)


def spiral_setups(args):
    """The variants of case 1: initial states (B, 2), output times (T,), targets (T, B, 2), one per
    iteration (warm-up iterations first)."""
    n_iter = args.iterations + args.warmup
    out = []
    if "traj" in args.spiral:
        ts_np = np.linspace(0.0, 25.0, 100)
        ytrue = true_spiral(ts_np)
        y0, target = ytrue[:1], ytrue[:, None, :]                # (1, 2), (100, 1, 2)
        out.append(dict(key="1a", name="spiral_trajectory",
                        title="Case 1a: spiral neural ODE, whole trajectory from (2, 0), t in [0, 25], 100 output "
                              "times, batch 1",
                        ts_np=ts_np, batches=[(y0, target)] * n_iter))
    if "windows" in args.spiral:
        ts_np = np.linspace(0.0, 25.0, 1000)
        ytrue = true_spiral(ts_np)
        bt, bs = 10, 20
        rng = np.random.default_rng(args.seed)
        batches = []
        for _ in range(n_iter):
            s = rng.choice(np.arange(len(ts_np) - bt), bs, replace=False)
            batches.append((ytrue[s], np.stack([ytrue[s + i] for i in range(bt)])))   # (20, 2), (10, 20, 2)
        out.append(dict(key="1b", name="spiral_windows",
                        title="Case 1b: spiral neural ODE, ode_demo batches: 20 windows of 10 output times "
                              "(dt = 25/999) from the 1000-point trajectory",
                        ts_np=ts_np[:bt], batches=batches))
    return out


def train_torch(args, net0, setup, solve_fn):
    """Warm-up iterations on a copy of net0, then ``args.iterations`` timed iterations from net0 again.
    solve_fn(net, y0, ts) -> (pred (T, B, 2), nfe). Returns the per-iteration times, NFEs, losses."""
    dev = args.device
    ts = torch.as_tensor(setup["ts_np"], dtype=torch.float64, device=dev)
    batches = [(torch.as_tensor(y0, device=dev), torch.as_tensor(yt, device=dev)) for y0, yt in setup["batches"]]

    def iteration(net, y0, target):
        for q in net.parameters():
            q.grad = None
        pred, nfe = solve_fn(net, y0, ts)
        loss = (pred - target).pow(2).mean()
        loss.backward()
        with torch.no_grad():     # SGD step, the gradient clipped to norm <= args.clip
            gnorm = torch.sqrt(sum(q.grad.pow(2).sum() for q in net.parameters()))
            scale = args.lr * torch.clamp(args.clip / gnorm, max=1.0)
            for q in net.parameters():
                q -= scale * q.grad
        return float(loss.detach()), nfe

    net = copy.deepcopy(net0)
    first_s = None
    for y0, target in batches[args.iterations:]:           # warm-up batches are the extra ones at the end
        sync(dev)
        t = time.perf_counter()
        iteration(net, y0, target)
        sync(dev)
        first_s = time.perf_counter() - t if first_s is None else first_s
    net = copy.deepcopy(net0)
    times, nfes, losses = [], [], []
    for y0, target in batches[:args.iterations]:
        sync(dev)
        t = time.perf_counter()
        loss, nfe = iteration(net, y0, target)
        sync(dev)
        times.append(time.perf_counter() - t)
        nfes.append(nfe)
        losses.append(loss)
    return times, nfes, losses, first_s


def train_diffrax(args, net0, setup):
    ts_j = jnp.asarray(setup["ts_np"], dtype=jnp.float64)
    solve = diffrax_solver(lambda p, y: jax_mlp(p, y ** 3), ts_j[0], ts_j[-1], ts_j, args.spiral_rtol,
                           args.spiral_atol, max_steps=4096)
    lr, clip = args.lr, args.clip

    def loss_fn(p, y0, target):
        ys, nsteps = jax.vmap(solve, in_axes=(None, 0))(p, y0)       # (B, T, 2)
        return jnp.mean((jnp.swapaxes(ys, 0, 1) - target) ** 2), jnp.max(nsteps)

    @jax.jit
    def step(p, y0, target):
        (loss, nsteps), g = jax.value_and_grad(loss_fn, has_aux=True)(p, y0, target)
        gnorm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(g)))
        scale = lr * jnp.minimum(clip / gnorm, 1.0)
        return jax.tree_util.tree_map(lambda a, b: a - scale * b, p, g), loss, nsteps

    p0 = jax_params(net0, jnp.float64)
    batches = [(jnp.asarray(y0), jnp.asarray(yt)) for y0, yt in setup["batches"]]
    t = time.perf_counter()
    jax.block_until_ready(step(p0, *batches[-1]))             # compile + first run
    compile_s = time.perf_counter() - t
    p = p0
    for y0, target in batches[args.iterations:]:
        p, _, _ = jax.block_until_ready(step(p, y0, target))
    p = p0
    times, nfes, losses = [], [], []
    for y0, target in batches[:args.iterations]:
        t = time.perf_counter()
        p, loss, nsteps = jax.block_until_ready(step(p, y0, target))
        times.append(time.perf_counter() - t)
        nfes.append(diffrax_nfe(nsteps))
        losses.append(float(loss))
    return times, nfes, losses, None, compile_s


def case_spiral(args):
    rtol, atol, dev = args.spiral_rtol, args.spiral_atol, args.device
    results = []
    for setup in spiral_setups(args):
        title = (f"{setup['title']}; float64, {dev}, rtol={rtol:g} atol={atol:g}, SGD lr={args.lr:g} "
                 f"(gradient clipped to norm {args.clip:g}), "
                 f"{args.iterations} timed iterations after {args.warmup} warm-up ones")
        print(f"\n{title}", flush=True)
        net0 = spiral_net(args.seed, dev)
        span = (float(setup["ts_np"][0]), float(setup["ts_np"][-1]))
        rows = []

        def add(library, method, fn):
            try:
                out = fn()
            except Exception as e:  # a failing peer becomes a note
                failed(f"case {setup['key']}: {library} {method}", e, args)
                return
            times, nfes, losses = out[:3]
            row = dict(library=library, method=method, times_s=times, nfe=nfes, losses=losses,
                       mean_s=statistics.fmean(times), median_s=statistics.median(times),
                       nfe_mean=statistics.fmean(nfes), nfe_min=min(nfes), nfe_max=max(nfes),
                       s_per_nfe=sum(times) / sum(nfes), loss_first=losses[0], loss_last=losses[-1])
            if len(out) > 3 and out[3] is not None:
                row["first_s"] = out[3]         # the first (warm-up) iteration: first-call latency
            if len(out) > 4:
                row["compile_s"] = out[4]
            rows.append(row)
            print(f"    {library:<11} {method:<14} {row['mean_s'] * 1e3:8.1f} ms/iter  "
                  f"NFE/iter {row['nfe_mean']:6.1f}  "
                  f"loss {losses[0]:.4g} -> {losses[-1]:.4g}", flush=True)

        def pyode_solve(net, y0, ts):
            f = R.Count(lambda u, p, t: net(u ** 3))
            sol = pyode.solve(pyode.ODEProblem(f, y0, span), pyode.Tsit5(), saveat=ts,
                              reltol=rtol, abstol=atol, dense=False, maxiters=args.max_steps)
            return sol.u, f.n

        add("pyode", "Tsit5", lambda: train_torch(args, net0, setup, pyode_solve))

        def pyode_compiled(net, y0, ts):
            sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: net(u ** 3), y0, span), pyode.Tsit5(), saveat=ts,
                              reltol=rtol, abstol=atol, dense=False, maxiters=args.max_steps, compile=True)
            return sol.u, sol.stats.nf     # f's forward evaluations (a counter inside f would also see the
            #                                batched recomputation of the outputs)

        def train_compiled():
            t = time.perf_counter()       # the first solve and gradient compile
            y0, _ = setup["batches"][0]
            ts = torch.as_tensor(setup["ts_np"], dtype=torch.float64, device=dev)
            pred, _ = pyode_compiled(copy.deepcopy(net0), torch.as_tensor(y0, device=dev), ts)
            pred.sum().backward()
            compile_s = time.perf_counter() - t
            return (*train_torch(args, net0, setup, pyode_compiled), compile_s)

        if not args.no_compile:
            add("pyode", "Tsit5/compile", train_compiled)

        if "torchdiffeq" in LIBS:
            odeint = LIBS["torchdiffeq"].odeint

            def td_solve(net, y0, ts):
                f = R.Count(lambda t, y: net(y ** 3))
                return odeint(f, y0, ts, method="dopri5", rtol=rtol, atol=atol,
                              options=dict(max_num_steps=args.max_steps)), f.n

            add("torchdiffeq", "dopri5", lambda: train_torch(args, net0, setup, td_solve))

        if "torchode" in LIBS:
            to = LIBS["torchode"]

            def to_solve(net, y0, ts):
                f = R.Count(lambda t, y: net(y ** 3))
                term = to.ODETerm(f)
                ctrl = to.IntegralController(atol=atol, rtol=rtol, term=term)
                solver = to.AutoDiffAdjoint(to.Dopri5(term=term), ctrl, max_steps=args.max_steps)
                sol = solver.solve(to.InitialValueProblem(y0=y0, t_eval=ts[None].expand(y0.shape[0], -1)))
                return sol.ys.transpose(0, 1), f.n

            add("torchode", "Dopri5", lambda: train_torch(args, net0, setup, to_solve))

        if "diffrax" in LIBS:
            add("diffrax", "Tsit5", lambda: train_diffrax(args, net0, setup))

        results.append(dict(name=setup["name"], key=setup["key"], title=title, rtol=rtol, atol=atol, lr=args.lr,
                            clip=args.clip,
                            iterations=args.iterations, warmup=args.warmup, rows=rows))
    return results


# ----------------------------------------------------------------------------------------------
# case 2: Robertson, one stiff solve
# ----------------------------------------------------------------------------------------------

ROBER_K = (0.04, 3e7, 1e4)


def rober_np():
    k1, k2, k3 = ROBER_K

    def f(t, y):
        y1, y2, y3 = y
        return np.array([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2 * y2 - k3 * y2 * y3, k2 * y2 * y2])

    def jac(t, y):
        _, y2, y3 = y
        return np.array([[-k1, k3 * y3, k3 * y2],
                         [k1, -2.0 * k2 * y2 - k3 * y3, -k3 * y2],
                         [0.0, 2.0 * k2 * y2, 0.0]])

    return f, jac


def case_robertson(args, timer):
    import pyode.problems as P
    from scipy.integrate import solve_ivp

    rtol, atol, t1 = args.rober_rtol, args.rober_atol, args.rober_t1
    tspan = (0.0, t1)
    f_np, jac_np = rober_np()
    y0 = np.array([1.0, 0.0, 0.0])
    t = time.perf_counter()
    ref = solve_ivp(f_np, tspan, y0, method="Radau", rtol=1e-12, atol=1e-20, jac=jac_np)
    assert ref.success, ref.message
    ref_u = ref.y[:, -1].copy()
    ref_info = dict(how="scipy solve_ivp Radau, rtol=1e-12, atol=1e-20, analytic Jacobian", nfev=int(ref.nfev),
                    steps=len(ref.t) - 1, seconds=time.perf_counter() - t)
    title = (f"Case 2: Robertson (n=3, float64), t in [0, {t1:g}], reltol={rtol:g} abstol={atol:g}, one solve, "
             f"forward only (pyode on {args.device})")
    print(f"\n{title}\n  reference: {ref_info['how']} ({ref_info['steps']} steps, {ref_info['seconds']:.1f} s)",
          flush=True)

    prob = P.robertson(tspan=tspan, device=args.device)
    # the torch versions must agree with the NumPy ones scipy gets
    yt = torch.tensor([0.7, 2e-5, 0.3], dtype=torch.float64, device=args.device)
    assert np.allclose(prob.f(yt, prob.p, 0.0).cpu().numpy(), f_np(0.0, yt.cpu().numpy()), rtol=1e-13, atol=0)
    assert np.allclose(prob.jac(yt, prob.p, 0.0).cpu().numpy(), jac_np(0.0, yt.cpu().numpy()), rtol=1e-13, atol=0)

    def rel_err(u):
        mask = np.abs(ref_u) >= 1e-12
        return float(np.max(np.abs(u[mask] - ref_u[mask]) / np.abs(ref_u[mask])))

    rows = []

    def add(library, method, jac, fn):
        try:
            out, times = timer(fn)
        except Exception as e:
            failed(f"case 2: {library} {method}", e, args)
            return
        err = rel_err(out.pop("u"))
        row = dict(library=library, method=method, jac=jac, times_s=times, median_s=statistics.median(times),
                   min_s=min(times), rel_err=err, **out)
        rows.append(row)
        print(f"    {library:<7} {method:<10} {jac:<9} {row['median_s'] * 1e3:9.1f} ms  steps {row['naccept']}"
              f"/{row['nreject'] if row['nreject'] is not None else '-'}  nf {row['nf']}  "
              f"rel err {row['rel_err']:.1e}", flush=True)

    for name, alg, jac in (("Rodas5P", pyode.Rodas5P, "analytic"), ("Rodas5P", pyode.Rodas5P, "AD"),
                           ("FBDF", pyode.FBDF, "analytic")):
        p = prob if jac == "analytic" else prob.remake(jac=None)

        def run(p=p, alg=alg):
            sol = pyode.solve(p, alg(), saveat=[t1], reltol=rtol, abstol=atol, dense=False, maxiters=10 ** 6)
            s = sol.stats
            return dict(u=sol.u[-1].cpu().numpy(), nf=int(s.nf), njac=int(s.njac), nlu=int(s.nlu),
                        naccept=int(s.naccept), nreject=int(s.nreject))

        add("pyode", name, jac, run)

    if not args.no_compile:
        def run_compiled():
            sol = pyode.solve(prob, pyode.Rodas5P(), saveat=[t1], reltol=rtol, abstol=atol, dense=False,
                              maxiters=10 ** 6, compile=True)
            s = sol.stats
            return dict(u=sol.u[-1].cpu().numpy(), nf=int(s.nf), njac=int(s.njac), nlu=int(s.nlu),
                        naccept=int(s.naccept), nreject=int(s.nreject))

        t = time.perf_counter()
        run_compiled()
        compile_s = time.perf_counter() - t
        print(f"    (pyode Rodas5P/compile: compile + first solve {compile_s:.1f} s, not included)", flush=True)
        add("pyode", "Rodas5P/c", "analytic", lambda: dict(run_compiled(), compile_s=compile_s))

    for method in ("LSODA", "BDF", "Radau"):
        def run(method=method):
            sol = solve_ivp(f_np, tspan, y0, method=method, rtol=rtol, atol=atol, jac=jac_np)
            if not sol.success:
                raise RuntimeError(sol.message)
            return dict(u=sol.y[:, -1].copy(), nf=int(sol.nfev), njac=int(sol.njev), nlu=int(sol.nlu),
                        naccept=len(sol.t) - 1, nreject=None)

        add("scipy", method, "analytic", run)
    return [dict(name="robertson", key="2", title=title, rtol=rtol, atol=atol, tspan=tspan, reference=ref_info,
                 rows=rows)]


# ----------------------------------------------------------------------------------------------
# case 3: batch of 4096 through an MLP, forward + gradient
# ----------------------------------------------------------------------------------------------

def case_batch(args, timer):
    dev, B, T = args.device, args.batch, 10
    rtol, atol = args.batch_rtol, args.batch_atol
    tspan = (0.0, 1.0)
    net64 = R.make_mlp(seed=0)                                  # run.py's case 2 network and states
    u0_64 = torch.randn(B, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts_np = np.linspace(*tspan, T)
    ts = torch.as_tensor(ts_np, dtype=torch.float64, device=dev)
    title = (f"Case 3: batch {B} x 2 through a 2-64-64-2 tanh MLP (float32, {dev}), tspan {tspan}, {T} output "
             f"times, rtol={rtol:g} atol={atol:g}; gradient of sum(u) w.r.t. the MLP parameters")
    print(f"\n{title}", flush=True)

    # Reference states and gradient, float64: torchdiffeq dopri8 stepping onto the output times.
    ref_u = grad_ref = None
    ref_info = {}
    if "torchdiffeq" in LIBS:
        t = time.perf_counter()
        net = copy.deepcopy(net64).to(dev)
        u = LIBS["torchdiffeq"].odeint(lambda t, y: net(y), u0_64.to(dev), ts, method="dopri8", rtol=args.ref_tol,
                                       atol=args.ref_tol, options=dict(step_t=ts))
        u.sum().backward()
        ref_u, grad_ref = R.to_np(u), R.flat_grad(net)
        ref_info = dict(how=f"torchdiffeq dopri8 in float64 stepping onto the output times, rtol=atol="
                            f"{args.ref_tol:g}, plain autograd", seconds=time.perf_counter() - t)
        print(f"  reference: {ref_info['how']} ({ref_info['seconds']:.1f} s)", flush=True)
    else:
        note("case 3: torchdiffeq is missing, so there is no reference: the error columns stay empty")

    dtype = torch.float32
    net = copy.deepcopy(net64).to(device=dev, dtype=dtype)
    u0 = u0_64.to(device=dev, dtype=dtype)
    rows = []

    def add(library, method, solve_fn, grad_fn=None):
        """solve_fn() -> (u (T, B, 2), nfe, extra); grad_fn() -> flat float64 gradient (default: autograd
        through solve_fn)."""
        row = dict(library=library, method=method)
        try:
            def fwd():
                with torch.no_grad():
                    return solve_fn()

            (u, nfe, extra), times = timer(fwd)
            row.update(fwd_times_s=times, fwd_median_s=statistics.median(times), nfe=nfe, **extra)
            if ref_u is not None:
                row["max_err"] = float(np.max(np.abs(R.to_np(u) - ref_u)))

            def fwd_bwd():
                for q in net.parameters():
                    q.grad = None
                u, _, _ = solve_fn()
                u.sum().backward()
                return R.flat_grad(net)

            g, times = timer(grad_fn or fwd_bwd)
            row.update(fwdbwd_times_s=times, fwdbwd_median_s=statistics.median(times))
            if grad_ref is not None:
                row["grad_rel_err"] = float((g - grad_ref).norm() / grad_ref.norm())
        except Exception as e:
            failed(f"case 3: {library} {method}", e, args)
            return
        rows.append(row)
        print(f"    {library:<11} {method:<16} fwd {row['fwd_median_s'] * 1e3:8.1f} ms  fwd+grad "
              f"{row['fwdbwd_median_s'] * 1e3:8.1f} ms  NFE {nfe}", flush=True)

    rhs = lambda u, p, t: p(u)  # noqa: E731
    # "/shared": batch_steps="shared", one step size for the batch (torchdiffeq's semantics: the
    # error norm and the starting step's over the whole batch, integral control)
    for label, controller, steps in (("Tsit5", None, "member"), ("Tsit5/I", pyode.IController(), "member"),
                                     ("Tsit5/shared", None, "shared")):
        def solve_fn(controller=controller, steps=steps):
            f = R.Count(rhs)
            sol = pyode.solve(pyode.ODEProblem(f, u0, tspan, net), pyode.Tsit5(), saveat=ts, reltol=rtol,
                              abstol=atol, controller=controller, dense=False, batch_steps=steps)
            n = sol.stats.naccept + sol.stats.nreject
            return sol.u, f.n, dict(steps_max=int(n.max()), steps_mean=float(n.double().mean()))

        add("pyode", label, solve_fn)

    def solve_compiled(steps):
        sol = pyode.solve(pyode.ODEProblem(rhs, u0, tspan, net), pyode.Tsit5(), saveat=ts, reltol=rtol, abstol=atol,
                          controller=pyode.IController(), dense=False, compile=True, batch_steps=steps)
        n = sol.stats.naccept + sol.stats.nreject
        return sol.u, sol.stats.nf, dict(steps_max=int(n.max()), steps_mean=float(n.double().mean()))

    if not args.no_compile:
        for label, steps in (("Tsit5/I/compile", "member"), ("Tsit5/sh/compile", "shared")):
            t = time.perf_counter()
            solve_compiled(steps)[0].sum().backward()       # compiles (forward chunks; the gradient needs none)
            compile_s = time.perf_counter() - t

            def solve_compiled_row(steps=steps, compile_s=compile_s):
                u, nfe, extra = solve_compiled(steps)
                return u, nfe, dict(extra, compile_s=compile_s)

            add("pyode", label, solve_compiled_row)

    if "torchdiffeq" in LIBS:
        odeint = LIBS["torchdiffeq"].odeint

        def solve_fn():
            f = R.Count(lambda t, y: net(y))
            return odeint(f, u0, ts, method="dopri5", rtol=rtol, atol=atol), f.n, {}

        add("torchdiffeq", "dopri5", solve_fn)

    if "torchode" in LIBS:
        to = LIBS["torchode"]
        t_eval = ts[None].expand(B, T)

        def solve_fn():
            f = R.Count(lambda t, y: net(y))
            term = to.ODETerm(f)
            solver = to.AutoDiffAdjoint(to.Tsit5(term=term), to.IntegralController(atol=atol, rtol=rtol, term=term))
            sol = solver.solve(to.InitialValueProblem(y0=u0, t_eval=t_eval))
            n = sol.stats["n_steps"]
            return sol.ys.transpose(0, 1), f.n, dict(steps_max=int(n.max()), steps_mean=float(n.double().mean()))

        add("torchode", "Tsit5", solve_fn)

    if "diffrax" in LIBS:
        ts_j = jnp.asarray(ts_np, dtype=jnp.float32)
        solve = diffrax_solver(jax_mlp, ts_j[0], ts_j[-1], ts_j, rtol, atol, max_steps=4096)
        p32 = jax_params(net64, jnp.float32)
        y0_j = jnp.asarray(u0_64.numpy(), dtype=jnp.float32)
        # "Tsit5": jax.vmap over the members (own step sizes, as pyode and torchode); "Tsit5/shared":
        # the batch as one (B, 2) state with one step size (as torchdiffeq), RMS norm over the batch.
        variants = (("Tsit5", jax.vmap(solve, in_axes=(None, 0)), 1), ("Tsit5/shared", solve, 0))
        for label, batched, time_axis in variants:
            fwd_j = jax.jit(batched)
            grad_j = jax.jit(jax.grad(lambda p, y0, batched=batched: batched(p, y0)[0].sum()))
            t = time.perf_counter()
            try:
                jax.block_until_ready(fwd_j(p32, y0_j))
                jax.block_until_ready(grad_j(p32, y0_j))
            except Exception as e:
                failed(f"case 3: diffrax {label}", e, args)
                continue
            compile_s = time.perf_counter() - t

            def solve_fn(fwd_j=fwd_j, time_axis=time_axis, compile_s=compile_s):
                ys, n = jax.block_until_ready(fwd_j(p32, y0_j))
                n = np.array(n)
                return (torch.from_numpy(np.array(ys)).movedim(time_axis, 0), diffrax_nfe(n.max()),
                        dict(steps_max=int(n.max()), steps_mean=float(n.mean()), compile_s=compile_s))

            def grad_fn(grad_j=grad_j):
                g = jax.block_until_ready(grad_j(p32, y0_j))
                return torch.cat([torch.from_numpy(np.array(a, dtype=np.float64)).reshape(-1)
                                  for W, b in g for a in (W, b)])

            add("diffrax", label, solve_fn, grad_fn)

    return [dict(name="neural_batch", key="3", title=title, rtol=rtol, atol=atol, batch=B, dtype="float32",
                 tspan=tspan, reference=ref_info, rows=rows)]


# ----------------------------------------------------------------------------------------------
# case 4: Kim et al.'s ROBER network, training epochs through Rodas5P
# ----------------------------------------------------------------------------------------------

def case_kim(args):
    """Training epochs of ``pyode demo robertson --model mlp``: Kim et al.'s 6x5 GELU network in
    scaled species, Rodas5P, DirectAdjoint, AdamW with the gradient rescaled to norm 1. No peer
    has a stiff solver in PyTorch, so the rows are pyode's paths."""
    import pyode.native._fused as fused_module
    from pyode.data import generate_data
    from pyode.nn import NeuralODE, SpeciesScaling, mlp
    from pyode.problems import robertson

    times = torch.logspace(-5, 5, 50, dtype=torch.float64)
    series = generate_data(robertson(), pyode.Rodas5P(), times, noise=0.0, seed=0, names=["A", "B", "C"])
    train = torch.arange(50) % 5 != 4          # the demo's split: every fifth time held out
    t_train, u_train = series.t[train], series.u[train]
    yscale = u_train.abs().max(0).values
    results = []
    for rtol, atol in ((1e-3, 1e-6), (1e-6, 1e-12)):
        title = (f"Case 4: Kim et al.'s ROBER network (6x5 GELU in scaled species), Rodas5P + DirectAdjoint, "
                 f"{int(train.sum())} log-spaced times 1e-5..1e5, reltol={rtol:g} abstol={atol:g}, AdamW "
                 f"(gradient rescaled to norm 1), {args.kim_epochs} timed epochs from the seeded network")
        print(f"\n{title}", flush=True)
        rows = []
        # "outputs at once": compile=True with the compile of the outputs' recomputation not deferred
        # (pyode defers it for Rosenbrock methods until 30 s of eager recomputation per bucket of step
        # counts): what an epoch costs once those compiles are done. Its mean includes them; its
        # median is the steady epoch. Run at the first tolerance only: each bucket compiles ~60 s.
        variants = [("default", None), ("compile=False", False), ("compile=True", True)]
        if rtol == 1e-3:
            variants.append(("compile/outputs", "outputs"))
        for label, compile_ in variants:
            if compile_ in (True, "outputs") and args.no_compile:
                continue
            outputs_at_once, budget = compile_ == "outputs", fused_module._OUTPUTS_COMPILE_BUDGET_S
            compile_ = True if outputs_at_once else compile_
            torch.manual_seed(args.seed)
            net = SpeciesScaling(mlp(3, 3, width=5, depth=6, activation="gelu"), yscale, 1e5)
            kw = {} if compile_ is None else dict(compile=compile_)
            node = NeuralODE(net, (float(t_train[0]), float(t_train[-1])), pyode.Rodas5P(), saveat=t_train,
                             reltol=rtol, abstol=atol, maxiters=20_000, **kw)
            opt = torch.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=1e-2)

            def epoch():
                opt.zero_grad()
                sol = node(u_train[0])
                loss = ((sol.u - u_train).abs() / yscale).mean()
                loss.backward()
                with torch.no_grad():
                    g = torch.sqrt(sum(q.grad.pow(2).sum() for q in net.parameters()))
                    for q in net.parameters():
                        q.grad /= g
                opt.step()
                return float(loss.detach()), int(sol.stats.naccept + sol.stats.nreject)

            try:
                if outputs_at_once:
                    fused_module._OUTPUTS_COMPILE_BUDGET_S = 0.0
                t = time.perf_counter()
                epoch()                                    # the first epoch (compiles, for compile=True)
                first_s = time.perf_counter() - t
                times_s, steps, losses = [], [], []
                for _ in range(args.kim_epochs):
                    t = time.perf_counter()
                    loss, n = epoch()
                    times_s.append(time.perf_counter() - t)
                    steps.append(n)
                    losses.append(loss)
            except Exception as e:
                failed(f"case 4: pyode {label}", e, args)
                continue
            finally:
                fused_module._OUTPUTS_COMPILE_BUDGET_S = budget
            row = dict(library="pyode", method=f"Rodas5P {label}", times_s=times_s, first_s=first_s,
                       mean_s=statistics.fmean(times_s), median_s=statistics.median(times_s),
                       steps_mean=statistics.fmean(steps), loss_first=losses[0], loss_last=losses[-1])
            rows.append(row)
            print(f"    pyode       Rodas5P {label:<14} {row['mean_s'] * 1e3:8.1f} ms/epoch  first {first_s:.2f} s  "
                  f"steps {row['steps_mean']:.1f}", flush=True)
        results.append(dict(name="kim", key="4", title=title, rtol=rtol, atol=atol, rows=rows))
    return results


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------

def table_kim(case):
    rows = case["rows"]
    base = next((r for r in rows if r["method"].endswith("default")), None)
    out = [case["title"]]
    hdr = (f"  {'library':<12}{'method':<24}{'ms/epoch':>9}{'median':>8}{'t/default':>10}{'first call s':>13}"
           f"{'steps':>7}{'loss first':>12}{'loss last':>11}")
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        out.append(f"  {r['library']:<12}{r['method']:<24}{r['mean_s'] * 1e3:9.1f}{r['median_s'] * 1e3:8.1f}"
                   f"{ratio(r['mean_s'], base and base['mean_s']):>10}{r['first_s']:13.2f}{r['steps_mean']:7.1f}"
                   f"{r['loss_first']:12.4g}{r['loss_last']:11.4g}")
    return "\n".join(out)


def ratio(a, b, fmt=".2f"):
    return "-" if a is None or b is None or b == 0 else format(a / b, fmt)


def table_spiral(case):
    rows = case["rows"]
    base = next((r for r in rows if r["library"] == "pyode"), None)
    out = [case["title"]]
    hdr = (f"  {'library':<12}{'method':<14}{'ms/iter':>9}{'median':>8}{'t/pyode':>9}{'NFE/iter':>10}{'min-max':>10}"
           f"{'NFE/pyode':>10}{'us/NFE':>8}{'(t/NFE)/pyode':>15}{'loss first':>12}{'loss last':>11}")
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        mm = f"{r['nfe_min']}-{r['nfe_max']}"
        out.append(f"  {r['library']:<12}{r['method']:<14}{r['mean_s'] * 1e3:9.1f}{r['median_s'] * 1e3:8.1f}"
                   f"{ratio(r['mean_s'], base and base['mean_s']):>9}{r['nfe_mean']:10.1f}{mm:>10}"
                   f"{ratio(r['nfe_mean'], base and base['nfe_mean']):>10}{r['s_per_nfe'] * 1e6:8.0f}"
                   f"{ratio(r['s_per_nfe'], base and base['s_per_nfe']):>15}"
                   f"{r['loss_first']:12.4g}{r['loss_last']:11.4g}")
        if "compile_s" in r:
            out.append(f"  {'':<26}(compile + first iteration {r['compile_s']:.1f} s, not included)")
        elif "first_s" in r:
            out.append(f"  {'':<26}(first iteration, warm-up: {r['first_s'] * 1e3:.1f} ms)")
    return "\n".join(out)


def table_robertson(case):
    rows = case["rows"]
    base = next((r for r in rows if r["library"] == "pyode" and r["jac"] == "analytic"), None)
    lsoda = next((r for r in rows if r["method"] == "LSODA"), None)
    ref = case["reference"]
    out = [case["title"], f"  reference: {ref['how']} ({ref['steps']} steps)"]
    hdr = (f"  {'library':<8}{'method':<11}{'jac':<10}{'time ms':>9}{'t/pyode':>9}{'t/LSODA':>9}{'acc/rej':>12}"
           f"{'nf':>7}{'njac':>6}{'nlu':>6}{'us/step':>9}{'rel err':>9}")
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        steps = r["naccept"] + (r["nreject"] or 0)
        rej = "-" if r["nreject"] is None else r["nreject"]
        acc_rej = f"{r['naccept']}/{rej}"
        out.append(f"  {r['library']:<8}{r['method']:<11}{r['jac']:<10}{r['median_s'] * 1e3:9.1f}"
                   f"{ratio(r['median_s'], base and base['median_s']):>9}"
                   f"{ratio(r['median_s'], lsoda and lsoda['median_s']):>9}{acc_rej:>12}"
                   f"{r['nf']:>7}{r['njac']:>6}{r['nlu']:>6}{r['median_s'] / steps * 1e6:9.0f}{r['rel_err']:9.1e}")
        if "compile_s" in r:
            out.append(f"  {'':<27}(compile + first solve {r['compile_s']:.1f} s, not included)")
    return "\n".join(out)


def table_batch(case):
    rows = case["rows"]
    base = next((r for r in rows if r["library"] == "pyode"), None)
    out = [case["title"]]
    if case["reference"]:
        out.append(f"  reference: {case['reference']['how']}")
    hdr = (f"  {'library':<12}{'method':<16}{'fwd ms':>9}{'t/pyode':>9}{'fwd+grad ms':>13}{'t/pyode':>9}{'NFE':>6}"
           f"{'NFE/pyode':>10}{'us/NFE fwd':>11}{'steps mean/max':>16}{'max err':>9}{'grad err':>10}")
    out += [hdr, "  " + "-" * (len(hdr) - 2)]
    for r in rows:
        st = f"{r['steps_mean']:.1f}/{r['steps_max']}" if "steps_max" in r else "-"
        out.append(f"  {r['library']:<12}{r['method']:<16}{r['fwd_median_s'] * 1e3:9.1f}"
                   f"{ratio(r['fwd_median_s'], base and base['fwd_median_s']):>9}{r['fwdbwd_median_s'] * 1e3:13.1f}"
                   f"{ratio(r['fwdbwd_median_s'], base and base['fwdbwd_median_s']):>9}{r['nfe']:>6}"
                   f"{ratio(r['nfe'], base and base['nfe']):>10}{r['fwd_median_s'] / r['nfe'] * 1e6:11.0f}{st:>16}"
                   f"{'-' if 'max_err' not in r else format(r['max_err'], '.1e'):>9}"
                   f"{'-' if 'grad_rel_err' not in r else format(r['grad_rel_err'], '.1e'):>10}")
        if "compile_s" in r:
            out.append(f"  {'':<28}(compile of forward and gradient + first runs {r['compile_s']:.1f} s, "
                       f"not included)")
    # Equal tolerances do not give equal accuracy: compare with torchdiffeq at equal or better
    # accuracy, the fastest shared-step row whose state and gradient errors are both at most its.
    td = next((r for r in rows if r["library"] == "torchdiffeq"), None)
    if td is not None and "max_err" in td and "grad_rel_err" in td:
        ok = [r for r in rows if r["library"] == "pyode" and "/shared" in r["method"] and "compile_s" not in r
              and r.get("max_err", 1e300) <= td["max_err"] and r.get("grad_rel_err", 1e300) <= td["grad_rel_err"]]
        if ok:
            best = min(ok, key=lambda r: r["fwdbwd_median_s"])
            out.append(f"  at equal or better accuracy: pyode {best['method']} (max err {best['max_err']:.1e}, grad err "
                       f"{best['grad_rel_err']:.1e}) against torchdiffeq dopri5 ({td['max_err']:.1e}, "
                       f"{td['grad_rel_err']:.1e}): fwd {td['fwd_median_s'] / best['fwd_median_s']:.2f}x, "
                       f"fwd+grad {td['fwdbwd_median_s'] / best['fwdbwd_median_s']:.2f}x torchdiffeq's speed")
        else:
            out.append("  at equal or better accuracy: no pyode shared-step row reaches torchdiffeq's errors")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="20 instead of 100 training iterations in case 1, 3 instead of 7 timed repeats")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1, help="torch, BLAS and XLA threads (default 1)")
    ap.add_argument("--cases", default="1,2,3,4", help="comma list of cases (default 1,2,3,4)")
    ap.add_argument("--out", default=None,
                    help="JSON file (default benchmarks/results/speed-<full|quick>-<device>.json)")
    ap.add_argument("--repeats", type=int, default=None, help="cases 2, 3: timed runs (default 7, --quick 3)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="cases 2, 3: repeat a fast measurement until this many seconds (default 0.5, --quick 0.2)")
    ap.add_argument("--spiral", default="traj,windows", help="case 1 variants: traj (1a), windows (1b)")
    ap.add_argument("--iterations", type=int, default=None, help="case 1: timed iterations (default 100, --quick 20)")
    ap.add_argument("--warmup", type=int, default=3, help="case 1: warm-up iterations (default 3)")
    ap.add_argument("--lr", type=float, default=0.2, help="case 1: SGD learning rate (default 0.2)")
    ap.add_argument("--clip", type=float, default=1.0, help="case 1: gradient norm clip (default 1)")
    ap.add_argument("--max-steps", type=int, default=20000,
                    help="case 1: step cap per solve (pyode maxiters, torchdiffeq max_num_steps per output "
                         "interval, torchode max_steps; diffrax max_steps 4096), so that a diverging run fails "
                         "instead of running away")
    ap.add_argument("--seed", type=int, default=0, help="cases 1, 4: seed of the networks (and of case 1's windows)")
    ap.add_argument("--kim-epochs", type=int, default=None,
                    help="case 4: timed epochs (default 150, the demo's; --quick 50). The network stiffens as it "
                         "trains: 6-8 steps per solve at first, ~50 by epoch 125")
    ap.add_argument("--spiral-rtol", type=float, default=1e-7)
    ap.add_argument("--spiral-atol", type=float, default=1e-9)
    ap.add_argument("--rober-rtol", type=float, default=1e-6)
    ap.add_argument("--rober-atol", type=float, default=1e-10)
    ap.add_argument("--rober-t1", type=float, default=1e5)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--batch-rtol", type=float, default=1e-5)
    ap.add_argument("--batch-atol", type=float, default=1e-7)
    ap.add_argument("--ref-tol", type=float, default=1e-10, help="case 3 reference tolerance")
    ap.add_argument("--no-diffrax", action="store_true", help="skip diffrax even when it is installed")
    ap.add_argument("--no-compile", action="store_true", help="skip pyode's compile=True rows")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing peers")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 0.5)
    args.iterations = args.iterations or (20 if args.quick else 100)
    args.kim_epochs = args.kim_epochs or (50 if args.quick else 150)
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if not args.cases <= {"1", "2", "3", "4"}:
        ap.error(f"--cases: unknown case(s) {sorted(args.cases - {'1', '2', '3', '4'})}")
    args.spiral = {s.strip() for s in args.spiral.split(",") if s.strip()}
    if not args.spiral <= {"traj", "windows"}:
        ap.error("--spiral: variants are traj and windows")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def import_peers(args):
    for name in ("torchdiffeq", "torchode", "scipy"):
        try:
            mod = __import__(name)
            if name == "scipy":
                import scipy.integrate  # noqa: F401
            LIBS[name] = mod
            VERSIONS[name] = getattr(mod, "__version__", "?")
        except ImportError as e:
            note(f"{name} is not installed ({e}); its rows are skipped")
    if args.no_diffrax:
        return
    global jax, jnp, diffrax
    try:
        import jax as _jax
        _jax.config.update("jax_enable_x64", True)    # case 1 runs in float64; case 3 passes float32 arrays
        import jax.numpy as _jnp
        import diffrax as _diffrax
    except Exception as e:  # ImportError, or a jax that does not load on this machine
        note(f"diffrax rows skipped: jax/diffrax do not import ({type(e).__name__}: {e}); "
             f"`pip install jax diffrax` adds them")
        return
    jax, jnp, diffrax = _jax, _jnp, _diffrax
    LIBS["diffrax"] = diffrax
    VERSIONS.update(jax=jax.__version__, diffrax=getattr(diffrax, "__version__", "?"))
    if args.device != "cpu":
        note(f"diffrax runs where jax puts it ({jax.devices()[0]}), not necessarily on --device {args.device}")


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    load_before = loadavg()

    global np, torch, pyode, R
    import numpy as np
    import torch
    import pyode

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run as R       # benchmarks/run.py: Timer, Count, make_mlp, flat_grad, to_np, note
    R.np, R.torch, R.pyode = np, torch, pyode

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")
    VERSIONS.update(python=platform.python_version(), pyode=pyode.__version__, torch=torch.__version__,
                    numpy=np.__version__)
    print(f"pyode speed benchmark, device={args.device}, torch threads={torch.get_num_threads()}, "
          f"{'quick' if args.quick else 'full'} run; load average before: {load_before}")
    import_peers(args)
    if "scipy" not in LIBS:
        print("scipy is required (references, true spiral); stopping")
        return 1
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in VERSIONS.items()), flush=True)

    timer = R.Timer(args.device, args.repeats, args.min_time, max_repeats=50)
    t_start = time.perf_counter()
    cases = []
    for key, fn in (("1", lambda: case_spiral(args)), ("2", lambda: case_robertson(args, timer)),
                    ("3", lambda: case_batch(args, timer)), ("4", lambda: case_kim(args))):
        if key in args.cases:
            try:
                cases += fn()
            except Exception as e:
                failed(f"case {key}", e, args)
    wall = time.perf_counter() - t_start
    load_after = loadavg()

    print("\n" + "=" * 110)
    print(f"Results (device={args.device}, torch threads={torch.get_num_threads()}; ratios are this row / the "
          f"pyode row: >1 means slower or more than pyode)")
    print("=" * 110)
    for case in cases:
        print()
        print({"spiral_trajectory": table_spiral, "spiral_windows": table_spiral, "robertson": table_robertson,
               "neural_batch": table_batch, "kim": table_kim}[case["name"]](case))
    if R.NOTES:
        print("\nNotes:")
        for line in R.NOTES:
            print(f"  - {line}")
    print(f"\nTotal benchmark time {wall:.0f} s; load average (1, 5, 15 min) before {load_before}, "
          f"after {load_after}")

    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), argv=sys.argv[1:],
                versions=VERSIONS, device=args.device, torch_threads=torch.get_num_threads(),
                platform=platform.platform(), cpu_count=os.cpu_count(), quick=args.quick, repeats=args.repeats,
                min_time_s=args.min_time, iterations=args.iterations, total_seconds=wall,
                loadavg_before=load_before, loadavg_after=load_after)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"speed-{'quick' if args.quick else 'full'}-{args.device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(dict(meta=meta, notes=R.NOTES, cases=cases), fh, indent=1, default=R._json_default)
    print(f"Results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
