"""Reference problems for tests, demos and benchmarks.

Each function returns an :class:`~pyode.ODEProblem` built with the documented parameters; pass
``dtype``/``device`` to move it, ``u0`` of shape ``(*batch, n)`` to batch it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._problem import ODEProblem

__all__ = ["lotka_volterra", "van_der_pol", "arenstorf", "ARENSTORF_PERIOD", "kepler", "kepler_exact"]


def _tensor(x, dtype, device):
    return torch.as_tensor(x, dtype=dtype, device=device)


def _lotka_volterra_rhs(u, p, t):
    x, y = u[..., 0], u[..., 1]
    alpha, beta, delta, gamma = p.unbind(-1)
    return torch.stack([alpha * x - beta * x * y, delta * x * y - gamma * y], -1)


def lotka_volterra(u0=(1.0, 1.0), p=(1.5, 1.0, 1.0, 3.0), tspan=(0.0, 10.0), dtype=torch.float64,
                   device=None) -> ODEProblem:
    """Predator-prey ``x' = αx - βxy``, ``y' = δxy - γy`` with ``p = (α, β, δ, γ)`` (SciML's tutorial values)."""
    return ODEProblem(_lotka_volterra_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device))


def _van_der_pol_rhs(u, mu, t):
    x, y = u[..., 0], u[..., 1]
    return torch.stack([y, mu * (1 - x * x) * y - x], -1)


def van_der_pol(mu: float = 1.0, u0=(2.0, 0.0), tspan=(0.0, 6.3), dtype=torch.float64, device=None) -> ODEProblem:
    """Van der Pol oscillator ``x'' = μ(1 - x²)x' - x`` as a first-order system; stiff for large ``μ``."""
    return ODEProblem(_van_der_pol_rhs, _tensor(u0, dtype, device), tspan, mu)


ARENSTORF_PERIOD = 17.0652165601579625588917206249
_ARENSTORF_U0 = (0.994, 0.0, 0.0, -2.00158510637908252240537862224)


def _arenstorf_rhs(u, mu, t):
    x, y, vx, vy = u.unbind(-1)
    mu_ = 1.0 - mu
    d1 = ((x + mu) ** 2 + y ** 2) ** 1.5
    d2 = ((x - mu_) ** 2 + y ** 2) ** 1.5
    ax = x + 2 * vy - mu_ * (x + mu) / d1 - mu * (x - mu_) / d2
    ay = y - 2 * vx - mu_ * y / d1 - mu * y / d2
    return torch.stack([vx, vy, ax, ay], -1)


def arenstorf(periods: float = 1.0, dtype=torch.float64, device=None) -> ODEProblem:
    """The Arenstorf orbit of the restricted three-body problem (Hairer, Nørsett, Wanner I, II.0).

    The orbit is periodic with period :data:`ARENSTORF_PERIOD`, so the state after whole periods is
    ``u0`` again: an exact reference. ``p`` is the mass ratio μ = 0.012277471.
    """
    return ODEProblem(_arenstorf_rhs, _tensor(_ARENSTORF_U0, dtype, device), (0.0, periods * ARENSTORF_PERIOD),
                      0.012277471)


def _kepler_rhs(u, p, t):
    q, v = u[..., :2], u[..., 2:]
    r3 = q.square().sum(-1, keepdim=True).pow(1.5)
    return torch.cat([v, -q / r3], -1)


def kepler(eccentricity: float = 0.5, tspan=(0.0, 2 * math.pi), dtype=torch.float64, device=None) -> ODEProblem:
    """Two-body (Kepler) orbit with the given eccentricity, starting at pericentre; period 2π."""
    e = eccentricity
    u0 = (1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e)))
    return ODEProblem(_kepler_rhs, _tensor(u0, dtype, device), tspan)


def kepler_exact(t: float, eccentricity: float = 0.5) -> torch.Tensor:
    """Exact state of :func:`kepler` at time ``t`` (Kepler's equation solved by Newton's method)."""
    e = eccentricity
    E = t if e < 0.8 else math.pi
    for _ in range(100):
        dE = (E - e * math.sin(E) - t) / (1 - e * math.cos(E))
        E -= dE
        if abs(dE) < 1e-16:
            break
    c, s = math.cos(E), math.sin(E)
    rfac = 1 - e * c
    q = (c - e, math.sqrt(1 - e * e) * s)
    v = (-s / rfac, math.sqrt(1 - e * e) * c / rfac)
    return torch.tensor([*q, *v], dtype=torch.float64)
