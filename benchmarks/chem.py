#!/usr/bin/env python
"""pyode.chem side by side with Cantera's reactors, in one process: ignition delays, batches of them,
and every reaction's sensitivity.

Usage::

    python benchmarks/chem.py [--threads 1] [--repeats 3] [--batch 1024] [--skip-cantera-sensitivities]

Cases (float64, CPU; constant-pressure reactors, τ = the time T reaches T0 + 400 K):

1. One ignition: H2/air (h2o2.yaml, φ = 1, 1 atm, 1000 K) and CH4/air (GRI-Mech 3.0, φ = 1, 1 atm,
   1200 K). Cantera: ``IdealGasConstPressureReactor`` stepped until T0 + 400 K at rtol 1e-6 /
   atol 1e-15 (its CVODES, the issue's settings), τ interpolated linearly between its steps.
   pyode: ``ignition_delay`` with its defaults (FBDF, rtol 1e-6 / atol 1e-15), with the fast
   settings (FBDF, rtol 1e-4 / atol 1e-15), and Rodas5P at rtol 1e-6. Error: against Cantera at
   rtol 1e-10 / atol 1e-20.
2. A batch of ``--batch`` GRI ignitions with random T0 (1000-1600 K), P (1-20 atm) and φ (0.5-2):
   pyode, one batched call at the fast settings, against Cantera one reactor after another at
   rtol 1e-6; per-case time and throughput ratio, and the largest |τ - τ_Cantera| / τ_Cantera.
3. Every reaction's d ln τ / d ln k (GRI: 325, H2/air: 29): pyode, one backward pass through the
   solve at the fast settings (DirectAdjoint), its time beside one forward solve; Cantera, CVODES's
   forward sensitivities of every reaction's multiplier (``add_sensitivity_reaction``), the time to
   ignition with them beside its plain solve.

Timings are the median of ``--repeats`` calls after one warm-up (the batch: one call each).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

FAST = dict(reltol=1e-4, abstol=1e-15)
CASES = {"H2/air": ("h2o2.yaml", 1000.0, {"H2": 2.0, "O2": 1.0, "N2": 3.76}, 0.01),
         "CH4/air": ("gri30.yaml", 1200.0, {"CH4": 1.0, "O2": 2.0, "N2": 7.52}, 0.1)}


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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--skip-cantera-sensitivities", action="store_true",
                    help="skip Cantera's 325 forward sensitivities (about 10 s)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import cantera as ct
    import torch

    import pyode
    from pyode.chem import Mechanism, cantera_ignition_delay, ignition_delay

    torch.set_num_threads(args.threads)
    F64 = torch.float64
    print(f"pyode.chem against Cantera {ct.__version__}, torch {torch.__version__}, {args.threads} thread(s)")

    # ---- 1. one ignition ----------------------------------------------------------------------------
    print("\n1. One ignition delay")
    print(f"{'case':9s} {'library':8s} {'settings':34s} {'time ms':>9s} {'ratio':>7s} {'tau ms':>10s} {'rel. error':>10s}")
    mechs = {}
    for label, (file, T0, X, t_end) in CASES.items():
        gas = ct.Solution(file)
        mech = mechs[label] = Mechanism.from_cantera(gas)
        P = ct.one_atm
        ref = cantera_ignition_delay(gas, T0, P, X)
        t_ct = _time(lambda: cantera_ignition_delay(gas, T0, P, X, rtol=1e-6, atol=1e-15), args.repeats)
        tau_ct = cantera_ignition_delay(gas, T0, P, X, rtol=1e-6, atol=1e-15)
        rows = [("Cantera", "CVODES rtol 1e-6 atol 1e-15", t_ct, tau_ct)]
        for name, kw in (("default: FBDF rtol 1e-6 atol 1e-15", {}),
                         ("fast: FBDF rtol 1e-4 atol 1e-15", FAST),
                         ("Rodas5P rtol 1e-6 atol 1e-15", {"alg": pyode.Rodas5P()})):
            with torch.no_grad():
                run = lambda: ignition_delay(mech, T0, P, X, t_end, **kw)     # noqa: E731
                t = _time(run, args.repeats)
                rows.append(("pyode", name, t, float(run())))
        for lib, name, t, tau in rows:
            print(f"{label:9s} {lib:8s} {name:34s} {t * 1e3:9.1f} {t / t_ct:7.2f} {tau * 1e3:10.5f} "
                  f"{abs(tau - ref) / ref:10.1e}")

    # ---- 2. a batch -----------------------------------------------------------------------------------
    B = args.batch
    print(f"\n2. A batch of {B} GRI-Mech CH4/air ignitions (T0 1000-1600 K, P 1-20 atm, phi 0.5-2)")
    gas = ct.Solution("gri30.yaml")
    mech = mechs["CH4/air"]
    g = torch.Generator().manual_seed(0)
    T0 = 1000 + 600 * torch.rand(B, generator=g, dtype=F64)
    P = ct.one_atm * (1 + 19 * torch.rand(B, generator=g, dtype=F64))
    phi = 0.5 + 1.5 * torch.rand(B, generator=g, dtype=F64)
    X = torch.zeros(B, gas.n_species, dtype=F64)
    X[:, gas.species_index("CH4")] = phi
    X[:, gas.species_index("O2")] = 2.0
    X[:, gas.species_index("N2")] = 7.52
    t0 = time.perf_counter()
    with torch.no_grad():
        tau = ignition_delay(mech, T0, P, X, 10.0, **FAST)
    t_py = time.perf_counter() - t0
    t0 = time.perf_counter()
    tau_ct = torch.tensor([cantera_ignition_delay(gas, float(T0[b]), float(P[b]), X[b].numpy(), rtol=1e-6,
                                                 atol=1e-15) for b in range(B)],
                          dtype=F64)
    t_ct = time.perf_counter() - t0
    err = float(((tau - tau_ct).abs() / tau_ct).max())
    print(f"{'library':8s} {'settings':34s} {'total s':>8s} {'ms/case':>8s} {'throughput':>11s}")
    print(f"{'Cantera':8s} {'CVODES rtol 1e-6 atol 1e-15':34s} {t_ct:8.2f} {t_ct / B * 1e3:8.2f} {1.0:11.2f}")
    print(f"{'pyode':8s} {'fast (FBDF 1e-4), one batched call':34s} {t_py:8.2f} {t_py / B * 1e3:8.2f} {t_ct / t_py:11.2f}")
    print(f"tau {float(tau_ct.min()) * 1e3:.3f}-{float(tau_ct.max()) * 1e3:.1f} ms; largest |tau_pyode - tau_Cantera| "
          f"/ tau_Cantera = {err:.1e}")

    # ---- 3. sensitivities -------------------------------------------------------------------------
    print("\n3. Every reaction's d ln tau / d ln k")
    print(f"{'case':9s} {'library':8s} {'how':44s} {'time s':>8s} {'x forward':>10s}")
    for label, (file, T0, X, t_end) in CASES.items():
        mech = mechs[label]
        P = ct.one_atm

        def forward():
            with torch.no_grad():
                return ignition_delay(mech, T0, P, X, t_end, **FAST)

        def gradient():
            tau = ignition_delay(mech, T0, P, X, t_end, **FAST)
            return torch.autograd.grad(torch.log(tau), mech.log_multipliers)[0]

        t_f = _time(forward, args.repeats)
        t_g = _time(gradient, args.repeats)
        print(f"{label:9s} {'pyode':8s} {f'{mech.n_reactions} from one backward pass (DirectAdjoint)':44s} "
              f"{t_g:8.3f} {t_g / t_f:10.1f}")
        if args.skip_cantera_sensitivities and label == "CH4/air":
            continue
        gas = ct.Solution(file)
        t_plain = _time(lambda: cantera_ignition_delay(gas, T0, P, X, rtol=1e-6, atol=1e-15), args.repeats)
        t0 = time.perf_counter()
        cantera_ignition_delay(gas, T0, P, X, rtol=1e-6, atol=1e-15, sensitivities=True)
        t_s = time.perf_counter() - t0
        print(f"{label:9s} {'Cantera':8s} {f'{gas.n_reactions} CVODES forward sensitivities':44s} {t_s:8.3f} "
              f"{t_s / t_plain:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
