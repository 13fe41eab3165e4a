#!/usr/bin/env python
"""The default path (no ``compile`` argument) against the reference loop (``compile=False``), in one
process: the table of the README's section "The default path".

Usage::

    python benchmarks/default_path.py [--threads 1] [--repeats 7]

Cases (float64, CPU): Lotka-Volterra with Tsit5 and 100 outputs, forward only and with the gradient
in ``p``; Robertson to 1e5 with Rodas5P (analytic Jacobian) and 20 log-spaced outputs, forward only
and with the gradient in ``k``; a 2-50-2 tanh MLP on ``y**3`` (the spiral's network) for a batch
of 16 states, 10 outputs, with the gradient in its weights; Robertson with FBDF, forward and with
the gradient, and GRI-Mech 3.0's CH4/air ignition delay (when Cantera is installed), where the
default is the BDF loop on Python numbers (``scalar``) and the reference is ``BDFStepper`` in the
batched loop. Each row: the median of ``--repeats`` timed calls after one warm-up call, the path the
default took (``fused``, ``scalar`` or ``reference``) and the ratio of the two times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.pop("PYODE_COMPILE", None)
    import torch

    import pyode
    import pyode.native._bdf_scalar as bdf_scalar
    import pyode.native._fused as fused
    from pyode.problems import lotka_volterra, robertson

    torch.set_num_threads(args.threads)
    taken = []
    real = fused.fused_integrate

    def spy(*a, **k):
        taken.append("fused")
        return real(*a, **k)

    fused.fused_integrate = spy
    F64 = torch.float64

    def lv(grad):
        def run(**kw):
            b = lotka_volterra()
            p = b.p.clone().requires_grad_(grad)
            sol = pyode.solve(pyode.ODEProblem(b.f, b.u0, (0.0, 10.0), p), pyode.Tsit5(), reltol=1e-6, abstol=1e-8,
                              saveat=torch.linspace(0, 10, 100, dtype=F64), **kw)
            if grad:
                (sol.u ** 2).sum().backward()
        return run

    def rober(grad, alg=pyode.Rodas5P()):
        def run(**kw):
            r = robertson()
            k = r.p.clone().requires_grad_(grad)
            sol = pyode.solve(pyode.ODEProblem(r.f, r.u0, (0.0, 1e5), k, jac=r.jac), alg, reltol=1e-6,
                              abstol=1e-10, saveat=torch.logspace(-4, 5, 20, dtype=F64), **kw)
            if grad:
                (sol.u[:, 1] * 1e4 + sol.u[:, 0]).sum().backward()
        return run

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2)).double()
    y0 = torch.randn(16, 2, dtype=F64)

    def mlp_batch(**kw):
        sol = pyode.solve(pyode.ODEProblem(lambda u, p, t: net(u ** 3), y0, (0.0, 0.25)), pyode.Tsit5(),
                          reltol=1e-7, abstol=1e-9, saveat=torch.linspace(0, 0.25, 10, dtype=F64), **kw)
        sol.u.pow(2).mean().backward()

    cases = [("Lotka-Volterra, Tsit5, 100 outputs, forward", lv(False)),
             ("Lotka-Volterra, Tsit5, 100 outputs, gradient in p", lv(True)),
             ("Robertson to 1e5, Rodas5P, 20 outputs, forward", rober(False)),
             ("Robertson to 1e5, Rodas5P, 20 outputs, gradient in k", rober(True)),
             ("2-50-2 MLP on y^3, batch 16, 10 outputs, gradient", mlp_batch),
             ("Robertson to 1e5, FBDF, 20 outputs, forward", rober(False, pyode.FBDF())),
             ("Robertson to 1e5, FBDF, 20 outputs, gradient in k", rober(True, pyode.FBDF()))]
    try:
        import cantera as ct

        from pyode.chem import Mechanism, ignition_delay

        gri = Mechanism.from_cantera("gri30.yaml")

        def gri_ignition(**kw):
            with torch.no_grad():
                ignition_delay(gri, 1200.0, ct.one_atm, {"CH4": 1.0, "O2": 2.0, "N2": 7.52}, 0.1)
        cases.append(("GRI-Mech CH4/air ignition delay (FBDF), forward", gri_ignition))
    except ImportError:
        print("(Cantera is not installed: no ignition-delay row)")
    real_scalar = bdf_scalar.ScalarBDFLoop.adopt

    def scalar_spy(loop):
        taken.append("scalar")
        return real_scalar(loop)

    bdf_scalar.ScalarBDFLoop.adopt = scalar_spy
    applies = bdf_scalar.scalar_bdf_applies

    def median_ms(fn, **kw):
        fn(**kw)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn(**kw)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); medians of {args.repeats} calls")
    print(f"{'case':55s} {'reference ms':>13s} {'default ms':>11s} {'path':>10s} {'speed-up':>9s}")
    for name, fn in cases:
        bdf_scalar.scalar_bdf_applies = lambda loop: False          # the reference: BDFStepper in the loop
        ref = median_ms(fn, compile=False)
        bdf_scalar.scalar_bdf_applies = applies
        taken.clear()
        default = median_ms(fn)
        path = taken[0] if taken else "reference"
        print(f"{name:55s} {ref:13.1f} {default:11.1f} {path:>10s} {ref / default:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
