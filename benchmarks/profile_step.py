#!/usr/bin/env python
"""Where a step's time goes: pyode's native loop on three workloads, broken down by component.

Usage::

    python benchmarks/profile_step.py [--threads 1] [--cases stiff,spiral,batch] [--markdown]

For every case: the wall time per accepted step without any profiler (the true cost), then the same solve with the
loop's components wrapped in timers that keep each one's exclusive time (the user's right-hand
side, stage arithmetic, Jacobians, LU factorisations, error norm, controller, saving, the rest of
the loop, the backward pass, setup), and the number of top-level PyTorch operator calls per step
from torch.profiler (each one a kernel launch on a GPU). See benchmarks/profiles.md for the figures and what they say.
"""
from __future__ import annotations

import argparse
import os
import time

torch = pyode = None

class ExclusiveTimers:
    """Wraps functions so that each accumulates its *exclusive* wall time (time in nested wrapped
    functions goes to them, not to the caller): the components add up to the timed total."""

    def __init__(self):
        self.own, self.stack, self.patched = {}, [], []

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        timers = self

        def timed(*args, **kwargs):
            timers.stack.append(0.0)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = timers.stack.pop()
                timers.own[label] = timers.own.get(label, 0.0) + elapsed - nested
                if timers.stack:
                    timers.stack[-1] += elapsed

        setattr(owner, attr, timed)
        self.patched.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self.patched):
            setattr(owner, attr, original)
        self.patched.clear()


def _instrument(timers: ExclusiveTimers, counted) -> None:
    from pyode import controllers
    from pyode.native import _explicit_rk, _integrate, _iteration_matrix, _jacobian, _rosenbrock, _saving

    timers.wrap(counted, "rhs", "rhs f (user)")
    timers.wrap(_jacobian.JacobianEvaluator, "__call__", "jacobian (AD of f, its f calls included)")
    for module in (_rosenbrock, _iteration_matrix):
        if hasattr(module, "factorize"):
            timers.wrap(module, "factorize", "LU factorisation")
    for cls in (_explicit_rk.ExplicitRKStepper, _rosenbrock.RosenbrockStepper):
        timers.wrap(cls, "step", "stage arithmetic")
        timers.wrap(cls, "dense_stages", "stage arithmetic")
    timers.wrap(_integrate, "error_norm", "error norm")
    timers.wrap(controllers.PIController, "factors", "controller")
    timers.wrap(controllers.PIController, "update", "controller")
    for cls in (_saving.SaveatRecorder, _saving.StepRecorder, _saving.EndRecorder):
        timers.wrap(cls, "due", "saving / interpolation")
        timers.wrap(cls, "record", "saving / interpolation")
    timers.wrap(_integrate.Loop, "iterate", "loop: merging, where, host sync")
    timers.wrap(torch.Tensor, "backward", "backward pass")


class _Solve:
    def __init__(self, run):
        self.run = run


class Counted:
    """The right-hand side, counted (its name is what the profile looks for)."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, u, p, t):
        return self.rhs(u, p, t)            # looked up per call, so that the timer can wrap it

    def rhs(self, u, p, t):
        self.n += 1
        return self.f(u, p, t)


def case_stiff():
    prob0 = pyode.problems.robertson()
    c = Counted(prob0.f)
    prob = pyode.ODEProblem(c, prob0.u0, (0.0, 1e5), prob0.p)

    def run():
        return pyode.solve(prob, pyode.Rodas5P(), reltol=1e-6, abstol=1e-10, dense=False)

    return "Robertson, Rodas5P, reltol 1e-6, one problem, forward", run, c


def case_spiral():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2)).double()
    c = Counted(lambda u, p, t: net(u ** 3))
    u0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    ts = torch.linspace(0.0, 25.0, 100, dtype=torch.float64)
    prob = pyode.ODEProblem(c, u0, (0.0, 25.0))

    def run():
        sol = pyode.solve(prob, pyode.Tsit5(), saveat=ts, reltol=1e-7, abstol=1e-9, dense=False)
        sol.u.pow(2).mean().backward()
        return sol

    return "spiral neural ODE (MLP 2-50-2 on y^3), Tsit5, rtol 1e-7, one state, forward + backward", run, c


def case_batch():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 2))
    c = Counted(lambda u, p, t: net(u))
    u0 = torch.randn(4096, 2)
    ts = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    prob = pyode.ODEProblem(c, u0, (0.0, 1.0))

    def run():
        sol = pyode.solve(prob, pyode.Tsit5(), saveat=ts, reltol=1e-5, abstol=1e-7, dense=False,
                          controller=pyode.IController())
        sol.u.sum().backward()
        return sol

    return "batch of 4096, MLP 2-64-64-2, float32, Tsit5 + IController, forward + backward", run, c


CASES = {"stiff": case_stiff, "spiral": case_spiral, "batch": case_batch}


def profile(name, make, markdown: bool) -> None:
    title, run, counted = make()
    run()                                   # warm-up (first-call allocations, lazy imports)
    counted.n = 0
    repeats = 3
    start = time.perf_counter()
    for _ in range(repeats):
        sol = run()
    wall = (time.perf_counter() - start) / repeats
    steps = int(torch.as_tensor(sol.stats.naccept).max()) + int(torch.as_tensor(sol.stats.nreject).max())
    nf = counted.n // repeats

    timers = ExclusiveTimers()
    _instrument(timers, counted)
    solve = _Solve(run)
    timers.wrap(solve, "run", "outside the loop (setup, checks, wrap)")   # what no component claims
    try:
        start = time.perf_counter()
        solve.run()
        total = time.perf_counter() - start
    finally:
        timers.restore()

    with torch.autograd.profiler.profile() as tp:
        run()
    n_ops = sum(1 for e in tp.function_events if e.name.startswith("aten::") and e.cpu_parent is None)

    print(f"\n{title}")
    print(f"  {steps} steps, {nf} f evaluations, {wall * 1e3:.1f} ms per solve = {wall / steps * 1e6:.0f} us per step; "
          f"{n_ops / steps:.0f} top-level torch ops per step ({n_ops} per solve)")
    if markdown:
        print("\n| component | us per step | share |\n|---|---|---|")
    for label, value in sorted(timers.own.items(), key=lambda kv: -kv[1]):
        share = 100.0 * value / total
        per_step = value / steps * 1e6
        if markdown:
            print(f"| {label} | {per_step:.0f} | {share:.1f} % |")
        else:
            print(f"    {label:45s} {per_step:8.0f} us/step {share:6.1f} %")


def main() -> None:
    global torch, pyode
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="stiff,spiral,batch")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch as torch_

    import pyode as pyode_
    torch, pyode = torch_, pyode_
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    for name in args.cases.split(","):
        profile(name, CASES[name], args.markdown)


if __name__ == "__main__":
    main()
