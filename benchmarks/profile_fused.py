#!/usr/bin/env python
"""Where the fused path's time goes (``solve(..., compile=True)``), on the three workloads of
benchmarks/profiles.md.

Usage::

    python benchmarks/profile_fused.py [--threads 1] [--cases spiral,stiff,batch] [--repeats 40]

* spiral: one training iteration of the spiral neural ODE (Tsit5, MLP 2-50-2, 100 output times),
  split into its phases: the compiled forward chunks, the outputs recomputed from the records, the
  adjoint hook (batched vector-Jacobian products and the recursion), and the rest of the backward
  pass. Then the cost of one compiled chunk call on its own.
* stiff: Robertson with Rodas5P: one solve, the number of chunk calls, and the cost of one chunk
  call with dynamo's guards checked in full and with only the differentiating ones (what the
  solve does after its first call).
* batch: the floor set by the network itself at 4096 members (float32, MLP 2-64-64-2): one
  evaluation, forward and forward + backward, and its ``tanh`` and ``Linear`` parts in eager
  PyTorch and compiled. Every solver pays this per function evaluation.

Medians over ``--repeats`` runs after warm-up; the first solve of each case compiles (tens of
seconds; minutes for Rodas5P the first time on a machine). See benchmarks/profiles.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

torch = pyode = F = None


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def capture_loop():
    """Patch the fused forward so that the last ``_FusedLoop`` can be reused by hand."""
    seen = {}
    original = F._FusedLoop.forward

    def spy(self):
        seen["loop"] = self
        return original(self)

    F._FusedLoop.forward = spy
    return seen


def chunk_call_us(loop, repeats: int, skip_guards: bool) -> float:
    """One compiled chunk call on the loop's initial state, in µs (the same state every time)."""
    run = F._compiled_run_chunk(loop.kind(), loop.loop.dev.type)
    state = loop.initial_state()
    with torch.no_grad(), torch.compiler.set_stance(skip_guard_eval_unsafe=skip_guards):
        return median_ms(lambda: run(loop, state), repeats * 5) * 1e3


def phase_timers():
    """profile_step's timers on the fused path's phases (they do not nest: exclusive = inclusive)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from profile_step import ExclusiveTimers

    timers = ExclusiveTimers()
    timers.wrap(F._FusedLoop, "forward", "forward chunks")
    timers.wrap(F._Outputs, "build", "outputs recomputed")
    timers.wrap(F._AdjointHook, "__call__", "adjoint hook")
    return timers


def spiral(args) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np

    import speed

    speed.np, speed.torch = np, torch
    ts_np = np.linspace(0.0, 25.0, 100)
    y_true = speed.true_spiral(ts_np)
    y0, target = torch.as_tensor(y_true[:1]), torch.as_tensor(y_true[:, None, :])
    ts = torch.as_tensor(ts_np)
    net = speed.spiral_net(0, "cpu")
    seen = capture_loop()
    phases = phase_timers()
    rows = []

    def iteration():
        phases.own.clear()
        for q in net.parameters():
            q.grad = None
        t0 = time.perf_counter()
        sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: net(u ** 3), y0, (0.0, 25.0)), pyode.Tsit5(),
                          saveat=ts, reltol=1e-7, abstol=1e-9, dense=False, compile=True)
        t1 = time.perf_counter()
        (sol.u - target).pow(2).mean().backward()
        t2 = time.perf_counter()
        rows.append(dict(phases.own, solve=t1 - t0, backward=t2 - t1, total=t2 - t0))
        return sol

    t = time.perf_counter()
    sol = iteration()
    print(f"\nspiral, Tsit5, one training iteration (first call with compilation: {time.perf_counter() - t:.1f} s); "
          f"{int(sol.stats.naccept)} accepted / {int(sol.stats.nreject)} rejected steps, "
          f"{seen['loop'].iterations // seen['loop'].chunk} chunk calls of {seen['loop'].chunk}")
    for _ in range(5):
        iteration()
    rows.clear()
    for _ in range(args.repeats):
        iteration()
    med = {k: statistics.median(r[k] for r in rows) * 1e3 for k in rows[0]}
    med["backward, outside the hook"] = med["backward"] - med["adjoint hook"]
    med["solve, outside chunks and outputs"] = med["solve"] - med["forward chunks"] - med["outputs recomputed"]
    for k in ("forward chunks", "outputs recomputed", "solve, outside chunks and outputs", "adjoint hook",
              "backward, outside the hook", "total"):
        print(f"  {k:<36} {med[k]:7.2f} ms")
    print(f"  one chunk call (8 iterations)        {chunk_call_us(seen['loop'], args.repeats, False):7.0f} µs")


def stiff(args) -> None:
    import pyode.problems as P

    prob = P.robertson(tspan=(0.0, 1e5))
    seen = capture_loop()

    def run():
        return pyode.solve(prob, pyode.Rodas5P(), saveat=[1e5], reltol=1e-6, abstol=1e-10, dense=False,
                           compile=True)

    t = time.perf_counter()
    sol = run()
    loop = seen["loop"]
    print(f"\nRobertson, Rodas5P, reltol 1e-6, one solve (first call with compilation: "
          f"{time.perf_counter() - t:.1f} s); {int(sol.stats.naccept)} accepted / {int(sol.stats.nreject)} "
          f"rejected steps, {loop.iterations // loop.chunk} chunk calls of {loop.chunk}")
    print(f"  one solve                            {median_ms(run, args.repeats):7.2f} ms")
    print(f"  one chunk call, all guards checked   {chunk_call_us(loop, args.repeats, False):7.0f} µs")
    print(f"  one chunk call, differentiating only {chunk_call_us(loop, args.repeats, True):7.0f} µs")


def batch(args) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 2))
    x = torch.randn(4096, 2, requires_grad=True)
    h = torch.randn(4096, 64)
    compiled = torch.compile(net, fullgraph=True)

    def fwd_bwd(model):
        def go():
            model(x).sum().backward()
        return go

    print("\nbatch of 4096, float32, MLP 2-64-64-2: one evaluation of the network")
    with torch.no_grad():
        print(f"  tanh of 4096 x 64                    {median_ms(lambda: torch.tanh(h), args.repeats):7.2f} ms")
        print(f"  Linear(64, 64) on 4096 rows          {median_ms(lambda: net[2](h), args.repeats):7.2f} ms")
        print(f"  network forward, eager               {median_ms(lambda: net(x), args.repeats):7.2f} ms")
        print(f"  network forward, compiled            {median_ms(lambda: compiled(x), args.repeats):7.2f} ms")
    print(f"  network forward + backward, eager    {median_ms(fwd_bwd(net), args.repeats):7.2f} ms")
    print(f"  network forward + backward, compiled {median_ms(fwd_bwd(compiled), args.repeats):7.2f} ms")


def main() -> None:
    global torch, pyode, F
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="spiral,stiff,batch")
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch as _torch

    torch = _torch
    torch.set_num_threads(args.threads)
    import pyode as _pyode
    import pyode.native._fused as _F

    pyode, F = _pyode, _F
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    cases = dict(spiral=spiral, stiff=stiff, batch=batch)
    for name in args.cases.split(","):
        cases[name](args)


if __name__ == "__main__":
    main()
