#!/usr/bin/env python
"""A continuous normalizing flow's training iteration, pyode beside torchdiffeq, in one process.

Usage::

    python benchmarks/cnf.py [--threads 1] [--repeats 7] [--batch 256]

The setup of ``pyode demo cnf``: 8 gaussians, ``net(z, t)`` an MLP of (z, t) with two tanh layers of
64 (seeded, the same weights for every row), float32, a batch of ``--batch`` points, tolerances
reltol = abstol = 1e-5, base N(0, I) at t = 0, data at t = 1. One iteration: ``-mean log p(x)`` and
its gradient with respect to the weights. Rows:

- pyode ``CNF`` with its defaults (Tsit5, DirectAdjoint, one shared step size for the batch), exact
  trace and Hutchinson's; and with ``batch_steps="member"`` (each point its own steps);
- pyode with ``sensealg=BacksolveAdjoint()`` (the adjoint of Chen et al., torchdiffeq's
  ``odeint_adjoint``);
- torchdiffeq ``odeint`` (dopri5, backpropagation through the solver) and ``odeint_adjoint`` on the
  state (z, Δlog p) with the exact trace by one autograd pass per dimension, as its CNF example and
  FFJORD compute it.

Each row: the median of ``--repeats`` timed iterations after one warm-up, the mean log p (all rows
agree to the tolerance), and the ratio to torchdiffeq's ``odeint``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time


def _time(fn, repeats):
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
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    import torchdiffeq

    import pyode
    from pyode.demos.cnf import TimeMLP, sample_data
    from pyode.nn import CNF

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = TimeMLP()
    x = sample_data("8gaussians", args.batch, torch.Generator().manual_seed(1))
    params = list(net.parameters())

    class Augmented(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, state):
            z = state[0]
            with torch.enable_grad():
                z = z.requires_grad_(True)
                dz = self.net(z, t.expand(z.shape[0]))
                tr = sum(torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(2))
            return dz, -tr[:, None]

    func = Augmented()
    times = torch.tensor([1.0, 0.0])

    def torchdiffeq_iteration(odeint):
        def run():
            z, dlogp = odeint(func, (x, torch.zeros(args.batch, 1)), times, rtol=1e-5, atol=1e-5, method="dopri5")
            logp = -0.5 * (z[-1] ** 2).sum(-1) - math.log(2 * math.pi) - dlogp[-1, :, 0]
            torch.autograd.grad(-logp.mean(), params)
            return float(logp.detach().mean())
        return run

    def pyode_iteration(**kw):
        flow = CNF(net, (0.0, 1.0), **kw)
        gen = torch.Generator()

        def run():
            logp = flow.log_prob(x, generator=gen.manual_seed(2))
            torch.autograd.grad(-logp.mean(), params)
            return float(logp.detach().mean())
        return run

    rows = [("torchdiffeq", "odeint (dopri5)", torchdiffeq_iteration(torchdiffeq.odeint)),
            ("torchdiffeq", "odeint_adjoint (dopri5)", torchdiffeq_iteration(torchdiffeq.odeint_adjoint)),
            ("pyode", "CNF defaults: Tsit5, DirectAdjoint", pyode_iteration()),
            ("pyode", "CNF, batch_steps='member'", pyode_iteration(batch_steps="member")),
            ("pyode", "CNF, Hutchinson trace", pyode_iteration(trace="hutchinson")),
            ("pyode", "CNF, BacksolveAdjoint", pyode_iteration(sensealg=pyode.BacksolveAdjoint()))]
    print(f"CNF training iteration, 8 gaussians, batch {args.batch}, float32, reltol = abstol = 1e-5, "
          f"{args.threads} thread(s); torch {torch.__version__}")
    print(f"{'library':12s} {'method':36s} {'ms/iter':>9s} {'vs odeint':>10s} {'mean log p':>11s}")
    base = None
    for lib, name, fn in rows:
        t = _time(fn, args.repeats)
        base = base or t
        print(f"{lib:12s} {name:36s} {t * 1e3:9.1f} {base / t:9.2f}x {fn():11.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
