"""Demo: discover a reaction mechanism from noisy experiments (Ji & Deng 2021's CRNN case 1).

Five species react by ``2A -> B``, ``A -> C``, ``C -> D``, ``B + D -> E`` with rate constants 0.1,
0.2, 0.13, 0.3 (Ji & Deng, "Autonomous discovery of unknown reaction pathways from data by chemical
reaction neural network", J. Phys. Chem. A 2021, case 1). The demo

1. generates their data set with the engine: 30 experiments from random initial states
   (A and B uniform in 0.2 … 1.2, C = D = E = 0), 100 times in 0 … 40, 5 % multiplicative Gaussian
   noise (``--noise``); 20 experiments for training, 10 held out;
2. lists every candidate: all reactions of up to two molecules on each side that conserve mass,
   the species' molar masses being known (1, 2, 1, 1, 3 in units of A's) — 72 reactions;
3. fits their log rate constants to the 20 training experiments at once by Levenberg–Marquardt
   through ``Tsit5`` (:func:`pyode.estimation.fit_rate_constants`), started from an integral
   collocation (non-negative least squares, no derivatives), then removes the reactions the data
   do not support (Wald statistic below Schwarz's threshold);
4. reports the mechanism found against the true one, the rate constants' errors, and the held-out
   experiments' error against the noise-free truth; writes ``crnn.png`` (one held-out experiment:
   data and the discovered model), ``rates.png``, ``metrics.json`` and ``data.pt``.

It exits 0 when exactly the four true reactions remain, every rate constant is within
10 % of the truth and every species of the held-out experiments is within 2 % of its range.
"""
from __future__ import annotations

import json
import os
import time

import torch

from .. import ODEProblem, ReturnCode, Tsit5, plot, solve
from ..estimation import FitError, fit_rate_constants
from ..reactions import ReactionLibrary
from ._args import one_thread

NAMES = ("A", "B", "C", "D", "E")
MOLAR_MASSES = (1, 2, 1, 1, 3)
#: (reactants, products) as counts of A … E, and the true rate constants
TRUE_REACTIONS = (((2, 0, 0, 0, 0), (0, 1, 0, 0, 0)),
                  ((1, 0, 0, 0, 0), (0, 0, 1, 0, 0)),
                  ((0, 0, 1, 0, 0), (0, 0, 0, 1, 0)),
                  ((0, 1, 0, 1, 0), (0, 0, 0, 0, 1)))
TRUE_K = (0.1, 0.2, 0.13, 0.3)
T_END, N_TIMES, N_EXPERIMENTS, N_TRAIN = 40.0, 100, 30, 20
K_TOLERANCE = 0.10          # relative error allowed in each rate constant
TARGET = 0.02               # held-out error per species, as a fraction of its range
_SHOWN = 12                 # rows of the reaction table printed

DESCRIPTION = ("Discover a reaction mechanism (Ji & Deng 2021's CRNN case 1: 5 species, 4 reactions) from 30 noisy "
               "experiments: a mass-conserving library of 72 candidate reactions, fitted and pruned")


def add_arguments(parser) -> None:
    from ._args import nonnegative_float

    parser.add_argument("--out", default="pyode-demo/crnn", help="output folder (default: %(default)s)")
    parser.add_argument("--noise", type=nonnegative_float("--noise"), default=0.05,
                        help="multiplicative Gaussian noise on every observation (default: %(default)s, Ji & Deng's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the experiments and noise "
                                                            "(default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="a few experiments and iterations, to check the "
                                                             "pipeline runs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")


def main(args) -> int:
    return run(out=args.out, noise=args.noise, seed=args.seed, smoke=args.smoke, progress=args.progress)


def true_mechanism() -> ReactionLibrary:
    """The four true reactions with their rate constants, as a library."""
    lib = ReactionLibrary(len(NAMES), names=NAMES, reactions=TRUE_REACTIONS)
    with torch.no_grad():
        lib.log_k.copy_(torch.tensor(TRUE_K, dtype=torch.float64).log())
    return lib


def experiments(n: int, noise: float, seed: int, n_times: int = N_TIMES):
    """Times ``(T,)``, initial states ``(n, 5)``, noise-free and noisy observations ``(T, n, 5)``."""
    g = torch.Generator().manual_seed(seed)
    u0 = torch.zeros(n, len(NAMES), dtype=torch.float64)
    u0[:, :2] = 0.2 + torch.rand(n, 2, generator=g, dtype=torch.float64)
    t = torch.linspace(0.0, T_END, n_times, dtype=torch.float64)
    clean = simulate(true_mechanism(), u0, t)
    noisy = clean * (1 + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64))
    return t, u0, clean, noisy


def simulate(lib: ReactionLibrary, u0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The library's trajectories from ``u0`` at times ``t`` (tight tolerances)."""
    prob = ODEProblem(lambda u, p, s: lib.rhs(u), u0, (float(t[0]), float(t[-1])))
    with torch.no_grad():
        sol = solve(prob, Tsit5(), saveat=t, reltol=1e-10, abstol=1e-12, throw=False)
    if bool((torch.as_tensor(sol.retcode) != int(ReturnCode.Success)).any()):
        raise FitError(f"the mechanism could not be solved on [0, {float(t[-1])}]: {sol.retcode}")
    return sol.u


def run(out: str = "pyode-demo/crnn", noise: float = 0.05, seed: int = 0, smoke: bool = False,
        progress: bool = True) -> int:
    """Run the demo (see the module docstring); returns 0 when the mechanism is recovered."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    with one_thread():
        return _run(out, noise, seed, smoke, progress, start)


def _run(out, noise, seed, smoke, progress, start) -> int:
    n_exp, n_train, n_times = (5, 3, 25) if smoke else (N_EXPERIMENTS, N_TRAIN, N_TIMES)
    t, u0, clean, noisy = experiments(n_exp, noise, seed, n_times)
    torch.save({"t": t, "u0": u0, "clean": clean, "noisy": noisy, "names": NAMES}, os.path.join(out, "data.pt"))
    train, test = slice(0, n_train), slice(n_train, n_exp)
    lib = ReactionLibrary(len(NAMES), names=NAMES, weights=MOLAR_MASSES)
    print(f"CRNN case 1: {n_exp} experiments of {n_times} times in 0..{T_END:g} ({100 * noise:g} % multiplicative "
          f"noise), {n_train} for fitting, {n_exp - n_train} held out")
    print(f"fitting the log rate constants of {lib.n_reactions} candidate reactions (every reaction of up to two "
          f"molecules that conserves mass, molar masses {MOLAR_MASSES}) by Levenberg-Marquardt through Tsit5"
          + ("" if smoke else ", then removing the reactions the data do not support"))

    def show(rec):
        print(f"  {rec['stage']:5s} rms scaled residual {rec['rms']:.4g}, {rec['active']} reactions", flush=True)

    # the first observation is the loaded initial state: fit from t = 0 to the later ones
    fit = fit_rate_constants(lib, t[1:], noisy[1:, train], u0[train], alg=Tsit5(), max_iters=3 if smoke else 100,
                             prune=not smoke, progress=show if progress else None)
    print(f"done in {fit.seconds:.1f} s from the {fit.start} start: rms scaled residual {fit.rms:.4g}; "
          f"{int(lib.active.sum())} of {lib.n_reactions} reactions kept")

    found = {lib.reactions[j]: float(lib.log_k[j].detach().exp()) for j in range(lib.n_reactions) if bool(lib.active[j])}
    truth = dict(zip(TRUE_REACTIONS, TRUE_K))
    exact = set(found) == set(truth)
    rows = []
    print(f"\n{'reaction':14s} {'true k':>8s} {'found k':>9s} {'error':>7s}")
    for r in sorted(set(found) | set(truth), key=lambda r: (r not in truth, -found.get(r, 0.0))):
        eq = lib.format(r)
        k_true, k_found = truth.get(r), found.get(r)
        err = None if k_true is None or k_found is None else abs(k_found / k_true - 1)
        rows.append({"equation": eq, "k_true": k_true, "k_found": k_found, "relative_error": err})
    for row in rows[:_SHOWN]:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"
        err = row["relative_error"]
        print(f"{row['equation']:14s} {fmt(row['k_true']):>8s} {fmt(row['k_found']):>9s} "
              f"{'-' if err is None else f'{100 * err:.2f}%':>7s}")
    if len(rows) > _SHOWN:
        print(f"... and {len(rows) - _SHOWN} more false reactions (metrics.json lists them)")
    k_ok = exact and all(row["relative_error"] <= K_TOLERANCE for row in rows)

    prediction = simulate(lib, u0[test], t)
    span = (clean[:, test].amax(0) - clean[:, test].amin(0)).clamp_min(1e-12)            # (E, n)
    held_out = ((prediction - clean[:, test]).abs().amax(0) / span).amax(0)             # worst experiment
    print(f"\n{'species':8s} {'held-out error':>16s}   (max over {n_exp - n_train} held-out experiments of "
          "max |prediction - noise-free truth| / range)")
    for name, e in zip(NAMES, held_out.tolist()):
        print(f"{name:8s} {100 * e:15.3g}%")
    ok = exact and k_ok and float(held_out.max()) <= TARGET
    elapsed = time.perf_counter() - start
    print(f"\ntarget: exactly the {len(truth)} true reactions, every k within {100 * K_TOLERANCE:g} %, held-out "
          f"within {100 * TARGET:g} % of range: {'reached' if ok else 'NOT reached'}; total time {elapsed:.1f} s")

    metrics = {"mechanism_recovered": exact, "rate_constants_within_tolerance": k_ok, "reactions": rows,
               "removed": fit.removed, "candidates": lib.n_reactions, "start": fit.start, "rms_residual": fit.rms,
               "iterations": len(fit.history), "held_out_error": dict(zip(NAMES, held_out.tolist())),
               "error_against": "noise-free truth", "target": TARGET, "k_tolerance": K_TOLERANCE,
               "target_reached": ok, "seconds": elapsed, "noise": noise, "seed": seed,
               "experiments": {"train": n_train, "held_out": n_exp - n_train, "times": n_times}}
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    first = n_train
    fine = torch.linspace(0.0, T_END, 200, dtype=torch.float64)
    plot.trajectories(t, noisy[:, first], simulate(lib, u0[first:first + 1], fine)[:, 0], t_prediction=fine,
                      names=NAMES, path=os.path.join(out, "crnn.png"),
                      title=f"held-out experiment {first + 1}: data ({100 * noise:g} % noise) and the discovered "
                            f"mechanism")
    plot.rate_constants([row["equation"] for row in rows], [row["k_found"] for row in rows],
                        [row["k_true"] for row in rows], path=os.path.join(out, "rates.png"),
                        title=f"rate constants: {len(found)} reactions kept of {lib.n_reactions} candidates")
    print(f"wrote {out}/{{crnn.png, rates.png, metrics.json, data.pt}}")
    return 0 if ok or smoke else 1

