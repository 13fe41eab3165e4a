"""Latent ODEs (Chen et al. 2018, Rubanova et al. 2019): an encoder reads irregularly sampled
observations backwards in time into ``q(z0 | x) = N(μ, σ²)``, a latent ODE ``dz/dt = f(z)`` carries a
sample of ``z0`` to any times, a decoder maps ``z(t)`` to observations; trained by the evidence lower
bound ``E_q[log p(x | z)] - KL(q(z0 | x) || N(0, I))``.

Observations share one time grid per batch (the union of every sequence's times) with a mask of the
entries actually observed, as Rubanova et al. batch irregular data.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["LatentODE"]

_ENCODERS = ("rnn", "ode-rnn")


def _mlp(n_in: int, n_out: int, width: int, layers: int = 2) -> nn.Sequential:
    mods, d = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(d, width), nn.Tanh()]
        d = width
    return nn.Sequential(*mods, nn.Linear(d, n_out))


def _autonomous(u, net, t):
    return net(u)


class LatentODE(nn.Module):
    """An encoder, a latent ODE and a decoder.

    Arguments:
        obs_dim: observation size ``D``.
        latent_dim: size of ``z``.
        hidden: width of the encoder's GRU state and of the default networks.
        encoder: ``"rnn"`` (a GRU over the observations and their time gaps, backwards: Chen et al.)
            or ``"ode-rnn"`` (between observations the GRU state follows an ODE of its own:
            Rubanova et al.'s ODE-RNN).
        dynamics: the latent right-hand side ``f(z)`` (default a tanh MLP, two layers of ``hidden``).
        decoder: ``z → x`` (default linear-tanh-linear).
        obs_std: the observation noise of the Gaussian likelihood.
        alg, **solve_kwargs: for the latent solve (default ``Tsit5()``, reltol 1e-4, abstol 1e-5,
            one step size for the batch).

    ``elbo(x, t, mask)`` gives the per-sequence bound ``(B,)`` for ``x`` ``(B, T, D)`` observed at ``t``
    ``(T,)`` (increasing); ``predict(x, t, t_pred, mask)`` decodes the mean (or a sampled) ``z0``
    at ``t_pred`` ``(T',)``, inside the observed window (interpolation) or beyond it (extrapolation).
    """

    def __init__(self, obs_dim: int, latent_dim: int = 4, hidden: int = 25, *, encoder: str = "rnn",
                 dynamics: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None, obs_std: float = 0.3,
                 alg=None, **solve_kwargs):
        super().__init__()
        from ._solve import _KEYWORDS

        if encoder not in _ENCODERS:
            raise ValueError(f"encoder={encoder!r}; choose 'rnn' or 'ode-rnn'")
        if not obs_std > 0:
            raise ValueError(f"obs_std must be positive; got {obs_std!r}")
        bad = [k for k in solve_kwargs if k not in _KEYWORDS or k in ("saveat", "callback")]
        if bad:
            raise TypeError(f"LatentODE got unknown solve keyword(s) {bad}")
        self.obs_dim, self.latent_dim, self.hidden = obs_dim, latent_dim, hidden
        self.encoder_kind, self.obs_std = encoder, float(obs_std)
        self.gru = nn.GRUCell(obs_dim + 1, hidden)          # input: observation and the time gap
        self.to_q = nn.Linear(hidden, 2 * latent_dim)
        self.hidden_dynamics = _mlp(hidden, hidden, hidden) if encoder == "ode-rnn" else None
        self.dynamics = dynamics if dynamics is not None else _mlp(latent_dim, latent_dim, hidden)
        self.decoder = decoder if decoder is not None else _mlp(latent_dim, obs_dim, hidden, layers=1)
        self.alg = alg
        self.solve_kwargs = {"reltol": 1e-4, "abstol": 1e-5, "batch_steps": "shared", **solve_kwargs}

    # ---- pieces ---------------------------------------------------------------------------------------
    def _solve(self, net: nn.Module, u0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """``u`` at ``times`` ``(T, B, n)`` from ``u0`` at ``times[0]``."""
        from ._problem import ODEProblem
        from ._solve import solve

        ts = [float(v) for v in times]
        if len(ts) == 1 or ts[-1] == ts[0]:
            return u0[None].expand(len(ts), *u0.shape)
        sol = solve(ODEProblem(_autonomous, u0, (ts[0], ts[-1]), net), self.alg, saveat=ts, dense=False,
                    **self.solve_kwargs)
        return sol.u

    def _check(self, x, t, mask):
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.obs_dim:
            raise ValueError(f"x must be (batch, times, {self.obs_dim}); got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim != 1 or t.shape[0] != x.shape[1]:
            raise ValueError(f"t must hold one time per column of x ({x.shape[1]}); got shape {tuple(t.shape)}")
        if t.shape[0] > 1 and not bool((t[1:] > t[:-1]).all()):
            raise ValueError("t must be strictly increasing")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be (batch, times) = {tuple(x.shape[:2])}; got {tuple(mask.shape)}")
        return t, mask.bool()

    def encode(self, x: torch.Tensor, t: Sequence[float], mask: Optional[torch.Tensor] = None):
        """``(μ, log σ²)`` of ``q(z0 | x)``, each ``(B, latent_dim)``: the GRU reads the observations from
        the last to the first, each with the time to the member's next observation; a member's state
        changes only where it has an observation."""
        t, mask = self._check(x, t, mask)
        B, T, _ = x.shape
        h = x.new_zeros(B, self.hidden)
        tx = t.to(x.dtype)
        # each member's gap is to its own next observation (0 for the last one it has)
        t_next = x.new_full((B,), float("nan"))
        for i in range(T - 1, -1, -1):
            step = float(t[i + 1] - t[i]) if i + 1 < T else 0.0
            if self.hidden_dynamics is not None and step > 0:
                # ODE-RNN: evolve the state backwards over the gap (time reversed: ds = -dt)
                h = self._solve(self.hidden_dynamics, h, torch.tensor([0.0, step], dtype=torch.float64))[-1]
            gap = torch.nan_to_num(t_next - tx[i], nan=0.0)
            inp = torch.cat([x[:, i], gap[:, None]], -1)
            seen = mask[:, i]
            h = torch.where(seen[:, None], self.gru(inp, h), h)
            t_next = torch.where(seen, tx[i], t_next)
        q = self.to_q(h)
        return q[:, :self.latent_dim], q[:, self.latent_dim:]

    def decode(self, z0: torch.Tensor, t: Sequence[float]) -> torch.Tensor:
        """Observations ``(B, T, D)`` decoded from ``z(t)``, the latent ODE solved from ``z0`` at ``t[0]``."""
        times = torch.as_tensor(t, dtype=torch.float64)
        z = self._solve(self.dynamics, z0, times)                               # (T, B, L)
        return self.decoder(z).transpose(0, 1)

    # ---- objectives --------------------------------------------------------------------------------
    def elbo(self, x: torch.Tensor, t: Sequence[float], mask: Optional[torch.Tensor] = None,
             generator: Optional[torch.Generator] = None, kl_weight: float = 1.0,
             encoder_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The evidence lower bound per sequence ``(B,)``, one sample of ``z0`` (reparametrised).
        ``encoder_mask`` (default ``mask``) restricts what the encoder reads, e.g. to the first part of
        each sequence, so that the likelihood of the rest trains extrapolation."""
        t, mask = self._check(x, t, mask)
        mu, logvar = self.encode(x, t, mask if encoder_mask is None else encoder_mask & mask)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z0 = mu + torch.exp(0.5 * logvar) * eps
        pred = self.decode(z0, t)
        var = self.obs_std ** 2
        loglik = -0.5 * ((x - pred) ** 2 / var + math.log(2 * math.pi * var))
        loglik = (loglik * mask[..., None]).sum((1, 2))
        kl = 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(-1)
        return loglik - kl_weight * kl

    def predict(self, x: torch.Tensor, t: Sequence[float], t_pred: Sequence[float], mask: Optional[torch.Tensor] = None,
                sample: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Decoded ``(B, T', D)`` at ``t_pred`` (``t_pred[0]`` must be ``t[0]``, where ``z0`` lives) from
        the posterior mean of ``z0`` (or a sample)."""
        t, mask = self._check(x, t, mask)
        t_pred = torch.as_tensor(t_pred, dtype=torch.float64)
        if float(t_pred[0]) != float(t[0]):
            raise ValueError(f"t_pred must start at t[0] = {float(t[0]):g}, where z0 is inferred; got {float(t_pred[0]):g}")
        mu, logvar = self.encode(x, t, mask)
        z0 = mu
        if sample:
            z0 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return self.decode(z0, t_pred)
