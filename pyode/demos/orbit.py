"""Demo: the Arenstorf orbit, a periodic three-body orbit that punishes inaccurate integrators.

1. Work-precision: each explicit method at several tolerances; the error is the distance from the
   initial state after one period (the orbit is exactly periodic).
2. A batch of perturbed initial velocities, integrated as independent problems in one solve.
3. The gradient of the return error with respect to the initial velocity, by autograd through the
   solver, checked against central finite differences.
"""
from __future__ import annotations

import json
import os
import time

import torch

from .. import DP5, DP8, BS3, Tsit5, Vern7, solve
from ..problems import ARENSTORF_PERIOD, arenstorf


DESCRIPTION = ("Arenstorf orbit: work-precision of the explicit methods, a batch of perturbed orbits, "
               "and a gradient checked against finite differences")


def add_arguments(parser) -> None:
    from ._args import positive_int

    parser.add_argument("--out", default="pyode-demo/orbit", help="folder for plots and results (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int("--batch"), default=256,
                        help="perturbed orbits solved as one batch (default: %(default)s)")


def main(args) -> int:
    return run(out=args.out, batch=args.batch)


def _return_error(u_end, u0):
    return float((u_end[:2] - u0[:2]).norm())


def run(out: str = "pyode-demo", batch: int = 256) -> int:
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    prob = arenstorf()
    print(f"Arenstorf orbit, one period T = {ARENSTORF_PERIOD:.6f}; error = |q(T) - q(0)|\n")
    print(f"{'method':8s} {'reltol':>8s} {'error':>10s} {'f evals':>8s} {'steps':>6s} {'time [ms]':>10s}")
    table = []
    for alg in (BS3(), Tsit5(), DP5(), Vern7(), DP8()):
        for tol in (1e-4, 1e-6, 1e-8, 1e-10):
            if isinstance(alg, BS3) and tol < 1e-8:
                continue  # a 3rd-order method needs ~10^5 steps there: the wrong tool
            start = time.perf_counter()
            sol = solve(prob, alg, reltol=tol, abstol=tol, dense=False)  # count the steps, not interpolation
            ms = 1e3 * (time.perf_counter() - start)
            err = _return_error(sol.u[-1], prob.u0)
            table.append(dict(method=type(alg).__name__, reltol=tol, error=err, nf=sol.stats.nf,
                              steps=sol.stats.naccept, ms=ms))
            print(f"{type(alg).__name__:8s} {tol:8.0e} {err:10.2e} {sol.stats.nf:8d} {sol.stats.naccept:6d} {ms:10.1f}")

    # A batch of orbits with perturbed initial velocity: each member has its own steps.
    gen = torch.Generator().manual_seed(0)
    u0 = prob.u0.repeat(batch, 1)
    u0[:, 3] += 1e-3 * torch.randn(batch, generator=gen, dtype=u0.dtype)
    ts = torch.linspace(0.0, ARENSTORF_PERIOD, 400, dtype=torch.float64)
    start = time.perf_counter()
    sol_b = solve(prob.remake(u0=u0), Tsit5(), reltol=1e-8, abstol=1e-8, saveat=ts)
    batch_s = time.perf_counter() - start
    spread = (sol_b.u[-1, :, :2] - prob.u0[:2]).norm(dim=-1)
    print(f"\nbatch of {batch} perturbed orbits (|δv| ~ 1e-3), Tsit5 at 1e-8: {batch_s:.2f} s, "
          f"steps per member {int(sol_b.stats.naccept.min())}..{int(sol_b.stats.naccept.max())}, "
          f"return distance median {float(spread.median()):.3g}")

    # d x(T) / d v_y(0): autograd through the solver vs central finite differences.
    def x_end(vy0):
        u0 = torch.cat([prob.u0[:3], vy0.reshape(1)])
        sol = solve(prob.remake(u0=u0), Vern7(), reltol=1e-10, abstol=1e-10, saveat=[ARENSTORF_PERIOD])
        return sol.u[-1, 0]

    vy = prob.u0[3].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(x_end(vy), vy)
    eps = 1e-6
    fd = (x_end(prob.u0[3] + eps) - x_end(prob.u0[3] - eps)) / (2 * eps)
    rel = abs(float(grad) - float(fd)) / abs(float(fd))
    print(f"\ndx(T)/dv_y(0): autograd through the solver {float(grad):.8e}, "
          f"central finite differences {float(fd):.8e} (relative difference {rel:.1e})")

    results = dict(work_precision=table, batch=dict(size=batch, seconds=batch_s), gradient=dict(
        autograd=float(grad), finite_difference=float(fd), relative_difference=rel))
    with open(os.path.join(out, "orbit.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    png = _plot(out, prob, sol_b, table)
    print(f"\nwrote {os.path.join(out, 'orbit.json')}" + (f" and {png}" if png else ""))
    return 0


def _plot(out, prob, sol_b, table):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: pip install 'pyode[plot]' for the figure)")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    q = sol_b.u.detach()
    for i in range(min(q.shape[1], 32)):
        ax1.plot(q[:, i, 0], q[:, i, 1], lw=0.5, alpha=0.6)
    ax1.plot([-0.012277471], [0], "ko", ms=6, label="Earth")
    ax1.plot([1 - 0.012277471], [0], "o", color="gray", ms=4, label="Moon")
    ax1.set(title="perturbed Arenstorf orbits (one batched solve)", xlabel="x", ylabel="y")
    ax1.legend(loc="lower left")
    for name in dict.fromkeys(r["method"] for r in table):
        rows = [r for r in table if r["method"] == name]
        ax2.loglog([r["nf"] for r in rows], [r["error"] for r in rows], "o-", label=name)
    ax2.set(title="work-precision after one period", xlabel="f evaluations", ylabel="|q(T) - q(0)|")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(out, "orbit.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
