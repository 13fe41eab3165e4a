"""Demo: a latent ODE extrapolates irregularly sampled noisy spirals, beside an RNN (Chen et al.
2018's experiment, reduced to run in minutes on a CPU).

1. Data (Chen et al.'s ``generate_spiral2d``): Archimedean spirals ``r = 0.3 θ`` (counter-clockwise,
   centred at (5, 0)) and ``r = 15 / (6π + 1 - θ)`` (clockwise, centred at (-5, 0)), θ ∈ [0, 6π] on
   1000 points; each sequence is 100 consecutive points from a random start (indices 100-899) with
   Gaussian noise 0.3, rotation chosen at random. 400 training and 100 held-out sequences (Chen et
   al. used 1000 and trained 2000 iterations). Irregular sampling, as in their experiment: each
   training sequence is observed at 60 random points of its 100, each held-out sequence at 30 random
   points of its first 50.
2. Task: from a held-out sequence's 30 observations, give its next 50 points (extrapolation) and its
   first 50 (interpolation); errors against the noise-free spiral.
3. Latent ODE (:class:`pyode.nn.LatentODE`): 6 latent dimensions, a GRU encoder of width 25 over the
   observations among the first 50 points (each with the time to the next observation), ``dz/dt`` a
   tanh MLP of width 32 (Chen et al.'s 4 and 20 lost to the RNN on one seed of four), the decoder
   linear-tanh-linear; trained on the ELBO of every observation (observation noise 0.3, the KL
   term's weight rising from 0 to 1 over the first quarter). RNN
   baseline (Chen et al.'s): a GRU of width 25 reading each observation with the time to the next
   one, and a linear read-out predicting that next observation (teacher forcing); it extrapolates
   by feeding its own predictions back one grid step at a time. Both: Adam, lr 0.01 on a cosine to
   5e-4, the same number (1000) of full-batch iterations.
4. Outputs: ``latent_ode.png`` (held-out spirals: observations, truth, both extrapolations),
   ``loss.png``, ``metrics.json`` (``extrapolation_rmse`` of both), ``model.pt``.

Exit 0 when the latent ODE's extrapolation RMSE is below the RNN's. ``--smoke``: a few iterations on
a few spirals (CI).
"""
from __future__ import annotations

import json
import math
import os
import time

import torch
from torch import nn

from ._args import one_thread

DESCRIPTION = "a latent ODE (Chen et al.'s spirals) extrapolates noisy spirals, beside an RNN baseline"

N_TOTAL, N_SAMPLE, N_OBSERVED, NOISE = 1000, 100, 50, 0.3
N_TRAIN, N_TEST = 400, 100
TRAIN_OBSERVED, TEST_OBSERVED = 60, 30
ITERATIONS, SMOKE_ITERATIONS, LR = 1000, 3, 0.01
LATENT, HIDDEN, RNN_HIDDEN = 6, 32, 25
#: the KL term's weight grows linearly from 0 to 1 over this fraction of the iterations
KL_WARMUP = 0.25


def spirals(n: int, generator: torch.Generator):
    """``(truth, noisy, t)``: ``n`` sequences of ``N_SAMPLE`` points ``(n, N_SAMPLE, 2)``, and their
    common times ``(N_SAMPLE,)`` (θ from 0, as Chen et al. shift every sequence to start at 0)."""
    theta = torch.linspace(0.0, 6 * math.pi, N_TOTAL)
    z_cw = 6 * math.pi + 1.0 - theta
    r_cw = 0.3 * 50.0 / z_cw
    cw = torch.stack([r_cw * torch.cos(z_cw) - 5.0, r_cw * torch.sin(z_cw)], -1)
    r_cc = 0.3 * theta
    cc = torch.stack([r_cc * torch.cos(theta) + 5.0, r_cc * torch.sin(theta)], -1)
    start = torch.randint(N_SAMPLE, N_TOTAL - N_SAMPLE, (n,), generator=generator)
    counter = torch.rand(n, generator=generator) > 0.5
    idx = start[:, None] + torch.arange(N_SAMPLE)[None, :]
    truth = torch.where(counter[:, None, None], cc[idx], cw[idx])
    noisy = truth + NOISE * torch.randn(truth.shape, generator=generator)
    return truth, noisy, theta[:N_SAMPLE].double()


def observed(n: int, count: int, among: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, N_SAMPLE)`` bool: ``count`` points of each sequence, at random among its first ``among``."""
    pick = torch.rand(n, among, generator=generator).argsort(-1)[:, :count]
    mask = torch.zeros(n, N_SAMPLE, dtype=torch.bool)
    return mask.scatter_(1, pick, True)


def _gather(x: torch.Tensor, mask: torch.Tensor):
    """The observed points of every sequence (the same count in each): ``(B, m, 2)`` and their grid
    indices ``(B, m)``."""
    idx = mask.nonzero()[:, 1].reshape(mask.shape[0], -1)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])), idx


class NextPointRNN(nn.Module):
    """The baseline: a GRU reading each point with the time (in grid steps) to the next one, a linear
    layer predicting that next point."""

    def __init__(self, hidden: int = RNN_HIDDEN):
        super().__init__()
        self.gru = nn.GRU(3, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, gaps: torch.Tensor, h=None):
        """Predictions of the next points ``(B, T, 2)`` from points ``x`` and gaps ``(B, T)``."""
        out, h = self.gru(torch.cat([x, gaps[..., None].to(x.dtype)], -1), h)
        return self.out(out), h

    def extrapolate(self, x: torch.Tensor, idx: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """Read the observations ``x`` at grid indices ``idx``, then give the points at grid indices
        ``start, start + 1, ...`` by feeding its own predictions back: ``(B, steps, 2)``."""
        gaps = torch.cat([idx[:, 1:] - idx[:, :-1], start - idx[:, -1:]], 1)
        pred, h = self(x, gaps)
        nxt = pred[:, -1:]
        out = [nxt]
        one = torch.ones(x.shape[0], 1)
        for _ in range(steps - 1):
            nxt, h = self(nxt, one, h)
            out.append(nxt)
        return torch.cat(out, 1)


def add_arguments(parser) -> None:
    from ._args import positive_int

    parser.add_argument("--iterations", type=positive_int("--iterations"), default=None,
                        help=f"training iterations of each model (default {ITERATIONS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pyode-demo/latent-ode", help="output folder (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="a few iterations on a few spirals")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(args) -> int:
    return run(iterations=args.iterations, seed=args.seed, out=args.out, smoke=args.smoke, progress=args.progress)


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum(-1).mean().sqrt())


def run(iterations: int = None, seed: int = 0, out: str = "pyode-demo/latent-ode", smoke: bool = False,
        progress: bool = True) -> int:
    from .. import plot
    from ..nn import LatentODE
    from ..train import fit

    with one_thread():
        start = time.perf_counter()
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(seed)
        iterations = iterations or (SMOKE_ITERATIONS if smoke else ITERATIONS)
        g = torch.Generator().manual_seed(seed)
        n_train, n_test = (16, 8) if smoke else (N_TRAIN, N_TEST)
        truth, noisy, t = spirals(n_train, g)
        truth_test, noisy_test, _ = spirals(n_test, g)
        train_mask = observed(n_train, TRAIN_OBSERVED, N_SAMPLE, g)
        test_mask = observed(n_test, TEST_OBSERVED, N_OBSERVED, g)
        first = torch.arange(N_SAMPLE) < N_OBSERVED
        print(f"spirals: {n_train} training sequences observed at {TRAIN_OBSERVED} random points of {N_SAMPLE}, "
              f"{n_test} held-out at {TEST_OBSERVED} of their first {N_OBSERVED} (noise {NOISE:g}); extrapolate "
              f"{N_SAMPLE - N_OBSERVED} points; {iterations} Adam iterations each (lr {LR:g})")

        model = LatentODE(2, latent_dim=LATENT, hidden=RNN_HIDDEN, obs_std=NOISE,
                          dynamics=nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN),
                                                 nn.Tanh(), nn.Linear(HIDDEN, LATENT)))
        encoder_mask = train_mask & first
        warmup = KL_WARMUP * iterations

        def latent_loss(m, epoch):
            kl_weight = min(1.0, epoch / warmup) if warmup > 0 else 1.0
            elbo = m.elbo(noisy, t, mask=train_mask, encoder_mask=encoder_mask, kl_weight=kl_weight)
            return -elbo.mean() / TRAIN_OBSERVED

        t0 = time.perf_counter()
        def cosine(opt):
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations, eta_min=LR / 20)

        history = fit(model, latent_loss, epochs=iterations, optimizer="adam", lr=LR, scheduler=cosine,
                      progress=progress, checkpoint=os.path.join(out, "checkpoint.pt"), checkpoint_every=50)
        latent_seconds = time.perf_counter() - t0

        rnn = NextPointRNN()
        x_obs, idx = _gather(noisy, train_mask)
        gaps = (idx[:, 1:] - idx[:, :-1]).to(x_obs.dtype)

        def rnn_loss(m, epoch):
            return ((m(x_obs[:, :-1], gaps)[0] - x_obs[:, 1:]) ** 2).sum(-1).mean()

        t0 = time.perf_counter()
        fit(rnn, rnn_loss, epochs=iterations, optimizer="adam", lr=LR, scheduler=cosine, progress=progress)
        rnn_seconds = time.perf_counter() - t0

        with torch.no_grad():
            latent_pred = model.predict(noisy_test, t, t, mask=test_mask)
            x_test_obs, idx_test = _gather(noisy_test, test_mask)
            rnn_extra = rnn.extrapolate(x_test_obs, idx_test, N_OBSERVED, N_SAMPLE - N_OBSERVED)
        later = slice(N_OBSERVED, N_SAMPLE)
        metrics_models = {
            "latent_ode": {"extrapolation_rmse": _rmse(latent_pred[:, later], truth_test[:, later]),
                           "interpolation_rmse": _rmse(latent_pred[:, :N_OBSERVED], truth_test[:, :N_OBSERVED]),
                           "train_seconds": latent_seconds},
            "rnn": {"extrapolation_rmse": _rmse(rnn_extra, truth_test[:, later]), "train_seconds": rnn_seconds}}
        lat, base = metrics_models["latent_ode"], metrics_models["rnn"]
        reached = lat["extrapolation_rmse"] < base["extrapolation_rmse"]
        print(f"latent ODE: extrapolation RMSE {lat['extrapolation_rmse']:.3f}, interpolation "
              f"{lat['interpolation_rmse']:.3f}; {lat['train_seconds']:.0f} s of training")
        print(f"RNN       : extrapolation RMSE {base['extrapolation_rmse']:.3f}; {base['train_seconds']:.0f} s of training")
        print(f"target: the latent ODE extrapolates better than the RNN: {'reached' if reached else 'NOT reached'}")

        fig = plot._figure_class()(figsize=(12, 4))
        for k, ax in enumerate(fig.subplots(1, 3)):
            ax.plot(truth_test[k, :, 0], truth_test[k, :, 1], "g-", lw=1, label="truth")
            ax.plot(x_test_obs[k, :, 0], x_test_obs[k, :, 1], "k.", ms=3, label="observed")
            ax.plot(latent_pred[k, :, 0], latent_pred[k, :, 1], "r-", label="latent ODE")
            ax.plot(rnn_extra[k, :, 0], rnn_extra[k, :, 1], "b--", label="RNN (extrapolation)")
            ax.set_aspect("equal")
            if k == 0:
                ax.legend(fontsize=7)
        fig.tight_layout()
        plot._save(fig, os.path.join(out, "latent_ode.png"))
        plot.loss_curve(history, path=os.path.join(out, "loss.png"), logy=False)
        torch.save(model.state_dict(), os.path.join(out, "model.pt"))
        metrics = {**metrics_models, "target_reached": reached, "iterations": iterations, "train_sequences": n_train,
                   "test_sequences": n_test, "seed": seed, "seconds": time.perf_counter() - start}
        with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
        print(f"wrote {out}/latent_ode.png, loss.png, metrics.json, model.pt ({metrics['seconds']:.0f} s)")
        return 0 if reached or smoke else 1
