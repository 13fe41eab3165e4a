"""Reference problems for tests, demos and benchmarks.

Each function returns an :class:`~pyode.ODEProblem` built with the documented parameters; pass
``dtype``/``device`` to move it, ``u0`` of shape ``(*batch, n)`` to batch it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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
    return ODEProblem(_van_der_pol_rhs, _tensor(u0, dtype, device), tspan, mu, jac=_van_der_pol_jac)


def _van_der_pol_jac(u, mu, t):
    x, y = u[..., 0], u[..., 1]
    return _dense_jac(u, 2, {(0, 1): 1.0, (1, 0): -2.0 * mu * x * y - 1.0, (1, 1): mu * (1 - x * x)})


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


# ================================================================================================
# Stiff reference problems, each with its analytic Jacobian.
#
# Sources: E. Hairer, G. Wanner, "Solving Ordinary Differential Equations II", 2nd ed., Springer
# 1996, Section IV.10 (ROBER, OREGO, HIRES, VDPOL); F. Mazzia, C. Magherini et al., "Test Set for
# IVP Solvers", https://archimede.uniba.it/~testset/ (files rober.f, hires.f, orego.f, pollu.f,
# vdpol.f, revision 2006; they give the equations, Jacobians, initial values and the reference
# solutions at the final time collected in STIFF_REFERENCE below); SciMLBenchmarks.jl StiffODE
# (ROBER on (0, 1e5), HIRES, OREGO, POLLU with the same constants).
#
# Every rhs and Jacobian takes the rate constants as ``p`` of shape (*batch, k) (indexed with
# ``p[..., i]``, so an unbatched ``p`` is shared by a batched ``u`` and vice versa) and ignores t.
# ================================================================================================

def _stack(components):
    """``torch.stack(..., -1)`` after broadcasting (a component may not depend on the batched input)."""
    return torch.stack(torch.broadcast_tensors(*components), -1)


def _broadcast_shape(*shapes) -> torch.Size:
    """``torch.broadcast_shapes`` in plain Python: that one costs ~20 µs a call, a tenth of a small
    Jacobian's cost, and these Jacobians are called once per stage in adjoint solves."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        for i, d in enumerate(s, ndim - len(s)):
            if d != 1:
                if out[i] not in (1, d):
                    raise RuntimeError(f"shapes {[tuple(x) for x in shapes]} do not broadcast")
                out[i] = d
    return torch.Size(out)


def _dense_jac(u, n, entries):
    """The ``(*batch, n, n)`` matrix with the given ``{(row, col): value}`` entries (0-based), zeros elsewhere.

    Values are tensors broadcasting against ``u.shape[:-1]`` or Python numbers; built with
    ``torch.stack`` (no in-place writes), so it differentiates and ``vmap``s.
    """
    tensors = [v for v in entries.values() if isinstance(v, torch.Tensor)]
    shape = _broadcast_shape(u.shape[:-1], *(v.shape for v in tensors))
    dtype = u.dtype
    for v in tensors:
        dtype = torch.promote_types(dtype, v.dtype)
    zero = torch.zeros(shape, dtype=dtype, device=u.device)
    flat = [zero] * (n * n)
    for (i, j), v in entries.items():
        flat[i * n + j] = v.to(dtype).expand(shape) if isinstance(v, torch.Tensor) else torch.full_like(zero, v)
    return torch.stack(flat, -1).reshape(*shape, n, n)


# ---- ROBER --------------------------------------------------------------------------------------

def _robertson_rhs(u, k, t):
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    k1, k2, k3 = k[..., 0], k[..., 1], k[..., 2]
    r1, r2, r3 = k1 * y1, k2 * y2 * y2, k3 * y2 * y3
    return _stack([-r1 + r3, r1 - r2 - r3, r2])


def _robertson_jac(u, k, t):
    y2, y3 = u[..., 1], u[..., 2]
    k1, k2, k3 = k[..., 0], k[..., 1], k[..., 2]
    return _dense_jac(u, 3, {
        (0, 0): -k1, (0, 1): k3 * y3, (0, 2): k3 * y2,
        (1, 0): k1, (1, 1): -2.0 * k2 * y2 - k3 * y3, (1, 2): -k3 * y2,
        (2, 1): 2.0 * k2 * y2,
    })


def robertson(k=(0.04, 3e7, 1e4), u0=(1.0, 0.0, 0.0), tspan=(0.0, 1e5), dtype=torch.float64,
              device=None) -> ODEProblem:
    """Robertson's chemical kinetics problem ROBER (Robertson 1966; Hairer & Wanner II, IV.1 and IV.10)::

        y1' = -k1 y1 + k3 y2 y3
        y2' =  k1 y1 - k2 y2² - k3 y2 y3
        y3' =  k2 y2²

    with ``p = k = (k1, k2, k3) = (0.04, 3e7, 1e4)`` (shape ``(*batch, 3)`` for a batch of rate
    constants), ``u0 = (1, 0, 0)``. The default span ``(0, 1e5)`` is SciMLBenchmarks' ROBER; the IVP
    test set integrates to ``1e11`` (reference in :data:`STIFF_REFERENCE`).

    Stiffness: the rate constants span 9 orders of magnitude. y2 peaks at 3.65e-5 near t = 0.005
    and then stays tiny (9e-6 at t = 40, 8e-14 at 1e11) while y1 → 0 and y3 → 1 like 1/t. The
    Jacobian's largest eigenvalue grows from about -2e3 to -k3 ≈ -1e4, so explicit methods are held
    to steps of ~1e-4 over the whole span while implicit ones can take steps of order t. An
    absolute tolerance above y2's size lets y2 turn negative, after which the solution blows up.

    Conservation: the three right-hand sides add to zero, so ``y1 + y2 + y3`` is constant (= 1 for
    the default ``u0``); the analytic Jacobian's columns sum to zero accordingly.
    """
    return ODEProblem(_robertson_rhs, _tensor(u0, dtype, device), tspan, _tensor(k, dtype, device),
                      jac=_robertson_jac)


# ---- HIRES --------------------------------------------------------------------------------------

HIRES_P = (1.71, 0.43, 8.32, 0.0007, 8.75, 10.03, 0.035, 1.12, 1.745, 280.0, 0.69, 1.81)
"""HIRES coefficients (a1, ..., a12) in the order of :func:`hires`'s equations (test set hires.f)."""
HIRES_U0 = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057)


def _hires_rhs(u, p, t):
    y1, y2, y3, y4, y5, y6, y7, y8 = u.unbind(-1)
    a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12 = p.unbind(-1)
    r = a10 * y6 * y8
    f7 = r - a12 * y7
    return _stack([
        -a1 * y1 + a2 * y2 + a3 * y3 + a4,
        a1 * y1 - a5 * y2,
        -a6 * y3 + a2 * y4 + a7 * y5,
        a3 * y2 + a1 * y3 - a8 * y4,
        -a9 * y5 + a2 * y6 + a2 * y7,
        -r + a11 * y4 + a1 * y5 - a2 * y6 + a11 * y7,
        f7,
        -f7,
    ])


def _hires_jac(u, p, t):
    y6, y8 = u[..., 5], u[..., 7]
    a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12 = p.unbind(-1)
    return _dense_jac(u, 8, {
        (0, 0): -a1, (0, 1): a2, (0, 2): a3,
        (1, 0): a1, (1, 1): -a5,
        (2, 2): -a6, (2, 3): a2, (2, 4): a7,
        (3, 1): a3, (3, 2): a1, (3, 3): -a8,
        (4, 4): -a9, (4, 5): a2, (4, 6): a2,
        (5, 3): a11, (5, 4): a1, (5, 5): -a10 * y8 - a2, (5, 6): a11, (5, 7): -a10 * y6,
        (6, 5): a10 * y8, (6, 6): -a12, (6, 7): a10 * y6,
        (7, 5): -a10 * y8, (7, 6): a12, (7, 7): -a10 * y6,
    })


def hires(u0=HIRES_U0, p=HIRES_P, tspan=(0.0, 321.8122), dtype=torch.float64, device=None) -> ODEProblem:
    """HIRES: "High Irradiance RESponse" of photomorphogenesis (Schäfer 1975), 8 species, as in
    Hairer & Wanner II, IV.10 and the IVP test set (hires.f)::

        y1' = -1.71 y1 + 0.43 y2 + 8.32 y3 + 0.0007
        y2' =  1.71 y1 - 8.75 y2
        y3' = -10.03 y3 + 0.43 y4 + 0.035 y5
        y4' =  8.32 y2 + 1.71 y3 - 1.12 y4
        y5' = -1.745 y5 + 0.43 y6 + 0.43 y7
        y6' = -280 y6 y8 + 0.69 y4 + 1.71 y5 - 0.43 y6 + 0.69 y7
        y7' =  280 y6 y8 - 1.81 y7
        y8' = -y7'

    ``p`` holds the twelve distinct coefficients :data:`HIRES_P` = (1.71, 0.43, 8.32, 0.0007, 8.75,
    10.03, 0.035, 1.12, 1.745, 280, 0.69, 1.81) (shape ``(*batch, 12)``; every occurrence of a value
    uses the same entry). ``u0 = (1, 0, 0, 0, 0, 0, 0, 0.0057)``, ``t1 = 321.8122``; the test set's
    reference solution there is in :data:`STIFF_REFERENCE`.

    Stiffness: mildly stiff. The Jacobian's most negative eigenvalue is about -10 at ``u0`` and
    reaches about -2e2 along the solution (the ``280 y6 y8`` coupling), against a solution that
    evolves on times of order 1–100.

    Conservation: ``y7' + y8' = 0``, so ``y7 + y8`` is constant (0.0057 for the standard ``u0``).
    """
    return ODEProblem(_hires_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device), jac=_hires_jac)


# ---- OREGO --------------------------------------------------------------------------------------

OREGO_P = (77.27, 8.375e-6, 0.161)
"""Oregonator constants (s, q, w) of Hairer & Wanner II, IV.10 / test set orego.f."""


def _orego_rhs(u, p, t):
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    s, q, w = p[..., 0], p[..., 1], p[..., 2]
    return _stack([
        s * (y2 + y1 * (1.0 - q * y1 - y2)),
        (y3 - (1.0 + y1) * y2) / s,
        w * (y1 - y3),
    ])


def _orego_jac(u, p, t):
    y1, y2 = u[..., 0], u[..., 1]
    s, q, w = p[..., 0], p[..., 1], p[..., 2]
    return _dense_jac(u, 3, {
        (0, 0): s * (1.0 - 2.0 * q * y1 - y2), (0, 1): s * (1.0 - y1),
        (1, 0): -y2 / s, (1, 1): -(1.0 + y1) / s, (1, 2): 1.0 / s,
        (2, 0): w, (2, 2): -w,
    })


def orego(u0=(1.0, 2.0, 3.0), p=OREGO_P, tspan=(0.0, 360.0), dtype=torch.float64, device=None) -> ODEProblem:
    """OREGO: the Oregonator, Field & Noyes' model of the Belousov–Zhabotinskii reaction (Hairer &
    Wanner II, IV.10; IVP test set orego.f)::

        y1' = s (y2 + y1 (1 - q y1 - y2))
        y2' = (y3 - (1 + y1) y2) / s
        y3' = w (y1 - y3)

    with ``p = (s, q, w) = (77.27, 8.375e-6, 0.161)`` (shape ``(*batch, 3)``), ``u0 = (1, 2, 3)``,
    ``t1 = 360`` (reference in :data:`STIFF_REFERENCE`).

    Stiffness: a relaxation oscillation with period ≈ 302.9; in sharp fronts the components swing
    over orders of magnitude (y1 between 1 and 1.2e5, y2 between 3e-3 and 1.8e3, y3 between 1 and
    3.1e4), where the Jacobian's most negative eigenvalue reaches about -1.4e5, against slow phases
    of length ~100. No conservation law.
    """
    return ODEProblem(_orego_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device), jac=_orego_jac)


# ---- POLLU --------------------------------------------------------------------------------------

POLLU_P = (0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9.0e3, 2.2e-2, 1.2e4, 1.88,
           1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1.0e8, 4.44e11, 1.24e3, 2.1, 5.78, 4.74e-2, 1.78e3, 3.12)
"""POLLU rate constants k1..k25 (Verwer 1994; test set pollu.f; SciMLBenchmarks POLLU)."""
POLLU_U0 = (0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.007, 0.0, 0.0, 0.0)


def _pollu_rates(y, k):
    """The 25 reaction rates r1..r25 (0-based lists of tensors ``y``, ``k``)."""
    return [
        k[0] * y[0],               # r1
        k[1] * y[1] * y[3],        # r2
        k[2] * y[4] * y[1],        # r3
        k[3] * y[6],               # r4
        k[4] * y[6],               # r5
        k[5] * y[6] * y[5],        # r6
        k[6] * y[8],               # r7
        k[7] * y[8] * y[5],        # r8
        k[8] * y[10] * y[1],       # r9
        k[9] * y[10] * y[0],       # r10
        k[10] * y[12],             # r11
        k[11] * y[9] * y[1],       # r12
        k[12] * y[13],             # r13
        k[13] * y[0] * y[5],       # r14
        k[14] * y[2],              # r15
        k[15] * y[3],              # r16
        k[16] * y[3],              # r17
        k[17] * y[15],             # r18
        k[18] * y[15],             # r19
        k[19] * y[16] * y[5],      # r20
        k[20] * y[18],             # r21
        k[21] * y[18],             # r22
        k[22] * y[0] * y[3],       # r23
        k[23] * y[18] * y[0],      # r24
        k[24] * y[19],             # r25
    ]


def _pollu_rhs(u, p, t):
    y, k = u.unbind(-1), p.unbind(-1)
    r = [None] + _pollu_rates(y, k)  # r[1]..r[25] as in the test set
    return _stack([
        -r[1] - r[10] - r[14] - r[23] - r[24] + r[2] + r[3] + r[9] + r[11] + r[12] + r[22] + r[25],
        -r[2] - r[3] - r[9] - r[12] + r[1] + r[21],
        -r[15] + r[1] + r[17] + r[19] + r[22],
        -r[2] - r[16] - r[17] - r[23] + r[15],
        -r[3] + 2.0 * r[4] + r[6] + r[7] + r[13] + r[20],
        -r[6] - r[8] - r[14] - r[20] + r[3] + 2.0 * r[18],
        -r[4] - r[5] - r[6] + r[13],
        r[4] + r[5] + r[6] + r[7],
        -r[7] - r[8],
        -r[12] + r[7] + r[9],
        -r[9] - r[10] + r[8] + r[11],
        r[9],
        -r[11] + r[10],
        -r[13] + r[12],
        r[14],
        -r[18] - r[19] + r[16],
        -r[20],
        r[20],
        -r[21] - r[22] - r[24] + r[23] + r[25],
        -r[25] + r[24],
    ])


def _pollu_jac(u, p, t):
    y = [None] + list(u.unbind(-1))  # 1-based, as in the test set's jeval
    k = [None] + list(p.unbind(-1))
    return _dense_jac(u, 20, {(i - 1, j - 1): v for (i, j), v in {
        (1, 1): -k[1] - k[10] * y[11] - k[14] * y[6] - k[23] * y[4] - k[24] * y[19],
        (1, 11): -k[10] * y[1] + k[9] * y[2],
        (1, 6): -k[14] * y[1],
        (1, 4): -k[23] * y[1] + k[2] * y[2],
        (1, 19): -k[24] * y[1] + k[22],
        (1, 2): k[2] * y[4] + k[9] * y[11] + k[3] * y[5] + k[12] * y[10],
        (1, 13): k[11],
        (1, 20): k[25],
        (1, 5): k[3] * y[2],
        (1, 10): k[12] * y[2],

        (2, 4): -k[2] * y[2],
        (2, 5): -k[3] * y[2],
        (2, 11): -k[9] * y[2],
        (2, 10): -k[12] * y[2],
        (2, 19): k[21],
        (2, 1): k[1],
        (2, 2): -k[2] * y[4] - k[3] * y[5] - k[9] * y[11] - k[12] * y[10],

        (3, 1): k[1],
        (3, 4): k[17],
        (3, 16): k[19],
        (3, 19): k[22],
        (3, 3): -k[15],

        (4, 4): -k[2] * y[2] - k[16] - k[17] - k[23] * y[1],
        (4, 2): -k[2] * y[4],
        (4, 1): -k[23] * y[4],
        (4, 3): k[15],

        (5, 5): -k[3] * y[2],
        (5, 2): -k[3] * y[5],
        (5, 7): 2.0 * k[4] + k[6] * y[6],
        (5, 6): k[6] * y[7] + k[20] * y[17],
        (5, 9): k[7],
        (5, 14): k[13],
        (5, 17): k[20] * y[6],

        (6, 6): -k[6] * y[7] - k[8] * y[9] - k[14] * y[1] - k[20] * y[17],
        (6, 7): -k[6] * y[6],
        (6, 9): -k[8] * y[6],
        (6, 1): -k[14] * y[6],
        (6, 17): -k[20] * y[6],
        (6, 2): k[3] * y[5],
        (6, 5): k[3] * y[2],
        (6, 16): 2.0 * k[18],

        (7, 7): -k[4] - k[5] - k[6] * y[6],
        (7, 6): -k[6] * y[7],
        (7, 14): k[13],

        (8, 7): k[4] + k[5] + k[6] * y[6],
        (8, 6): k[6] * y[7],
        (8, 9): k[7],

        (9, 9): -k[7] - k[8] * y[6],
        (9, 6): -k[8] * y[9],

        (10, 10): -k[12] * y[2],
        (10, 2): -k[12] * y[10] + k[9] * y[11],
        (10, 9): k[7],
        (10, 11): k[9] * y[2],

        (11, 11): -k[9] * y[2] - k[10] * y[1],
        (11, 2): -k[9] * y[11],
        (11, 1): -k[10] * y[11],
        (11, 9): k[8] * y[6],
        (11, 6): k[8] * y[9],
        (11, 13): k[11],

        (12, 11): k[9] * y[2],
        (12, 2): k[9] * y[11],

        (13, 13): -k[11],
        (13, 11): k[10] * y[1],
        (13, 1): k[10] * y[11],

        (14, 14): -k[13],
        (14, 10): k[12] * y[2],
        (14, 2): k[12] * y[10],

        (15, 1): k[14] * y[6],
        (15, 6): k[14] * y[1],

        (16, 16): -k[18] - k[19],
        (16, 4): k[16],

        (17, 17): -k[20] * y[6],
        (17, 6): -k[20] * y[17],

        (18, 17): k[20] * y[6],
        (18, 6): k[20] * y[17],

        (19, 19): -k[21] - k[22] - k[24] * y[1],
        (19, 1): -k[24] * y[19] + k[23] * y[4],
        (19, 4): k[23] * y[1],
        (19, 20): k[25],

        (20, 20): -k[25],
        (20, 1): k[24] * y[19],
        (20, 19): k[24] * y[1],
    }.items()})


def pollu(u0=POLLU_U0, p=POLLU_P, tspan=(0.0, 60.0), dtype=torch.float64, device=None) -> ODEProblem:
    """POLLU: the chemistry of the air-pollution model of the Dutch National Institute of Public
    Health and Environmental Protection (RIVM), 20 species and 25 reactions (J. G. Verwer,
    "Gauss–Seidel iteration for stiff ODEs from chemical kinetics", SIAM J. Sci. Comput. 15 (1994);
    IVP test set pollu.f; SciMLBenchmarks POLLU).

    Mass-action rates ``r1 = k1 y1, r2 = k2 y2 y4, r3 = k3 y5 y2, ..., r25 = k25 y20`` (see
    ``_pollu_rates``) and ``y' = S r`` with the test set's stoichiometry. ``p`` is the vector of the
    25 rate constants :data:`POLLU_P` (shape ``(*batch, 25)``); ``u0`` has y2 = 0.2, y4 = 0.04,
    y7 = 0.1, y8 = 0.3, y9 = 0.01, y17 = 0.007 and zeros elsewhere (concentrations in ppm, time in
    minutes); ``t1 = 60`` (reference in :data:`STIFF_REFERENCE`).

    Stiffness: the rate constants span 1.3e-4 to 4.44e11; at ``u0`` the Jacobian has eigenvalues
    -4.4e11 (the y16 decay ``-(k18 + k19)``), -4.8e6 (y3, ``-k15``) and then about -4e3, against a
    60-minute horizon. Some concentrations are tiny (y16 ≈ 4e-18, y3 ≈ 4e-9 at t1), so the absolute
    tolerance must be far below them for relative accuracy in those components.

    Conservation: the stoichiometry has exactly three linear invariants (the carbon, nitrogen and
    sulfur balances), constant along every solution:
    ``y7 + y8 + 2 y9 + y10 + 2 y11 + y12 + 2 y13 + y14`` (= 0.42 for the standard ``u0``),
    ``y1 + y2 + y13 + y15 + y19 + 2 y20`` (= 0.2) and ``y17 + y18`` (= 0.007).
    """
    return ODEProblem(_pollu_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device), jac=_pollu_jac)


# ---- VDPOL (Hairer's scaled form) ---------------------------------------------------------------

def _van_der_pol_scaled_rhs(u, eps, t):
    y1, y2 = u[..., 0], u[..., 1]
    return _stack([y2, ((1.0 - y1 * y1) * y2 - y1) / eps])


def _van_der_pol_scaled_jac(u, eps, t):
    y1, y2 = u[..., 0], u[..., 1]
    return _dense_jac(u, 2, {(0, 1): 1.0, (1, 0): (-2.0 * y1 * y2 - 1.0) / eps, (1, 1): (1.0 - y1 * y1) / eps})


def van_der_pol_scaled(eps: float = 1e-6, u0=(2.0, -0.66), tspan=(0.0, 2.0), dtype=torch.float64,
                       device=None) -> ODEProblem:
    """Van der Pol's equation in Hairer's rescaled stiff form VDPOL (Hairer & Wanner II, IV.10; IVP
    test set vdpol.f)::

        y1' = y2
        y2' = ((1 - y1²) y2 - y1) / ε

    (:func:`van_der_pol` with time scaled by ``1/μ`` and ``ε = 1/μ²``), so the limit cycle's period
    stays near 3 - 2 ln 2 ≈ 1.61 for every small ``ε``. ``p = ε`` (a float, or a tensor of the batch
    shape), default 1e-6: very stiff, the fast eigenvalue ≈ -(y1² - 1)/ε is -3e6 at y1 = 2, and
    the solution jumps (on a time scale ~ε) near t ≈ 0.81 and 1.61. ``u0 = (2, -0.66)`` (Hairer's RADAU5
    driver's choice) lies near the slow manifold y2 ≈ -2/3; the IVP test set
    starts from ``(2, 0)`` instead (a fast initial transient), and its reference at t = 2 is in
    :data:`STIFF_REFERENCE` (the two starts differ there by about 3e-7). No conservation law.
    """
    return ODEProblem(_van_der_pol_scaled_rhs, _tensor(u0, dtype, device), tspan, eps,
                      jac=_van_der_pol_scaled_jac)


# ---- E5 --------------------------------------------------------------------------------------------

E5_P = (7.89e-10, 1.1e7, 1.13e3, 1.0e6)
"""E5 constants (A, B, C, M) of the test set's e5.f (Hindmarsh & Byrne's chemical pyrolysis)."""


def _e5_rhs(u, p, t):
    y1, y2, y3, y4 = u[..., 0], u[..., 1], u[..., 2], u[..., 3]
    a, b, c, m = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    prod1, prod2, prod3, prod4 = a * y1, b * y1 * y3, c * m * y2 * y3, c * y4
    f2, f4 = prod1 - prod3, prod2 - prod4
    return _stack([-prod1 - prod2, f2, f2 - f4, f4])


def _e5_jac(u, p, t):
    y1, y2, y3 = u[..., 0], u[..., 1], u[..., 2]
    a, b, c, m = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    cm = c * m
    return _dense_jac(u, 4, {
        (0, 0): -a - b * y3, (0, 2): -b * y1,
        (1, 0): a, (1, 1): -cm * y3, (1, 2): -cm * y2,
        (2, 0): a - b * y3, (2, 1): -cm * y3, (2, 2): -cm * y2 - b * y1, (2, 3): c,
        (3, 0): b * y3, (3, 2): b * y1, (3, 3): -c,
    })


def e5(u0=(1.76e-3, 0.0, 0.0, 0.0), p=E5_P, tspan=(0.0, 1e13), dtype=torch.float64, device=None) -> ODEProblem:
    """E5: a chemical pyrolysis (Hindmarsh & Byrne's stiff DETEST problem E5; IVP test set e5.f)::

        y1' = -A y1 - B y1 y3
        y2' =  A y1 - M C y2 y3
        y4' =  B y1 y3 - C y4
        y3' =  y2' - y4'

    with ``p = (A, B, C, M) = (7.89e-10, 1.1e7, 1.13e3, 1e6)`` (shape ``(*batch, 4)``),
    ``u0 = (1.76e-3, 0, 0, 0)`` and the test set's span ``(0, 1e13)`` (reference in
    :data:`STIFF_REFERENCE`).

    Stiffness: eigenvalues down to about -1e5 against a span of 13 decades; the solution lives at
    tiny scales (y2, y3 peak near 1.5e-10, y1 ends at 1e-291), so the test set's absolute tolerance is
    1.7e-24. Invariant: ``y2 - y3 - y4 = 0`` (its right-hand sides cancel).
    """
    return ODEProblem(_e5_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device), jac=_e5_jac)


STIFF_REFERENCE = {
    "robertson": (1e11, (0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050)),
    "hires": (321.8122, (0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4,
                         0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2,
                         0.2849998395185769e-2, 0.2850001604814231e-2)),
    "orego": (360.0, (0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3)),
    "pollu": (60.0, (0.5646255480022769e-01, 0.1342484130422339e+00, 0.4139734331099427e-08,
                     0.5523140207484359e-02, 0.2018977262302196e-06, 0.1464541863493966e-06,
                     0.7784249118997964e-01, 0.3245075353396018e+00, 0.7494013383880406e-02,
                     0.1622293157301561e-07, 0.1135863833257075e-07, 0.2230505975721359e-02,
                     0.2087162882798630e-03, 0.1396921016840158e-04, 0.8964884856898295e-02,
                     0.4352846369330103e-17, 0.6899219696263405e-02, 0.1007803037365946e-03,
                     0.1772146513969984e-05, 0.5682943292316392e-04)),
    "van_der_pol_scaled": (2.0, (0.1706167732170483e1, -0.8928097010247975e0)),
    "van_der_pol": (2000.0, (0.1706167732170469e1, -0.8928097010248125e-3)),
    "e5": (1e13, (0.1152903278711829e-290, 0.8867655517642120e-22, 0.8854814626268838e-22, 0.0)),
}
"""Reference solutions ``name -> (t1, u(t1))`` of the IVP test set (Mazzia et al., files rober.f,
hires.f, orego.f, pollu.f, vdpol.f; computed there with RADAU5 in extended precision at rtol ≈ 1e-18)
for the default ``u0`` and parameters, except: ``robertson`` at t = 1e11 (the test set's end time,
not the default span's 1e5), ``van_der_pol_scaled`` for ``u0 = (2, 0)`` (the test set's start),
``van_der_pol`` for the test set's VDPOLM (``mu = 1000``, ``u0 = (2, 0)``, t = 2000; file vdpolm.f) and
``e5`` from e5.f. The published E5 ``y2`` and ``y3`` differ by 1.5e-3 although the invariant
``y2 - y3 - y4 = 0`` and ``y4 ≈ 0`` make them equal: their mean is accurate (to ~1e-5 by scipy's Radau
at rtol 1e-10 … 1e-13), each value only to ~7e-4. :func:`ivp_test_set` scores E5 accordingly."""

__all__ += ["e5", "E5_P", "robertson", "hires", "HIRES_P", "HIRES_U0", "orego", "OREGO_P", "pollu", "POLLU_P", "POLLU_U0",
            "van_der_pol_scaled", "STIFF_REFERENCE"]


# ================================================================================================
# Problems for fitting and for conservation-law checks, each with an exact reference: a closed
# form (damped oscillator), exact invariants (charged particle) or a published setup (spiral).
# Generate data from any problem here with :func:`pyode.data.generate_data`.
# ================================================================================================

# ---- Damped oscillator --------------------------------------------------------------------------

def _damped_oscillator_rhs(u, p, t):
    x, v = u[..., 0], u[..., 1]
    m, c, k = p[..., 0], p[..., 1], p[..., 2]
    return _stack([v, -(c * v + k * x) / m])


def _damped_oscillator_jac(u, p, t):
    m, c, k = p[..., 0], p[..., 1], p[..., 2]
    return _dense_jac(u, 2, {(0, 1): 1.0, (1, 0): -k / m, (1, 1): -c / m})


def _stack_params(values, dtype, device):
    """Scalars or tensors of a common batch shape stacked into ``p`` of shape ``(*batch, len(values))``."""
    return _stack([_tensor(v, dtype, device) for v in values])


def damped_oscillator(m=1.0, c=0.1, k=1.0, u0=(1.0, 0.0), tspan=(0.0, 20.0), dtype=torch.float64,
                      device=None) -> ODEProblem:
    """Damped spring–mass system ``m x'' + c x' + k x = 0`` as ``x' = v``, ``v' = -(c v + k x) / m``.

    Arguments:
        m, c, k: mass, damping and stiffness (defaults 1, 0.1, 1: underdamped, damping ratio
            ζ = c / (2 √(m k)) = 0.05). Numbers, or tensors of a common batch shape.
        u0: ``(x0, v0)``, default ``(1, 0)``; ``(*batch, 2)`` for a batch.
        tspan: default ``(0, 20)``, about three periods 2π/ω_d.
        dtype, device: of ``u0`` and ``p``.

    Returns:
        An :class:`ODEProblem` with ``p = (m, c, k)`` (shape ``(*batch, 3)``) and its analytic
        Jacobian ``[[0, 1], [-k/m, -c/m]]``. :func:`damped_oscillator_exact` is its closed-form
        solution; with ``c² > 4 m k`` and a large ``c`` the problem becomes stiff.
    """
    p = _stack_params((m, c, k), dtype, device)
    return ODEProblem(_damped_oscillator_rhs, _tensor(u0, dtype, device), tspan, p, jac=_damped_oscillator_jac)


def damped_oscillator_exact(t, m: float = 1.0, c: float = 0.1, k: float = 1.0, u0=(1.0, 0.0)) -> torch.Tensor:
    """Closed-form state ``(x(t), v(t))`` of :func:`damped_oscillator` started from ``u0`` at t = 0.

    With γ = c / (2m), ω0² = k / m and β² = γ² - ω0²::

        x(t) = e^{-γt} (x0 C(t) + (v0 + γ x0) S(t))
        v(t) = e^{-γt} (v0 C(t) - (γ v0 + ω0² x0) S(t))

    where ``C = cos(ω_d t)``, ``S = sin(ω_d t) / ω_d`` with ω_d = √(-β²) when underdamped
    (c² < 4mk); ``C = 1``, ``S = t`` when critically damped (c² = 4mk exactly); ``C = cosh(βt)``,
    ``S = sinh(βt) / β`` when overdamped (c² > 4mk). Near critical damping both neighbouring forms
    tend to the critical one without cancellation (ω_d or β small only divides a small sine), so the
    three branches join continuously.

    Arguments:
        t: a number or a tensor of times (any shape).
        m, c, k: Python numbers as in :func:`damped_oscillator`.
        u0: ``(x0, v0)``.

    Returns:
        A float64 tensor of shape ``(*t.shape, 2)``.

    Raises:
        ValueError: when ``m`` is not positive or a parameter is not finite.
    """
    m, c, k = float(m), float(c), float(k)
    if not all(math.isfinite(v) for v in (m, c, k)) or m <= 0:
        raise ValueError(f"damped_oscillator_exact needs finite m > 0, c, k; got m={m}, c={c}, k={k}")
    t = torch.as_tensor(t, dtype=torch.float64)
    x0, v0 = (float(v) for v in u0)
    gamma, w0sq = c / (2 * m), k / m
    beta_sq = gamma * gamma - w0sq
    if beta_sq < 0:
        wd = math.sqrt(-beta_sq)
        decay = torch.exp(-gamma * t)
        C, S = decay * torch.cos(wd * t), decay * torch.sin(wd * t) / wd
    elif beta_sq == 0:
        decay = torch.exp(-gamma * t)
        C, S = decay, decay * t
    else:
        # e^{-γt} cosh(βt) and e^{-γt} sinh(βt)/β from the slow exponential e^{(β-γ)t} and expm1,
        # so neither overflows for large t nor cancels for small βt.
        beta = math.sqrt(beta_sq)
        slow, e = torch.exp((beta - gamma) * t), torch.expm1(-2 * beta * t)
        C, S = slow * (1 + 0.5 * e), -slow * e / (2 * beta)
    x = x0 * C + (v0 + gamma * x0) * S
    v = v0 * C - (gamma * v0 + w0sq * x0) * S
    return torch.stack([x, v], -1)


# ---- Charged particle in an electrostatic wave across a magnetic field --------------------------

CHARGED_PARTICLE_P = (1.0, 1.0, 1.0, 0.5, 1.0, 0.7)
"""Default ``(q, m, B, E0, k, ω)`` of :func:`charged_particle`: unit charge, mass and field (so the
gyrofrequency qB/m is 1), wave amplitude 0.5, wavenumber 1, frequency 0.7 (phase velocity 0.7)."""


def _charged_particle_rhs(u, p, t):
    x, vx, vy = u[..., 0], u[..., 2], u[..., 3]
    q, m, B, E0, k, w = p.unbind(-1)
    t = t.to(u.dtype)  # t is float64; a float32 state keeps its dtype
    qm = q / m
    return _stack([vx, vy, qm * (E0 * torch.sin(k * x - w * t) + B * vy), -qm * B * vx])


def charged_particle(u0=(0.0, 0.0, 1.0, 1.0), p=CHARGED_PARTICLE_P, tspan=(0.0, 30.0), dtype=torch.float64,
                     device=None) -> ODEProblem:
    """A charged particle in a uniform magnetic field and a sinusoidal electrostatic wave.

    The non-relativistic particle (charge q, mass m) moves in the plane perpendicular to a static
    uniform field ``B ẑ``, pushed by the travelling electric wave ``E = E0 sin(k x - ω t) x̂``
    propagating across the field. Newton's law ``m v' = q (E + v × B)`` in the state
    ``u = (x, y, vx, vy)`` reads::

        x'  = vx
        y'  = vy
        vx' = (q/m) (E0 sin(k x - ω t) + B vy)
        vy' = -(q/m) B vx

    This is the classic problem of an ion in an electrostatic wave across a magnetic field (C. F. F.
    Karney, "Stochastic ion heating by a lower hybrid wave", Phys. Fluids 21 (1978) 1584), whose
    motion in x becomes chaotic for large enough ``E0``. It adds a magnetic field to the setting of
    symmetry-regularised neural ODEs, a charged particle in a sinusoidal electric field (W. Hao,
    arXiv:2311.16628); with ``B = 0`` the x motion is that one-dimensional problem.

    It has two independent exact invariants, :func:`charged_particle_invariants`: the canonical
    momentum along y and the energy in the frame moving with the wave. For ``E0 ≠ 0`` there is no
    known third one (the motion in x can be chaotic).

    Arguments:
        u0: ``(x, y, vx, vy)``, default ``(0, 0, 1, 1)``; ``(*batch, 4)`` for a batch.
        p: ``(q, m, B, E0, k, ω)``, default :data:`CHARGED_PARTICLE_P`; shape ``(*batch, 6)`` for
            a batch of parameters. ``k`` must be nonzero for the invariants.
        tspan: default ``(0, 30)``, about five gyro-periods 2π m / (qB).
        dtype, device: of ``u0`` and ``p``.

    Returns:
        An :class:`ODEProblem` (no Jacobian: the problem is not stiff).
    """
    return ODEProblem(_charged_particle_rhs, _tensor(u0, dtype, device), tspan, _tensor(p, dtype, device))


def charged_particle_invariants(u, p, t) -> torch.Tensor:
    """The exact invariants ``(P_y, W)`` of :func:`charged_particle` at states ``u`` and times ``t``.

    With the wave's phase velocity ``c = ω / k``::

        P_y = m vy + q B x
        W   = ½ m ((vx - c)² + vy²) + (q E0 / k) cos(k x - ω t) + q B c y

    Derivation: ``P_y' = m vy' + q B vx = 0`` from the vy equation (it is the canonical momentum
    ``m vy + q A_y`` in the gauge ``A = B x ŷ``; y is cyclic). For W, the wave is static in the
    frame moving with velocity c along x, so the energy there is conserved: the kinetic term
    gives ``(vx - c)(q E0 sin θ + q B vy) - q B vx vy`` with θ = k x - ω t, the wave potential
    ``(q E0/k) cos θ`` gives ``-q E0 sin θ (vx - c)``, and what remains, ``-q B c vy``, is cancelled
    by the potential ``q B c y`` of the motional electric field ``c x̂ × B ẑ``. For ω = 0, W is
    the ordinary energy. The plain kinetic energy ``½ m |v|²`` is not conserved.

    Arguments:
        u: states of shape ``(*batch, 4)``.
        p: parameters ``(q, m, B, E0, k, ω)``, shape ``(6,)`` or ``(*batch, 6)``.
        t: times, a number or a tensor broadcasting against ``u.shape[:-1]``; W depends on t
            explicitly through the wave's phase (unless ω = 0).

    Returns:
        A tensor of shape ``(*batch, 2)`` holding ``(P_y, W)``.
    """
    x, y, vx, vy = u.unbind(-1)
    q, m, B, E0, k, w = torch.as_tensor(p, dtype=u.dtype, device=u.device).unbind(-1)
    t = torch.as_tensor(t, device=u.device).to(u.dtype)
    c = w / k
    momentum = m * vy + q * B * x
    energy = 0.5 * m * ((vx - c) ** 2 + vy ** 2) + q * E0 / k * torch.cos(k * x - w * t) + q * B * c * y
    return _stack([momentum, energy])


# ---- Spiral (Chen et al. 2018) ------------------------------------------------------------------

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
"""The matrix ``A`` of :func:`spiral` (torchdiffeq's ``examples/ode_demo.py``, ``true_A``)."""


def _spiral_rhs(u, A, t):
    return torch.einsum("...i,...ij->...j", u ** 3, A)


def _spiral_jac(u, A, t):
    # f_j = Σ_i u_i³ A_ij, so ∂f_j/∂u_i = 3 u_i² A_ij.
    return 3.0 * u.square()[..., None, :] * A.transpose(-1, -2)


def spiral(A=SPIRAL_A, u0=(2.0, 0.0), tspan=(0.0, 25.0), dtype=torch.float64, device=None) -> ODEProblem:
    """The spiral of the neural ODE paper's demo: ``u' = (u ** 3) @ A`` for a row vector u.

    R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018; the data of torchdiffeq's ``examples/ode_demo.py``
    (``torch.mm(y**3, true_A)``, ``true_y0 = [[2., 0.]]``, ``t = linspace(0, 25, 1000)``). With
    the default ``A = [[-0.1, 2.0], [-2.0, -0.1]]``::

        u1' = -0.1 u1³ - 2.0 u2³
        u2' =  2.0 u1³ - 0.1 u2³

    a slowly decaying spiral towards the origin.

    Arguments:
        A: the 2×2 matrix, default :data:`SPIRAL_A`; ``(*batch, 2, 2)`` for a batch.
        u0: default ``(2, 0)``; ``(*batch, 2)`` for a batch.
        tspan: default ``(0, 25)``.
        dtype, device: of ``u0`` and ``A``.

    Returns:
        An :class:`ODEProblem` with ``p = A`` and the analytic Jacobian ``Aᵀ diag(3 u²)``.
    """
    return ODEProblem(_spiral_rhs, _tensor(u0, dtype, device), tspan, _tensor(A, dtype, device), jac=_spiral_jac)


__all__ += ["damped_oscillator", "damped_oscillator_exact", "charged_particle", "charged_particle_invariants",
            "CHARGED_PARTICLE_P", "spiral", "SPIRAL_A"]


# ================================================================================================
# The IVP test set's stiff problems at their published intervals, with the test set's tolerances
# and its score (significant correct digits at the end point).
# ================================================================================================

@dataclass(frozen=True)
class IVPTestProblem:
    """One problem of the IVP test set (Mazzia et al.) as the test set poses it.

    Attributes:
        name: the test set's name (``"rober"``, ``"hires"``, ...).
        prob: the :class:`~pyode.ODEProblem` on the published interval, with its analytic Jacobian.
        reference: the published end state ``u(t1)`` (float64 tensor).
        atol_factor: the test set's absolute tolerance is ``atol_factor * rtol``, or ``atol_fixed``.
        atol_fixed: a fixed absolute tolerance (E5), else None.
        floor: components whose reference is below ``floor`` in magnitude are scored by their
            absolute error divided by ``floor`` (E5's 1e-291 and 0 entries); the others by relative error.
    """

    name: str
    prob: ODEProblem
    reference: torch.Tensor
    atol_factor: float = 1.0
    atol_fixed: Optional[float] = None
    floor: float = 0.0

    def abstol(self, reltol: float) -> float:
        """The test set's absolute tolerance for ``reltol``."""
        return self.atol_fixed if self.atol_fixed is not None else self.atol_factor * reltol

    def digits(self, u_end) -> float:
        """Significant correct digits of ``u_end`` (the test set's scd): ``-log10`` of the largest
        error over the components, relative to the reference (absolute over ``floor`` below it).
        A non-finite ``u_end`` scores ``-inf``."""
        u = torch.as_tensor(u_end, dtype=torch.float64).reshape(-1).cpu()
        if not bool(torch.isfinite(u).all()):
            return -math.inf
        ref = self.reference
        scale = torch.clamp(ref.abs(), min=self.floor) if self.floor > 0 else ref.abs()
        err = float(((u - ref).abs() / scale).max())
        return math.inf if err == 0.0 else -math.log10(err)


def ivp_test_set(name: str, dtype=torch.float64, device=None) -> IVPTestProblem:
    """The IVP test set's problem ``name`` at its published interval (see :class:`IVPTestProblem`).

    Names: ``"rober"`` (t1 = 1e11, atol = 1e-4 rtol), ``"hires"`` (321.8122), ``"pollu"`` (60),
    ``"orego"`` (360), ``"vdpol"`` (Hairer's scaled van der Pol, eps = 1e-6, u0 = (2, 0), t1 = 2),
    ``"vdpolm"`` (van der Pol with mu = 1000, u0 = (2, 0), t1 = 2000) and ``"e5"`` (1e13, atol = 1.7e-24);
    atol = rtol for the others, as in the test set's drivers. E5's published ``y2`` and ``y3`` disagree
    with its invariant (``y2 = y3 + y4``, ``y4 ≈ 0``) by 1.5e-3: both are scored against their mean,
    which is accurate to ~1e-5.
    """
    makers = {
        "rober": lambda: (robertson(tspan=(0.0, 1e11), dtype=dtype, device=device), "robertson", 1e-4, None, 0.0),
        "hires": lambda: (hires(dtype=dtype, device=device), "hires", 1.0, None, 0.0),
        "pollu": lambda: (pollu(dtype=dtype, device=device), "pollu", 1.0, None, 0.0),
        "orego": lambda: (orego(dtype=dtype, device=device), "orego", 1.0, None, 0.0),
        "vdpol": lambda: (van_der_pol_scaled(u0=(2.0, 0.0), dtype=dtype, device=device), "van_der_pol_scaled",
                          1.0, None, 0.0),
        "vdpolm": lambda: (van_der_pol(mu=1000.0, tspan=(0.0, 2000.0), dtype=dtype, device=device), "van_der_pol",
                           1.0, None, 0.0),
        "e5": lambda: (e5(dtype=dtype, device=device), "e5", 1.0, 1.7e-24, 1.7e-24),
    }
    if name not in makers:
        raise ValueError(f"name={name!r} is not an IVP test set problem pyode provides; choose one of "
                         f"{', '.join(sorted(makers))}")
    prob, key, factor, fixed, floor = makers[name]()
    ref = torch.tensor(STIFF_REFERENCE[key][1], dtype=torch.float64)
    if name == "e5":
        ref[1] = ref[2] = 0.5 * (ref[1] + ref[2])
    return IVPTestProblem(name, prob, ref, atol_factor=factor, atol_fixed=fixed, floor=floor)


IVP_TEST_SET = ("rober", "hires", "pollu", "orego", "vdpol", "vdpolm", "e5")
"""The names :func:`ivp_test_set` accepts: the test set's stiff ODEs that have an analytic Jacobian."""

__all__ += ["IVPTestProblem", "ivp_test_set", "IVP_TEST_SET"]
