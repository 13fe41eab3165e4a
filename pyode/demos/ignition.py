"""Demo: ignition delays of real mechanisms and their sensitivities, pyode beside Cantera.

1. H2/air (h2o2.yaml) and CH4/air (GRI-Mech 3.0), φ = 1, 1 atm, a sweep of initial temperatures:
   the time at which a constant-pressure reactor reaches T0 + 400 K, by pyode (one batched solve per
   mechanism, :func:`pyode.chem.ignition_delay`) and by Cantera's reactor (rtol 1e-10, the crossing
   interpolated between its steps);
2. at one temperature per mechanism (1000 K and 1200 K), ``d ln τ / d ln k`` for every reaction from
   one backward pass through the solve and its event, the largest ten drawn as bars and checked
   against central differences of Cantera's τ (multipliers e^±1e-3);
3. ``ignition.png``, ``sensitivities_h2.png``, ``sensitivities_ch4.png`` and ``metrics.json``.

It exits 0 when every τ is within 1e-5 of Cantera's and the checked sensitivities within 1e-3.
``--smoke``: H2/air alone at two temperatures (CI).
"""
from __future__ import annotations

import json
import math
import os
import time

import torch

from .. import plot
from ._args import one_thread

DESCRIPTION = ("ignition delays of H2/air and CH4/air (Cantera's h2o2 and GRI-Mech 3.0) and d ln tau / d ln k of "
               "every reaction from one backward pass, beside Cantera")

TAU_TARGET, SENS_TARGET = 1e-5, 1e-3
CASES = {
    "h2": dict(label="H2/air", mechanism="h2o2.yaml", X={"H2": 2.0, "O2": 1.0, "N2": 3.76},
               T0=(950.0, 1000.0, 1050.0, 1100.0, 1200.0, 1300.0), T_sens=1000.0, t_end=0.05),
    "ch4": dict(label="CH4/air", mechanism="gri30.yaml", X={"CH4": 1.0, "O2": 2.0, "N2": 7.52},
                T0=(1200.0, 1300.0, 1400.0, 1500.0, 1600.0), T_sens=1200.0, t_end=0.5),
}


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="pyode-demo/ignition", help="output folder (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="H2/air at two temperatures, to check the pipeline")


def main(args) -> int:
    return run(out=args.out, smoke=args.smoke)


def run(out: str = "pyode-demo/ignition", smoke: bool = False) -> int:
    try:
        import cantera as ct
    except ImportError:
        print("pyode demo ignition compares against Cantera: pip install 'pyode[chem]'")
        return 2
    from ..chem import Mechanism, cantera_ignition_delay, ignition_delay

    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    metrics = {"cases": {}, "tau_target": TAU_TARGET, "sensitivity_target": SENS_TARGET}
    series = []
    ok = True
    with one_thread():
        for key in (("h2",) if smoke else ("h2", "ch4")):
            case = CASES[key]
            T0 = case["T0"][1:3] if smoke else case["T0"]
            gas = ct.Solution(case["mechanism"])
            mech = Mechanism.from_cantera(gas)
            tic = time.perf_counter()
            with torch.no_grad():
                tau = ignition_delay(mech, torch.tensor(T0, dtype=torch.float64), ct.one_atm, case["X"],
                                     case["t_end"])
            pyode_s = time.perf_counter() - tic
            tic = time.perf_counter()
            ref = [cantera_ignition_delay(gas, T, ct.one_atm, case["X"]) for T in T0]
            cantera_s = time.perf_counter() - tic
            errors = [abs(float(a) - b) / b for a, b in zip(tau, ref)]
            print(f"{case['label']} ({mech.n_species} species, {mech.n_reactions} reactions): "
                  f"{len(T0)} temperatures in one batched solve, {pyode_s:.1f} s (Cantera {cantera_s:.2f} s)")
            for T, a, b, e in zip(T0, tau.tolist(), ref, errors):
                print(f"  T0 = {T:6.0f} K   tau = {1e3 * a:9.5f} ms   Cantera {1e3 * b:9.5f} ms   rel. diff {e:.1e}")
            series.append(dict(label=case["label"], T0=T0, tau=tau, reference=ref))

            # every reaction's d ln tau / d ln k from one backward pass
            tic = time.perf_counter()
            tau_s = ignition_delay(mech, case["T_sens"], ct.one_atm, case["X"], case["t_end"])
            grad = torch.autograd.grad(torch.log(tau_s), mech.log_multipliers)[0]
            sens_s = time.perf_counter() - tic
            top = torch.argsort(grad.abs(), descending=True)[:10].tolist()
            reference = [float("nan")] * len(top)
            sens_err = []
            for rank, i in enumerate(top):
                up = cantera_ignition_delay(gas, case["T_sens"], ct.one_atm, case["X"], multiplier=(i, math.exp(1e-3)))
                down = cantera_ignition_delay(gas, case["T_sens"], ct.one_atm, case["X"],
                                              multiplier=(i, math.exp(-1e-3)))
                reference[rank] = (math.log(up) - math.log(down)) / 2e-3
                sens_err.append(abs(float(grad[i]) - reference[rank]) / abs(reference[rank]))
            print(f"  d ln tau / d ln k at {case['T_sens']:.0f} K, all {mech.n_reactions} reactions in {sens_s:.1f} s; "
                  f"the ten largest, beside Cantera's central differences:")
            for rank, i in enumerate(top):
                print(f"    {mech.equations[i]:34s} {float(grad[i]):+.4f}   Cantera {reference[rank]:+.4f}")
            plot.sensitivities([mech.equations[i] for i in top], grad[top], reference=reference,
                               title=f"{case['label']}, T0 = {case['T_sens']:.0f} K, 1 atm",
                               path=os.path.join(out, f"sensitivities_{key}.png"))
            case_ok = max(errors) <= TAU_TARGET and max(sens_err) <= SENS_TARGET
            ok = ok and case_ok
            metrics["cases"][key] = {
                "label": case["label"], "T0": list(T0), "tau": tau.tolist(), "tau_cantera": ref,
                "max_tau_rel_diff": max(errors), "pyode_seconds": pyode_s, "cantera_seconds": cantera_s,
                "sensitivities": {mech.equations[i]: float(grad[i]) for i in top},
                "sensitivity_rel_diff": sens_err, "sensitivity_seconds": sens_s, "passed": case_ok}
    plot.ignition_delays(series, path=os.path.join(out, "ignition.png"))
    metrics["passed"], metrics["seconds"] = ok, time.perf_counter() - start
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(f"{'passed' if ok else 'MISSED'}: tau within {TAU_TARGET:g} of Cantera's, sensitivities within "
          f"{SENS_TARGET:g}; wrote {out}/ignition.png, sensitivities_*.png, metrics.json "
          f"({metrics['seconds']:.0f} s)")
    return 0 if ok else 1
