"""Iterative refinement of the Rosenbrock stage solves with a residual in twice the working precision.

A Rosenbrock stage solves ``(I/(hγ) - J) U = r`` once per stage; a backward-stable LU solve errs
by about ``eps · |J| |U|``. When the tolerances ask for absolute accuracy near the round-off of the
state's largest component (the IVP test set's E5: atol 1.7e-24 beside y1 = 1.76e-3), that error is
larger than the tolerance and, unlike a Newton iteration's, nothing corrects it: a linear invariant
of ``f`` (E5's y2 - y3 - y4 = 0) drifts by ~1e-21 per solve while y2 and y3 decay to 9e-23.
Working-precision refinement cannot help (its residual errs as much as the solve); a residual
computed with error-free transformations (Dekker's product, Knuth's sum: Ogita, Rump & Oishi,
SIAM J. Sci. Comput. 26 (2005)) recovers the lost digits in one correction.
"""
from __future__ import annotations

import torch

__all__ = ["needs_refinement", "refined_solve"]

# Refine when the smallest absolute tolerance is below the round-off of the initial state's
# largest component: there the solve's error is the largest term of a step's error. (At 100 ulps
# float32 solves at the default abstol 1e-6 would pay for a correction they cannot use.)
_ULPS = 1.0


def needs_refinement(u0: torch.Tensor, abstol) -> bool:
    """Whether ``abstol`` asks for accuracy a plain float LU cannot give at the scale of ``u0``."""
    if not u0.dtype.is_floating_point or u0.numel() == 0:
        return False
    atol = float(torch.as_tensor(abstol).min()) if isinstance(abstol, torch.Tensor) else float(abstol)
    scale = float(u0.detach().abs().max())
    return atol < _ULPS * torch.finfo(u0.dtype).eps * scale


def _split(a: torch.Tensor):
    # Dekker: a = hi + lo exactly, each with half the mantissa.
    factor = 134217729.0 if a.dtype == torch.float64 else 4097.0
    c = a * factor
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a: torch.Tensor, b: torch.Tensor):
    """``a * b = p + e`` exactly (barring underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _sum2(terms: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis as if in twice the working precision, rounded once at the end."""
    err = torch.zeros_like(terms[..., 0])
    while terms.shape[-1] > 1:
        if terms.shape[-1] % 2:
            terms = torch.cat([terms, torch.zeros_like(terms[..., :1])], -1)
        a, b = terms[..., 0::2], terms[..., 1::2]
        s = a + b
        bb = s - a
        err = err + ((a - (s - bb)) + (b - bb)).sum(-1)
        terms = s
    return terms[..., 0] + err


def _residual(rhs: torch.Tensor, x: torch.Tensor, J: torch.Tensor, hg: torch.Tensor) -> torch.Tensor:
    """``rhs - (x / hg - J x)`` with every product and sum exact until the final rounding."""
    q = x / hg
    p, e = _two_product(q, hg)
    # x / hg = q + (x - q hg) / hg, where x - p is exact (p is within a rounding of x).
    q_low = ((x - p) - e) / hg
    P, E = _two_product(J, x[..., None, :])
    terms = torch.cat([rhs[..., None], -q[..., None], P], -1)
    return _sum2(terms) + (E.sum(-1) - q_low)


def refined_solve(solve, J: torch.Tensor, hg: torch.Tensor):
    """``solve`` (an LU solve of ``I/hg - J``, ``hg`` of shape (B, 1)) followed by one correction
    from the accurate residual."""
    def refined(rhs: torch.Tensor) -> torch.Tensor:
        x = solve(rhs)
        return x + solve(_residual(rhs, x, J, hg))
    return refined
